package witness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/carelog/carelog/checkpoint"
	"golang.org/x/mod/sumdb/note"
)

// GossipOnce runs one gossip round: for every peer and every configured log
// it fetches the peer's latest cosigned checkpoint from the peer's
// monitoring endpoint, checks the log's signature and the peer's
// cosignature on it, and compares it with the latest checkpoint this witness
// cosigned. Two checkpoints that cannot both be true become Evidence (see
// VerifyEvidence), which is stored and alerted on, and the log is frozen.
//
// It returns the evidence found for the first time in this round, and the
// round's failures joined into one error; one failing peer does not stop the
// round. A peer that answers 404 for a log does not witness it and is
// skipped. Run calls GossipOnce every Config.GossipInterval; tests call it
// directly to drive rounds.
func (w *Witness) GossipOnce(ctx context.Context) ([]Evidence, error) {
	w.metrics.gossipRounds.Inc()
	var found []Evidence
	var errs []error
	for _, p := range w.peers {
		for _, lg := range w.logList {
			e, err := w.gossipWith(ctx, p, lg)
			if err != nil {
				w.metrics.gossipFailures.WithLabelValues(p.name).Inc()
				w.log.Warn("gossip failed", slog.String("peer", p.name), slog.String("origin", lg.origin), slog.String("error", err.Error()))
				errs = append(errs, fmt.Errorf("peer %s, log %s: %w", p.name, lg.origin, err))
			}
			if e != nil {
				found = append(found, *e)
			}
		}
	}
	w.refreshFrozen(ctx)
	return found, errors.Join(errs...)
}

// refreshFrozen sets the frozen gauge of every log from the state, which
// the evidence command may have changed behind the witness's back.
func (w *Witness) refreshFrozen(ctx context.Context) {
	for _, lg := range w.logList {
		frozen, err := w.store.frozen(ctx, lg.origin)
		if err != nil {
			continue
		}
		v := 0.0
		if frozen {
			v = 1
		}
		w.metrics.frozen.WithLabelValues(lg.origin).Set(v)
	}
}

func (w *Witness) gossipWith(ctx context.Context, p *peer, lg *logState) (*Evidence, error) {
	b, err := w.get(ctx, p.url+"/"+lg.id+"/checkpoint")
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	theirs, err := checkpoint.Open(b, lg.origin, lg.verifier, p.verifier)
	if err != nil {
		return nil, fmt.Errorf("the peer's checkpoint: %w", err)
	}
	if !signedBy(theirs.Opened, p.verifier) {
		return nil, errors.New("the peer's checkpoint carries no valid cosignature of the peer")
	}
	return w.compare(ctx, lg, theirs, p.name, p.url)
}

// signedBy reports whether n carries a verified signature of v.
func signedBy(n *note.Note, v note.Verifier) bool {
	for _, s := range n.Sigs {
		if s.Name == v.Name() && s.Hash == v.KeyHash() {
			return true
		}
	}
	return false
}

// compare checks theirs, a log-signed checkpoint seen elsewhere, against the
// latest checkpoint this witness cosigned for the log. If they cannot both
// be true it records and returns the evidence. Different sizes need a
// consistency proof from the log; if the log has no URL, only same-size
// conflicts can be found.
func (w *Witness) compare(ctx context.Context, lg *logState, theirs *checkpoint.Signed, peer, peerURL string) (*Evidence, error) {
	cur, err := w.store.latest(ctx, lg.origin)
	if err != nil || cur == nil {
		return nil, err
	}
	ours, err := checkpoint.Open(cur.Note, lg.origin, lg.verifier)
	if err != nil {
		return nil, fmt.Errorf("our own latest checkpoint does not open: %w", err)
	}
	e := &Evidence{Origin: lg.origin, Peer: peer, PeerURL: peerURL, Ours: string(cur.Note), Theirs: string(theirs.Note)}
	if ours.Size == theirs.Size {
		if bytes.Equal(ours.Hash, theirs.Hash) {
			return nil, nil
		}
		e.Reason = ReasonSameSizeDifferentRoot
		e.Detail = fmt.Sprintf("both checkpoints have size %d and different roots", ours.Size)
		return w.recordNew(ctx, e)
	}
	if lg.url == "" {
		w.log.Debug("cannot compare checkpoints of different sizes: no log URL", slog.String("origin", lg.origin))
		return nil, nil
	}
	older, newer := ours.Checkpoint, theirs.Checkpoint
	if newer.Size < older.Size {
		older, newer = newer, older
	}
	if older.Size == 0 {
		// The empty tree is a prefix of every tree; no proof is needed.
		return nil, nil
	}
	proof, err := w.fetchProof(ctx, lg, older.Size, newer.Size)
	var refused *proofRefusedError
	switch {
	case errors.As(err, &refused):
		e.Reason = ReasonProofRefused
		e.Detail = fmt.Sprintf("sizes %d and %d: %v", older.Size, newer.Size, err)
		return w.recordNew(ctx, e)
	case err != nil:
		return nil, err
	}
	if err := checkpoint.VerifyConsistency(older, newer, proof); err != nil {
		e.Reason = ReasonInconsistentProof
		e.Detail = err.Error()
		e.Proof = proof
		return w.recordNew(ctx, e)
	}
	return nil, nil
}

