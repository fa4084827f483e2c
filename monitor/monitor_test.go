package monitor

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/internal/fakelog"
)

// A clean, witnessed log: no alert, the replay reaches the tip, exit 0;
// and again after the log grows.
func TestCleanLog(t *testing.T) {
	e := newEnv(t)
	w, err := fakelog.NewWitness("witness-1.example")
	if err != nil {
		t.Fatal(err)
	}
	e.log.AddCosigner(w.Signer())
	wsrv := httptest.NewServer(w.Handler())
	defer wsrv.Close()
	policy, err := checkpoint.ParsePolicy([]byte("witness w1 " + w.VKey() + " " + wsrv.URL + "\nquorum w1\n"))
	if err != nil {
		t.Fatal(err)
	}
	n := e.appendAndPublish(e.routine(0, 257)...)
	if err := w.Set(testOrigin, n); err != nil {
		t.Fatal(err)
	}
	cfg := e.config()
	cfg.Logs[0].Policy = policy
	cfg.Witnesses = []WitnessConfig{{Name: "w1", VKey: w.VKey(), URL: wsrv.URL}}
	m := e.monitor(cfg)

	for _, size := range []uint64{257, 420} {
		if size > e.log.Size() {
			n := e.appendAndPublish(e.routine(int(e.log.Size()), int(size-e.log.Size()))...)
			if err := w.Set(testOrigin, n); err != nil {
				t.Fatal(err)
			}
		}
		res := runOnce(t, m)
		if len(res.Alerts) != 0 || len(res.Errors) != 0 {
			t.Fatalf("size %d: alerts %v, errors %v", size, summarize(res.Alerts), res.Errors)
		}
		if got := res.ExitCode(); got != ExitClean {
			t.Fatalf("size %d: exit code %d, want %d", size, got, ExitClean)
		}
		st := res.Logs[0]
		if st.Verified == nil || st.Verified.Size != size || st.Replay.Position != size || st.Replay.Target != size {
			t.Fatalf("size %d: status %+v", size, st)
		}
		if src := st.Sources["witness/w1"]; src.Size != size || src.Error != "" {
			t.Fatalf("witness source: %+v", src)
		}
	}

	// Its own index: patient 3 is in every entry i with i%7 == 3.
	idx, err := m.PatientIndices(context.Background(), testOrigin, pseudonym(3))
	if err != nil {
		t.Fatal(err)
	}
	var want []uint64
	for i := uint64(3); i < 420; i += 7 {
		want = append(want, i)
	}
	if !reflect.DeepEqual(idx, want) {
		t.Fatalf("patient index: got %d entries, want %d", len(idx), len(want))
	}

	// HTTP surface.
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	var status struct {
		Logs []LogStatus `json:"logs"`
	}
	getJSON(t, srv.URL+"/status", &status)
	if len(status.Logs) != 1 || status.Logs[0].Replay.Position != 420 {
		t.Fatalf("/status: %+v", status)
	}
	var byPatient struct {
		Indices []uint64 `json:"indices"`
	}
	getJSON(t, srv.URL+"/patients/"+pseudonym(3)+"/indices", &byPatient)
	if !reflect.DeepEqual(byPatient.Indices, want) {
		t.Fatalf("/patients: %d indices, want %d", len(byPatient.Indices), len(want))
	}
	var alerts struct {
		Alerts []Alert `json:"alerts"`
	}
	getJSON(t, srv.URL+"/alerts", &alerts)
	if alerts.Alerts == nil || len(alerts.Alerts) != 0 {
		t.Fatalf("/alerts: %+v", alerts)
	}
	metrics := get(t, srv.URL+"/metrics")
	for _, want := range []string{
		`carelog_monitor_replay_position{log="` + testOrigin + `"} 420`,
		`carelog_monitor_verified_size{log="` + testOrigin + `"} 420`,
		`carelog_monitor_alerts_total{kind="rewrite",log="` + testOrigin + `"} 0`,
		`carelog_monitor_entries_verified_total{log="` + testOrigin + `"} 420`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// The peer endpoint serves the verified checkpoint with the log's
	// signature and the witness's cosignature.
	cp := get(t, srv.URL+"/"+checkpoint.OriginID(testOrigin)+"/checkpoint")
	s := requireOpens(t, e, Evidence{Source: "peer", Note: cp})
	if s.Size != 420 || !policy.Satisfied([]byte(cp)) {
		t.Fatalf("peer endpoint served size %d (policy met: %v)", s.Size, policy.Satisfied([]byte(cp)))
	}
}

// An entry's bytes changed behind the log's back (the tree and every signed
// root unchanged): a rewrite alert naming the index, exit code integrity,
// and the replay stops before it. The substitute is itself a valid signed
// entry, so only the root recomputation can catch it.
func TestRewrite(t *testing.T) {
	for _, tc := range []struct {
		name     string
		index    uint64
		heldSize uint64 // a witness checkpoint at this size, if not 0
	}{
		{name: "first entry", index: 0},
		{name: "inside a batch", index: 137},
		{name: "last entry", index: 299},
		{name: "before a witness checkpoint", index: 100, heldSize: 150},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.appendAndPublish(e.routine(0, 300)...)
			cfg := e.config()
			if tc.heldSize != 0 {
				w, _ := fakelog.NewWitness("w.example")
				n, _ := e.log.SignAt(tc.heldSize)
				if err := w.Set(testOrigin, n); err != nil {
					t.Fatal(err)
				}
				ws := httptest.NewServer(w.Handler())
				defer ws.Close()
				cfg.Witnesses = []WitnessConfig{{Name: "w", VKey: w.VKey(), URL: ws.URL}}
			}
			e.log.Rewrite(tc.index, e.sign(e.event(9999)))
			m := e.monitor(cfg)
			res := runOnce(t, m)
			got := summarize(res.Alerts)
			want := []found{{Kind: KindRewrite, Index: int64(tc.index)}}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("alerts %v, want %v (errors %v)", got, want, res.Errors)
			}
			a := res.Alerts[0]
			if a.Range == nil || a.Range.Start != tc.index || len(a.Evidence) == 0 {
				t.Fatalf("alert lacks range or evidence: %+v", a)
			}
			requireOpens(t, e, a.Evidence[0])
			if res.ExitCode() != ExitIntegrity {
				t.Fatalf("exit code %d, want %d", res.ExitCode(), ExitIntegrity)
			}
			if p := res.Logs[0].Replay; p.Position > tc.index || p.Halted == "" {
				t.Fatalf("replay went past the rewritten entry: %+v", p)
			}
			// Another pass: the same finding is not raised again, and the
			// exit code still says integrity.
			res = runOnce(t, m)
			if len(res.Alerts) != 0 || res.ExitCode() != ExitIntegrity {
				t.Fatalf("second pass: alerts %v, exit %d", summarize(res.Alerts), res.ExitCode())
			}
		})
	}
}

