package tiles

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/carelog/carelog/checkpoint"
	"github.com/transparency-dev/merkle/rfc6962"
)

// TestServedTilesMatchIndependentClient grows a log in uneven steps (across
// tile boundaries at levels 0, 1 and 2) and after each step checks every
// served tile and entry bundle against an independent computation, and has
// tlog's tile client authenticate them against the root.
func TestServedTilesMatchIndependentClient(t *testing.T) {
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			l := newTestLog(70_000)
			tl := newTiler(t, openDB(t, storage), l, 0)
			srv := serve(t, tl)
			var prev uint64
			var prevRoot []byte
			for _, size := range []uint64{1, 2, 255, 256, 257, 511, 1000, 4097, 9000, 65535, 65536, 65537, 70_000} {
				root := catchUp(t, tl, l, size)
				if size <= 9000 || size == 70_000 {
					checkServed(t, srv, l.leaves, size)
				}
				checkWithTlog(t, srv, l.leaves, size, root, prev, prevRoot)
				prev, prevRoot = size, root
			}
			// The spec's own example: a tree of 70,000 has 273 full level-0
			// tiles, a level-0 partial of 112, one full level-1 tile, a
			// level-1 partial of 17 and a level-2 partial of 1.
			for path, want := range map[string]int{
				"/log/tile/0/272":       http.StatusOK,
				"/log/tile/0/273.p/112": http.StatusOK,
				"/log/tile/0/273":       http.StatusNotFound,
				"/log/tile/1/000":       http.StatusOK,
				"/log/tile/1/001.p/17":  http.StatusOK,
				"/log/tile/1/001.p/18":  http.StatusNotFound,
				"/log/tile/2/000.p/1":   http.StatusOK,
				"/log/tile/2/000.p/2":   http.StatusNotFound,
				"/log/tile/3/000.p/1":   http.StatusNotFound,
			} {
				if got := get(t, srv, path).code; got != want {
					t.Errorf("GET %s: %d, want %d", path, got, want)
				}
			}
		})
	}
}

