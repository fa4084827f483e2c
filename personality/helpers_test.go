package personality

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/ehrsim"
	"github.com/carelog/carelog/entry"
	"github.com/carelog/carelog/internal/testdb"
	"github.com/carelog/carelog/submitter"
	"golang.org/x/mod/sumdb/note"
)

// fixture is a log under test with one registered submitter.
type fixture struct {
	t       *testing.T
	cfg     Config
	log     *Log
	srv     *httptest.Server
	client  *client.Log
	logVKey string
	sub     note.Signer
	gen     *ehrsim.Generator
	stop    func()
}

const testOrigin = "carelog.test/log"
const testSubmitter = "ehr.test-hospital"

func newKeys(t *testing.T) (logSigner note.Signer, logVerifier note.Verifier, logVKey string, sub note.Signer, reg *submitter.Registry) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(nil, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	if logSigner, err = note.NewSigner(skey); err != nil {
		t.Fatal(err)
	}
	if logVerifier, err = note.NewVerifier(vkey); err != nil {
		t.Fatal(err)
	}
	sskey, svkey, err := submitter.GenerateEd25519(testSubmitter)
	if err != nil {
		t.Fatal(err)
	}
	if sub, err = submitter.NewSigner(sskey); err != nil {
		t.Fatal(err)
	}
	reg, err = submitter.New([]submitter.Submitter{{Name: testSubmitter, Keys: []submitter.Key{{VKey: svkey}}}})
	if err != nil {
		t.Fatal(err)
	}
	return logSigner, logVerifier, vkey, sub, reg
}

// newFixture starts a log on a fresh MariaDB database (or memory storage if
// dsn is "memory").
func newFixture(t *testing.T, dsn string) *fixture {
	t.Helper()
	signer, verifier, vkey, sub, reg := newKeys(t)
	cfg := Config{
		Signer: signer, Verifier: verifier, Submitters: reg,
		SequencerInterval: 20 * time.Millisecond, CheckpointInterval: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if dsn == "memory" {
		cfg.Memory = true
	} else {
		if dsn == "" {
			dsn = testdb.New(t)
		}
		cfg.MySQLDSN = dsn
	}
	f := &fixture{t: t, cfg: cfg, logVKey: vkey, sub: sub, gen: ehrsim.New(testSubmitter, 1)}
	f.start()
	return f
}

func (f *fixture) start() {
	t := f.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l, err := New(ctx, f.cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(ctx) }()
	f.log = l
	f.srv = httptest.NewServer(l.Handler())
	f.client, err = client.New(client.Config{URL: f.srv.URL, LogKey: f.logVKey, Policy: checkpoint.NoWitnesses()})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		f.srv.Close()
		cancel()
		<-done
		l.Close()
	}
	f.stop = stop
	t.Cleanup(stop)
}

func (f *fixture) signedEvent() []byte {
	f.t.Helper()
	b, err := entry.Sign(f.gen.Next(time.Now()), f.sub)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