// A log that shows different histories to the monitor and to a witness or a
// peer monitor, or switches its own history: a split-view alert with both
// signed checkpoints.
func TestSplitView(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, e *env) *Result
	}{
		{"witness: same size, other root", func(t *testing.T, e *env) *Result {
			e.appendAndPublish(e.routine(0, 20)...)
			b := e.log.ForkAt(15)
			b.Append(e.routine(100, 5)...)
			nb, _ := b.Publish()
			return runWithWitness(t, e, nb)
		}},
		{"witness: smaller, diverging", func(t *testing.T, e *env) *Result {
			e.appendAndPublish(e.routine(0, 20)...)
			b := e.log.ForkAt(10)
			b.Append(e.routine(100, 3)...)
			nb, _ := b.Publish()
			return runWithWitness(t, e, nb)
		}},
		{"witness: larger, proven once the log grows", func(t *testing.T, e *env) *Result {
			e.appendAndPublish(e.routine(0, 20)...)
			b := e.log.ForkAt(15)
			b.Append(e.routine(100, 10)...)
			nb, _ := b.Publish()
			w, ws := witnessServing(t, nb)
			defer ws.Close()
			cfg := e.config()
			cfg.Witnesses = []WitnessConfig{{Name: "w", VKey: w.VKey(), URL: ws.URL}}
			m := e.monitor(cfg)
			res := runOnce(t, m)
			// The log cannot prove 20→25 (it has no size 25): not yet
			// evidence, but the pass is incomplete.
			if len(res.Alerts) != 0 || res.ExitCode() != ExitOperational {
				t.Fatalf("first pass: alerts %v, exit %d, errors %v", summarize(res.Alerts), res.ExitCode(), res.Errors)
			}
			e.appendAndPublish(e.routine(20, 10)...)
			return runOnce(t, m)
		}},
		{"witness: larger, and the log keeps refusing the proof", func(t *testing.T, e *env) *Result {
			e.appendAndPublish(e.routine(0, 20)...)
			b := e.log.ForkAt(15)
			b.Append(e.routine(100, 10)...)
			nb, _ := b.Publish()
			w, ws := witnessServing(t, nb)
			defer ws.Close()
			cfg := e.config()
			cfg.Witnesses = []WitnessConfig{{Name: "w", VKey: w.VKey(), URL: ws.URL}}
			m := e.monitor(cfg)
			if res := runOnce(t, m); len(res.Alerts) != 0 || res.ExitCode() != ExitOperational {
				t.Fatalf("first refusal: alerts %v, exit %d", summarize(res.Alerts), res.ExitCode())
			}
			// Still refused after the merge delay: the log signed a tree it
			// will not stand by.
			e.clock.Advance(cfg.MergeDelay + time.Second)
			return runOnce(t, m)
		}},
		{"peer monitor following the other branch", func(t *testing.T, e *env) *Result {
			e.appendAndPublish(e.routine(0, 20)...)
			b := e.log.ForkAt(12)
			b.Append(e.routine(100, 8)...)
			if _, err := b.Publish(); err != nil {
				t.Fatal(err)
			}
			// A real monitor, on branch b, with its own cosigning key.
			other := newEnv(t)
			other.log = b
			other.serve(b)
			other.reg = e.reg
			pcfg := other.config()
			pcfg.Logs[0].VKey = e.log.VKey()
			skey, vkey := cosignKey(t, "peer.example")
			pcfg.CosignKey = skey
			peer := other.monitor(pcfg)
			if res := runOnce(t, peer); len(res.Alerts) != 0 || len(res.Errors) != 0 {
				t.Fatalf("peer's own pass: %v %v", summarize(res.Alerts), res.Errors)
			}
			ps := httptest.NewServer(peer.Handler())
			defer ps.Close()
			cfg := e.config()
			cfg.Peers = []PeerConfig{{Name: "p", URL: ps.URL, VKey: vkey}}
			return runOnce(t, e.monitor(cfg))
		}},
		{"the log switches branches", func(t *testing.T, e *env) *Result {
			e.appendAndPublish(e.routine(0, 20)...)
			m := e.monitor(e.config())
			if res := runOnce(t, m); len(res.Alerts) != 0 {
				t.Fatalf("first pass: %v", summarize(res.Alerts))
			}
			b := e.log.ForkAt(18)
			b.Append(e.routine(100, 7)...)
			if _, err := b.Publish(); err != nil {
				t.Fatal(err)
			}
			e.serve(b)
			return runOnce(t, m)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			res := tc.run(t, e)
			split := ofKind(res.Alerts, KindSplitView)
			if len(split) != 1 {
				t.Fatalf("split-view alerts: %v (errors %v)", summarize(res.Alerts), res.Errors)
			}
			if res.ExitCode() != ExitIntegrity {
				t.Fatalf("exit code %d", res.ExitCode())
			}
			ev := split[0].Evidence
			if len(ev) != 2 {
				t.Fatalf("evidence: %+v", ev)
			}
			a, b := requireOpens(t, e, ev[0]), requireOpens(t, e, ev[1])
			if a.Size == b.Size && bytes.Equal(a.Hash, b.Hash) {
				t.Fatal("the evidence is the same checkpoint twice")
			}
		})
	}
}