func TestPaths(t *testing.T) {
	for _, c := range []struct {
		level int
		n     uint64
		w     int
		want  string
	}{
		{0, 0, 256, "tile/0/000"},
		{0, 7, 3, "tile/0/007.p/3"},
		{0, 999, 256, "tile/0/999"},
		{0, 1000, 256, "tile/0/x001/000"},
		{1, 1234067, 256, "tile/1/x001/x234/067"},
		{2, 1234067, 255, "tile/2/x001/x234/067.p/255"},
		{63, 1_000_000_000, 1, "tile/63/x001/x000/x000/000.p/1"},
	} {
		if got := TilePath(c.level, c.n, c.w); got != c.want {
			t.Errorf("TilePath(%d, %d, %d) = %q, want %q", c.level, c.n, c.w, got, c.want)
		}
		L, n, w, err := parseTilePath(c.want[len("tile/"):])
		if err != nil || int(L) != c.level || n != c.n || int(w) != c.w {
			t.Errorf("parseTilePath(%q) = %d, %d, %d, %v", c.want, L, n, w, err)
		}
		e := EntriesPath(c.n, c.w)
		if want := "tile/entries/" + c.want[len("tile/")+len(strconv.Itoa(c.level))+1:]; e != want {
			t.Errorf("EntriesPath(%d, %d) = %q, want %q", c.n, c.w, e, want)
		}
		n, w, err = parseEntriesPath(e[len("tile/entries/"):])
		if err != nil || n != c.n || int(w) != c.w {
			t.Errorf("parseEntriesPath(%q) = %d, %d, %v", e, n, w, err)
		}
	}
	for _, bad := range []string{
		"", "0", "0/", "0/0", "0/00", "0/0000", "0/1234", "00/000", "-1/000", "64/000", "data/000",
		"0/x000/001", "0/x1/000", "0/001/000", "0/000.p/0", "0/000.p/256", "0/000.p/07", "0/000.p/", "0/000.p",
		"0/000/", "0/+00", "0/ 00", "8/0/000", "0/000.p/1/2", "entries/000",
	} {
		if _, _, _, err := parseTilePath(bad); !errors.Is(err, ErrMalformedPath) {
			t.Errorf("parseTilePath(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"", "0", "00", "x001/00", "x000/001", "000.p/0", "000.p/256", "000.p/01", "0/000", "data/000"} {
		if _, _, err := parseEntriesPath(bad); !errors.Is(err, ErrMalformedPath) {
			t.Errorf("parseEntriesPath(%q) accepted", bad)
		}
	}
}

func TestHTTPStatuses(t *testing.T) {
	l := newTestLog(1000)
	tl := newTiler(t, nil, l, 0)
	srv := serve(t, tl)
	if r := get(t, srv, "/log/tile/0/000"); r.code != http.StatusNotFound {
		t.Fatalf("empty tree: GET tile/0/000: %d", r.code)
	}
	catchUp(t, tl, l, 1000) // level 0: tiles 000-002 and 003.p/232; level 1: 000.p/3
	for _, c := range []struct {
		path string
		want int
	}{
		{"/log/tile/0/000", 200},
		{"/log/tile/0/002", 200},
		{"/log/tile/0/001.p/9", 200}, // a prefix of a full tile
		{"/log/tile/0/003.p/232", 200},
		{"/log/tile/0/003.p/1", 200},
		{"/log/tile/0/003.p/233", 404},
		{"/log/tile/0/003", 404},
		{"/log/tile/0/004.p/1", 404},
		{"/log/tile/0/x001/000", 404},
		{"/log/tile/1/000.p/3", 200},
		{"/log/tile/1/000.p/4", 404},
		{"/log/tile/1/000", 404},
		{"/log/tile/2/000.p/1", 404},
		{"/log/tile/63/000.p/1", 404},
		{"/log/tile/entries/000", 200},
		{"/log/tile/entries/003.p/232", 200},
		{"/log/tile/entries/003.p/233", 404},
		{"/log/tile/entries/003", 404},
		{"/log/tile/entries/x123/x456/789", 404},
		{"/log/tile/64/000", 400},
		{"/log/tile/00/000", 400},
		{"/log/tile/0/0", 400},
		{"/log/tile/0/x000/000", 400},
		{"/log/tile/0/000.p/256", 400},
		{"/log/tile/0/000.p/0", 400},
		{"/log/tile/0/000.p/01", 400},
		{"/log/tile/data/000", 400},
		{"/log/tile/8/0/000", 400},
		{"/log/tile/entries/", 400},
		{"/log/tile/entries/abc", 400},
		{"/log/tile/entries/000.p/300", 400},
		{"/log/tile/", 400},
	} {
		r := get(t, srv, c.path)
		if r.code != c.want {
			t.Errorf("GET %s: %d %s, want %d", c.path, r.code, r.body, c.want)
		}
		if r.code != 200 && r.header.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: error with Cache-Control %q", c.path, r.header.Get("Cache-Control"))
		}
	}
	// Other methods.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/log/tile/0/000", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", resp.StatusCode)
	}
	// Without the prefix stripped, nothing is a tile.
	rec := httptestRecorder(tl, "/log/tile/0/000")
	if rec != http.StatusNotFound {
		t.Errorf("unstripped path: %d", rec)
	}
	// Identity for clients that do not accept gzip, with a length.
	r := get(t, srv, "/log/tile/entries/000", "Accept-Encoding", "identity")
	if r.header.Get("Content-Encoding") != "" || r.header.Get("Content-Length") == "" || r.header.Get("Vary") != "Accept-Encoding" {
		t.Errorf("identity bundle headers: %v", r.header)
	}
	if got := decodeBundle(t, r.body); len(got) != 256 || !bytes.Equal(got[5], l.leaves[5]) {
		t.Errorf("identity bundle: %d entries", len(got))
	}
	r = get(t, srv, "/log/tile/entries/000", "Accept-Encoding", "gzip;q=0, identity")
	if r.header.Get("Content-Encoding") != "" {
		t.Errorf("gzip;q=0 got Content-Encoding %q", r.header.Get("Content-Encoding"))
	}
	r = get(t, srv, "/log/tile/entries/000", "Accept-Encoding", "br, gzip")
	if r.header.Get("Content-Encoding") != "gzip" {
		t.Errorf("gzip accepted but Content-Encoding %q", r.header.Get("Content-Encoding"))
	}
}

