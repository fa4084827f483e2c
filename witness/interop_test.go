package witness_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/cosign"
	"github.com/carelog/carelog/witness"
)

// TestThreeWitnessesTwoOfThree drives three witnesses with the cosign
// client, as the log does, under a 2-of-3 policy file: the checkpoint meets
// the policy, still meets it with one witness down, and does not with two
// down. A witness that missed checkpoints catches up through a 409 and a
// fresh proof.
func TestThreeWitnessesTwoOfThree(t *testing.T) {
	l := newTestLog(t, origin)
	tree := newTree("leaf", 32)
	ws := make([]*testWitness, 3)
	var policy strings.Builder
	for i := range ws {
		ws[i] = startWitness(t, fmt.Sprintf("w%d.example", i+1), witness.Config{Logs: []witness.LogConfig{l.config("")}})
		fmt.Fprintf(&policy, "witness w%d %s %s\n", i+1, ws[i].VerifierKey(), ws[i].url)
	}
	policy.WriteString("group all3 2 w1 w2 w3\nquorum all3\n")
	p, err := checkpoint.ParsePolicy([]byte(policy.String()))
	if err != nil {
		t.Fatal(err)
	}
	proof := func(_ context.Context, old, size uint64) ([][]byte, error) { return tree.ConsistencyProof(old, size) }
	held := map[string]uint64{}
	var c cosign.Client
	push := func(size uint64) (cosigned []byte, ok int) {
		t.Helper()
		cp := l.signTree(t, tree, size)
		res, err := c.Push(bg, cp, p.Witnesses(), held, proof)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			held[r.Witness.Name] = r.Size
			if r.Err == nil {
				ok++
			}
		}
		return checkpoint.AddSignatures(cp, cosign.Signatures(res)...), ok
	}

	cp, ok := push(5)
	if ok != 3 {
		t.Fatalf("%d of 3 cosigned", ok)
	}
	if _, err := checkpoint.OpenWithPolicy(cp, origin, l.verifier, p); err != nil {
		t.Fatal(err)
	}
	// w3 goes down.
	ws[2].slot.set(http.NotFoundHandler())
	cp, ok = push(9)
	if ok != 2 {
		t.Fatalf("%d cosigned with w3 down, want 2", ok)
	}
	if _, err := checkpoint.OpenWithPolicy(cp, origin, l.verifier, p); err != nil {
		t.Fatalf("with one witness down: %v", err)
	}
	// w2 goes down too.
	ws[1].slot.set(http.NotFoundHandler())
	cp, ok = push(12)
	if ok != 1 {
		t.Fatalf("%d cosigned with two witnesses down, want 1", ok)
	}
	if _, err := checkpoint.OpenWithPolicy(cp, origin, l.verifier, p); err == nil {
		t.Fatal("a checkpoint with one cosignature meets the 2-of-3 policy")
	}
	// w3 comes back: the log believes it holds 5, so the first request
	// gets a 409 and the retry a fresh proof from the right size.
	ws[2].slot.set(ws[2].Handler())
	held["w3.example"] = 0
	cp, ok = push(20)
	if ok != 2 {
		t.Fatalf("%d cosigned after w3 came back, want 2", ok)
	}
	if _, err := checkpoint.OpenWithPolicy(cp, origin, l.verifier, p); err != nil {
		t.Fatal(err)
	}
	if held["w3.example"] != 20 {
		t.Fatalf("w3 believed at %d, want 20", held["w3.example"])
	}
}
