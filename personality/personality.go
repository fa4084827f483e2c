// Package personality is carelog's log front end (the binary carelog-log):
// it validates signed access events, appends them to a Trillian tree on
// MariaDB/MySQL, signs C2SP checkpoints of the tree, and serves checkpoints,
// proofs and entries over HTTP (DESIGN.md section 5) and gRPC.
package personality

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/personality/tiles"
	"github.com/google/trillian"
	"golang.org/x/time/rate"
)

// Log is one running log personality.
type Log struct {
	cfg      Config
	origin   string
	logger   *slog.Logger
	metrics  *metrics
	db       *sql.DB
	trill    *trillianConn
	treeID   int64
	store    store
	ckpt     *checkpointer
	appender appender
	seq      *batchSequencer // nil unless batched sequencing
	tiler    *tiles.Tiler
	limiter  *limiter
	handler  http.Handler

	policy *checkpoint.Policy
	wit    *witnessing // nil without witnesses
	pubMu  sync.RWMutex
	cosig  []byte // latest note that met the policy
	cosigN uint64 // its size
}

// New sets the log up: connects to the database (creating it and the
// tables it needs), starts or dials Trillian, finds or creates the tree,
// and loads the last signed checkpoint. Nothing is served until Run.
func New(ctx context.Context, cfg Config) (*Log, error) {
	cfg.Defaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("log config: %w", err)
	}
	quietTrillian()
	l := &Log{cfg: cfg, origin: cfg.Signer.Name(), logger: cfg.Logger.With("component", "log"), metrics: newMetrics()}
	l.limiter = newLimiter(cfg.RateLimit, cfg.RateBurst)
	ok := false
	defer func() {
		if !ok {
			l.Close()
		}
	}()

	var err error
	switch {
	case cfg.MySQLDSN != "":
		if l.db, err = openDatabase(ctx, cfg.MySQLDSN); err != nil {
			return nil, err
		}
		if l.store, err = newMySQLStore(ctx, l.db); err != nil {
			return nil, err
		}
		if cfg.TrillianLogAddr != "" {
			l.trill, err = externalTrillian(cfg)
		} else {
			if err := provisionTrillianSchema(ctx, l.db, cfg.TrillianSchema); err != nil {
				return nil, err
			}
			l.trill, err = mysqlTrillian(ctx, l.db, cfg)
		}
	default:
		l.logger.Warn("MEMORY MODE: Trillian runs on memory storage and nothing is kept; " +
			"every entry and checkpoint is lost when this process stops. Use --mysql for anything but a try-out.")
		l.store = newMemoryStore()
		l.trill, err = memoryTrillian(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	newType := trillian.TreeType_PREORDERED_LOG
	if cfg.Sequencing == "trillian" || l.db == nil {
		newType = trillian.TreeType_LOG
	}
	var treeType trillian.TreeType
	if l.treeID, treeType, err = ensureTree(ctx, l.trill, l.store, l.origin, cfg.TreeID, newType, l.logger); err != nil {
		return nil, err
	}
	switch {
	case treeType == trillian.TreeType_PREORDERED_LOG:
		if l.db == nil {
			return nil, errors.New("batched sequencing needs MariaDB/MySQL")
		}
		l.seq = newBatchSequencer(l.db, l.origin, l.treeID, l.trill.log, cfg, l.logger, l.metrics)
		l.appender = l.seq
	case l.db == nil:
		l.appender = &memoryDedup{next: &queueAppender{log: l.trill.log, treeID: l.treeID}, seen: map[string]dedupRecord{}}
	default:
		l.appender = &queueAppender{log: l.trill.log, treeID: l.treeID}
	}
	if l.tiler, err = tiles.New(ctx, tiles.Config{
		Origin: l.origin, DB: l.db, Registry: l.metrics.reg, Logger: l.logger,
		Leaves: func(ctx context.Context, start, end uint64) ([][]byte, error) {
			es, err := l.leaves(ctx, start, end)
			if err != nil {
				return nil, err
			}
			out := make([][]byte, len(es))
			for i, e := range es {
				out[i] = e.Data
			}
			return out, nil
		},
	}); err != nil {
		return nil, err
	}
	l.ckpt = &checkpointer{
		origin: l.origin, treeID: l.treeID, signer: cfg.Signer, trill: l.trill.log,
		store: l.store, tiler: l.tiler, logger: l.logger, metrics: l.metrics,
	}
	if err := l.ckpt.load(ctx); err != nil {
		return nil, err
	}
	l.policy = cfg.Policy
	if l.policy == nil {
		l.policy = checkpoint.NoWitnesses()
	}
	if len(l.policy.Witnesses()) > 0 {
		l.wit = newWitnessing(l, l.policy, cfg.WitnessTimeout)
		l.ckpt.onSigned = l.wit.signed
	}
	if n, err := l.store.Cosigned(ctx, l.origin); err != nil {
		return nil, err
	} else if n != nil {
		cp, err := checkpoint.Open(n, l.origin, cfg.Verifier)
		if err != nil {
			return nil, fmt.Errorf("the stored cosigned checkpoint does not verify: %w", err)
		}
		l.publishCosigned(cp.Size, n)
	}
	l.handler = l.routes()
	ok = true
	return l, nil
}

// Origin returns the log's origin.
func (l *Log) Origin() string { return l.origin }

// TreeID returns the Trillian tree the log writes.
func (l *Log) TreeID() int64 { return l.treeID }

// Handler serves the HTTP API.
func (l *Log) Handler() http.Handler { return l.handler }

// SignCheckpoint signs a checkpoint of the current tree now, if it grew. The
// background loop does this every CheckpointInterval; tests and tools can
// call it to avoid waiting.
func (l *Log) SignCheckpoint(ctx context.Context) error { return l.ckpt.step(ctx) }

// PublishedCheckpoint returns the checkpoint note /checkpoint serves: the
// newest one that meets the witness policy, with the cosignatures attached;
// nil before the first.
func (l *Log) PublishedCheckpoint() []byte {
	latest := l.ckpt.Latest()
	l.pubMu.RLock()
	cosig, cosigN := l.cosig, l.cosigN
	l.pubMu.RUnlock()
	if cosig != nil && latest != nil && cosigN >= latest.Size {
		return cosig
	}
	if latest != nil && l.policy.Satisfied(latest.Note) {
		return latest.Note // the policy needs no cosignature
	}
	return cosig
}

func (l *Log) publishedSigned() *checkpoint.Checkpoint {
	n := l.PublishedCheckpoint()
	if n == nil {
		return nil
	}
	body, err := checkpoint.NoteText(n)
	if err != nil {
		return nil
	}
	cp, err := checkpoint.ParseBody(body)
	if err != nil {
		return nil
	}
	return &cp
}

// cosignedSize is the size of the latest policy-satisfying checkpoint.
func (l *Log) cosignedSize() *uint64 {
	l.pubMu.RLock()
	defer l.pubMu.RUnlock()
	if l.cosig == nil {
		return nil
	}
	n := l.cosigN
	return &n
}

func (l *Log) publishCosigned(size uint64, note []byte) {
	l.pubMu.Lock()
	defer l.pubMu.Unlock()
	if l.cosig == nil || size > l.cosigN {
		l.cosig, l.cosigN = note, size
		l.metrics.cosignedSize.Set(float64(size))
	}
}

// Run signs checkpoints and serves HTTP on Config.Listen (and gRPC, if
// configured) until ctx ends, then shuts down gracefully.
func (l *Log) Run(ctx context.Context) error {
	var ln net.Listener
	if l.cfg.Listen != "" {
		var err error
		if ln, err = net.Listen("tcp", l.cfg.Listen); err != nil {
			return fmt.Errorf("listening on %s: %w", l.cfg.Listen, err)
		}
	}
	return l.Serve(ctx, ln)
}

// Serve is Run on a listener the caller made (nil: no HTTP).
func (l *Log) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(2)
	go func() { defer wg.Done(); l.ckpt.run(ctx, l.cfg.CheckpointInterval) }()
	go func() { defer wg.Done(); (&indexer{l: l}).run(ctx, l.cfg.CheckpointInterval) }()
	if l.wit != nil {
		wg.Add(1)
		go func() { defer wg.Done(); l.wit.run(ctx, l.cfg.WitnessRetry) }()
	}
	if l.seq != nil {
		wg.Add(1)
		go func() { defer wg.Done(); l.seq.run(ctx) }()
	}

	errc := make(chan error, 2)
	var srv *http.Server
	if ln != nil {
		srv = &http.Server{
			Handler:           l.handler,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    16 << 10,
		}
		l.logger.Info("serving HTTP", slog.String("addr", ln.Addr().String()), slog.String("origin", l.origin))
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	if l.cfg.GRPCListen != "" {
		stop, err := l.serveGRPC(l.cfg.GRPCListen, errc)
		if err != nil {
			return err
		}
		defer stop()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	if srv != nil {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = srv.Shutdown(sctx)
		scancel()
	}
	return err
}

// Close releases Trillian and the database.
func (l *Log) Close() {
	if l.trill != nil {
		l.trill.close()
		l.trill = nil
	}
	if l.db != nil {
		_ = l.db.Close()
		l.db = nil
	}
}

// limiter is a token bucket per submitter.
type limiter struct {
	rate  rate.Limit
	burst int
	mu    sync.Mutex
	per   map[string]*rate.Limiter
}

func newLimiter(perSecond float64, burst int) *limiter {
	return &limiter{rate: rate.Limit(perSecond), burst: burst, per: map[string]*rate.Limiter{}}
}

func (l *limiter) allow(sub string) bool {
	if l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	lim, ok := l.per[sub]
	if !ok {
		lim = rate.NewLimiter(l.rate, l.burst)
		l.per[sub] = lim
	}
	l.mu.Unlock()
	return lim.Allow()
}