// TestProofs checks inclusion and consistency proofs for many (index, size)
// pairs with checkpoint's verifiers, against roots computed independently.
func TestProofs(t *testing.T) {
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			const n = 70_000
			l := newTestLog(n)
			// A small cache, so that proofs also read tiles from the store.
			tl := newTiler(t, openDB(t, storage), l, 40*nodesPerTile*hashSize)
			catchUp(t, tl, l, n)
			rng := rand.New(rand.NewPCG(1, 2))
			type pair struct{ a, size uint64 }
			var incl, cons []pair
			var sizes []uint64
			for s := uint64(1); s <= 300; s++ {
				sizes = append(sizes, s)
			}
			for range 300 {
				sizes = append(sizes, 1+rng.Uint64N(n))
			}
			sizes = append(sizes, 255, 256, 257, 65535, 65536, 65537, n)
			for _, size := range sizes {
				for _, index := range []uint64{0, size - 1, size / 2, rng.Uint64N(size)} {
					incl = append(incl, pair{index, size})
				}
				for _, old := range []uint64{0, 1, size / 2, size - 1, size, rng.Uint64N(size + 1)} {
					cons = append(cons, pair{old, size})
				}
			}
			var all []uint64
			for _, c := range cons {
				all = append(all, c.a, c.size)
			}
			rts := roots(t, l.leaves, all)
			ctx := context.Background()
			lh := leafHashes(l.leaves)
			for _, c := range incl {
				p, err := tl.InclusionProof(ctx, c.a, c.size)
				if err != nil {
					t.Fatalf("InclusionProof(%d, %d): %v", c.a, c.size, err)
				}
				if err := checkpoint.VerifyInclusion(cp(c.size, rts[c.size]), c.a, lh[c.a], p); err != nil {
					t.Fatalf("InclusionProof(%d, %d) does not verify: %v", c.a, c.size, err)
				}
			}
			for _, c := range cons {
				p, err := tl.ConsistencyProof(ctx, c.a, c.size)
				if err != nil {
					t.Fatalf("ConsistencyProof(%d, %d): %v", c.a, c.size, err)
				}
				if err := checkpoint.VerifyConsistency(cp(c.a, rts[c.a]), cp(c.size, rts[c.size]), p); err != nil {
					t.Fatalf("ConsistencyProof(%d, %d) does not verify: %v", c.a, c.size, err)
				}
			}
			// The verifiers do reject a wrong proof (so the loop above can fail).
			p, _ := tl.InclusionProof(ctx, 1234, n)
			p[3] = rfc6962.DefaultHasher.HashLeaf([]byte("forged"))
			if checkpoint.VerifyInclusion(cp(n, rts[n]), 1234, lh[1234], p) == nil {
				t.Fatal("a forged inclusion proof verified")
			}
			p, _ = tl.ConsistencyProof(ctx, 1234, n)
			p[len(p)-1] = rfc6962.DefaultHasher.HashLeaf([]byte("forged"))
			if checkpoint.VerifyConsistency(cp(1234, mth(lh[:1234])), cp(n, rts[n]), p) == nil {
				t.Fatal("a forged consistency proof verified")
			}
			for _, c := range []struct {
				name string
				err  error
				want error
			}{
				{"inclusion beyond", errOf(tl.InclusionProof(ctx, 0, n+1)), ErrNotCaughtUp},
				{"inclusion index = size", errOf(tl.InclusionProof(ctx, 10, 10)), ErrBadRange},
				{"inclusion in empty tree", errOf(tl.InclusionProof(ctx, 0, 0)), ErrBadRange},
				{"consistency beyond", errOf(tl.ConsistencyProof(ctx, 1, n+1)), ErrNotCaughtUp},
				{"consistency old > size", errOf(tl.ConsistencyProof(ctx, 11, 10)), ErrBadRange},
			} {
				if !errors.Is(c.err, c.want) {
					t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
				}
			}
		})
	}
}

func errOf(_ [][]byte, err error) error { return err }

