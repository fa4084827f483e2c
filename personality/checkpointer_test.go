package personality

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/personality/tiles"
	"github.com/google/trillian"
	"github.com/google/trillian/types"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
)

// lyingTrillian serves whatever tree the test puts in it: the tree of a
// honest log, or one rewritten behind the log's back.
type lyingTrillian struct {
	tree   *testonly.Tree
	leaves [][]byte // the tree's leaves
}

func (f *lyingTrillian) set(leaves [][]byte) {
	f.leaves = leaves
	f.tree = testonly.New(rfc6962.DefaultHasher)
	f.tree.AppendData(leaves...)
}

func (f *lyingTrillian) source(_ context.Context, start, end uint64) ([][]byte, error) {
	if end > uint64(len(f.leaves)) {
		return nil, fmt.Errorf("no leaves beyond %d", len(f.leaves))
	}
	return f.leaves[start:end], nil
}

func (f *lyingTrillian) GetLatestSignedLogRoot(context.Context, *trillian.GetLatestSignedLogRootRequest, ...grpc.CallOption) (*trillian.GetLatestSignedLogRootResponse, error) {
	root, err := (&types.LogRootV1{TreeSize: f.tree.Size(), RootHash: f.tree.Hash()}).MarshalBinary()
	if err != nil {
		return nil, err
	}
	return &trillian.GetLatestSignedLogRootResponse{SignedLogRoot: &trillian.SignedLogRoot{LogRoot: root}}, nil
}

func (f *lyingTrillian) GetConsistencyProof(_ context.Context, in *trillian.GetConsistencyProofRequest, _ ...grpc.CallOption) (*trillian.GetConsistencyProofResponse, error) {
	p, err := f.tree.ConsistencyProof(uint64(in.FirstTreeSize), uint64(in.SecondTreeSize))
	if err != nil {
		return nil, err
	}
	return &trillian.GetConsistencyProofResponse{Proof: &trillian.Proof{Hashes: p}}, nil
}

func leavesOf(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte(fmt.Sprintf("%s-%d", prefix, i))
	}
	return out
}

// TestRefusesToSignInconsistentRoots plays a Trillian whose tree was
// tampered with after the log signed a checkpoint. The log must refuse to
// sign, record nothing, keep serving the checkpoint it signed, and report
// the refusal; and it must sign again once Trillian is honest.
func TestRefusesToSignInconsistentRoots(t *testing.T) {
	signer, _, vkey, _, _ := newKeys(t)
	st := newMemoryStore()
	trill := &lyingTrillian{}
	trill.set(leavesOf("honest", 8))
	ctx := context.Background()
	m := newMetrics()
	tl, err := tiles.New(ctx, tiles.Config{Origin: testOrigin, Leaves: trill.source, Registry: m.reg})
	if err != nil {
		t.Fatal(err)
	}
	c := &checkpointer{origin: testOrigin, signer: signer, trill: trill, store: st, tiler: tl,
		logger: slog.New(slog.NewTextHandler(io.Discard, nil)), metrics: m}
	if err := c.step(ctx); err != nil {
		t.Fatal(err)
	}
	signed := c.Latest()
	if signed == nil || signed.Size != 8 {
		t.Fatalf("first checkpoint: %+v", signed)
	}
	if _, err := checkpoint.Open(signed.Note, testOrigin, mustVerifier(t, vkey)); err != nil {
		t.Fatalf("signed checkpoint does not verify: %v", err)
	}

	forkedAt3 := append(leavesOf("honest", 3), leavesOf("forged", 9)...)
	cases := []struct {
		name   string
		leaves [][]byte
		serve  [][]byte // leaves served, if not the tree's own
		want   error
	}{
		{"smaller tree", leavesOf("honest", 5), nil, checkpoint.ErrSmaller},
		{"same size, other root", leavesOf("other", 8), nil, checkpoint.ErrSameSizeNewRoot},
		{"larger tree that rewrote history", forkedAt3, nil, checkpoint.ErrInconsistent},
		{"empty tree", nil, nil, checkpoint.ErrSmaller},
		{"leaves that do not hash to the root", leavesOf("honest", 12), append(leavesOf("honest", 8), leavesOf("edited", 4)...), tiles.ErrRootMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			trill.set(tc.leaves)
			if tc.serve != nil {
				trill.leaves = tc.serve
			}
			err := c.step(ctx)
			if !errors.Is(err, ErrRefusedToSign) || !errors.Is(err, tc.want) {
				t.Fatalf("step: got %v, want a refusal wrapping %v", err, tc.want)
			}
			last, _ := st.LatestCheckpoint(ctx, testOrigin)
			if last.Size != 8 || string(last.Note) != string(signed.Note) {
				t.Fatalf("the store moved to size %d after a refusal", last.Size)
			}
			if got := c.Latest(); string(got.Note) != string(signed.Note) {
				t.Fatal("the published checkpoint changed after a refusal")
			}
			if c.Refusal() == nil {
				t.Fatal("refusal not reported")
			}
		})
	}

	// An honest extension is signed again.
	trill.set(leavesOf("honest", 13))
	if err := c.step(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Latest().Size != 13 || c.Refusal() != nil {
		t.Fatalf("after honest growth: size %d, refusal %v", c.Latest().Size, c.Refusal())
	}
}

func mustVerifier(t *testing.T, vkey string) note.Verifier {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestRecentIndexIsBounded(t *testing.T) {
	var r recentIndex
	h := func(i uint64) []byte {
		b := make([]byte, 32)
		b[0], b[1], b[2], b[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
		return b
	}
	for i := uint64(0); i < recentIndexSize+10; i++ {
		r.add(h(i), i)
	}
	if len(r.m) != recentIndexSize {
		t.Fatalf("map holds %d, want %d", len(r.m), recentIndexSize)
	}
	if _, ok := r.get(h(5)); ok {
		t.Fatal("the oldest entries were not evicted")
	}
	if idx, ok := r.get(h(recentIndexSize + 9)); !ok || idx != recentIndexSize+9 {
		t.Fatal("the newest entry is missing")
	}
}
