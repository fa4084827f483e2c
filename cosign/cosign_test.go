package cosign_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/cosign"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"
)

const origin = "example.com/cosign/test"

// specWitness is a witness written from the text of C2SP tlog-witness, not
// from carelog's witness: it parses the add-checkpoint body line by line,
// checks the log signature, the old size, the proof, and answers with a
// cosignature/v1 line or the status code the spec prescribes.
type specWitness struct {
	name     string
	vkey     string // cosignature/v1 vkey, as a policy file holds it
	signer   note.Signer
	verifier note.Verifier
	logKey   note.Verifier
	srv      *httptest.Server

	mu       sync.Mutex
	size     uint64
	root     []byte
	requests []uint64 // the old size of every request
	// override, if set, answers instead of the spec logic.
	override func(w http.ResponseWriter, old uint64, text string) bool
}

func newSpecWitness(t *testing.T, name string, logKey note.Verifier) *specWitness {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	cvkey, err := fnote.VKeyToCosignatureV1(vkey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := fnote.NewVerifierForCosignatureV1(cvkey)
	if err != nil {
		t.Fatal(err)
	}
	w := &specWitness{name: name, vkey: cvkey, signer: signer, verifier: v, logKey: logKey, root: rfc6962.DefaultHasher.EmptyRoot()}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /add-checkpoint", w.addCheckpoint)
	w.srv = httptest.NewServer(mux)
	t.Cleanup(w.srv.Close)
	return w
}

func (w *specWitness) witness() checkpoint.Witness {
	return checkpoint.Witness{Name: w.name, AddCheckpointURL: w.srv.URL + "/add-checkpoint", Verifier: w.verifier}
}

func (w *specWitness) hold(size uint64, root []byte) {
	w.mu.Lock()
	w.size, w.root = size, root
	w.mu.Unlock()
}

func (w *specWitness) oldSizes() []uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]uint64(nil), w.requests...)
}

func (w *specWitness) addCheckpoint(rw http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	br := bufio.NewReader(bytes.NewReader(body))
	line, err := br.ReadString('\n')
	num, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "old ")
	old, perr := strconv.ParseUint(num, 10, 64)
	if err != nil || !ok || perr != nil || strconv.FormatUint(old, 10) != num {
		http.Error(rw, "bad old line", http.StatusBadRequest)
		return
	}
	var hashes [][]byte
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			http.Error(rw, "no empty line", http.StatusBadRequest)
			return
		}
		if line == "\n" {
			break
		}
		h, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(line, "\n"))
		if err != nil || len(hashes) == 63 {
			http.Error(rw, "bad proof line", http.StatusBadRequest)
			return
		}
		hashes = append(hashes, h)
	}
	msg, _ := io.ReadAll(br)

	w.mu.Lock()
	defer w.mu.Unlock()
	w.requests = append(w.requests, old)

	if !bytes.HasPrefix(msg, []byte(origin+"\n")) {
		http.Error(rw, "unknown log", http.StatusNotFound)
		return
	}
	n, err := note.Open(msg, note.VerifierList(w.logKey))
	if err != nil {
		http.Error(rw, "no trusted signature", http.StatusForbidden)
		return
	}
	if w.override != nil && w.override(rw, old, n.Text) {
		return
	}
	lines := strings.Split(n.Text, "\n")
	size, err := strconv.ParseUint(lines[1], 10, 64)
	root, err2 := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || err2 != nil {
		http.Error(rw, "bad checkpoint", http.StatusBadRequest)
		return
	}
	if old > size {
		http.Error(rw, "old > size", http.StatusBadRequest)
		return
	}
	if old != w.size {
		rw.Header().Set("Content-Type", "text/x.tlog.size")
		rw.WriteHeader(http.StatusConflict)
		fmt.Fprintf(rw, "%d\n", w.size)
		return
	}
	if old == 0 && len(hashes) > 0 {
		http.Error(rw, "proof for old 0", http.StatusUnprocessableEntity)
		return
	}
	if old > 0 || size == 0 {
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old, size, hashes, w.root, root); err != nil {
			http.Error(rw, "bad proof", http.StatusUnprocessableEntity)
			return
		}
	}
	signed, err := note.Sign(&note.Note{Text: n.Text}, w.signer)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusInternalServerError)
		return
	}
	w.size, w.root = size, root
	rw.WriteHeader(http.StatusOK)
	rw.Write(signed[len(n.Text)+1:]) // the signature line
}

