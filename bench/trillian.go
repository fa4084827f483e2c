package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/google/trillian"
	"github.com/google/trillian/types"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"google.golang.org/protobuf/types/known/durationpb"
)

// LeafSize is the size of the reference runs' leaves, about that of a
// signed access event.
const LeafSize = 400

// Reference settings of Trillian's own sequencer for the QueueLeaf run.
const (
	RefSequencerBatch    = 1000
	RefSequencerInterval = 50 * time.Millisecond
)

// NewTree creates and initialises a Trillian tree of the given type
// (LOG for QueueLeaf, PREORDERED_LOG for AddSequencedLeaves).
func NewTree(ctx context.Context, admin trillian.TrillianAdminClient, log trillian.TrillianLogClient, typ trillian.TreeType) (int64, error) {
	tree, err := admin.CreateTree(ctx, &trillian.CreateTreeRequest{Tree: &trillian.Tree{
		TreeState: trillian.TreeState_ACTIVE, TreeType: typ, DisplayName: "carelog-bench",
		MaxRootDuration: durationpb.New(time.Hour),
	}})
	if err != nil {
		return 0, fmt.Errorf("creating a %s tree: %w", typ, err)
	}
	if _, err := log.InitLog(ctx, &trillian.InitLogRequest{LogId: tree.TreeId}); err != nil {
		return 0, fmt.Errorf("initialising tree %d: %w", tree.TreeId, err)
	}
	return tree.TreeId, nil
}

// TreeRoot is Trillian's current root of a tree.
func TreeRoot(ctx context.Context, log trillian.TrillianLogClient, treeID int64) (types.LogRootV1, error) {
	var root types.LogRootV1
	resp, err := log.GetLatestSignedLogRoot(ctx, &trillian.GetLatestSignedLogRootRequest{LogId: treeID})
	if err != nil {
		return root, err
	}
	err = root.UnmarshalBinary(resp.GetSignedLogRoot().GetLogRoot())
	return root, err
}

func randomLeaf() []byte {
	b := make([]byte, LeafSize)
	_, _ = rand.Read(b)
	return b
}

// QueueLeafResult is the reference ingest: Trillian's QueueLeaf with
// Trillian's own sequencer.
type QueueLeafResult struct {
	Clients    int
	Queued     Rate // QueueLeaf calls answered OK
	Integrated Rate // growth of the tree over the same window
}

// queueLeaf is one QueueLeaf of a fresh random leaf.
func queueLeaf(log trillian.TrillianLogClient, treeID int64) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := log.QueueLeaf(ctx, &trillian.QueueLeafRequest{LogId: treeID, Leaf: &trillian.LogLeaf{LeafValue: randomLeaf()}})
		return err
	}
}

// QueueLeaf measures raw Trillian's QueueLeaf throughput on a LOG tree:
// clients concurrent callers for warmup+window, counting the window only,
// and how fast Trillian's sequencer integrated the leaves meanwhile.
//
// probe, if not nil, is called as the window opens and closes.
func QueueLeaf(ctx context.Context, log trillian.TrillianLogClient, treeID int64, clients int, warmup, window time.Duration, probe func(end bool)) (QueueLeafResult, error) {
	var size0, size1 uint64
	var t0, t1 time.Time
	var merr error
	mark := func(end bool) {
		r, err := TreeRoot(ctx, log, treeID)
		if err != nil {
			merr = err
		}
		if end {
			size1, t1 = r.TreeSize, time.Now()
		} else {
			size0, t0 = r.TreeSize, time.Now()
		}
		if probe != nil {
			probe(end)
		}
	}
	q := closedLoop(ctx, clients, warmup, window, queueLeaf(log, treeID), mark)
	if merr != nil {
		return QueueLeafResult{}, fmt.Errorf("reading the reference tree's size: %w", merr)
	}
	return QueueLeafResult{Clients: clients, Queued: q, Integrated: Rate{Ops: int64(size1 - size0), Elapsed: t1.Sub(t0)}}, nil
}

// Preordered is a PREORDERED_LOG reference tree filled with
// AddSequencedLeaves, with the leaf hashes and root to check proofs.
type Preordered struct {
	TreeID     int64
	Size       uint64
	LeafHashes [][]byte
	Root       []byte
	// Fill is how fast the tree was filled: leaves integrated per second,
	// from the first AddSequencedLeaves to the root covering them all.
	Fill Rate
}

