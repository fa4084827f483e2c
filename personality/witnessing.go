package personality

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/cosign"
)

// witnessing gets each signed checkpoint cosigned by the policy's witnesses
// and publishes the newest one that meets the policy. A witness that is down
// never blocks the log: entries are still accepted and checkpoints still
// signed; /checkpoint just stays at the last policy-satisfying one.
type witnessing struct {
	l      *Log
	policy *checkpoint.Policy
	client cosign.Client
	wake   chan struct{}

	mu       sync.Mutex
	held     map[string]uint64 // size each witness holds, by name
	current  *signedCheckpoint // the checkpoint being cosigned
	cosigned []byte            // its note with the cosignatures gathered so far
	sigs     map[string][][]byte
}

func newWitnessing(l *Log, p *checkpoint.Policy, timeout time.Duration) *witnessing {
	return &witnessing{l: l, policy: p, client: cosign.Client{Timeout: timeout},
		wake: make(chan struct{}, 1), held: map[string]uint64{}, sigs: map[string][][]byte{}}
}

// signed is the checkpointer's hook: a new checkpoint to get cosigned.
func (w *witnessing) signed(signedCheckpoint) {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run pushes the latest signed checkpoint to the witnesses whenever one is
// signed, and again every retry interval until the policy is met.
func (w *witnessing) run(ctx context.Context, retry time.Duration) {
	t := time.NewTicker(retry)
	defer t.Stop()
	for {
		w.round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-t.C:
		}
	}
}

// round pushes the latest signed checkpoint once, if it is not yet
// published with the policy met.
func (w *witnessing) round(ctx context.Context) {
	l := w.l
	latest := l.ckpt.Latest()
	if latest == nil {
		return
	}
	if pub := l.cosignedSize(); pub != nil && *pub >= latest.Size {
		return
	}
	w.mu.Lock()
	if w.current == nil || w.current.Size != latest.Size {
		w.current, w.cosigned, w.sigs = latest, latest.Note, map[string][][]byte{}
	}
	held := make(map[string]uint64, len(w.held))
	for k, v := range w.held {
		held[k] = v
	}
	var todo []checkpoint.Witness
	for _, wt := range w.policy.Witnesses() {
		if len(w.sigs[wt.Name]) == 0 {
			todo = append(todo, wt)
		}
	}
	w.mu.Unlock()
	if len(todo) == 0 {
		return
	}

	results, err := w.client.Push(ctx, latest.Note, todo, held, func(ctx context.Context, old, size uint64) ([][]byte, error) {
		p, err := l.ConsistencyProof(ctx, old, size)
		if err != nil {
			return nil, err
		}
		return p.Proof, nil
	})
	if err != nil {
		l.logger.Error("witnessing: the log's own checkpoint does not parse", slog.Any("error", err))
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.current == nil || w.current.Size != latest.Size {
		return
	}
	for _, r := range results {
		if r.Size > 0 {
			w.held[r.Witness.Name] = r.Size
		}
		if r.Err != nil {
			l.metrics.witnessFailures.WithLabelValues(r.Witness.Name).Inc()
			l.logger.Warn("witness did not cosign", slog.String("witness", r.Witness.Name), slog.Uint64("size", latest.Size), slog.Any("error", r.Err))
			continue
		}
		w.sigs[r.Witness.Name] = r.Signatures
		w.cosigned = checkpoint.AddSignatures(w.cosigned, r.Signatures...)
	}
	if !w.policy.Satisfied(w.cosigned) {
		return
	}
	if err := l.store.RecordCosigned(ctx, l.origin, latest.Size, w.cosigned); err != nil {
		l.logger.Warn("witnessing: recording the cosigned checkpoint", slog.Any("error", err))
		return
	}
	l.publishCosigned(latest.Size, w.cosigned)
	l.logger.Info("checkpoint cosigned", slog.Uint64("size", latest.Size))
}
