package witness_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/witness"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"
)

// advance pushes the checkpoint of tree at size to tw, from the size it
// holds, and fails the test unless it is cosigned.
func advance(t *testing.T, tw *testWitness, l *testLog, tree *testonly.Tree, held, size uint64) {
	t.Helper()
	var proof [][]byte
	if held > 0 {
		proof = consistencyProof(t, tree, held, size)
	}
	if a := tw.add(t, held, proof, l.signTree(t, tree, size)); a.code != 200 {
		t.Fatalf("add size %d: %d %s", size, a.code, a.body)
	}
}

// webhook records the evidence POSTed to it.
type webhook struct {
	mu       sync.Mutex
	received []witness.Evidence
	srv      *httptest.Server
}

func newWebhook(t *testing.T) *webhook {
	h := &webhook{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e witness.Evidence
		if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&e) != nil {
			http.Error(w, "bad webhook call", http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.received = append(h.received, e)
		h.mu.Unlock()
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *webhook) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.received)
}

// checkEvidence checks e with nothing but the log's public key, twice: with
// witness.VerifyEvidence, and by hand from the vkey text.
func checkEvidence(t *testing.T, e witness.Evidence, l *testLog, reason string) {
	t.Helper()
	if e.Reason != reason {
		t.Fatalf("evidence reason %q, want %q (%s)", e.Reason, reason, e.Detail)
	}
	v, err := note.NewVerifier(l.vkey)
	if err != nil {
		t.Fatal(err)
	}
	if err := witness.VerifyEvidence(e, v); err != nil {
		t.Fatalf("evidence does not verify with the log key: %v", err)
	}
	ours, err1 := checkpoint.Open([]byte(e.Ours), e.Origin, v)
	theirs, err2 := checkpoint.Open([]byte(e.Theirs), e.Origin, v)
	if err1 != nil || err2 != nil {
		t.Fatalf("evidence checkpoints do not carry the log signature: %v, %v", err1, err2)
	}
	older, newer := ours.Checkpoint, theirs.Checkpoint
	if newer.Size < older.Size {
		older, newer = newer, older
	}
	if older.Size == newer.Size {
		if bytes.Equal(older.Hash, newer.Hash) {
			t.Fatal("evidence: same size and same root")
		}
	} else if reason == witness.ReasonInconsistentProof && checkpoint.VerifyConsistency(older, newer, e.Proof) == nil {
		t.Fatal("evidence: the proof in it verifies")
	}
	// Evidence that was tampered with does not verify.
	forged := e
	forged.Theirs = e.Ours
	if witness.VerifyEvidence(forged, v) == nil {
		t.Fatal("evidence with two identical checkpoints verifies")
	}
	other := newTestLog(t, l.origin)
	if witness.VerifyEvidence(e, other.verifier) == nil {
		t.Fatal("evidence verifies with another key")
	}
}

// gossipUntil drives gossip rounds on every witness until each has found
// evidence, for at most maxRounds rounds, and returns the evidence found.
func gossipUntil(t *testing.T, maxRounds int, ws ...*testWitness) [][]witness.Evidence {
	t.Helper()
	found := make([][]witness.Evidence, len(ws))
	for round := 1; round <= maxRounds; round++ {
		done := true
		for i, w := range ws {
			ev, err := w.GossipOnce(bg)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			found[i] = append(found[i], ev...)
			if len(found[i]) == 0 {
				done = false
			}
		}
		if done {
			return found
		}
	}
	t.Fatalf("no evidence at every witness after %d gossip rounds: %v", maxRounds, found)
	return nil
}

