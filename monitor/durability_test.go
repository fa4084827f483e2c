package monitor

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/internal/fakelog"
)

// A monitor killed again and again in the middle of a replay resumes each
// time from verified state and ends with exactly the findings, position and
// index of an uninterrupted run.
func TestResumeAfterKill(t *testing.T) {
	e := newEnv(t)
	const n = 2400
	var entries [][]byte
	for i := range n {
		ev := e.event(i)
		switch {
		case i%97 == 5:
			ev.Purpose = "ETREAT"
		case i >= 380 && i < 420: // a burst crossing chunk boundaries
			ev.Actor.ID, ev.Patient = "snooper", pseudonym(1000+i)
		}
		b := e.sign(ev)
		if i%331 == 17 {
			b = bytes.Replace(b, []byte(`"read"`), []byte(`"print"`), 1) // signature no longer matches
		}
		entries = append(entries, b)
	}
	e.appendAndPublish(entries...)
	rules := Rules{Emergency: true, WatchedPatients: []string{pseudonym(4)}, Snooping: SnoopingRule{MaxPatients: 10, Window: time.Hour}}

	refCfg := e.config()
	refCfg.Rules = rules
	ref := e.monitor(refCfg)
	if res := runOnce(t, ref); res.Logs[0].Replay.Position != n {
		t.Fatalf("reference run: %+v %v", res.Logs[0].Replay, res.Errors)
	}
	wantAlerts, _ := ref.Alerts(context.Background(), AlertFilter{})
	wantIdx, _ := ref.PatientIndices(context.Background(), testOrigin, pseudonym(4))
	if len(ofKind(wantAlerts, KindSnooping)) == 0 || len(ofKind(wantAlerts, KindBadEntry)) == 0 {
		t.Fatalf("the reference run should find snooping and bad entries: %v", summarize(wantAlerts))
	}

	cfg := e.config()
	cfg.Rules = rules
	kills := 0
	for {
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		batches := 0
		m.testHookBatch = func(string, uint64) {
			if batches++; batches == 2 {
				cancel() // killed with the next chunk in flight
			}
		}
		m.RunOnce(ctx)
		cancel()
		st, err := m.store.replayState(context.Background(), m.logs[0].id)
		if err != nil {
			t.Fatal(err)
		}
		// What was persisted is verified: its compact range is the log's
		// tree at that position.
		r, err := rangeFactory.NewRange(0, st.Position, st.Range)
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := e.log.Root(st.Position); !bytes.Equal(rootOf(r), want) {
			t.Fatalf("persisted compact range at %d is not the log's tree", st.Position)
		}
		if st.Position == n {
			got, _ := m.Alerts(context.Background(), AlertFilter{})
			idx, _ := m.PatientIndices(context.Background(), testOrigin, pseudonym(4))
			m.Close()
			if !reflect.DeepEqual(summarize(got), summarize(wantAlerts)) {
				t.Fatalf("after %d kills: alerts\n%v\nwant\n%v", kills, summarize(got), summarize(wantAlerts))
			}
			if !reflect.DeepEqual(idx, wantIdx) {
				t.Fatalf("after %d kills: patient index differs", kills)
			}
			break
		}
		m.Close()
		if kills++; kills > 100 {
			t.Fatal("the replay does not progress across restarts")
		}
	}
	if kills < 3 {
		t.Fatalf("only %d kills: the test did not interrupt the replay", kills)
	}
}