type fixture struct {
	tree   *testonly.Tree
	signer note.Signer
	logKey note.Verifier

	mu     sync.Mutex
	proofs [][2]uint64 // proofs asked for
}

func newFixture(t *testing.T, leaves int) *fixture {
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	tree := testonly.New(rfc6962.DefaultHasher)
	for i := range leaves {
		tree.AppendData([]byte(fmt.Sprintf("entry %d", i)))
	}
	return &fixture{tree: tree, signer: s, logKey: v}
}

func (f *fixture) checkpoint(t *testing.T, size uint64) []byte {
	t.Helper()
	msg, err := checkpoint.Sign(checkpoint.Checkpoint{Origin: origin, Size: size, Hash: f.tree.HashAt(size)}, f.signer)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func (f *fixture) proof(ctx context.Context, old, size uint64) ([][]byte, error) {
	f.mu.Lock()
	f.proofs = append(f.proofs, [2]uint64{old, size})
	f.mu.Unlock()
	return f.tree.ConsistencyProof(old, size)
}

func TestPushAllWitnessesMeetPolicy(t *testing.T) {
	f := newFixture(t, 10)
	ws := []*specWitness{newSpecWitness(t, "w1.example", f.logKey), newSpecWitness(t, "w2.example", f.logKey), newSpecWitness(t, "w3.example", f.logKey)}
	var policy strings.Builder
	var list []checkpoint.Witness
	for i, w := range ws {
		fmt.Fprintf(&policy, "witness w%d %s %s\n", i+1, w.vkey, w.srv.URL)
		list = append(list, w.witness())
	}
	policy.WriteString("group g 2 w1 w2 w3\nquorum g\n")
	p, err := checkpoint.ParsePolicy([]byte(policy.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Witnesses()) != 3 || p.Witnesses()[0].AddCheckpointURL != ws[0].srv.URL+"/add-checkpoint" {
		t.Fatalf("policy witnesses: %+v", p.Witnesses())
	}

	var c cosign.Client
	held := map[string]uint64{}
	for _, size := range []uint64{4, 9} {
		cp := f.checkpoint(t, size)
		res, err := c.Push(context.Background(), cp, p.Witnesses(), held, f.proof)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Err != nil || len(r.Signatures) != 1 || r.Size != size {
				t.Fatalf("size %d, witness %d: %+v", size, i, r)
			}
			held[r.Witness.Name] = r.Size
		}
		cosigned := checkpoint.AddSignatures(cp, cosign.Signatures(res)...)
		if _, err := checkpoint.OpenWithPolicy(cosigned, origin, f.logKey, p); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
	}
	if got := ws[0].oldSizes(); len(got) != 2 || got[0] != 0 || got[1] != 4 {
		t.Fatalf("old sizes sent: %v, want [0 4]", got)
	}
}

func TestPushRetriesOnceAfterConflict(t *testing.T) {
	f := newFixture(t, 12)
	w := newSpecWitness(t, "w.example", f.logKey)
	w.hold(5, f.tree.HashAt(5))
	var c cosign.Client
	res, err := c.Push(context.Background(), f.checkpoint(t, 9), []checkpoint.Witness{w.witness()}, nil, f.proof)
	if err != nil {
		t.Fatal(err)
	}
	r := res[0]
	if r.Err != nil || len(r.Signatures) != 1 || r.Size != 9 {
		t.Fatalf("%+v", r)
	}
	if got := w.oldSizes(); len(got) != 2 || got[0] != 0 || got[1] != 5 {
		t.Fatalf("old sizes sent %v, want [0 5]", got)
	}
	if len(f.proofs) != 1 || f.proofs[0] != [2]uint64{5, 9} {
		t.Fatalf("proofs asked %v, want [5 9]", f.proofs)
	}
	checkLine(t, w, f.checkpoint(t, 9), r.Signatures[0])
}

// checkLine checks that line is w's cosignature on the checkpoint cp.
func checkLine(t *testing.T, w *specWitness, cp, line []byte) {
	t.Helper()
	if !bytes.HasPrefix(line, []byte("— "+w.name+" ")) || !bytes.HasSuffix(line, []byte("\n")) || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("%q is not one signature line of %s", line, w.name)
	}
	// The log's signature is from a key unknown here and is ignored.
	n, err := note.Open(checkpoint.AddSignatures(cp, line), note.VerifierList(w.verifier))
	if err != nil || len(n.Sigs) != 1 {
		t.Fatalf("cosignature line %q: %v", line, err)
	}
}