// TestForkedLog shows a forked log (one key signing two diverging trees) to
// two witnesses that gossip with each other: each cosigns only its branch,
// gossip finds evidence at both within a bounded number of rounds, the
// evidence verifies with the log's public key alone, and cosigning stops
// until an operator clears the evidence.
func TestForkedLog(t *testing.T) {
	l := newTestLog(t, origin)
	a, b := forkedTrees(4, 12)
	logA, logB := newFakeLog(t, l, a), newFakeLog(t, l, b)
	hook := newWebhook(t)
	w1, w2 := newWitnessServer(t, "w1.example"), newWitnessServer(t, "w2.example")
	w1.build(t, witness.Config{Logs: []witness.LogConfig{l.config(logA.srv.URL)}, Peers: []witness.PeerConfig{w2.peerConfig()}, WebhookURL: hook.srv.URL})
	w2.build(t, witness.Config{Logs: []witness.LogConfig{l.config(logB.srv.URL)}, Peers: []witness.PeerConfig{w1.peerConfig()}, WebhookURL: hook.srv.URL})

	// Both witnesses see the common prefix, then each its own branch.
	advance(t, w1, l, a, 0, 3)
	advance(t, w2, l, b, 0, 3)
	if ev, err := w1.GossipOnce(bg); err != nil || len(ev) != 0 {
		t.Fatalf("gossip on the common prefix: %v, %v", ev, err)
	}
	advance(t, w1, l, a, 3, 8)
	advance(t, w2, l, b, 3, 8)

	// Each cosigns only its branch.
	if ans := w1.add(t, 8, nil, l.signTree(t, b, 8)); ans.code != 422 {
		t.Fatalf("w1 given branch B at its own size: %d, want 422", ans.code)
	}
	if ans := w1.add(t, 8, consistencyProof(t, b, 8, 10), l.signTree(t, b, 10)); ans.code != 422 {
		t.Fatalf("w1 given branch B beyond its size: %d, want 422", ans.code)
	}
	if ans := w2.add(t, 8, consistencyProof(t, a, 8, 10), l.signTree(t, a, 10)); ans.code != 422 {
		t.Fatalf("w2 given branch A: %d, want 422", ans.code)
	}

	found := gossipUntil(t, 3, w1, w2)
	for i, w := range []*testWitness{w1, w2} {
		if len(found[i]) != 1 {
			t.Fatalf("witness %d found %d pieces of evidence, want 1", i+1, len(found[i]))
		}
		e := found[i][0]
		checkEvidence(t, e, l, witness.ReasonSameSizeDifferentRoot)
		peer := []*testWitness{w2, w1}[i]
		if e.Peer != peer.verifier.Name() || e.Origin != origin {
			t.Errorf("evidence names peer %q origin %q", e.Peer, e.Origin)
		}
		// The peer's side carries the peer's cosignature.
		if _, err := checkpoint.Open([]byte(e.Theirs), origin, l.verifier, peer.verifier); err != nil {
			t.Errorf("their checkpoint: %v", err)
		}
		// GET /evidence serves it.
		served := w.evidence(t)
		if len(served) != 1 || served[0].Ours != e.Ours || served[0].Theirs != e.Theirs || served[0].ClearedAt != nil {
			t.Fatalf("GET /evidence: %+v", served)
		}
		checkEvidence(t, served[0], l, witness.ReasonSameSizeDifferentRoot)
		// Metrics count it.
		m := string(get(t, w.url+"/metrics").body)
		for _, want := range []string{
			fmt.Sprintf(`carelog_witness_split_view_evidence_total{origin=%q} 1`, origin),
			fmt.Sprintf(`carelog_witness_log_frozen{origin=%q} 1`, origin),
		} {
			if !strings.Contains(m, want) {
				t.Errorf("witness %d metrics lack %s", i+1, want)
			}
		}
	}
	poll(t, "two webhook calls", func() bool { return hook.count() == 2 })

	// Cosigning stops, with a clear 4xx, even for the witness's own branch.
	ans := w1.add(t, 8, consistencyProof(t, a, 8, 10), l.signTree(t, a, 10))
	if ans.code != http.StatusLocked || !strings.Contains(string(ans.body), "evidence") {
		t.Fatalf("frozen witness: %d %s, want 423 naming the evidence", ans.code, ans.body)
	}
	// More rounds find nothing new: the evidence is on record once.
	if ev, err := w1.GossipOnce(bg); err != nil || len(ev) != 0 {
		t.Fatalf("another round: %v, %v", ev, err)
	}
	if n := len(w1.evidence(t)); n != 1 {
		t.Fatalf("%d pieces of evidence after another round, want 1", n)
	}

	// The operator clears it; the witness cosigns its branch again.
	n, err := witness.ClearEvidence(bg, w1.dir, origin)
	if err != nil || n != 1 {
		t.Fatalf("ClearEvidence: %d, %v", n, err)
	}
	list, err := witness.ListEvidence(bg, w1.dir, origin)
	if err != nil || len(list) != 1 || list[0].ClearedAt == nil {
		t.Fatalf("ListEvidence after clearing: %+v, %v", list, err)
	}
	advance(t, w1, l, a, 8, 10)
	// The split persists (w2 still holds branch B): the next round proves
	// it again, now across sizes, and freezes the log again.
	ev, err := w1.GossipOnce(bg)
	if err != nil || len(ev) != 1 {
		t.Fatalf("round after clearing: %v, %v", ev, err)
	}
	checkEvidence(t, ev[0], l, witness.ReasonInconsistentProof)
	if ans := w1.add(t, 10, consistencyProof(t, a, 10, 11), l.signTree(t, a, 11)); ans.code != http.StatusLocked {
		t.Fatalf("after new evidence: %d, want 423", ans.code)
	}
}