func witnessServing(t *testing.T, n []byte) (*fakelog.Witness, *httptest.Server) {
	t.Helper()
	w, err := fakelog.NewWitness("w.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Set(testOrigin, n); err != nil {
		t.Fatal(err)
	}
	return w, httptest.NewServer(w.Handler())
}

func runWithWitness(t *testing.T, e *env, n []byte) *Result {
	w, ws := witnessServing(t, n)
	t.Cleanup(ws.Close)
	cfg := e.config()
	cfg.Witnesses = []WitnessConfig{{Name: "w", VKey: w.VKey(), URL: ws.URL}}
	return runOnce(t, e.monitor(cfg))
}

// A log that serves a smaller checkpoint after a larger one: rollback
// alert with both. Serving the same checkpoint again is not one.
func TestRollback(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(e *env, old []byte)
		want  []found
	}{
		{"freshly signed smaller tree", func(e *env, old []byte) { e.log.Rollback(12) }, []found{{Kind: KindRollback, Index: -1}}},
		{"an old checkpoint replayed", func(e *env, old []byte) { e.log.Serve(old) }, []found{{Kind: KindRollback, Index: -1}}},
		{"the same checkpoint again", func(e *env, old []byte) {}, []found{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			old := e.appendAndPublish(e.routine(0, 15)...)
			e.appendAndPublish(e.routine(15, 15)...)
			m := e.monitor(e.config())
			if res := runOnce(t, m); len(res.Alerts) != 0 {
				t.Fatalf("first pass: %v", summarize(res.Alerts))
			}
			tc.serve(e, old)
			res := runOnce(t, m)
			if got := summarize(res.Alerts); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("alerts %v, want %v", got, tc.want)
			}
			if len(tc.want) == 0 {
				if res.ExitCode() != ExitClean {
					t.Fatalf("exit %d", res.ExitCode())
				}
				return
			}
			ev := res.Alerts[0].Evidence
			if len(ev) != 2 || requireOpens(t, e, ev[0]).Size != 30 || requireOpens(t, e, ev[1]).Size >= 30 {
				t.Fatalf("evidence: %+v", ev)
			}
			if res.ExitCode() != ExitIntegrity || res.Logs[0].Verified.Size != 30 {
				t.Fatalf("exit %d, verified %d", res.ExitCode(), res.Logs[0].Verified.Size)
			}
		})
	}
}

