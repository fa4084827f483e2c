package witness_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/carelog/carelog/api"
	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/witness"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"
)

// testLog is a log key: it signs checkpoints of any tree it is shown.
type testLog struct {
	origin   string
	skey     string
	vkey     string
	signer   note.Signer
	verifier note.Verifier
}

func newTestLog(t *testing.T, origin string) *testLog {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return &testLog{origin: origin, skey: skey, vkey: vkey, signer: signer, verifier: verifier}
}

func (l *testLog) config(url string) witness.LogConfig {
	return witness.LogConfig{Origin: l.origin, Key: l.vkey, URL: url}
}

// sign signs a checkpoint of the given size and root.
func (l *testLog) sign(t *testing.T, size uint64, root []byte) []byte {
	t.Helper()
	msg, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: l.origin, Size: size, Hash: root}, l.signer)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// signTree signs the checkpoint of tree at size.
func (l *testLog) signTree(t *testing.T, tree *testonly.Tree, size uint64) []byte {
	t.Helper()
	return l.sign(t, size, tree.HashAt(size))
}

// newTree builds an RFC 6962 tree of n leaves "<prefix>-<i>".
func newTree(prefix string, n int) *testonly.Tree {
	tr := testonly.New(rfc6962.DefaultHasher)
	grow(tr, prefix, n)
	return tr
}

// grow appends n leaves "<prefix>-<i>" to tr.
func grow(tr *testonly.Tree, prefix string, n int) {
	for i := 0; i < n; i++ {
		tr.AppendData([]byte(fmt.Sprintf("%s-%d", prefix, tr.Size())))
	}
}

// forkedTrees returns two trees that share their first common leaves and
// then diverge, each to size n.
func forkedTrees(common, n int) (a, b *testonly.Tree) {
	a, b = newTree("common", common), newTree("common", common)
	grow(a, "branch-a", n-common)
	grow(b, "branch-b", n-common)
	return a, b
}

func consistencyProof(t *testing.T, tr *testonly.Tree, old, size uint64) [][]byte {
	t.Helper()
	p, err := tr.ConsistencyProof(old, size)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// addBody is a C2SP tlog-witness add-checkpoint request body.
func addBody(old uint64, proof [][]byte, cp []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "old %d\n", old)
	for _, h := range proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h) + "\n")
	}
	b.WriteString("\n")
	b.Write(cp)
	return b.Bytes()
}

type answer struct {
	code        int
	contentType string
	body        []byte
}

