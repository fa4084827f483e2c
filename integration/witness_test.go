package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/ehrsim"
	"github.com/carelog/carelog/entry"
	"github.com/carelog/carelog/internal/testdb"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// witnessProc is a running carelog-witness with its keys.
type witnessProc struct {
	*process
	name       string
	cosigVKey  string
	keyFile    string
	configFile string
	stateDir   string
}

// witnessConfig is carelog-witness's config file.
type witnessConfig struct {
	Logs  []map[string]string `json:"logs"`
	Peers []map[string]string `json:"peers"`
}

func newWitnessKeys(t *testing.T, name string) *witnessProc {
	t.Helper()
	dir := t.TempDir()
	skey, vkey, err := note.GenerateKey(nil, name)
	if err != nil {
		t.Fatal(err)
	}
	cosig, err := fnote.VKeyToCosignatureV1(vkey)
	if err != nil {
		t.Fatal(err)
	}
	w := &witnessProc{name: name, cosigVKey: cosig, keyFile: filepath.Join(dir, "witness.key"),
		configFile: filepath.Join(dir, "witness.json"), stateDir: filepath.Join(dir, "state")}
	writeFile(t, w.keyFile, skey)
	return w
}

func (w *witnessProc) start(t *testing.T, cfg witnessConfig, extra ...string) {
	t.Helper()
	b, _ := json.Marshal(cfg)
	writeFile(t, w.configFile, string(b))
	args := append([]string{"-key", w.keyFile, "-config", w.configFile, "-state", w.stateDir,
		"-listen", "127.0.0.1:0", "-log-json"}, extra...)
	w.process = start(t, "carelog-witness", args...)
}

// policyFor writes a tlog-policy file naming the witnesses with a k-of-n group.
func policyFor(t *testing.T, k int, ws ...*witnessProc) string {
	t.Helper()
	var b strings.Builder
	names := []string{}
	for _, w := range ws {
		fmt.Fprintf(&b, "witness %s %s %s\n", w.name, w.cosigVKey, w.url())
		names = append(names, w.name)
	}
	fmt.Fprintf(&b, "group g %d %s\nquorum g\n", k, strings.Join(names, " "))
	path := filepath.Join(t.TempDir(), "witnesses.policy")
	writeFile(t, path, b.String())
	return path
}

func policyClient(t *testing.T, url, vkey, policyPath string) *client.Log {
	t.Helper()
	b, err := os.ReadFile(policyPath)
	if err != nil {
		t.Fatal(err)
	}
	p, err := checkpoint.ParsePolicy(b)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: url, LogKey: vkey, Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func submitN(t *testing.T, ctx context.Context, c *client.Log, k *keyset, gen *ehrsim.Generator, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		raw, err := entry.Sign(gen.Next(time.Now()), k.submitter)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Submit(ctx, raw); err != nil {
			t.Fatalf("submit: %v", err)
		}
	}
}

// logSize reads the size of the latest checkpoint the log signed (whether
// or not witnesses cosigned it) from its health endpoint.
func logSize(url string) (uint64, error) {
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var h struct {
		Size uint64 `json:"checkpoint_size"`
	}
	err = json.NewDecoder(resp.Body).Decode(&h)
	return h.Size, err
}

func cosigners(cp *checkpoint.Signed, ws ...*witnessProc) int {
	n := 0
	for _, w := range ws {
		v, err := fnote.NewVerifierForCosignatureV1(w.cosigVKey)
		if err != nil {
			continue
		}
		if _, err := note.Open(cp.Note, note.VerifierList(v)); err == nil {
			n++
		}
	}
	return n
}

// startWitnessedLog starts three witnesses and a log on a fresh database
// with a 2-of-3 policy, and a client that requires it.
func startWitnessedLog(t *testing.T, k *keyset) (ws []*witnessProc, policy string, lg *process, c *client.Log) {
	t.Helper()
	ws = []*witnessProc{newWitnessKeys(t, "w1.test"), newWitnessKeys(t, "w2.test"), newWitnessKeys(t, "w3.test")}
	for _, w := range ws {
		w.start(t, witnessConfig{Logs: []map[string]string{{"origin": k.origin, "key": k.logVKey}}})
	}
	policy = policyFor(t, 2, ws...)
	lg = startLog(t, k, testdb.New(t), "--policy", policy)
	return ws, policy, lg, policyClient(t, lg.url(), k.logVKey, policy)
}

// TestThreeWitnessesTwoOfThree runs the log with three witnesses and a
// 2-of-3 policy: the checkpoint reaches 2-of-3; with one witness killed it
// still does; with two killed the log keeps accepting entries while
// /checkpoint stays at the last checkpoint that met the policy; when a
// witness returns, the log catches up.
func TestThreeWitnessesTwoOfThree(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k := newKeyset(t)
	ws, _, lg, c := startWitnessedLog(t, k)
	gen := ehrsim.New(k.submitterName, 7)

	waitCosigned := func(size uint64, want int) *checkpoint.Signed {
		t.Helper()
		var cp *checkpoint.Signed
		waitFor(t, fmt.Sprintf("a 2-of-3 checkpoint of size %d", size), time.Minute, func() (bool, error) {
			var err error
			cp, err = c.Checkpoint(ctx) // verifies the log signature and the policy
			return err == nil && cp.Size == size, err
		})
		if n := cosigners(cp, ws...); n < want {
			t.Fatalf("checkpoint of size %d has %d cosignatures, want at least %d", size, n, want)
		}
		return cp
	}

	submitN(t, ctx, c, k, gen, 10)
	waitCosigned(10, 2)

	ws[2].kill9()
	submitN(t, ctx, c, k, gen, 10)
	waitCosigned(20, 2)

	ws[1].kill9()
	submitN(t, ctx, c, k, gen, 10) // still accepted
	waitFor(t, "the log to sign size 30", time.Minute, func() (bool, error) {
		n, err := logSize(lg.url())
		return n == 30, err
	})
	cp, err := c.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != 20 {
		t.Fatalf("with one witness of three left, /checkpoint serves size %d; want the last 2-of-3 one, 20", cp.Size)
	}

	ws[1].restart()
	waitCosigned(30, 2)
}