// FillPreordered writes n random leaves to a new PREORDERED_LOG tree in
// batches of batch, inFlight batches at a time, and waits until Trillian
// has integrated them all.
func FillPreordered(ctx context.Context, admin trillian.TrillianAdminClient, log trillian.TrillianLogClient, n uint64, batch, inFlight int) (*Preordered, error) {
	id, err := NewTree(ctx, admin, log, trillian.TreeType_PREORDERED_LOG)
	if err != nil {
		return nil, err
	}
	p := &Preordered{TreeID: id, Size: n, LeafHashes: make([][]byte, n)}
	start := time.Now()
	sem := make(chan struct{}, inFlight)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var sendErr error
	for first := uint64(0); first < n && ctx.Err() == nil; first += uint64(batch) {
		end := min(first+uint64(batch), n)
		leaves := make([]*trillian.LogLeaf, 0, end-first)
		for i := first; i < end; i++ {
			v := randomLeaf()
			p.LeafHashes[i] = checkpoint.LeafHash(v)
			leaves = append(leaves, &trillian.LogLeaf{LeafIndex: int64(i), LeafValue: v})
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			resp, err := log.AddSequencedLeaves(ctx, &trillian.AddSequencedLeavesRequest{LogId: id, Leaves: leaves})
			if err == nil {
				for _, r := range resp.GetResults() {
					if c := r.GetStatus().GetCode(); c != 0 {
						err = fmt.Errorf("AddSequencedLeaves: leaf refused: %s", r.GetStatus().GetMessage())
						break
					}
				}
			}
			if err != nil {
				mu.Lock()
				sendErr = errors.Join(sendErr, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if sendErr != nil {
		return nil, sendErr
	}
	for {
		r, err := TreeRoot(ctx, log, id)
		if err != nil {
			return nil, err
		}
		if r.TreeSize >= n {
			p.Fill = Rate{Ops: int64(n), Elapsed: time.Since(start)}
			if r.TreeSize == n {
				p.Root = r.RootHash
			}
			break
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		sleep(ctx, 20*time.Millisecond)
	}
	root, err := rootOf(p.LeafHashes)
	if err != nil {
		return nil, err
	}
	if p.Root != nil && !bytes.Equal(root, p.Root) {
		return nil, errors.New("the reference tree's root is not the root of the leaves written")
	}
	p.Root = root
	return p, nil
}

// rootOf is the RFC 6962 root of the leaf hashes.
func rootOf(leafHashes [][]byte) ([]byte, error) {
	rf := &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	r := rf.NewEmptyRange(0)
	for _, h := range leafHashes {
		if err := r.Append(h, nil); err != nil {
			return nil, err
		}
	}
	if len(leafHashes) == 0 {
		return checkpoint.EmptyRoot(), nil
	}
	return r.GetRootHash(nil)
}

// trillianProof fetches one inclusion proof for a random leaf of p with
// GetInclusionProof and verifies it against p's root.
func trillianProof(log trillian.TrillianLogClient, p *Preordered) func(context.Context) error {
	cp := checkpoint.Checkpoint{Size: p.Size, Hash: p.Root}
	return func(ctx context.Context) error {
		idx := mrand.Uint64N(p.Size)
		resp, err := log.GetInclusionProof(ctx, &trillian.GetInclusionProofRequest{LogId: p.TreeID, LeafIndex: int64(idx), TreeSize: int64(p.Size)})
		if err != nil {
			return err
		}
		return checkpoint.VerifyInclusion(cp, idx, p.LeafHashes[idx], resp.GetProof().GetHashes())
	}
}

// TrillianProofs measures raw Trillian's GetInclusionProof on p: clients
// concurrent callers, random leaves, every proof verified. probe, if not
// nil, is called as the window opens and closes.
func TrillianProofs(ctx context.Context, log trillian.TrillianLogClient, p *Preordered, clients int, warmup, window time.Duration, probe func(end bool)) Rate {
	return closedLoop(ctx, clients, warmup, window, trillianProof(log, p), probe)
}