func post(t *testing.T, url string, body []byte) answer {
	t.Helper()
	resp, err := http.Post(url, "text/plain", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{code: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: b}
}

func get(t *testing.T, url string) answer {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{code: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: b}
}

// slot is an http.Handler set after the server starts, so that witnesses
// can know each other's URLs before they are built.
type slot struct {
	mu sync.RWMutex
	h  http.Handler
}

func (s *slot) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	h := s.h
	s.mu.RUnlock()
	if h == nil {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	h.ServeHTTP(w, r)
}

func (s *slot) set(h http.Handler) {
	s.mu.Lock()
	s.h = h
	s.mu.Unlock()
}

// testWitness is a witness served by an httptest server.
type testWitness struct {
	*witness.Witness
	url      string
	dir      string
	skey     string
	verifier note.Verifier // cosignature/v1
	slot     *slot
}

// newWitnessServer starts the HTTP server of a witness to be built later
// with build, so that its URL is known in advance.
func newWitnessServer(t *testing.T, name string) *testWitness {
	t.Helper()
	skey, vkey, err := witness.GenerateKey(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := fnote.NewVerifierForCosignatureV1(vkey)
	if err != nil {
		t.Fatal(err)
	}
	s := &slot{}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &testWitness{url: srv.URL, dir: t.TempDir(), skey: skey, verifier: v, slot: s}
}

func (tw *testWitness) peerConfig() witness.PeerConfig {
	vkey, _ := witness.CosignatureVKey(tw.skey)
	return witness.PeerConfig{Name: tw.verifier.Name(), Key: vkey, URL: tw.url}
}

// build creates the witness with cfg (state directory and key filled in)
// and serves it.
func (tw *testWitness) build(t *testing.T, cfg witness.Config) {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = tw.dir
	}
	cfg.Key = tw.skey
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	w, err := witness.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	tw.Witness = w
	tw.slot.set(w.Handler())
}

// startWitness is newWitnessServer and build in one.
func startWitness(t *testing.T, name string, cfg witness.Config) *testWitness {
	t.Helper()
	tw := newWitnessServer(t, name)
	tw.build(t, cfg)
	return tw
}

func (tw *testWitness) add(t *testing.T, old uint64, proof [][]byte, cp []byte) answer {
	t.Helper()
	return post(t, tw.url+"/add-checkpoint", addBody(old, proof, cp))
}

// latest fetches the witness's monitoring endpoint for the log.
func (tw *testWitness) latest(t *testing.T, l *testLog) answer {
	t.Helper()
	return get(t, tw.url+"/"+checkpoint.OriginID(l.origin)+"/checkpoint")
}

func (tw *testWitness) evidence(t *testing.T) []witness.Evidence {
	t.Helper()
	a := get(t, tw.url+"/evidence")
	if a.code != http.StatusOK {
		t.Fatalf("GET /evidence: %d %s", a.code, a.body)
	}
	var list witness.EvidenceList
	if err := json.Unmarshal(a.body, &list); err != nil {
		t.Fatalf("GET /evidence: %v", err)
	}
	return list.Evidence
}

// checkCosignature checks that sigLine is a valid cosignature/v1 of the
// witness on the checkpoint note cp.
func (tw *testWitness) checkCosignature(t *testing.T, cp, sigLine []byte) {
	t.Helper()
	text, _, ok := bytes.Cut(cp, []byte("\n\n"))
	if !ok {
		t.Fatalf("checkpoint without signatures: %q", cp)
	}
	msg := append(append(text, "\n\n"...), sigLine...)
	n, err := note.Open(msg, note.VerifierList(tw.verifier))
	if err != nil {
		t.Fatalf("cosignature %q does not verify: %v", sigLine, err)
	}
	ts, err := fnote.CoSigV1Timestamp(n.Sigs[0])
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(ts); d < -time.Minute || d > time.Minute {
		t.Errorf("cosignature timestamp %v is not now", ts)
	}
}

// fakeLog serves a log's read API over one tree: GET /checkpoint and
// GET /proof/consistency, as carelog's personality does (api package).
type fakeLog struct {
	mu        sync.Mutex
	log       *testLog
	tree      *testonly.Tree
	published uint64
	srv       *httptest.Server
}

func newFakeLog(t *testing.T, l *testLog, tree *testonly.Tree) *fakeLog {
	f := &fakeLog{log: l, tree: tree, published: tree.Size()}
	f.srv = httptest.NewServer(f)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeLog) publish(size uint64) {
	f.mu.Lock()
	f.published = size
	f.mu.Unlock()
}

func (f *fakeLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.URL.Path {
	case api.PathCheckpoint:
		msg, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: f.log.origin, Size: f.published, Hash: f.tree.HashAt(f.published)}, f.log.signer)
		if err != nil {
			api.WriteError(w, http.StatusInternalServerError, err.Error())
			return
		}
		w.Write(msg)
	case api.PathConsistencyProof:
		old, err1 := strconv.ParseUint(r.URL.Query().Get("old"), 10, 64)
		size, err2 := strconv.ParseUint(r.URL.Query().Get("size"), 10, 64)
		if err1 != nil || err2 != nil || old > size || size > f.tree.Size() {
			api.WriteError(w, http.StatusBadRequest, "bad sizes")
			return
		}
		p, err := f.tree.ConsistencyProof(old, size)
		if err != nil {
			api.WriteError(w, http.StatusInternalServerError, err.Error())
			return
		}
		api.WriteJSON(w, http.StatusOK, api.ConsistencyProof{Old: old, Size: size, Proof: p})
	default:
		http.NotFound(w, r)
	}
}

// poll calls cond until it is true or the deadline passes.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var bg = context.Background()

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