// TestForkedLogDifferentSizes: the branches are shown at different sizes,
// so the evidence is an inconsistent consistency proof from the log, or the
// log's refusal to give one.
func TestForkedLogDifferentSizes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		sizeA      int // leaves the log's branch-A server has
		wantReason []string
	}{
		{"log serves a proof that fails", 12, []string{witness.ReasonInconsistentProof, witness.ReasonInconsistentProof}},
		{"log refuses the proof", 8, []string{witness.ReasonProofRefused, witness.ReasonInconsistentProof}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLog(t, origin)
			_, b := forkedTrees(4, 12)
			a := newTree("common", 4)
			grow(a, "branch-a", tc.sizeA-4)
			logA, logB := newFakeLog(t, l, a), newFakeLog(t, l, b)
			w1, w2 := newWitnessServer(t, "w1.example"), newWitnessServer(t, "w2.example")
			w1.build(t, witness.Config{Logs: []witness.LogConfig{l.config(logA.srv.URL)}, Peers: []witness.PeerConfig{w2.peerConfig()}})
			w2.build(t, witness.Config{Logs: []witness.LogConfig{l.config(logB.srv.URL)}, Peers: []witness.PeerConfig{w1.peerConfig()}})
			advance(t, w1, l, a, 0, 8)
			advance(t, w2, l, b, 0, 12)

			found := gossipUntil(t, 3, w1, w2)
			for i := range found {
				if len(found[i]) != 1 {
					t.Fatalf("witness %d: %d pieces of evidence", i+1, len(found[i]))
				}
				checkEvidence(t, found[i][0], l, tc.wantReason[i])
			}
			if ans := w2.add(t, 12, consistencyProof(t, b, 12, 12), l.signTree(t, b, 12)); ans.code != http.StatusLocked {
				t.Fatalf("w2 after evidence: %d, want 423", ans.code)
			}
		})
	}
}

// TestConsistentGossipFindsNothing: two witnesses on one honest log at
// different sizes gossip without finding evidence, so the evidence in the
// fork tests is not an artefact of gossip itself.
func TestConsistentGossipFindsNothing(t *testing.T) {
	l := newTestLog(t, origin)
	tree := newTree("leaf", 20)
	lg := newFakeLog(t, l, tree)
	w1, w2 := newWitnessServer(t, "w1.example"), newWitnessServer(t, "w2.example")
	w1.build(t, witness.Config{Logs: []witness.LogConfig{l.config(lg.srv.URL)}, Peers: []witness.PeerConfig{w2.peerConfig()}})
	w2.build(t, witness.Config{Logs: []witness.LogConfig{l.config(lg.srv.URL)}, Peers: []witness.PeerConfig{w1.peerConfig()}})
	// Before anything is cosigned the peers answer 404: nothing to do.
	if ev, err := w1.GossipOnce(bg); err != nil || len(ev) != 0 {
		t.Fatalf("empty round: %v, %v", ev, err)
	}
	advance(t, w1, l, tree, 0, 5)
	advance(t, w2, l, tree, 0, 13)
	for round := 0; round < 3; round++ {
		for _, w := range []*testWitness{w1, w2} {
			if ev, err := w.GossipOnce(bg); err != nil || len(ev) != 0 {
				t.Fatalf("round %d: evidence %v, error %v", round, ev, err)
			}
		}
		advance(t, w1, l, tree, uint64(5+round), uint64(6+round))
	}
	if len(w1.evidence(t)) != 0 || len(w2.evidence(t)) != 0 {
		t.Fatal("evidence on an honest log")
	}
}

