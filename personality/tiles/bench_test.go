package tiles

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
)

// BenchmarkInclusionProof measures proofs per second for random leaves of a
// tree of 70,000 (the size the issue measured raw Trillian at), from as
// many goroutines as GOMAXPROCS. "warm" has every tile cached; "cold" caches
// one tile, so nearly every proof reads its tiles from the store.
func BenchmarkInclusionProof(b *testing.B) {
	const n = 70_000
	l := newTestLog(n)
	for _, c := range []struct {
		name    string
		storage string
		cache   int64
	}{
		{"memory-warm", "memory", 0},
		{"mariadb-warm", "mariadb", 0},
		{"mariadb-cold", "mariadb", nodesPerTile * hashSize},
	} {
		b.Run(c.name, func(b *testing.B) {
			tl := newTiler(b, openDB(b, c.storage), l, c.cache)
			catchUp(b, tl, l, n)
			ctx := context.Background()
			for i := uint64(0); i < n; i += 256 { // warm the cache
				if _, err := tl.InclusionProof(ctx, i, n); err != nil {
					b.Fatal(err)
				}
			}
			var seed atomic.Uint64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				rng := rand.New(rand.NewPCG(seed.Add(1), 7))
				for pb.Next() {
					if _, err := tl.InclusionProof(ctx, rng.Uint64N(n), n); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "proofs/s")
		})
	}
}

// BenchmarkCatchUp measures leaves per second hashed into tiles and stored.
func BenchmarkCatchUp(b *testing.B) {
	const n = 50_000
	l := newTestLog(n)
	l.perCall = 1000
	root := mth(leafHashes(l.leaves))
	for _, storage := range storages {
		b.Run(storage, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				tl := newTiler(b, openDB(b, storage), l, 0)
				b.StartTimer()
				if err := tl.CatchUp(context.Background(), cp(n, root)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "leaves/s")
		})
	}
}