// Promises handed over HTTP and through the drop directory; the entry
// dropped by the log is a broken promise once the merge delay has passed,
// and not before; kept promises stay silent.
func TestBrokenPromise(t *testing.T) {
	e := newEnv(t)
	e.appendAndPublish(e.routine(0, 10)...)
	kept1, _, _ := e.log.Accept(e.sign(e.event(10)))
	kept2, _, _ := e.log.Accept(e.sign(e.event(11)))
	lost, lostHash, _ := e.log.Accept(e.sign(e.event(12)))
	if !e.log.Drop(lostHash) {
		t.Fatal("drop failed")
	}
	if _, err := e.log.Integrate(); err != nil {
		t.Fatal(err)
	}

	cfg := e.config()
	cfg.PromiseDir = t.TempDir()
	m := e.monitor(cfg)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	answer, _ := json.Marshal(map[string]any{"leaf_hash": lostHash, "promise": lost})
	for _, body := range []string{kept1, string(answer)} {
		resp, err := http.Post(srv.URL+"/promises", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST /promises: %d", resp.StatusCode)
		}
	}
	resp, _ := http.Post(srv.URL+"/promises", "text/plain", strings.NewReader("not a promise"))
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("POST /promises with garbage: %d", resp.StatusCode)
	}
	writeFile(t, filepath.Join(cfg.PromiseDir, "kept2.promise"), kept2)
	writeFile(t, filepath.Join(cfg.PromiseDir, "junk.promise"), "junk")

	res := runOnce(t, m)
	if len(res.Alerts) != 0 || res.ExitCode() != ExitClean {
		t.Fatalf("before the merge delay: %v exit %d %v", summarize(res.Alerts), res.ExitCode(), res.Errors)
	}
	if res.Logs[0].PendingPromises != 1 {
		t.Fatalf("pending promises %d, want 1 (the dropped one)", res.Logs[0].PendingPromises)
	}
	if _, err := os.Stat(filepath.Join(cfg.PromiseDir, "kept2.promise")); !os.IsNotExist(err) {
		t.Fatal("an ingested promise file was not removed")
	}
	if _, err := os.Stat(filepath.Join(cfg.PromiseDir, "junk.promise.rejected")); err != nil {
		t.Fatal("a bad promise file was not set aside")
	}

	// The log keeps working (so it is not stale), but never includes the
	// dropped entry.
	e.clock.Advance(cfg.MergeDelay / 2)
	e.appendAndPublish(e.routine(20, 3)...)
	if res := runOnce(t, m); len(res.Alerts) != 0 {
		t.Fatalf("inside the merge delay: %v", summarize(res.Alerts))
	}
	e.clock.Advance(cfg.MergeDelay/2 + 1)
	res = runOnce(t, m)
	broken := ofKind(res.Alerts, KindBrokenPromise)
	if len(broken) != 1 || len(res.Alerts) != 1 {
		t.Fatalf("alerts %v, want one broken promise", summarize(res.Alerts))
	}
	if broken[0].Evidence[0].Note != lost {
		t.Fatal("the broken-promise alert does not carry the promise")
	}
	requireOpens(t, e, broken[0].Evidence[1])
	if res.ExitCode() != ExitIntegrity {
		t.Fatalf("exit %d", res.ExitCode())
	}
}

