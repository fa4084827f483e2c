package fakelog

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/promise"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

func leaves(n int, tag string) [][]byte {
	var out [][]byte
	for i := range n {
		out = append(out, fmt.Appendf(nil, "%s entry %d", tag, i))
	}
	return out
}

func newClient(t *testing.T, l *Log) *client.Log {
	t.Helper()
	srv := httptest.NewServer(l.Handler())
	t.Cleanup(srv.Close)
	c, err := client.New(client.Config{URL: srv.URL, Origin: l.Origin(), LogKey: l.VKey(), Policy: checkpoint.NoWitnesses()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Every proof the fake serves must verify with the shared checkpoint code,
// for every pair of sizes of a tree that is not a power of two.
func TestProofsVerify(t *testing.T) {
	ctx := context.Background()
	l, err := New("example.org/fakelog")
	if err != nil {
		t.Fatal(err)
	}
	data := leaves(21, "a")
	l.Append(data...)
	if _, err := l.Publish(); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, l)
	cp, err := c.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != 21 {
		t.Fatalf("size %d, want 21", cp.Size)
	}
	for size := uint64(1); size <= 21; size++ {
		root, err := l.Root(size)
		if err != nil {
			t.Fatal(err)
		}
		older := checkpoint.Checkpoint{Origin: l.Origin(), Size: size, Hash: root}
		if err := c.VerifyConsistency(ctx, older, cp.Checkpoint); err != nil {
			t.Errorf("consistency %d→21: %v", size, err)
		}
		for i := uint64(0); i < size; i++ {
			idx, err := c.VerifyInclusion(ctx, checkpoint.LeafHash(data[i]), older)
			if err != nil || idx != i {
				t.Errorf("inclusion of %d in %d: index %d, %v", i, size, idx, err)
			}
		}
	}
	es, err := c.Entries(ctx, 5, 9)
	if err != nil || len(es) != 4 || !bytes.Equal(es[0].Data, data[5]) {
		t.Fatalf("entries: %v %v", es, err)
	}
}

func TestFork(t *testing.T) {
	ctx := context.Background()
	a, err := New("example.org/fakelog")
	if err != nil {
		t.Fatal(err)
	}
	a.Append(leaves(10, "common")...)
	b := a.ForkAt(7)
	a.Append(leaves(3, "a")...)
	b.Append(leaves(6, "b")...)
	na, _ := a.Publish()
	nb, _ := b.Publish()
	ca, cb := newClient(t, a), newClient(t, b)
	cpa, err := ca.OpenCheckpoint(na)
	if err != nil {
		t.Fatal(err)
	}
	cpb, err := cb.OpenCheckpoint(nb)
	if err != nil {
		t.Fatal(err)
	}
	// Same key, both valid, but no proof from branch b can make a's tree a
	// prefix of b's.
	if err := cb.VerifyConsistency(ctx, cpa.Checkpoint, cpb.Checkpoint); err == nil {
		t.Fatal("branches of a fork verified as consistent")
	}
	ra, _ := a.Root(7)
	rb, _ := b.Root(7)
	if !bytes.Equal(ra, rb) {
		t.Fatal("fork changed the common prefix")
	}
	if err := cb.VerifyConsistency(ctx, checkpoint.Checkpoint{Origin: a.Origin(), Size: 7, Hash: ra}, cpb.Checkpoint); err != nil {
		t.Fatalf("common prefix not consistent with branch b: %v", err)
	}
}

func TestRewriteKeepsTree(t *testing.T) {
	l, _ := New("example.org/fakelog")
	l.Append(leaves(5, "x")...)
	before, _ := l.Root(5)
	l.Rewrite(2, []byte("edited"))
	after, _ := l.Root(5)
	if !bytes.Equal(before, after) {
		t.Fatal("rewrite changed the tree")
	}
	if !bytes.Equal(l.Entry(2), []byte("edited")) {
		t.Fatal("rewrite did not change the served entry")
	}
}

func TestRollbackAndServe(t *testing.T) {
	ctx := context.Background()
	l, _ := New("example.org/fakelog")
	l.Append(leaves(8, "x")...)
	if _, err := l.Publish(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Rollback(3); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, l)
	cp, err := c.Checkpoint(ctx)
	if err != nil || cp.Size != 3 {
		t.Fatalf("after rollback: %v %v", cp, err)
	}
	l.Serve([]byte("garbage"))
	if _, err := c.Checkpoint(ctx); err == nil {
		t.Fatal("garbage checkpoint verified")
	}
}

func TestAcceptDrop(t *testing.T) {
	ctx := context.Background()
	l, _ := New("example.org/fakelog")
	p1, h1, err := l.Accept([]byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	_, h2, _ := l.Accept([]byte("two"))
	if !l.Drop(h2) {
		t.Fatal("drop of a queued entry failed")
	}
	if _, err := l.Integrate(); err != nil {
		t.Fatal(err)
	}
	pr, err := promise.Open([]byte(p1), l.Origin(), mustVerifier(t, l.VKey()))
	if err != nil || !bytes.Equal(pr.LeafHash, h1) {
		t.Fatalf("promise: %v %v", pr, err)
	}
	c := newClient(t, l)
	cp, _ := c.Checkpoint(ctx)
	if _, err := c.VerifyInclusion(ctx, h1, cp.Checkpoint); err != nil {
		t.Fatalf("accepted entry not included: %v", err)
	}
	if _, err := c.VerifyInclusion(ctx, h2, cp.Checkpoint); client.StatusOf(err) != http.StatusNotFound {
		t.Fatalf("dropped entry: want 404, got %v", err)
	}
}

func TestWitnessAndCosigners(t *testing.T) {
	l, _ := New("example.org/fakelog")
	w, err := NewWitness("witness.example")
	if err != nil {
		t.Fatal(err)
	}
	l.AddCosigner(w.Signer())
	l.Append(leaves(3, "x")...)
	n, err := l.Publish()
	if err != nil {
		t.Fatal(err)
	}
	wv, err := fnote.NewVerifierForCosignatureV1(w.VKey())
	if err != nil {
		t.Fatal(err)
	}
	policy, err := checkpoint.ParsePolicy([]byte("witness w " + w.VKey() + " https://w.example\nquorum w\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.OpenWithPolicy(n, l.Origin(), mustVerifier(t, l.VKey()), policy); err != nil {
		t.Fatalf("cosigned checkpoint does not meet a 1-of-1 policy: %v", err)
	}

	bare, _ := l.SignAt(2)
	if err := w.Set(l.Origin(), bare); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/" + checkpoint.OriginID(l.Origin()) + "/checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	s, err := checkpoint.Open(body, l.Origin(), mustVerifier(t, l.VKey()), wv)
	if err != nil {
		t.Fatal(err)
	}
	if s.Size != 2 || len(s.Opened.Sigs) != 2 {
		t.Fatalf("witness served size %d with %d signatures", s.Size, len(s.Opened.Sigs))
	}
	resp, err = http.Get(srv.URL + "/" + checkpoint.OriginID("other") + "/checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown origin: %d", resp.StatusCode)
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