// Every alert reaches the webhook exactly once: retried with back-off while
// the receiver fails, kept in the outbox across a restart, delivered by
// the next monitor, and by Run as alerts are raised.
func TestWebhookExactlyOnceAcrossRestart(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	received := map[string]int{}
	var down atomic.Bool
	var failFirst atomic.Int32
	failFirst.Store(2)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() || failFirst.Add(-1) >= 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var a Alert
		if err := json.NewDecoder(r.Body).Decode(&a); err != nil || a.UID == "" || r.Header.Get("Idempotency-Key") != a.UID {
			t.Errorf("bad webhook request: %v %q", err, r.Header.Get("Idempotency-Key"))
		}
		mu.Lock()
		received[a.UID]++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	emergencies := func(first, count int) [][]byte {
		es := e.routine(first, count)
		for i := 0; i < count; i += 4 {
			ev := e.event(first + i)
			ev.Purpose = "ETREAT"
			es[i] = e.sign(ev)
		}
		return es
	}
	e.appendAndPublish(emergencies(0, 20)...)
	cfg := e.config()
	cfg.Rules.Emergency = true
	cfg.WebhookURL = hook.URL

	m1 := e.monitor(cfg)
	if res := runOnce(t, m1); res.Undelivered != 0 || len(res.Alerts) != 5 {
		t.Fatalf("first pass: %d alerts, %d undelivered, %v", len(res.Alerts), res.Undelivered, res.Errors)
	}
	// The receiver goes down: new alerts wait in the outbox.
	down.Store(true)
	e.appendAndPublish(emergencies(20, 20)...)
	m1.cfg.OnceDeliveryTimeout = 100 * time.Millisecond
	res := runOnce(t, m1)
	if res.Undelivered != 5 || res.ExitCode() != ExitOperational {
		t.Fatalf("receiver down: %d undelivered, exit %d", res.Undelivered, res.ExitCode())
	}
	m1.Close()

	// A new monitor on the same state delivers them.
	down.Store(false)
	m2 := e.monitor(cfg)
	if res := runOnce(t, m2); res.Undelivered != 0 || len(res.Alerts) != 0 {
		t.Fatalf("after restart: %d undelivered, %d new alerts", res.Undelivered, len(res.Alerts))
	}

	// And Run delivers alerts as they come.
	e.appendAndPublish(emergencies(40, 20)...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m2.Run(ctx) }()
	waitFor(t, "Run to deliver the new alerts", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(received) == 15
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not stop")
	}

	stored, _ := m2.Alerts(context.Background(), AlertFilter{})
	if len(stored) != 15 {
		t.Fatalf("%d alerts stored, want 15", len(stored))
	}
	mu.Lock()
	defer mu.Unlock()
	for _, a := range stored {
		if received[a.UID] != 1 {
			t.Errorf("alert %d delivered %d times", a.ID, received[a.UID])
		}
	}
	if len(received) != len(stored) {
		t.Errorf("received %d distinct alerts, stored %d", len(received), len(stored))
	}
}