// Stale logs: a checkpoint older than StaleAfter; a log that does not
// advance while a promise is pending.
func TestStaleLog(t *testing.T) {
	t.Run("older than stale_after", func(t *testing.T) {
		e := newEnv(t)
		e.appendAndPublish(e.routine(0, 5)...)
		cfg := e.config()
		cfg.StaleAfter = 10 * time.Minute
		m := e.monitor(cfg)
		if res := runOnce(t, m); len(res.Alerts) != 0 {
			t.Fatal(summarize(res.Alerts))
		}
		e.clock.Advance(cfg.StaleAfter - 1)
		if res := runOnce(t, m); len(res.Alerts) != 0 {
			t.Fatal("stale before stale_after", summarize(res.Alerts))
		}
		e.clock.Advance(2)
		res := runOnce(t, m)
		if got := summarize(res.Alerts); !reflect.DeepEqual(got, []found{{Kind: KindStaleLog, Index: -1}}) {
			t.Fatalf("alerts %v", got)
		}
	})
	t.Run("no progress while a promise is pending", func(t *testing.T) {
		e := newEnv(t)
		e.appendAndPublish(e.routine(0, 5)...)
		cfg := e.config()
		m := e.monitor(cfg)
		runOnce(t, m)
		e.clock.Advance(1)
		p, _, _ := e.log.Accept(e.sign(e.event(5))) // never integrated
		if _, err := m.AddPromise(context.Background(), []byte(p)); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(cfg.MergeDelay + 1)
		res := runOnce(t, m)
		got := summarize(res.Alerts)
		want := []found{{Kind: KindBrokenPromise, Index: -1}, {Kind: KindStaleLog, Index: -1}}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("alerts %v, want %v", got, want)
		}
	})
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(get(t, url)), v); err != nil {
		t.Fatal(err)
	}
}
