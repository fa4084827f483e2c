package personality

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/personality/tiles"
	"github.com/google/trillian"
	"github.com/google/trillian/types"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
)

// rootSource is the part of Trillian's log API the checkpointer needs. It is
// an interface so tests can play a Trillian that lies.
type rootSource interface {
	GetLatestSignedLogRoot(ctx context.Context, in *trillian.GetLatestSignedLogRootRequest, opts ...grpc.CallOption) (*trillian.GetLatestSignedLogRootResponse, error)
	GetConsistencyProof(ctx context.Context, in *trillian.GetConsistencyProofRequest, opts ...grpc.CallOption) (*trillian.GetConsistencyProofResponse, error)
}

// ErrRefusedToSign means Trillian reported a tree that the log must not
// sign: smaller than, or inconsistent with, the last checkpoint it signed.
// That is an integrity incident (a rewritten database, a swapped tree, a
// restored backup): the log keeps serving what it signed and stops signing
// until an operator has looked.
var ErrRefusedToSign = errors.New("refusing to sign a checkpoint")

// checkpointer signs C2SP checkpoints of the Trillian tree.
//
// Invariants (DESIGN.md section 4):
//   - it never signs a checkpoint smaller than the last one it signed;
//   - it never signs one that is not consistent with the last one, checked
//     with a consistency proof from Trillian verified here;
//   - it records each signed checkpoint durably, by compare-and-swap on the
//     last one, before it is published to anyone.
type checkpointer struct {
	origin  string
	treeID  int64
	signer  note.Signer
	trill   rootSource
	store   store
	tiler   *tiles.Tiler
	logger  *slog.Logger
	metrics *metrics
	// onSigned is called after a new checkpoint is recorded and published.
	onSigned func(signedCheckpoint)

	mu      sync.RWMutex
	latest  *signedCheckpoint // latest recorded, published
	refusal error             // set while signing is halted
}

// Latest returns the latest signed checkpoint, nil before the first.
func (c *checkpointer) Latest() *signedCheckpoint {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.latest
}

// Refusal returns the reason signing is halted, or nil.
func (c *checkpointer) Refusal() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.refusal
}

// load publishes the last recorded checkpoint at start.
func (c *checkpointer) load(ctx context.Context) error {
	last, err := c.store.LatestCheckpoint(ctx, c.origin)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.latest = last
	c.mu.Unlock()
	return nil
}

// run signs on every tick until ctx ends.
func (c *checkpointer) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := c.step(ctx); err != nil && ctx.Err() == nil {
			if errors.Is(err, ErrRefusedToSign) {
				c.logger.Error("INTEGRITY ALERT: refusing to sign a checkpoint", slog.String("origin", c.origin), slog.Any("reason", err))
			} else {
				c.logger.Warn("checkpoint not signed this round", slog.Any("error", err))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// step signs a checkpoint of Trillian's current tree if it grew.
func (c *checkpointer) step(ctx context.Context) error {
	resp, err := c.trill.GetLatestSignedLogRoot(ctx, &trillian.GetLatestSignedLogRootRequest{LogId: c.treeID})
	if err != nil {
		return fmt.Errorf("reading Trillian's root: %w", err)
	}
	var root types.LogRootV1
	if resp.GetSignedLogRoot() == nil {
		return errors.New("trillian returned no root")
	}
	if err := root.UnmarshalBinary(resp.SignedLogRoot.LogRoot); err != nil {
		return fmt.Errorf("parsing Trillian's root: %w", err)
	}
	next := checkpoint.Checkpoint{Origin: c.origin, Size: root.TreeSize, Hash: root.RootHash}

	last, err := c.store.LatestCheckpoint(ctx, c.origin)
	if err != nil {
		return err
	}
	if last != nil {
		prev := checkpoint.Checkpoint{Origin: c.origin, Size: last.Size, Hash: last.Root}
		if next.Size == last.Size {
			if err := checkpoint.VerifyConsistency(prev, next, nil); err != nil {
				return c.refuse(err)
			}
			if err := c.catchUp(ctx, next); err != nil {
				return err
			}
			c.publish(last, false)
			return nil // nothing new to sign
		}
		var proof [][]byte
		if last.Size > 0 && next.Size > last.Size {
			pr, err := c.trill.GetConsistencyProof(ctx, &trillian.GetConsistencyProofRequest{
				LogId: c.treeID, FirstTreeSize: int64(last.Size), SecondTreeSize: int64(next.Size)})
			if err != nil {
				return fmt.Errorf("fetching consistency proof %d→%d: %w", last.Size, next.Size, err)
			}
			proof = pr.GetProof().GetHashes()
		}
		if err := checkpoint.VerifyConsistency(prev, next, proof); err != nil {
			return c.refuse(err)
		}
	}
	// Before signing, recompute the root from the leaves themselves (the
	// tiles are built from them): the log signs only a root it has seen to
	// be the root of the leaves it serves.
	if err := c.catchUp(ctx, next); err != nil {
		return err
	}
	msg, err := checkpoint.Sign(next, c.signer)
	if err != nil {
		return err
	}
	sc := signedCheckpoint{Size: next.Size, Root: next.Hash, Note: msg}
	if err := c.store.RecordCheckpoint(ctx, c.origin, last, sc); err != nil {
		if errors.Is(err, errCheckpointRace) {
			return nil // another replica signed; next round starts from its checkpoint
		}
		return fmt.Errorf("recording checkpoint %d: %w", sc.Size, err)
	}
	c.publish(&sc, true)
	return nil
}

// catchUp builds the tiles up to cp from the leaves and checks that they
// hash to cp's root; a mismatch is a refusal to sign.
func (c *checkpointer) catchUp(ctx context.Context, cp checkpoint.Checkpoint) error {
	if err := c.tiler.CatchUp(ctx, cp); err != nil {
		if errors.Is(err, tiles.ErrRootMismatch) {
			return c.refuse(err)
		}
		return fmt.Errorf("building tiles up to %d: %w", cp.Size, err)
	}
	return nil
}

func (c *checkpointer) refuse(err error) error {
	err = fmt.Errorf("%w: %w", ErrRefusedToSign, err)
	c.mu.Lock()
	c.refusal = err
	c.mu.Unlock()
	c.metrics.signRefusals.Inc()
	return err
}

func (c *checkpointer) publish(sc *signedCheckpoint, isNew bool) {
	c.mu.Lock()
	changed := c.latest == nil || c.latest.Size != sc.Size
	c.latest = sc
	c.refusal = nil
	c.mu.Unlock()
	c.metrics.checkpointSize.Set(float64(sc.Size))
	if isNew {
		c.metrics.checkpointsSigned.Inc()
		c.logger.Info("signed checkpoint", slog.Uint64("size", sc.Size))
	}
	if (isNew || changed) && c.onSigned != nil {
		c.onSigned(*sc)
	}
}