func TestPushGivesUpAfterSecondConflict(t *testing.T) {
	f := newFixture(t, 20)
	w := newSpecWitness(t, "w.example", f.logKey)
	next := uint64(3)
	w.override = func(rw http.ResponseWriter, old uint64, _ string) bool {
		// A witness that moves on between every request.
		rw.Header().Set("Content-Type", "text/x.tlog.size")
		rw.WriteHeader(http.StatusConflict)
		fmt.Fprintf(rw, "%d\n", next)
		next++
		return true
	}
	var c cosign.Client
	res, err := c.Push(context.Background(), f.checkpoint(t, 10), []checkpoint.Witness{w.witness()}, map[string]uint64{"w.example": 2}, f.proof)
	if err != nil {
		t.Fatal(err)
	}
	r := res[0]
	var se *cosign.StatusError
	if !errors.As(r.Err, &se) || se.StatusCode != http.StatusConflict {
		t.Fatalf("err %v, want a 409 StatusError", r.Err)
	}
	if r.Size != 4 {
		t.Fatalf("Size %d, want the last size the witness reported (4)", r.Size)
	}
	if got := w.oldSizes(); len(got) != 2 || got[0] != 2 || got[1] != 3 {
		t.Fatalf("old sizes sent %v, want [2 3]: exactly one retry", got)
	}
}

func TestPushAnswers(t *testing.T) {
	f := newFixture(t, 10)
	cp := f.checkpoint(t, 6)
	other := newSpecWitness(t, "other.example", f.logKey)
	otherLine := func(text string) []byte {
		s, _ := note.Sign(&note.Note{Text: text}, other.signer)
		return s[len(text)+1:]
	}
	for _, tc := range []struct {
		name     string
		held     uint64 // what the client believes the witness holds
		holds    uint64 // what the witness holds
		override func(w *specWitness) func(http.ResponseWriter, uint64, string) bool
		sigs     int
		err      func(error) bool
		size     uint64
		oldSent  []uint64
	}{
		{name: "cosigned", sigs: 1, size: 6, oldSent: []uint64{0}},
		{name: "unknown key lines are ignored", sigs: 1, size: 6, oldSent: []uint64{0},
			override: func(w *specWitness) func(http.ResponseWriter, uint64, string) bool {
				return func(rw http.ResponseWriter, _ uint64, text string) bool {
					s, _ := note.Sign(&note.Note{Text: text}, w.signer)
					rw.Write(otherLine(text))
					rw.Write(s[len(text)+1:])
					return true
				}
			}},
		{name: "only unknown keys", size: 0, oldSent: []uint64{0}, err: is(cosign.ErrNoCosignature),
			override: func(w *specWitness) func(http.ResponseWriter, uint64, string) bool {
				return func(rw http.ResponseWriter, _ uint64, text string) bool {
					rw.Write(otherLine(text))
					return true
				}
			}},
		{name: "cosignature of another checkpoint", size: 0, oldSent: []uint64{0}, err: is(cosign.ErrNoCosignature),
			override: func(w *specWitness) func(http.ResponseWriter, uint64, string) bool {
				return func(rw http.ResponseWriter, _ uint64, _ string) bool {
					text := string(checkpoint.Checkpoint{Origin: origin, Size: 5, Hash: f.tree.HashAt(5)}.Marshal())
					s, _ := note.Sign(&note.Note{Text: text}, w.signer)
					rw.Write(s[len(text)+1:])
					return true
				}
			}},
		{name: "empty 200", size: 0, oldSent: []uint64{0}, err: is(cosign.ErrNoCosignature),
			override: func(*specWitness) func(http.ResponseWriter, uint64, string) bool {
				return func(http.ResponseWriter, uint64, string) bool { return true }
			}},
		{name: "422", held: 3, holds: 3, size: 3, oldSent: []uint64{3}, err: status(422),
			override: func(*specWitness) func(http.ResponseWriter, uint64, string) bool {
				return func(rw http.ResponseWriter, _ uint64, _ string) bool {
					http.Error(rw, "bad proof", http.StatusUnprocessableEntity)
					return true
				}
			}},
		{name: "409 with a malformed body", held: 3, holds: 3, size: 3, oldSent: []uint64{3}, err: status(409),
			override: func(*specWitness) func(http.ResponseWriter, uint64, string) bool {
				return func(rw http.ResponseWriter, _ uint64, _ string) bool {
					rw.WriteHeader(http.StatusConflict)
					io.WriteString(rw, "five\n")
					return true
				}
			}},
		{name: "witness ahead of the checkpoint", held: 0, size: 8, oldSent: []uint64{0}, err: status(409),
			override: func(*specWitness) func(http.ResponseWriter, uint64, string) bool {
				return func(rw http.ResponseWriter, _ uint64, _ string) bool {
					rw.Header().Set("Content-Type", "text/x.tlog.size")
					rw.WriteHeader(http.StatusConflict)
					io.WriteString(rw, "8\n")
					return true
				}
			}},
		{name: "believed size above the checkpoint asks with old 0", held: 9, sigs: 1, size: 6, oldSent: []uint64{0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newSpecWitness(t, "w.example", f.logKey)
			w.hold(tc.holds, f.tree.HashAt(tc.holds))
			if tc.override != nil {
				w.override = tc.override(w)
			}
			var c cosign.Client
			res, err := c.Push(context.Background(), cp, []checkpoint.Witness{w.witness()}, map[string]uint64{"w.example": tc.held}, f.proof)
			if err != nil {
				t.Fatal(err)
			}
			r := res[0]
			if len(r.Signatures) != tc.sigs {
				t.Fatalf("%d signatures, want %d (err %v)", len(r.Signatures), tc.sigs, r.Err)
			}
			for _, l := range r.Signatures {
				checkLine(t, w, cp, l)
			}
			if tc.err == nil && r.Err != nil || tc.err != nil && !tc.err(r.Err) {
				t.Fatalf("err %v", r.Err)
			}
			if r.Size != tc.size {
				t.Fatalf("Size %d, want %d", r.Size, tc.size)
			}
			if got := w.oldSizes(); fmt.Sprint(got) != fmt.Sprint(tc.oldSent) {
				t.Fatalf("old sizes sent %v, want %v", got, tc.oldSent)
			}
		})
	}
}

