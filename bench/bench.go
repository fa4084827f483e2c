// Package bench is carelog's benchmark harness: it measures, in one run
// against one MariaDB/MySQL server, raw Trillian (the reference) and carelog
// end to end, and reports the ratios issue 6 sets targets for:
//
//  1. raw Trillian QueueLeaf throughput, with Trillian's own sequencer;
//  2. carelog ingest of signed entries with a durable acknowledgement
//     (POST /add-entry answered 200 with an index), and its ratio to (1);
//  3. merge delay (acknowledgement → inclusion proof served) at half of
//     the rate of (2);
//  4. delay to a 2-of-3 cosigned checkpoint at that rate;
//  5. inclusion proofs per second, carelog vs raw Trillian
//     GetInclusionProof on a tree of the same size;
//  6. the peak resident memory of every component.
//
// Raw Trillian runs in the harness's process, as carelog-log runs it
// (personality.StartTrillian). The log and the three witnesses run as their
// own processes (the carelog-log and carelog-witness binaries), so that each
// one's memory and CPU can be read from /proc; the harness talks to them
// over loopback HTTP only, as EHR systems and clients would.
//
// Benchmarks are not tests: nothing here asserts a timing. Run it with
// `carelog bench` (docs/benchmarks.md) or, in-process, with
// `go test -run '^$' -bench . ./bench/`.
package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/carelog/carelog/personality"
	gomysql "github.com/go-sql-driver/mysql"
	"github.com/google/trillian"
)

// Config says what to run. Zero values take the defaults of Defaults.
type Config struct {
	// MySQL is the server's DSN without a database name. The harness
	// creates fresh databases carelog_bench_<random>[_ref] and drops them.
	MySQL string
	// Warmup precedes every measured window and is not counted.
	Warmup time.Duration
	// Duration is the measured window of the throughput runs (1, 2).
	Duration time.Duration
	// LatencyDuration is the window of the delay run (3, 4).
	LatencyDuration time.Duration
	// ProofDuration is the window of each proof run (5).
	ProofDuration time.Duration
	// Clients is the concurrency of the QueueLeaf reference and of both
	// proof runs; IngestClients that of carelog's ingest and delay runs.
	Clients       int
	IngestClients int
	// Tree is the size of the trees proofs are asked of.
	Tree uint64
	// LogArgs are extra carelog-log flags, e.g. --checkpoint-interval.
	LogArgs []string
	// Bin holds carelog-log and carelog-witness; empty builds them.
	Bin string
	// Keep keeps the databases and the working directory.
	Keep bool
	// Progress receives progress lines (e.g. os.Stderr); nil: none.
	Progress io.Writer
}