func (w *Witness) recordNew(ctx context.Context, e *Evidence) (*Evidence, error) {
	inserted, err := w.record(ctx, e)
	if err != nil || !inserted {
		return nil, err
	}
	return e, nil
}

// PullOnce polls every log that has a URL for its latest checkpoint
// (GET <url>/checkpoint). A checkpoint larger than the one the witness holds
// is cosigned through the same compare-and-swap as a pushed one, with a
// consistency proof fetched from the log; any other is compared as in
// gossip. So a log that stops pushing cannot hide its newer checkpoints, and
// a log that shows the witness a fork produces Evidence with Peer PeerLog.
// It returns the evidence found for the first time and the failures joined.
// Run calls it every Config.PullInterval when that is positive.
func (w *Witness) PullOnce(ctx context.Context) ([]Evidence, error) {
	var found []Evidence
	var errs []error
	for _, lg := range w.logList {
		if lg.url == "" {
			continue
		}
		e, err := w.pull(ctx, lg)
		if err != nil {
			w.metrics.pullFailures.WithLabelValues(lg.origin).Inc()
			w.log.Warn("pull failed", slog.String("origin", lg.origin), slog.String("error", err.Error()))
			errs = append(errs, fmt.Errorf("log %s: %w", lg.origin, err))
		}
		if e != nil {
			found = append(found, *e)
		}
	}
	w.refreshFrozen(ctx)
	return found, errors.Join(errs...)
}

func (w *Witness) pull(ctx context.Context, lg *logState) (*Evidence, error) {
	b, err := w.fetchLogCheckpoint(ctx, lg)
	if err != nil {
		return nil, err
	}
	theirs, err := checkpoint.Open(b, lg.origin, lg.verifier)
	if err != nil {
		return nil, fmt.Errorf("the log's checkpoint: %w", err)
	}
	cur, err := w.store.latest(ctx, lg.origin)
	if err != nil {
		return nil, err
	}
	if cur != nil && theirs.Size <= cur.Size {
		return w.compare(ctx, lg, theirs, PeerLog, lg.url)
	}
	var held uint64
	var proof [][]byte
	if cur != nil {
		held = cur.Size
	}
	if held > 0 {
		proof, err = w.fetchProof(ctx, lg, held, theirs.Size)
		var refused *proofRefusedError
		if errors.As(err, &refused) {
			return w.recordNew(ctx, &Evidence{Origin: lg.origin, Peer: PeerLog, PeerURL: lg.url,
				Reason: ReasonProofRefused, Detail: fmt.Sprintf("sizes %d and %d: %v", held, theirs.Size, err),
				Ours: string(cur.Note), Theirs: string(b)})
		}
		if err != nil {
			return nil, err
		}
	}
	_, err = w.addCheckpoint(ctx, held, proof, b)
	var conflict *ConflictError
	switch {
	case err == nil:
		w.log.Info("pulled and cosigned", slog.String("origin", lg.origin), slog.Uint64("size", theirs.Size))
		return nil, nil
	case errors.As(err, &conflict), errors.Is(err, ErrFrozen):
		// Someone pushed meanwhile, or the log is frozen: next round.
		return nil, nil
	case errors.Is(err, ErrBadProof) && cur != nil:
		return w.recordNew(ctx, &Evidence{Origin: lg.origin, Peer: PeerLog, PeerURL: lg.url,
			Reason: ReasonInconsistentProof, Detail: err.Error(), Proof: proof,
			Ours: string(cur.Note), Theirs: string(b)})
	default:
		return nil, err
	}
}