// A log that cannot be reached is an operational error, not a finding; a
// log serving a checkpoint that does not verify is an integrity finding.
func TestOperationalAndBadCheckpoint(t *testing.T) {
	e := newEnv(t)
	e.appendAndPublish(e.routine(0, 10)...)
	m := e.monitor(e.config())
	if res := runOnce(t, m); res.ExitCode() != ExitClean {
		t.Fatalf("exit %d", res.ExitCode())
	}
	e.log.SetUnavailable(true)
	res := runOnce(t, m)
	if res.ExitCode() != ExitOperational || len(res.Alerts) != 0 || len(res.Errors) == 0 {
		t.Fatalf("log down: exit %d, alerts %v, errors %v", res.ExitCode(), summarize(res.Alerts), res.Errors)
	}
	e.log.SetUnavailable(false)

	// Signed by another key under the log's name.
	other, err := fakelog.New(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := other.SignAt(0)
	e.log.Serve(forged)
	res = runOnce(t, m)
	if got := summarize(res.Alerts); !reflect.DeepEqual(got, []found{{Kind: KindBadCheckpoint, Index: -1}}) || res.ExitCode() != ExitIntegrity {
		t.Fatalf("forged checkpoint: %v exit %d", got, res.ExitCode())
	}

	// Acknowledged, the alert no longer fails the pass; while the log keeps
	// serving the forgery the pass is still not clean.
	if n, err := m.Acknowledge(context.Background(), res.Alerts[0].ID); err != nil || n != 1 {
		t.Fatalf("acknowledge: %d %v", n, err)
	}
	if res = runOnce(t, m); res.ExitCode() != ExitOperational {
		t.Fatalf("after ack, forgery still served: exit %d", res.ExitCode())
	}
	e.log.Publish()
	if res = runOnce(t, m); res.ExitCode() != ExitClean {
		t.Fatalf("after ack, log healthy: exit %d %v", res.ExitCode(), res.Errors)
	}
}

// A checkpoint that lacks the policy's cosignatures is a bad checkpoint.
func TestPolicyNotMet(t *testing.T) {
	e := newEnv(t)
	e.appendAndPublish(e.routine(0, 3)...)
	_, vkey := cosignKey(t, "w.example")
	policy, err := checkpoint.ParsePolicy([]byte("witness w " + vkey + " https://w.example\nquorum w\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config()
	cfg.Logs[0].Policy = policy
	res := runOnce(t, e.monitor(cfg))
	if got := summarize(res.Alerts); !reflect.DeepEqual(got, []found{{Kind: KindBadCheckpoint, Index: -1}}) {
		t.Fatalf("alerts %v", got)
	}
	if res.Logs[0].Verified != nil {
		t.Fatal("an uncosigned checkpoint was taken as verified")
	}
}

func TestStateIsDurable(t *testing.T) {
	s, err := openStore(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	var mode string
	var sync int
	if err := s.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode %q %v", mode, err)
	}
	if err := s.db.QueryRow(`PRAGMA synchronous`).Scan(&sync); err != nil || sync != 2 {
		t.Fatalf("synchronous %d %v, want 2 (FULL)", sync, err)
	}
}

func TestLoadConfig(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	_, wvkey := cosignKey(t, "w1.example")
	writeFile(t, filepath.Join(dir, "policy.txt"), "witness w1 "+wvkey+" https://w1.example\nquorum w1\n")
	writeFile(t, filepath.Join(dir, "submitters.json"), `{"submitters":[{"name":"`+testSubmitter+`","keys":[{"vkey":"`+e.vkey+`"}]}]}`)
	skey, _ := cosignKey(t, "monitor.example")
	writeFile(t, filepath.Join(dir, "cosign.key"), skey+"\n")
	good := `{
	  "state_dir": "state",
	  "listen": ":8480",
	  "logs": [{"url": "` + e.url + `", "origin": "` + testOrigin + `", "vkey": "` + e.log.VKey() + `", "policy_file": "policy.txt"}],
	  "witnesses": [{"name": "w1", "vkey": "` + wvkey + `", "url": "https://w1.example"}],
	  "peers": [{"name": "p", "url": "https://p.example"}],
	  "submitters_file": "submitters.json",
	  "promise_dir": "/var/spool/promises",
	  "merge_delay": "2m",
	  "stale_after": "1h",
	  "poll_interval": "5s",
	  "rules": {"watched_patients": ["` + pseudonym(1) + `"], "snooping": {"max_patients": 50, "window": "1h"}, "key_validity": false},
	  "webhook": {"url": "https://hooks.example/carelog", "min_backoff": "2s"},
	  "replay": {"batch_size": 500, "workers": 3},
	  "cosign_key_file": "cosign.key"
	}`
	path := filepath.Join(dir, "monitor.json")
	writeFile(t, path, good)
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case cfg.StateDir != filepath.Join(dir, "state"), cfg.PromiseDir != "/var/spool/promises":
		t.Errorf("paths: %q %q", cfg.StateDir, cfg.PromiseDir)
	case len(cfg.Logs) != 1 || cfg.Logs[0].Policy == nil || len(cfg.Logs[0].Policy.Witnesses()) != 1:
		t.Errorf("logs: %+v", cfg.Logs)
	case cfg.MergeDelay != 2*time.Minute || cfg.StaleAfter != time.Hour || cfg.PollInterval != 5*time.Second:
		t.Errorf("durations: %v %v %v", cfg.MergeDelay, cfg.StaleAfter, cfg.PollInterval)
	case !cfg.Rules.Emergency || cfg.Rules.KeyValidity || cfg.Rules.Snooping.MaxPatients != 50 || cfg.Rules.Snooping.Window != time.Hour:
		t.Errorf("rules: %+v", cfg.Rules)
	case cfg.WebhookURL == "" || cfg.WebhookMinBackoff != 2*time.Second || cfg.BatchSize != 500 || cfg.Workers != 3:
		t.Errorf("webhook/replay: %+v", cfg)
	case cfg.CosignKey != skey || cfg.Submitters == nil || cfg.ListenAddr != ":8480":
		t.Errorf("keys: %+v", cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New with the loaded config: %v", err)
	}
	m.Close()

	writeFile(t, path, strings.Replace(good, `"merge_delay"`, `"merge_dealy"`, 1))
	if _, err := LoadConfig(path); err == nil {
		t.Error("a misspelt setting was accepted")
	}
	os.Remove(filepath.Join(dir, "submitters.json"))
	writeFile(t, path, good)
	if _, err := LoadConfig(path); err == nil {
		t.Error("a missing submitter registry was accepted")
	}
}