// Defaults fills in zero fields.
func (c *Config) Defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.MySQL == "" {
		c.MySQL = "root@tcp(127.0.0.1:3306)/"
	}
	def(&c.Warmup, 2*time.Second)
	def(&c.Duration, 20*time.Second)
	def(&c.LatencyDuration, 20*time.Second)
	def(&c.ProofDuration, 10*time.Second)
	if c.Clients == 0 {
		c.Clients = 32
	}
	if c.IngestClients == 0 {
		c.IngestClients = 256
	}
	if c.Tree == 0 {
		c.Tree = 70_000
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Result is everything one run measured.
type Result struct {
	Config  Config
	Machine string
	MariaDB string

	QueueLeaf QueueLeafResult // (1)
	Fill      Rate            // AddSequencedLeaves filling the reference tree of (5)
	RefProofs Rate            // (5), raw Trillian

	EntrySize int
	Ingest    Rate // (2)
	Delays    DelayResult
	Proofs    Rate // (5), carelog

	Log       *Component
	Witnesses []*Component
	MariaDBD  *Component // nil when not on this machine
	Harness   *Component
	// IngestIntegrated is how fast the cosigned checkpoint grew during
	// (2); Backlog is how far it was behind the acknowledged entries when
	// (2) ended, and Drained how long it took to catch up before (3).
	IngestIntegrated Rate
	AfterIngest      Pipeline
	Backlog          int64
	Drained          time.Duration
	// Phases is what each component and the database did in each measured
	// window, by phase: "1", "2", "3", "5 raw", "5".
	Phases map[string]*Phase
	// LogRSS is carelog-log's resident memory after (2) and at the end:
	// if it kept growing with the tree, memory would not be bounded.
	LogRSS [2]uint64
	// DBSize is the log database's size after (2) and at the end, and
	// BufferPool InnoDB's buffer pool: once the tables outgrow it, random
	// index inserts read pages from disk.
	DBSize     [2]uint64
	BufferPool uint64
	OnTheSpot  int64 // entries signed during measurement
	Elapsed    time.Duration
}

// IngestRatio is carelog's ingest over raw QueueLeaf's queued rate.
func (r *Result) IngestRatio() float64 {
	return ratio(r.Ingest.PerSecond(), r.QueueLeaf.Queued.PerSecond())
}

// ProofRatio is carelog's proofs per second over raw Trillian's.
func (r *Result) ProofRatio() float64 {
	return ratio(r.Proofs.PerSecond(), r.RefProofs.PerSecond())
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// Summary is the machine-readable last line of a run.
func (r *Result) Summary() string {
	return fmt.Sprintf("carelog-bench ingest_ratio=%.2f proof_ratio=%.2f merge_p99_ms=%d cosigned_p99_ms=%d ingest_per_s=%.0f proofs_per_s=%.0f",
		r.IngestRatio(), r.ProofRatio(), r.Delays.Merge.P99.Milliseconds(), r.Delays.Cosigned.P99.Milliseconds(),
		r.Ingest.PerSecond(), r.Proofs.PerSecond())
}

// Run runs every measurement in order and returns what it measured.
func Run(ctx context.Context, cfg Config) (_ *Result, err error) {
	cfg.Defaults()
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("interrupted: %w", ctx.Err())
		}
	}()
	start := time.Now()
	res := &Result{Config: cfg, Machine: fmt.Sprintf("%d CPUs, %s/%s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)}
	say := func(format string, args ...any) {
		fmt.Fprintf(cfg.Progress, "[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	server, err := gomysql.ParseDSN(cfg.MySQL)
	if err != nil {
		return nil, fmt.Errorf("--mysql: %w", err)
	}
	if server.DBName != "" {
		return nil, fmt.Errorf("--mysql %q names a database; give the server only (the harness makes its own databases)", cfg.MySQL)
	}
	sdb, err := sql.Open("mysql", server.FormatDSN())
	if err != nil {
		return nil, err
	}
	defer sdb.Close()
	if err := sdb.QueryRowContext(ctx, "SELECT VERSION(), @@innodb_buffer_pool_size").Scan(&res.MariaDB, &res.BufferPool); err != nil {
		return nil, fmt.Errorf("MariaDB/MySQL at %s: %w", server.Addr, err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	base := "carelog_bench_" + hex.EncodeToString(b)
	dsn := func(name string) string {
		c := server.Clone()
		c.DBName = name
		return c.FormatDSN()
	}
	refDB, logDB := base+"_ref", base
	defer func() {
		if cfg.Keep {
			say("keeping databases %s and %s", logDB, refDB)
			return
		}
		for _, name := range []string{refDB, logDB} {
			_, _ = sdb.Exec("DROP DATABASE IF EXISTS " + name)
		}
	}()
	dir, err := os.MkdirTemp("", "carelog-bench-")
	if err != nil {
		return nil, err
	}
	defer func() {
		kept, _ := os.ReadDir(dir)
		if cfg.Keep || err != nil && len(kept) > 0 {
			say("working directory (keys, configs, process logs): %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()

	// Components to watch.
	res.Harness = &Component{Name: "harness", PID: os.Getpid()}
	watched := []*Component{res.Harness}
	if server.Net == "tcp" && isLoopback(server.Addr) {
		if pid := FindProcess("mariadbd", "mysqld"); pid != 0 {
			res.MariaDBD = &Component{Name: "mariadbd", PID: pid}
			watched = append(watched, res.MariaDBD)
		}
	}

	bin := cfg.Bin
	if bin == "" {
		bin = dir + "/bin"
		say("building %s and %s", LogBinary, WitnessBinary)
		if err := BuildBinaries(ctx, bin); err != nil {
			return nil, err
		}
	}

	// Sign ahead what the carelog runs will probably need.
	need := int(5000*(cfg.Warmup+cfg.Duration).Seconds() + 2500*(cfg.Warmup+cfg.LatencyDuration).Seconds())
	need = max(need, int(cfg.Tree))
	say("signing %d simulated access events ahead", need)
	es, err := NewEntries("ehr.bench-hospital", need)
	if err != nil {
		return nil, err
	}
	res.EntrySize = es.MeanSize()

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go Watch(watchCtx, 250*time.Millisecond, watched...)

	// (1) and the reference of (5): raw Trillian in this process.
	say("raw Trillian on %s", refDB)
	tr, err := personality.StartTrillian(ctx, dsn(refDB), personality.Config{
		SequencerInterval: RefSequencerInterval, SequencerBatch: RefSequencerBatch})
	if err != nil {
		return nil, fmt.Errorf("raw Trillian: %w", err)
	}
	closeTr := sync1(tr.Close)
	defer closeTr()
	qtree, err := NewTree(ctx, tr.Admin, tr.Log, trillian.TreeType_LOG)
	if err != nil {
		return nil, err
	}
	say("(1) raw Trillian QueueLeaf: %d clients, %s + %s", cfg.Clients, cfg.Warmup, cfg.Duration)
	res.Phases = map[string]*Phase{}
	phase := func(name string, cs []*Component) func(end bool) {
		p := &Phase{}
		res.Phases[name] = p
		return meter(ctx, sdb, p, cs)
	}
	if res.QueueLeaf, err = QueueLeaf(ctx, tr.Log, qtree, cfg.Clients, cfg.Warmup, cfg.Duration, phase("1", watched)); err != nil {
		return nil, err
	}
	res.Phases["1"].Ops = res.QueueLeaf.Queued.Ops
	say("    queued %.0f/s, integrated %.0f/s", res.QueueLeaf.Queued.PerSecond(), res.QueueLeaf.Integrated.PerSecond())
	// Stop Trillian's sequencer from integrating the backlog behind the
	// next measurements: deleted trees are not sequenced.
	if _, err := tr.Admin.DeleteTree(ctx, &trillian.DeleteTreeRequest{TreeId: qtree}); err != nil {
		return nil, fmt.Errorf("deleting the QueueLeaf tree: %w", err)
	}

	say("(5) filling a PREORDERED_LOG reference tree of %d with AddSequencedLeaves (batches of 1000, 2 in flight)", cfg.Tree)
	ref, err := FillPreordered(ctx, tr.Admin, tr.Log, cfg.Tree, 1000, 2)
	if err != nil {
		return nil, err
	}
	res.Fill = ref.Fill
	say("    %.0f leaves/s integrated", ref.Fill.PerSecond())
	say("(5) raw Trillian GetInclusionProof: %d clients, %s + %s", cfg.Clients, time.Second, cfg.ProofDuration)
	res.RefProofs = TrillianProofs(ctx, tr.Log, ref, cfg.Clients, time.Second, cfg.ProofDuration, phase("5 raw", watched))
	res.Phases["5 raw"].Ops = res.RefProofs.Ops
	say("    %.0f proofs/s (%d failed)", res.RefProofs.PerSecond(), res.RefProofs.Errors)
	closeTr()
	ref = nil

	// The carelog network: the log and three witnesses, 2-of-3 policy.
	say("starting carelog-log and 3 carelog-witness processes (log database %s)", logDB)
	nw, err := StartNetwork(ctx, NetworkConfig{
		Bin: bin, Dir: dir, MySQLDSN: dsn(logDB), Submitter: es.Submitter(),
		Witnesses: 3, Quorum: 2, LogArgs: cfg.LogArgs,
	})
	if err != nil {
		return nil, err
	}
	defer nw.Stop()
	res.Log, res.Witnesses = nw.Log, nw.Witnesses
	all := append([]*Component{nw.Log}, nw.Witnesses...)
	all = append(all, watched...)
	go Watch(watchCtx, 250*time.Millisecond, append([]*Component{nw.Log}, nw.Witnesses...)...)
	l, err := NewLog(nw.LogURL, nw.LogVKey, nw.Policy, cfg.IngestClients)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	acks := NewAcks()
	if err := waitSequencing(ctx, l, es, acks, time.Minute); err != nil {
		return nil, errors.Join(err, nw.Exited())
	}
	if _, err := l.WaitForCosigned(ctx, 1, 30*time.Second); err != nil {
		return nil, errors.Join(err, nw.Exited())
	}

	stopProgress := progress(ctx, l, say)
	defer stopProgress()
	say("(2) carelog ingest: %d clients, %s + %s", cfg.IngestClients, cfg.Warmup, cfg.Duration)
	res.Ingest, res.IngestIntegrated = Ingest(ctx, l, es, acks, cfg.IngestClients, cfg.Warmup, cfg.Duration, phase("2", all))
	res.Phases["2"].Ops = res.Ingest.Ops
	say("    %.0f entries/s acknowledged (%d failed%s); cosigned checkpoint grew %.0f/s", res.Ingest.PerSecond(),
		res.Ingest.Errors, errNote(res.Ingest), res.IngestIntegrated.PerSecond())
	if res.Ingest.Ops == 0 {
		return nil, errors.Join(fmt.Errorf("carelog acknowledged nothing: %v", res.Ingest.FirstError), nw.Exited())
	}
	res.AfterIngest, _ = l.Pipeline(ctx)
	res.LogRSS[0] = nw.Log.RSS()
	res.DBSize[0] = dbSize(ctx, sdb, logDB)
	// The delays are those of a steady state at half the rate, not of
	// draining what (2) left behind: wait until the cosigned checkpoint
	// covers every entry acknowledged so far.
	if cp, err := l.c.Checkpoint(ctx); err == nil {
		res.Backlog = int64(acks.Max()+1) - int64(cp.Size)
	}
	t0 := time.Now()
	if _, err := l.WaitForCosigned(ctx, acks.Max()+1, 2*time.Minute); err != nil {
		return nil, errors.Join(err, nw.Exited())
	}
	res.Drained = time.Since(t0)
	if res.Backlog > 0 {
		say("    the cosigned checkpoint was %d entries behind; caught up in %s", res.Backlog, res.Drained.Round(100*time.Millisecond))
	}

	half := res.Ingest.PerSecond() / 2
	say("(3, 4) merge and cosigning delays at %.0f entries/s: %s + %s", half, cfg.Warmup, cfg.LatencyDuration)
	probe, before := phase("3", all), acks.Len()
	probe(false)
	res.Delays, err = MeasureDelays(ctx, l, es, acks, half, cfg.IngestClients, cfg.Warmup, cfg.LatencyDuration, 30*time.Second)
	probe(true)
	res.Phases["3"].Ops = int64(acks.Len() - before) // warm-up and stragglers included
	if err != nil {
		return nil, errors.Join(err, nw.Exited())
	}
	say("    achieved %.0f/s; merge p50 %s p99 %s; cosigned p50 %s p99 %s", res.Delays.Achieved.PerSecond(),
		ms(res.Delays.Merge.P50), ms(res.Delays.Merge.P99), ms(res.Delays.Cosigned.P50), ms(res.Delays.Cosigned.P99))

	stopProgress()
	if n := acks.Len(); uint64(n) < cfg.Tree {
		say("(5) growing carelog's tree to %d through POST /add-entry", cfg.Tree)
		r := Fill(ctx, l, es, acks, cfg.IngestClients, int(cfg.Tree))
		if r.Errors > 0 && uint64(acks.Len()) < cfg.Tree {
			return nil, fmt.Errorf("growing the tree: %v", r.FirstError)
		}
	}
	cp, err := l.WaitForCosigned(ctx, cfg.Tree, time.Minute)
	if err != nil {
		return nil, errors.Join(err, nw.Exited())
	}
	say("(5) reading carelog's first %d entries and checking them against checkpoint %d and every acknowledgement", cfg.Tree, cp.Size)
	tree, err := l.ReadTree(ctx, cfg.Tree, cp, acks, cfg.Clients)
	if err != nil {
		return nil, err
	}
	say("(5) carelog GET /proof/inclusion: %d clients, %s + %s", cfg.Clients, time.Second, cfg.ProofDuration)
	res.Proofs = Proofs(ctx, l, tree, cfg.Clients, time.Second, cfg.ProofDuration, phase("5", all))
	res.Phases["5"].Ops = res.Proofs.Ops
	say("    %.0f proofs/s (%d failed%s)", res.Proofs.PerSecond(), res.Proofs.Errors, errNote(res.Proofs))
	if err := nw.Exited(); err != nil {
		return nil, err
	}
	for _, c := range all {
		c.sample()
	}
	res.LogRSS[1] = nw.Log.RSS()
	res.DBSize[1] = dbSize(ctx, sdb, logDB)
	res.OnTheSpot = es.SignedOnTheSpot()
	res.Elapsed = time.Since(start)
	return res, nil
}

// progress reports where the log's entries are every 5 s until stopped.
func progress(ctx context.Context, l *Log, say func(string, ...any)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if p, err := l.Pipeline(ctx); err == nil {
				say("    log: %d sequenced (durable index), %d fed to Trillian, %d in the signed checkpoint, %d cosigned",
					p.Sequenced, p.Fed, p.Signed, p.CosignedTop)
			}
		}
	}()
	return sync1(func() { cancel(); <-done })
}

// dbSize is the size of a database's InnoDB files, in bytes (the table
// statistics in information_schema.tables lag behind a fast-growing table).
// It is 0 where the server does not say (MySQL names the view differently).
func dbSize(ctx context.Context, db *sql.DB, name string) uint64 {
	var n sql.NullInt64
	_ = db.QueryRowContext(ctx, "SELECT SUM(FILE_SIZE) FROM information_schema.INNODB_SYS_TABLESPACES WHERE NAME LIKE ?", name+"/%").Scan(&n)
	return uint64(max(n.Int64, 0))
}

// waitSequencing submits until the log acknowledges an entry with an index
// (it does once its sequencer holds the lease).
func waitSequencing(ctx context.Context, l *Log, es *Entries, acks *Acks, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ack, err := l.Add(ctx, es.Next())
		if err == nil {
			acks.Add(ack)
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the log acknowledged no entry with an index within %s: %w", timeout, err)
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

func isLoopback(addr string) bool {
	host := addr
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		host = addr[:i]
	}
	host = strings.Trim(host, "[]")
	return host == "localhost" || strings.HasPrefix(host, "127.") || host == "::1"
}

// sync1 makes f safe to call more than once.
func sync1(f func()) func() {
	done := false
	return func() {
		if !done {
			done = true
			f()
		}
	}
}

// errNote names the first failure of a window that had any.
func errNote(r Rate) string {
	if r.Errors == 0 || r.FirstError == nil {
		return ""
	}
	return "; first: " + r.FirstError.Error()
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }
