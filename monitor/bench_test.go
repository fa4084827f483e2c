package monitor

import (
	"bytes"
	"runtime"
	"sync"
	"testing"

	"github.com/carelog/carelog/api"
	"github.com/carelog/carelog/checkpoint"
)

// benchEntries is the size of the log the benchmarks replay.
const benchEntries = 100_000

// benchSetup signs benchEntries routine entries (on every core) and serves
// a fake log of them.
func benchSetup(b *testing.B) (*env, []api.Entry) {
	e := newEnv(b)
	data := make([][]byte, benchEntries)
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < benchEntries; i += workers {
				data[i] = e.sign(e.event(i))
			}
		})
	}
	wg.Wait()
	e.appendAndPublish(data...)
	es := make([]api.Entry, benchEntries)
	for i, d := range data {
		es[i] = api.Entry{Index: uint64(i), Data: d}
	}
	return e, es
}

// inParallel splits es into one contiguous share per core and runs f on
// each, returning the results in order.
func inParallel[T any](es []api.Entry, f func([]api.Entry) []T) []T {
	workers := runtime.GOMAXPROCS(0)
	out := make([]T, len(es))
	share := (len(es) + workers - 1) / workers
	var wg sync.WaitGroup
	for start := 0; start < len(es); start += share {
		end := min(start+share, len(es))
		wg.Go(func() { copy(out[start:], f(es[start:end])) })
	}
	wg.Wait()
	return out
}

// BenchmarkReplay measures where replay time goes, on a log of 100,000
// signed entries, using every core (GOMAXPROCS):
//
//	root:   leaf hashes (in parallel) and the compact-range root recomputation
//	verify: root plus every entry's submitter signature and schema check
//	        (package entry), the monitor's per-entry CPU work
//	replay: a whole RunOnce against the fake log over HTTP, with consistency
//	        proofs, watch rules and SQLite commits
//
// Each reports entries/s. Run with: go test -run '^$' -bench Replay ./monitor/
func BenchmarkReplay(b *testing.B) {
	e, es := benchSetup(b)
	want, err := e.log.Root(benchEntries)
	if err != nil {
		b.Fatal(err)
	}
	checkRoot := func(hashes [][]byte) {
		r := rangeFactory.NewEmptyRange(0)
		for _, h := range hashes {
			_ = r.Append(h, nil)
		}
		if !bytes.Equal(rootOf(r), want) {
			b.Fatal("recomputed root differs from the log's")
		}
	}
	perSecond := func(b *testing.B) {
		b.ReportMetric(float64(benchEntries)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
	}

	b.Run("root", func(b *testing.B) {
		for b.Loop() {
			checkRoot(inParallel(es, func(part []api.Entry) [][]byte {
				hs := make([][]byte, len(part))
				for i, x := range part {
					hs[i] = checkpoint.LeafHash(x.Data)
				}
				return hs
			}))
		}
		perSecond(b)
	})

	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			cs := inParallel(es, func(part []api.Entry) []checked { return checkEntries(part, e.reg) })
			hashes := make([][]byte, len(cs))
			for i, c := range cs {
				if c.Err != nil {
					b.Fatalf("entry %d: %v", c.Index, c.Err)
				}
				hashes[i] = c.LeafHash
			}
			checkRoot(hashes)
		}
		perSecond(b)
	})

	b.Run("replay", func(b *testing.B) {
		cfg := e.config()
		cfg.BatchSize, cfg.Workers = 1000, 2*runtime.GOMAXPROCS(0)
		cfg.Rules = Rules{Emergency: true}
		for b.Loop() {
			cfg.StateDir = b.TempDir()
			m, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			res := m.RunOnce(b.Context())
			m.Close()
			if res.ExitCode() != ExitClean || res.Logs[0].Replay.Position != benchEntries {
				b.Fatalf("replay: exit %d, %+v, %v", res.ExitCode(), res.Logs[0].Replay, res.Errors)
			}
		}
		perSecond(b)
	})
}
