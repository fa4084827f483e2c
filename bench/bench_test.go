package bench

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/internal/testdb"
	"github.com/carelog/carelog/personality"
	"github.com/carelog/carelog/submitter"
	"github.com/google/trillian"
	fnote "github.com/transparency-dev/formats/note"
)

// These benchmarks run raw Trillian and the log in the test process (no
// witnesses), each on a fresh database of the test server (package
// testdb), and report carelog's rate beside the reference measured in the
// same run. Run them with, e.g.:
//
//	go test -run '^$' -bench . -benchtime 20s ./bench/
//
// Add -cpuprofile to see where the CPU goes in the log, Trillian and the
// MySQL driver (MariaDB's own CPU is not in it: see docs/benchmarks.md).
var (
	refWindow     = flag.Duration("ref", 10*time.Second, "measured window of the raw Trillian reference")
	clients       = flag.Int("clients", 32, "clients of the QueueLeaf reference and of the proof benchmarks")
	ingestClients = flag.Int("ingest-clients", 256, "submitters of BenchmarkIngest")
	treeSize      = flag.Uint64("tree", 70_000, "tree size of BenchmarkInclusionProof")
	ckptInterval  = flag.Duration("checkpoint-interval", 250*time.Millisecond, "the log's checkpoint interval")
)

// benchtime is -test.benchtime when it is a duration, else 1s.
func benchtime() time.Duration {
	if f := flag.Lookup("test.benchtime"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil {
			return d
		}
	}
	return time.Second
}

// reference starts raw Trillian on a fresh database.
func reference(b *testing.B) *personality.Trillian {
	tr, err := personality.StartTrillian(b.Context(), testdb.New(b), personality.Config{
		SequencerInterval: RefSequencerInterval, SequencerBatch: RefSequencerBatch})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sync.OnceFunc(tr.Close))
	return tr
}

// startLog runs a carelog log in this process on a fresh database, serving
// HTTP on loopback, and waits until it sequences.
func startLog(b *testing.B, es *Entries) *Log {
	ctx, cancel := context.WithCancel(context.Background())
	skey, vkey, err := submitter.GenerateEd25519(benchOrigin)
	if err != nil {
		b.Fatal(err)
	}
	signer, verifier, err := fnote.NewEd25519SignerVerifier(skey)
	if err != nil {
		b.Fatal(err)
	}
	reg, err := submitter.New([]submitter.Submitter{es.Submitter()})
	if err != nil {
		b.Fatal(err)
	}
	lg, err := personality.New(ctx, personality.Config{
		Signer: signer, Verifier: verifier, Submitters: reg, MySQLDSN: testdb.New(b),
		CheckpointInterval: *ckptInterval, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = lg.Serve(ctx, ln) }()
	b.Cleanup(func() { cancel(); <-served; lg.Close() })
	l, err := NewLog("http://"+ln.Addr().String(), vkey, checkpoint.NoWitnesses(), max(*ingestClients, *clients))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(l.Close)
	if err := waitSequencing(ctx, l, es, NewAcks(), time.Minute); err != nil {
		b.Fatal(err)
	}
	return l
}

func signAhead(b *testing.B, n int) *Entries {
	es, err := NewEntries("ehr.bench-hospital", n)
	if err != nil {
		b.Fatal(err)
	}
	return es
}

// BenchmarkIngest measures carelog's end-to-end ingest: signed entries
// submitted with POST /add-entry by -ingest-clients concurrent submitters,
// each counted when answered 200 with a durable index (one op = one
// entry). Before it, raw Trillian's QueueLeaf is measured for -ref on a
// fresh database of the same server (the reference). Metrics: entries/s,
// ref-queued/s, ref-integrated/s, and ratio = entries/s ÷ ref-queued/s
// (target ≥ 3).
func BenchmarkIngest(b *testing.B) {
	ctx := b.Context()
	es := signAhead(b, 10_000+int(6000*benchtime().Seconds()))
	tr := reference(b)
	tree, err := NewTree(ctx, tr.Admin, tr.Log, trillian.TreeType_LOG)
	if err != nil {
		b.Fatal(err)
	}
	ref, err := QueueLeaf(ctx, tr.Log, tree, *clients, time.Second, *refWindow, nil)
	if err != nil {
		b.Fatal(err)
	}
	tr.Close() // its sequencer must not integrate the backlog behind carelog's run

	l := startLog(b, es)
	_, _ = Ingest(ctx, l, es, nil, *ingestClients, 0, time.Second, nil) // warm-up
	r := dispatch(ctx, *ingestClients, b.Loop, l.add(es, nil))
	if r.Errors > 0 {
		b.Errorf("%d submissions failed; first: %v", r.Errors, r.FirstError)
	}
	b.ReportMetric(r.PerSecond(), "entries/s")
	b.ReportMetric(ref.Queued.PerSecond(), "ref-queued/s")
	b.ReportMetric(ref.Integrated.PerSecond(), "ref-integrated/s")
	b.ReportMetric(ratio(r.PerSecond(), ref.Queued.PerSecond()), "ratio")
}

// BenchmarkInclusionProof measures GET /proof/inclusion by -clients
// concurrent readers for random leaves of a tree of -tree entries (built
// through POST /add-entry), each proof verified (one op = one proof).
// Before it, raw Trillian's GetInclusionProof is measured for -ref on a
// PREORDERED_LOG tree of the same size. Metrics: proofs/s, ref-proofs/s,
// and ratio (target ≥ 20).
func BenchmarkInclusionProof(b *testing.B) {
	ctx := b.Context()
	n := *treeSize
	tr := reference(b)
	pre, err := FillPreordered(ctx, tr.Admin, tr.Log, n, 1000, 2)
	if err != nil {
		b.Fatal(err)
	}
	ref := TrillianProofs(ctx, tr.Log, pre, *clients, time.Second, *refWindow, nil)
	if ref.Errors > 0 {
		b.Fatalf("reference: %d proofs failed; first: %v", ref.Errors, ref.FirstError)
	}
	tr.Close()

	es := signAhead(b, int(n)+1000)
	l := startLog(b, es)
	acks := NewAcks()
	if r := Fill(ctx, l, es, acks, *ingestClients, int(n)); uint64(acks.Len()) < n {
		b.Fatalf("growing the tree: %v", r.FirstError)
	}
	cp, err := l.WaitForCosigned(ctx, n, time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	tree, err := l.ReadTree(ctx, n, cp, acks, 8)
	if err != nil {
		b.Fatal(err)
	}
	Proofs(ctx, l, tree, *clients, 0, time.Second, nil) // warm-up
	r := dispatch(ctx, *clients, b.Loop, l.proof(tree))
	if r.Errors > 0 {
		b.Errorf("%d proofs failed; first: %v", r.Errors, r.FirstError)
	}
	b.ReportMetric(r.PerSecond(), "proofs/s")
	b.ReportMetric(ref.PerSecond(), "ref-proofs/s")
	b.ReportMetric(ratio(r.PerSecond(), ref.PerSecond()), "ratio")
}