// TestCatchUpResumes interrupts a long catch-up and checks that the next
// one, in the same Tiler or (on MariaDB) a restarted one, starts where the
// stored progress ends, and that unverified progress is never served.
func TestCatchUpResumes(t *testing.T) {
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			const n = 20_000
			l := newTestLog(n)
			db := openDB(t, storage)
			tl := newTiler(t, db, l, 0)
			srv := serve(t, tl)
			root := mth(leafHashes(l.leaves))

			// Reads return 700 leaves: the first commit comes at the first
			// multiple of 700 past commitEvery (8,400), the next one as far
			// again. Cancel between the two.
			firstCommit := uint64((commitEvery + l.perCall - 1) / l.perCall * l.perCall)
			ctx, cancel := context.WithCancel(context.Background())
			reads := 0
			l.onRead = func(_ context.Context, start, end uint64) error {
				reads++
				if reads == int(firstCommit)/l.perCall+5 {
					cancel()
				}
				return nil
			}
			err := tl.CatchUp(ctx, cp(n, root))
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("interrupted CatchUp: %v, want context.Canceled", err)
			}
			l.onRead = nil
			pos, err := tl.store.position(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if pos.size != 0 || pos.pending != firstCommit {
				t.Fatalf("stored position after the interruption: size %d pending %d, want 0 and %d", pos.size, pos.pending, firstCommit)
			}
			if size, _ := tl.Latest(); size != 0 {
				t.Fatalf("unverified tiles served: Latest() = %d", size)
			}
			if r := get(t, srv, "/log/tile/0/000"); r.code != http.StatusNotFound {
				t.Fatalf("unverified tile served: %d", r.code)
			}
			if _, err := tl.InclusionProof(context.Background(), 0, 1); !errors.Is(err, ErrNotCaughtUp) {
				t.Fatalf("unverified proof served: %v", err)
			}

			if storage == "mariadb" {
				tl = newTiler(t, db, l, 0) // a restart
				srv = serve(t, tl)
			}
			l.takeReads()
			catchUp(t, tl, l, n)
			if reads := l.takeReads(); len(reads) == 0 || reads[0] != firstCommit {
				t.Fatalf("resumed catch-up read from %v, want %d first", reads, firstCommit)
			}
			checkServed(t, srv, l.leaves, n)

			// Idempotent: the same checkpoint again reads nothing.
			l.takeReads()
			catchUp(t, tl, l, n)
			if reads := l.takeReads(); len(reads) != 0 {
				t.Fatalf("a repeated CatchUp read leaves at %v", reads)
			}
		})
	}
}

// TestCatchUpRefusesWrongRoot checks that a checkpoint whose root the log's
// leaves do not hash to is refused, and that nothing of it is kept.
func TestCatchUpRefusesWrongRoot(t *testing.T) {
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			const n = 30_000
			l := newTestLog(n)
			db := openDB(t, storage)
			tl := newTiler(t, db, l, 0)
			srv := serve(t, tl)
			ctx := context.Background()
			good := catchUp(t, tl, l, 1000)
			lh := leafHashes(l.leaves)

			refused := func(what string, c checkpoint.Checkpoint) {
				t.Helper()
				if err := tl.CatchUp(ctx, c); !errors.Is(err, ErrRootMismatch) {
					t.Fatalf("%s: CatchUp = %v, want ErrRootMismatch", what, err)
				}
				if size, root := tl.Latest(); size != 1000 || !bytes.Equal(root, good) {
					t.Fatalf("%s: Latest() = %d after a refusal", what, size)
				}
				pos, err := tl.store.position(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if pos.size != 1000 || pos.pending != 1000 {
					t.Fatalf("%s: stored position size %d pending %d after a refusal, want 1000", what, pos.size, pos.pending)
				}
				if r := get(t, srv, "/log/tile/0/003.p/232"); r.code != http.StatusOK {
					t.Fatalf("%s: the verified partial tile is gone: %d", what, r.code)
				}
				if r := get(t, srv, "/log/tile/0/003"); r.code != http.StatusNotFound {
					t.Fatalf("%s: a tile of the refused tree is served: %d", what, r.code)
				}
			}
			wrong := bytes.Repeat([]byte{7}, 32)
			refused("wrong root", cp(3000, wrong))
			refused("wrong root after stored progress", cp(n, wrong)) // commits at ~8,400 and ~16,800 first
			refused("wrong root of a verified size", cp(999, mth(lh[:1000])))
			refused("wrong root of the verified size", cp(1000, mth(lh[:999])))
			refused("root of another size", cp(3000, mth(lh[:2999])))

			// A log whose leaf changed under the checkpoint.
			orig := l.leaves[1500]
			l.setLeaf(1500, []byte("tampered"))
			refused("tampered leaf", cp(3000, mth(lh[:3000])))
			l.setLeaf(1500, orig)

			if err := tl.CatchUp(ctx, cp(999, mth(lh[:999]))); err != nil {
				t.Fatalf("an older checkpoint that agrees: %v", err)
			}
			if err := tl.CatchUp(ctx, checkpoint.Checkpoint{Origin: "other", Size: 3000, Hash: mth(lh[:3000])}); err == nil {
				t.Fatal("a checkpoint of another origin was accepted")
			}
			catchUp(t, tl, l, n)
			checkServed(t, srv, l.leaves, n)
		})
	}
}

// TestBundleChecksLeaves checks that an entry bundle whose leaves no longer
// hash to the verified tile is refused, not served.
func TestBundleChecksLeaves(t *testing.T) {
	l := newTestLog(600)
	tl := newTiler(t, nil, l, 0)
	srv := serve(t, tl)
	catchUp(t, tl, l, 600)
	l.setLeaf(300, []byte("swapped"))
	l.setLeaf(590, []byte("swapped"))
	for _, p := range []string{"/log/tile/entries/001", "/log/tile/entries/002.p/88", "/log/tile/entries/001.p/50"} {
		if r := get(t, srv, p); r.code != http.StatusInternalServerError {
			t.Errorf("GET %s with a swapped leaf: %d", p, r.code)
		}
	}
	if r := get(t, srv, "/log/tile/entries/000"); r.code != http.StatusOK {
		t.Errorf("GET an intact bundle: %d", r.code)
	}
}

// TestRestart checks that a Tiler on the same database serves the same tree
// with nothing recomputed, and carries on from it.
func TestRestart(t *testing.T) {
	l := newTestLog(5000)
	db := openDB(t, "mariadb")
	tl := newTiler(t, db, l, 0)
	root := catchUp(t, tl, l, 3333)
	l.takeReads()

	tl2 := newTiler(t, db, l, 0)
	if size, r := tl2.Latest(); size != 3333 || !bytes.Equal(r, root) {
		t.Fatalf("restarted: Latest() = %d, %x", size, r)
	}
	if reads := l.takeReads(); len(reads) != 0 {
		t.Fatalf("restart read leaves at %v", reads)
	}
	srv := serve(t, tl2)
	checkServed(t, srv, l.leaves, 3333)
	checkWithTlog(t, srv, l.leaves, 3333, root, 0, nil)
	l.takeReads()
	catchUp(t, tl2, l, 5000)
	// The first Tiler follows what the second stored.
	catchUp(t, tl, l, 5000)
	if reads := l.takeReads(); len(reads) != 3 {
		// tl2 read 1,667 leaves in 3 reads of at most 700; tl read none.
		t.Fatalf("reads %v", reads)
	}
	checkServed(t, serve(t, tl), l.leaves, 5000)
}

// TestConcurrentReadersDuringCatchUp proves against whatever tree is latest
// while the tiles grow; every proof must verify (run with -race).
func TestConcurrentReadersDuringCatchUp(t *testing.T) {
	const n = 20_000
	l := newTestLog(n)
	tl := newTiler(t, nil, l, 20*nodesPerTile*hashSize)
	srv := serve(t, tl)
	lh := leafHashes(l.leaves)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for ctx.Err() == nil {
				size, root := tl.Latest()
				if size == 0 {
					continue
				}
				i := rng.Uint64N(size)
				p, err := tl.InclusionProof(ctx, i, size)
				if err == nil {
					err = checkpoint.VerifyInclusion(cp(size, root), i, lh[i], p)
				}
				if err != nil && ctx.Err() == nil {
					errs <- err
					return
				}
				if w == 0 {
					// Never a tile beyond the tree (one past the last).
					resp, err := http.Get(srv.URL + "/log/" + TilePath(0, n/256+1, 256))
					if err != nil {
						errs <- err
						return
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusNotFound {
						errs <- fmt.Errorf("a tile beyond the tree: %d", resp.StatusCode)
						return
					}
				}
			}
		}()
	}
	for size := uint64(97); size < n; size += 1531 {
		catchUp(t, tl, l, size)
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestCacheIsBounded(t *testing.T) {
	l := newTestLog(20_000)
	limit := int64(5 * nodesPerTile * hashSize)
	tl := newTiler(t, nil, l, limit)
	srv := serve(t, tl)
	catchUp(t, tl, l, 20_000)
	checkServed(t, srv, l.leaves, 20_000)
	if got := tl.cache.bytes(); got > limit || got == 0 {
		t.Fatalf("cache holds %d bytes, limit %d", got, limit)
	}
}

func httptestRecorder(h http.Handler, path string) int {
	rec := &statusRecorder{header: http.Header{}}
	req, _ := http.NewRequest(http.MethodGet, path, nil)
	h.ServeHTTP(rec, req)
	return rec.code
}

type statusRecorder struct {
	header http.Header
	code   int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *statusRecorder) WriteHeader(code int)        { r.code = code }
