package monitor

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/entry"
	"github.com/carelog/carelog/internal/fakelog"
	"github.com/carelog/carelog/submitter"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

const (
	testOrigin    = "log.example.org/carelog"
	testSubmitter = "ehr.example-hospital.org"
)

// baseTime is the event time of entry 0; test events are a minute apart
// unless a case says otherwise.
var baseTime = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

// env is one fake log served over HTTP, a registered submitter and a clock.
type env struct {
	t       testing.TB
	log     *fakelog.Log
	handler atomic.Pointer[http.Handler] // what the log URL serves; swap to show another branch
	url     string
	signer  note.Signer
	vkey    string // the submitter's verifier key
	reg     *submitter.Registry
	clock   *clock
	seq     atomic.Uint64 // event ids
}

func newEnv(t testing.TB) *env {
	t.Helper()
	l, err := fakelog.New(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	skey, vkey, err := submitter.GenerateEd25519(testSubmitter)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := submitter.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := submitter.New([]submitter.Submitter{{Name: testSubmitter, Keys: []submitter.Key{{VKey: vkey}}}})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, log: l, signer: signer, vkey: vkey, reg: reg, clock: &clock{now: baseTime.Add(24 * time.Hour)}}
	e.serve(l)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*e.handler.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	e.url = srv.URL
	l.SetClock(e.clock.Now)
	return e
}

// serve makes the log URL serve l (for instance one branch of a fork).
func (e *env) serve(l *fakelog.Log) {
	h := l.Handler()
	e.handler.Store(&h)
}

// config is a monitor config for the env's log with a fresh state dir,
// small batches (so tests cross many batch boundaries) and quiet logs.
func (e *env) config() Config {
	return Config{
		Logs:                []LogConfig{{URL: e.url, Origin: testOrigin, VKey: e.log.VKey()}},
		Submitters:          e.reg,
		StateDir:            e.t.TempDir(),
		MergeDelay:          time.Hour,
		PollInterval:        20 * time.Millisecond,
		BatchSize:           50,
		Workers:             2,
		WebhookMinBackoff:   5 * time.Millisecond,
		WebhookMaxBackoff:   50 * time.Millisecond,
		OnceDeliveryTimeout: 5 * time.Second,
		Now:                 e.clock.Now,
		Logger:              slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func (e *env) monitor(cfg Config) *Monitor {
	e.t.Helper()
	m, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { m.Close() })
	return m
}

// pseudonym is a well-formed pseudonym for test patient n.
func pseudonym(n int) string {
	return entry.Pseudonym([]byte("org key"), []byte("salt"), fmt.Sprintf("patient-%d", n))
}

// event is a routine access: a doctor reading patient i%7's observation,
// at baseTime + i minutes.
func (e *env) event(i int) *entry.Event {
	id := e.seq.Add(1)
	return &entry.Event{
		V: 1, ID: fmt.Sprintf("%08x-0000-4000-8000-%012x", id, id),
		Time:   baseTime.Add(time.Duration(i) * time.Minute).Format(time.RFC3339),
		Action: "R", Event: "read", Outcome: 0,
		Actor:    entry.Actor{ID: fmt.Sprintf("dr-%d", i%5), Role: "doctor", Org: "hosp-1"},
		Patient:  pseudonym(i % 7),
		Purpose:  "TREAT",
		Resource: entry.Resource{Type: "Observation", ID: fmt.Sprintf("obs-%d", i)},
		Source:   entry.Source{System: testSubmitter},
	}
}

func (e *env) sign(ev *entry.Event) []byte {
	e.t.Helper()
	b, err := entry.Sign(ev, e.signer)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// routine returns n signed routine entries numbered from first.
func (e *env) routine(first, n int) [][]byte {
	var out [][]byte
	for i := first; i < first+n; i++ {
		out = append(out, e.sign(e.event(i)))
	}
	return out
}

func (e *env) appendAndPublish(entries ...[]byte) []byte {
	e.t.Helper()
	e.log.Append(entries...)
	n, err := e.log.Publish()
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// cosignKey makes an Ed25519 key for cosignature/v1: the private key and
// the type-0x04 verifier key.
func cosignKey(t *testing.T, name string) (skey, vkey string) {
	t.Helper()
	skey, v, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	if vkey, err = fnote.VKeyToCosignatureV1(v); err != nil {
		t.Fatal(err)
	}
	return skey, vkey
}

// clock is a settable clock for merge delays and staleness.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// found is an alert reduced to what tests compare.
type found struct {
	Kind  Kind
	Index int64 // -1 if none
	Actor string
}

func summarize(as []Alert) []found {
	out := []found{}
	for _, a := range as {
		f := found{Kind: a.Kind, Index: -1, Actor: a.Actor}
		if a.Index != nil {
			f.Index = int64(*a.Index)
		}
		if a.Kind != KindSnooping {
			f.Actor = ""
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b found) int {
		if a.Kind != b.Kind {
			if a.Kind < b.Kind {
				return -1
			}
			return 1
		}
		return int(a.Index - b.Index)
	})
	return out
}

func ofKind(as []Alert, k Kind) []Alert {
	var out []Alert
	for _, a := range as {
		if a.Kind == k {
			out = append(out, a)
		}
	}
	return out
}

func runOnce(t *testing.T, m *Monitor) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return m.RunOnce(ctx)
}

// requireOpens checks that an evidence note is a checkpoint signed by the
// log's key and returns it.
func requireOpens(t *testing.T, e *env, ev Evidence) *checkpoint.Signed {
	t.Helper()
	v, err := note.NewVerifier(e.log.VKey())
	if err != nil {
		t.Fatal(err)
	}
	s, err := checkpoint.Open([]byte(ev.Note), testOrigin, v)
	if err != nil {
		t.Fatalf("evidence from %s does not verify with the log key: %v", ev.Source, err)
	}
	return s
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