// TestGossipRejectsUncosignedPeerCheckpoint: a peer that serves a
// checkpoint without its own valid cosignature is a gossip failure, not a
// source of evidence.
func TestGossipRejectsUncosignedPeerCheckpoint(t *testing.T) {
	l := newTestLog(t, origin)
	a, b := forkedTrees(2, 6)
	fakePeer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(l.signTree(t, b, 6)) // log-signed, but not cosigned by the peer
	}))
	t.Cleanup(fakePeer.Close)
	peerKey := newWitnessServer(t, "peer.example").peerConfig()
	peerKey.URL = fakePeer.URL
	w := startWitness(t, "w.example", witness.Config{Logs: []witness.LogConfig{l.config("")}, Peers: []witness.PeerConfig{peerKey}})
	advance(t, w, l, a, 0, 6)
	ev, err := w.GossipOnce(bg)
	if err == nil || len(ev) != 0 {
		t.Fatalf("got evidence %v, error %v; want a gossip error and no evidence", ev, err)
	}
}

// TestPullMode: the witness polls the log, advances itself with proofs from
// the log, and turns a forked answer from the log into evidence.
func TestPullMode(t *testing.T) {
	l := newTestLog(t, origin)
	tree := newTree("leaf", 16)
	lg := newFakeLog(t, l, tree)
	lg.publish(5)
	w := startWitness(t, "w.example", witness.Config{Logs: []witness.LogConfig{l.config(lg.srv.URL)}})

	holds := func() uint64 {
		t.Helper()
		s, err := checkpoint.Open(w.latest(t, l).body, origin, l.verifier, w.verifier)
		if err != nil {
			t.Fatal(err)
		}
		return s.Size
	}
	for _, size := range []uint64{5, 9, 9} {
		lg.publish(size)
		if ev, err := w.PullOnce(bg); err != nil || len(ev) != 0 {
			t.Fatalf("pull at %d: %v, %v", size, ev, err)
		}
		if got := holds(); got != size {
			t.Fatalf("holds %d after pulling %d", got, size)
		}
	}
	// The log now serves a fork of the same size.
	fork := newTree("leaf", 4)
	grow(fork, "fork", 12)
	lg.mu.Lock()
	lg.tree = fork
	lg.mu.Unlock()
	ev, err := w.PullOnce(bg)
	if err != nil || len(ev) != 1 {
		t.Fatalf("pull of a fork: %v, %v", ev, err)
	}
	checkEvidence(t, ev[0], l, witness.ReasonSameSizeDifferentRoot)
	if ev[0].Peer != witness.PeerLog {
		t.Errorf("peer %q, want %q", ev[0].Peer, witness.PeerLog)
	}
	if ans := w.add(t, 9, consistencyProof(t, tree, 9, 10), l.signTree(t, tree, 10)); ans.code != http.StatusLocked {
		t.Fatalf("push after evidence: %d, want 423", ans.code)
	}
	// Cleared, the witness still never cosigns the fork.
	if _, err := witness.ClearEvidence(bg, w.dir, origin); err != nil {
		t.Fatal(err)
	}
	lg.publish(14)
	ev, err = w.PullOnce(bg)
	if err != nil || len(ev) != 1 {
		t.Fatalf("pull of a larger fork: %v, %v", ev, err)
	}
	checkEvidence(t, ev[0], l, witness.ReasonInconsistentProof)
	if got := holds(); got != 9 {
		t.Fatalf("holds %d after a forked pull, want 9", got)
	}
}