// TestForkedLogCaughtByGossip runs two carelog-log processes with the same
// key on two databases: one log key signing two diverging trees. Each is
// shown to a different witness; each witness cosigns only its branch; the
// witnesses gossip and each stores evidence that verifies with nothing but
// the log's public key, and from then on refuses to cosign that log.
func TestForkedLogCaughtByGossip(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k := newKeyset(t)
	wa, wb := newWitnessKeys(t, "wa.test"), newWitnessKeys(t, "wb.test")
	logs := []map[string]string{{"origin": k.origin, "key": k.logVKey}}
	// Start both without peers to learn their addresses, then restart them
	// as peers of each other.
	wa.start(t, witnessConfig{Logs: logs})
	wb.start(t, witnessConfig{Logs: logs})
	aURL, bURL := wa.url(), wb.url()
	wa.kill9()
	wb.kill9()
	wa.start(t, witnessConfig{Logs: logs, Peers: []map[string]string{{"name": wb.name, "key": wb.cosigVKey, "url": bURL}}},
		"-gossip-interval", "200ms", "-listen", strings.TrimPrefix(aURL, "http://"))
	wb.start(t, witnessConfig{Logs: logs, Peers: []map[string]string{{"name": wa.name, "key": wa.cosigVKey, "url": aURL}}},
		"-gossip-interval", "200ms", "-listen", strings.TrimPrefix(bURL, "http://"))

	dsnA, dsnB := testdb.New(t), testdb.New(t)
	policyA, policyB := policyFor(t, 1, wa), policyFor(t, 1, wb)
	logA := startLog(t, k, dsnA, "--policy", policyA)
	logB := startLog(t, k, dsnB, "--policy", policyB)
	ca := policyClient(t, logA.url(), k.logVKey, policyA)
	cb := policyClient(t, logB.url(), k.logVKey, policyB)
	submitN(t, ctx, ca, k, ehrsim.New(k.submitterName, 1), 5)
	submitN(t, ctx, cb, k, ehrsim.New(k.submitterName, 2), 5)

	logV, _ := note.NewVerifier(k.logVKey)
	type evidence struct {
		Origin string `json:"origin"`
		Reason string `json:"reason"`
		Ours   string `json:"ours"`
		Theirs string `json:"theirs"`
	}
	for _, w := range []*witnessProc{wa, wb} {
		var evs []evidence
		waitFor(t, w.name+" to store split-view evidence", time.Minute, func() (bool, error) {
			resp, err := http.Get(w.url() + "/evidence")
			if err != nil {
				return false, err
			}
			defer resp.Body.Close()
			var body struct {
				Evidence []evidence `json:"evidence"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				return false, err
			}
			evs = body.Evidence
			return len(evs) > 0, nil
		})
		e := evs[0]
		// The evidence stands on the log's public key alone.
		ours, err1 := checkpoint.Open([]byte(e.Ours), k.origin, logV)
		theirs, err2 := checkpoint.Open([]byte(e.Theirs), k.origin, logV)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: evidence does not verify with the log key: %v, %v", w.name, err1, err2)
		}
		if err := checkpoint.VerifyConsistency(ours.Checkpoint, theirs.Checkpoint, nil); err == nil && ours.Size == theirs.Size {
			t.Fatalf("%s: the two checkpoints in the evidence are not in conflict", w.name)
		}
		t.Logf("%s: evidence (%s): sizes %d and %d", w.name, e.Reason, ours.Size, theirs.Size)
	}

	// Cosigning has stopped: the witness refuses log A's next checkpoint.
	submitN(t, ctx, ca, k, ehrsim.New(k.submitterName, 3), 1)
	waitFor(t, "log A to sign size 6", time.Minute, func() (bool, error) {
		n, err := logSize(logA.url())
		return n == 6, err
	})
	db, err := sql.Open("mysql", dsnA)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var latest []byte
	if err := db.QueryRow("SELECT note FROM carelog_checkpoints WHERE size = 6").Scan(&latest); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf("old 0\n\n%s", latest)
	resp, err := http.Post(wa.url()+"/add-checkpoint", "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode >= 500 || resp.StatusCode == http.StatusConflict {
		t.Fatalf("frozen witness answered %d to a new checkpoint of the forked log; want a refusal", resp.StatusCode)
	}
	if cp, err := ca.Checkpoint(ctx); err != nil || cp.Size != 5 {
		t.Fatalf("log A's cosigned checkpoint moved past the fork: %v %v", cp, err)
	}
}

func signedGen(k *keyset) *ehrsim.Generator {
	return ehrsim.New(k.submitterName, uint64(time.Now().UnixNano()))
}