func is(target error) func(error) bool { return func(err error) bool { return errors.Is(err, target) } }

func status(code int) func(error) bool {
	return func(err error) bool {
		var se *cosign.StatusError
		return errors.As(err, &se) && se.StatusCode == code
	}
}

// TestPushSlowAndDeadWitnesses: a witness that hangs runs into the timeout
// and one that is down fails at once, while the others still cosign.
func TestPushSlowAndDeadWitnesses(t *testing.T) {
	f := newFixture(t, 4)
	good := newSpecWitness(t, "good.example", f.logKey)
	hangingKey := newSpecWitness(t, "hanging.example", f.logKey)
	release := make(chan struct{})
	hangingSrv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(hangingSrv.Close)
	t.Cleanup(func() { close(release) })
	hanging := hangingKey.witness()
	hanging.AddCheckpointURL = hangingSrv.URL + "/add-checkpoint"
	dead := newSpecWitness(t, "dead.example", f.logKey)
	dead.srv.Close()

	c := cosign.Client{Timeout: 300 * time.Millisecond}
	start := time.Now()
	res, err := c.Push(context.Background(), f.checkpoint(t, 4), []checkpoint.Witness{good.witness(), hanging, dead.witness()}, nil, f.proof)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Push took %v despite a 300ms timeout", d)
	}
	if res[0].Err != nil || len(res[0].Signatures) != 1 {
		t.Fatalf("good witness: %+v", res[0])
	}
	if !errors.Is(res[1].Err, context.DeadlineExceeded) {
		t.Fatalf("hanging witness: %v, want a deadline error", res[1].Err)
	}
	if res[2].Err == nil {
		t.Fatal("dead witness: no error")
	}
	if res[1].Witness.Name != "hanging.example" || res[2].Witness.Name != "dead.example" {
		t.Fatal("results are not in the order of the witnesses")
	}
}

func TestPushProofError(t *testing.T) {
	f := newFixture(t, 8)
	w := newSpecWitness(t, "w.example", f.logKey)
	w.hold(3, f.tree.HashAt(3))
	boom := errors.New("backend down")
	var c cosign.Client
	res, err := c.Push(context.Background(), f.checkpoint(t, 8), []checkpoint.Witness{w.witness()}, map[string]uint64{"w.example": 3},
		func(context.Context, uint64, uint64) ([][]byte, error) { return nil, boom })
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, boom) || res[0].Size != 3 {
		t.Fatalf("%+v", res[0])
	}
}

func TestPushMalformedCheckpoint(t *testing.T) {
	var c cosign.Client
	for _, msg := range []string{"", "not a note", origin + "\nx\ny\n\n— " + origin + " AAAA\n"} {
		if _, err := c.Push(context.Background(), []byte(msg), nil, nil, nil); err == nil {
			t.Errorf("Push(%q) accepted it", msg)
		}
	}
}