// TestServe runs the witness's own server loop with pull mode on and shuts
// it down through the context.
func TestServe(t *testing.T) {
	l := newTestLog(t, origin)
	tree := newTree("leaf", 7)
	lg := newFakeLog(t, l, tree)
	skey, vkey, err := witness.GenerateKey("w.example")
	if err != nil {
		t.Fatal(err)
	}
	w, err := witness.New(witness.Config{StateDir: t.TempDir(), Key: skey, Logs: []witness.LogConfig{l.config(lg.srv.URL)},
		PullInterval: 10 * time.Millisecond, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.VerifierKey() != vkey {
		t.Fatalf("VerifierKey %q, want %q", w.VerifierKey(), vkey)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() { done <- w.Serve(ctx, ln) }()
	url := "http://" + ln.Addr().String() + "/" + checkpoint.OriginID(origin) + "/checkpoint"
	poll(t, "the pull loop to cosign", func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		s, err := checkpoint.Open(b, origin, l.verifier)
		return err == nil && s.Size == 7
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	if _, err := http.Get(url); err == nil {
		t.Fatal("still serving after shutdown")
	}
}

// TestLogKeyPinned: the state pins each log's key. A known origin with a
// new key in the configuration stops the witness from starting; adding
// another log is fine and keeps the state.
func TestLogKeyPinned(t *testing.T) {
	l := newTestLog(t, origin)
	tw := startWitness(t, "w.example", witness.Config{Logs: []witness.LogConfig{l.config("")}})
	advance(t, tw, l, newTree("leaf", 3), 0, 3)
	tw.Close()

	rekeyed := newTestLog(t, origin)
	_, err := witness.New(witness.Config{StateDir: tw.dir, Key: tw.skey, Logs: []witness.LogConfig{rekeyed.config("")}, Logger: discardLogger()})
	if !errors.Is(err, witness.ErrKeyChanged) {
		t.Fatalf("New with a changed log key: %v, want ErrKeyChanged", err)
	}
	second := newTestLog(t, "example.com/second")
	tw2 := newWitnessServer(t, "w.example")
	tw2.dir, tw2.skey = tw.dir, tw.skey
	tw2.build(t, witness.Config{Logs: []witness.LogConfig{l.config(""), second.config("")}})
	if ans := tw2.add(t, 0, nil, l.signTree(t, newTree("leaf", 3), 3)); ans.code != 409 || string(ans.body) != "3\n" {
		t.Fatalf("first log after adding a second: %d %q, want 409 3", ans.code, ans.body)
	}
	advance(t, tw2, second, newTree("x", 2), 0, 2)
}

func TestConfigErrors(t *testing.T) {
	l := newTestLog(t, origin)
	skey, _, _ := witness.GenerateKey("w.example")
	for _, tc := range []struct {
		name string
		cfg  witness.Config
	}{
		{"no logs", witness.Config{Key: skey}},
		{"no key", witness.Config{Logs: []witness.LogConfig{l.config("")}}},
		{"bad key", witness.Config{Key: "PRIVATE+KEY+x+00000000+AAAA", Logs: []witness.LogConfig{l.config("")}}},
		{"bad log key", witness.Config{Key: skey, Logs: []witness.LogConfig{{Origin: origin, Key: "nope"}}}},
		{"log twice", witness.Config{Key: skey, Logs: []witness.LogConfig{l.config(""), l.config("")}}},
		{"bad log url", witness.Config{Key: skey, Logs: []witness.LogConfig{l.config("ftp://x")}}},
		{"peer without url", witness.Config{Key: skey, Logs: []witness.LogConfig{l.config("")}, Peers: []witness.PeerConfig{{Name: "p", Key: l.vkey}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.StateDir = t.TempDir()
			if w, err := witness.New(tc.cfg); err == nil {
				w.Close()
				t.Fatal("New accepted the configuration")
			}
		})
	}
}
