// Package witness is carelog's witness: it cosigns a log's checkpoints only
// when they are consistent with everything it cosigned before, and it
// gossips with peer witnesses to prove split views.
//
// It speaks C2SP tlog-witness (POST /add-checkpoint and the monitoring
// endpoint GET /<hex sha256(origin)>/checkpoint) with C2SP
// tlog-cosignature cosignature/v1 Ed25519 signatures, so any C2SP log can
// use it. Per log it keeps the latest cosigned checkpoint in a SQLite
// database, advanced by compare-and-swap in one transaction and on disk
// before the cosignature leaves. It never imports the log's stack: a
// witness trusts nothing but the log's public key.
//
// Two log-signed checkpoints that cannot both be true (same size and
// different roots, or different sizes and no valid consistency proof from
// the log) are Evidence of a split view. Evidence is stored, served at
// GET /evidence, logged, counted and posted to a webhook, and the witness
// refuses to cosign that log (423 Locked) until an operator runs
// ClearEvidence (`carelog-witness evidence clear`).
package witness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/carelog/carelog/checkpoint"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// Witness is a running witness. Build it with New; serve it with Run (or
// mount Handler yourself); Close it when done.
type Witness struct {
	cfg     Config
	log     *slog.Logger
	signer  note.Signer
	vkey    string
	store   *store
	logs    map[string]*logState // by origin
	byID    map[string]*logState // by checkpoint.OriginID(origin)
	logList []*logState          // in configuration order
	peers   []*peer
	metrics *metrics
	handler http.Handler
}

type logState struct {
	origin   string
	id       string
	url      string
	verifier note.Verifier
}

type peer struct {
	name     string
	url      string
	verifier note.Verifier
}

// New checks cfg, opens the state database and pins every configured log's
// key in it. A log the state already knows under a different key is an
// error wrapping ErrKeyChanged: the witness refuses to start rather than
// trust a new key silently.
func New(cfg Config) (*Witness, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	signer, err := fnote.NewSignerForCosignatureV1(cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("witness key: %w", err)
	}
	vkey, err := CosignatureVKey(cfg.Key)
	if err != nil {
		return nil, err
	}
	w := &Witness{
		cfg:     cfg,
		log:     cfg.Logger,
		signer:  signer,
		vkey:    vkey,
		logs:    map[string]*logState{},
		byID:    map[string]*logState{},
		metrics: newMetrics(),
	}
	for _, lc := range cfg.Logs {
		lg, err := newLogState(lc)
		if err != nil {
			return nil, err
		}
		if _, dup := w.logs[lg.origin]; dup {
			return nil, fmt.Errorf("witness config: log %q listed twice", lg.origin)
		}
		w.logs[lg.origin], w.byID[lg.id] = lg, lg
		w.logList = append(w.logList, lg)
	}
	for _, pc := range cfg.Peers {
		p, err := newPeer(pc)
		if err != nil {
			return nil, err
		}
		if p.verifier.Name() == signer.Name() && p.verifier.KeyHash() == signer.KeyHash() {
			return nil, fmt.Errorf("witness config: peer %q has this witness's own key", p.name)
		}
		w.peers = append(w.peers, p)
	}

	w.store, err = openStore(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	for _, lc := range cfg.Logs {
		if err := w.store.pinKey(ctx, lc.Origin, strings.TrimSpace(lc.Key)); err != nil {
			w.store.close()
			return nil, err
		}
	}
	for _, lg := range w.logList {
		frozen, err := w.store.frozen(ctx, lg.origin)
		if err != nil {
			w.store.close()
			return nil, err
		}
		if frozen {
			w.metrics.frozen.WithLabelValues(lg.origin).Set(1)
			w.log.Error("split-view evidence is on record: not cosigning this log until an operator clears it", slog.String("origin", lg.origin))
		} else {
			w.metrics.frozen.WithLabelValues(lg.origin).Set(0)
		}
		if cur, err := w.store.latest(ctx, lg.origin); err == nil && cur != nil {
			w.metrics.size.WithLabelValues(lg.origin).Set(float64(cur.Size))
		}
	}
	w.handler = w.routes()
	return w, nil
}

func newLogState(lc LogConfig) (*logState, error) {
	if lc.Origin == "" {
		return nil, errors.New("witness config: a log has no origin")
	}
	v, err := fnote.NewVerifier(strings.TrimSpace(lc.Key))
	if err != nil {
		return nil, fmt.Errorf("witness config: log %q: key: %w", lc.Origin, err)
	}
	u := strings.TrimSuffix(lc.URL, "/")
	if u != "" {
		if err := checkURL(u); err != nil {
			return nil, fmt.Errorf("witness config: log %q: url: %w", lc.Origin, err)
		}
	}
	return &logState{origin: lc.Origin, id: checkpoint.OriginID(lc.Origin), url: u, verifier: v}, nil
}

func newPeer(pc PeerConfig) (*peer, error) {
	v, err := fnote.NewVerifierForCosignatureV1(strings.TrimSpace(pc.Key))
	if err != nil {
		return nil, fmt.Errorf("witness config: peer %q: key: %w", pc.Name, err)
	}
	name := pc.Name
	if name == "" {
		name = v.Name()
	}
	u := strings.TrimSuffix(pc.URL, "/")
	if err := checkURL(u); err != nil {
		return nil, fmt.Errorf("witness config: peer %q: url: %w", name, err)
	}
	return &peer{name: name, url: u, verifier: v}, nil
}

// VerifierKey returns the witness's cosignature/v1 verifier key, the key
// logs and policy files name it by.
func (w *Witness) VerifierKey() string { return w.vkey }

// Handler serves the witness's HTTP endpoints under Config.Prefix:
// POST /add-checkpoint, GET /<hex sha256(origin)>/checkpoint, GET /evidence,
// GET /metrics and GET /healthz.
func (w *Witness) Handler() http.Handler { return w.handler }

// Close closes the state database. Call it after Run has returned.
func (w *Witness) Close() error { return w.store.close() }

// HTTP server timeouts: a slow or stalled client cannot hold a connection
// (or a write transaction) for long.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	shutdownTimeout   = 15 * time.Second
)

