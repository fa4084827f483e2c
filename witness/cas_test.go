package witness_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/witness"
	"github.com/transparency-dev/merkle/testonly"
)

// TestCompareAndSwapUnderConcurrency has many goroutines push competing
// checkpoints of one log, half of them from one branch of a fork and half
// from the other. In every round all of them send at once, each from the
// size it last learned the witness holds (from a 200 or a 409). Afterwards
// no two checkpoints that got a cosignature may be inconsistent.
func TestCompareAndSwapUnderConcurrency(t *testing.T) {
	const (
		size       = 128
		goroutines = 16
		rounds     = 30
	)
	l := newTestLog(t, origin)
	a, b := forkedTrees(4, size)
	trees := []*testonly.Tree{a, b}
	tw := startWitness(t, "w.example", witness.Config{Logs: []witness.LogConfig{l.config("")}})

	// Sign everything up front: the goroutines must not call t.Fatal.
	notes := make([][][]byte, 2)
	for br, tr := range trees {
		notes[br] = make([][]byte, size+1)
		for s := uint64(1); s <= size; s++ {
			notes[br][s] = l.signTree(t, tr, s)
		}
	}

	type cosigned struct {
		branch int
		size   uint64
		note   []byte
		sig    []byte
	}
	var (
		mu       sync.Mutex
		got      []cosigned
		codes    = map[int]int{}
		failures []string
		known    = make([]uint64, goroutines) // size each goroutine believes the witness holds
		rngs     = make([]*rand.Rand, goroutines)
	)
	for g := range rngs {
		rngs[g] = rand.New(rand.NewPCG(uint64(g), 42))
	}
	send := func(g int) {
		br := g % 2
		tree := trees[br]
		old := known[g]
		if old >= size-4 {
			return
		}
		next := old + 1 + rngs[g].Uint64N(4)
		var proof [][]byte
		if old > 0 {
			p, err := tree.ConsistencyProof(old, next)
			if err != nil {
				panic(err)
			}
			proof = p
		}
		resp, err := http.Post(tw.url+"/add-checkpoint", "text/plain", bytes.NewReader(addBody(old, proof, notes[br][next])))
		if err != nil {
			mu.Lock()
			failures = append(failures, err.Error())
			mu.Unlock()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		mu.Lock()
		defer mu.Unlock()
		codes[resp.StatusCode]++
		switch resp.StatusCode {
		case http.StatusOK:
			got = append(got, cosigned{branch: br, size: next, note: notes[br][next], sig: body})
			known[g] = next
		case http.StatusConflict:
			n, err := strconv.ParseUint(strings.TrimSuffix(string(body), "\n"), 10, 64)
			if err != nil {
				failures = append(failures, fmt.Sprintf("409 body %q", body))
			}
			known[g] = n
		case http.StatusUnprocessableEntity:
			// The witness is on the other branch: this goroutine can
			// never extend it, and keeps failing.
		default:
			failures = append(failures, fmt.Sprintf("status %d: %s", resp.StatusCode, body))
		}
	}
	for range rounds {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				<-start
				send(g)
			})
		}
		close(start)
		wg.Wait()
	}
	for _, f := range failures {
		t.Error(f)
	}
	t.Logf("answers: %v; %d cosignatures", codes, len(got))
	if codes[http.StatusConflict] == 0 || codes[http.StatusUnprocessableEntity] == 0 {
		t.Fatalf("the run did not exercise contention and forks: %v", codes)
	}

	// Every cosignature is valid, and every pair of cosigned checkpoints is
	// consistent: same size means same root, and the smaller is a prefix of
	// the larger (proved with the larger one's own tree).
	var largest cosigned
	for i, x := range got {
		tw.checkCosignature(t, x.note, x.sig)
		if x.size > largest.size {
			largest = x
		}
		for _, y := range got[i+1:] {
			x := x
			if y.size < x.size {
				x, y = y, x
			}
			older := checkpoint.Checkpoint{Origin: origin, Size: x.size, Hash: trees[x.branch].HashAt(x.size)}
			newer := checkpoint.Checkpoint{Origin: origin, Size: y.size, Hash: trees[y.branch].HashAt(y.size)}
			var proof [][]byte
			if x.size > 0 && x.size < y.size {
				proof = consistencyProof(t, trees[y.branch], x.size, y.size)
			}
			if err := checkpoint.VerifyConsistency(older, newer, proof); err != nil {
				t.Fatalf("the witness cosigned two inconsistent checkpoints: branch %d size %d and branch %d size %d: %v",
					x.branch, x.size, y.branch, y.size, err)
			}
		}
	}
	// The witness holds the largest checkpoint it cosigned.
	s, err := checkpoint.Open(tw.latest(t, l).body, origin, l.verifier)
	if err != nil {
		t.Fatal(err)
	}
	if s.Size != largest.size || !bytes.Equal(s.Hash, trees[largest.branch].HashAt(largest.size)) {
		t.Fatalf("the witness holds size %d, but cosigned up to %d", s.Size, largest.size)
	}
}