// Run listens on Config.Addr and serves until ctx ends, gossiping every
// Config.GossipInterval and pulling every Config.PullInterval. When ctx
// ends it stops accepting requests, lets the ones in flight finish, and
// returns nil.
func (w *Witness) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", w.cfg.Addr)
	if err != nil {
		return fmt.Errorf("witness: listen: %w", err)
	}
	return w.Serve(ctx, ln)
}

// Serve is Run on a listener the caller opened.
func (w *Witness) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           w.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(w.log.Handler(), slog.LevelWarn),
	}
	w.log.Info("witness serving", slog.String("addr", ln.Addr().String()), slog.String("vkey", w.vkey),
		slog.Int("logs", len(w.logList)), slog.Int("peers", len(w.peers)))

	loopCtx, stopLoops := context.WithCancel(ctx)
	defer stopLoops()
	var wg sync.WaitGroup
	if len(w.peers) > 0 && w.cfg.GossipInterval > 0 {
		wg.Go(func() { every(loopCtx, w.cfg.GossipInterval, func(ctx context.Context) { w.GossipOnce(ctx) }) })
	}
	if w.cfg.PullInterval > 0 {
		wg.Go(func() { every(loopCtx, w.cfg.PullInterval, func(ctx context.Context) { w.PullOnce(ctx) }) })
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		stopLoops()
		wg.Wait()
		return fmt.Errorf("witness: serve: %w", err)
	case <-ctx.Done():
	}
	w.log.Info("witness shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	stopLoops()
	wg.Wait()
	if err != nil {
		return fmt.Errorf("witness: shutdown: %w", err)
	}
	w.log.Info("witness stopped")
	return nil
}

// every runs fn now and then every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		fn(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
