package tiles

import (
	"bytes"
	"compress/gzip"
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/internal/testdb"
	_ "github.com/go-sql-driver/mysql"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/tlog"
)

const testOrigin = "carelog.test/tiles"

// testLog is a log held in memory. Its leaf source answers short (at most
// perCall leaves), as Trillian may, and lets a test intervene in each call.
type testLog struct {
	mu      sync.Mutex
	leaves  [][]byte
	perCall int
	// onRead, if set, runs before each read; an error fails the read.
	onRead func(ctx context.Context, start, end uint64) error
	reads  []uint64 // start of every read
}

// makeLeaves returns n leaves of varied lengths, among them an empty one and
// one of several kilobytes.
func makeLeaves(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		switch {
		case i == 5:
			out[i] = []byte{}
		case i == 300:
			out[i] = bytes.Repeat([]byte("long entry "), 400)
		default:
			out[i] = fmt.Appendf(nil, "entry %d %s", i, strings.Repeat("x", i%97))
		}
	}
	return out
}

func newTestLog(n int) *testLog {
	return &testLog{leaves: makeLeaves(n), perCall: 700}
}

func (l *testLog) source(ctx context.Context, start, end uint64) ([][]byte, error) {
	l.mu.Lock()
	hook := l.onRead
	l.reads = append(l.reads, start)
	l.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, start, end); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if end > uint64(len(l.leaves)) || start >= end {
		return nil, fmt.Errorf("test log: no leaves [%d, %d) in a log of %d", start, end, len(l.leaves))
	}
	end = min(end, start+uint64(l.perCall))
	out := make([][]byte, 0, end-start)
	for _, lf := range l.leaves[start:end] {
		out = append(out, append([]byte(nil), lf...))
	}
	return out, nil
}

func (l *testLog) setLeaf(i int, v []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leaves[i] = v
}

func (l *testLog) takeReads() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.reads
	l.reads = nil
	return r
}

// storages are the stores every test runs on: memory, and real MariaDB.
var storages = []string{"memory", "mariadb"}

// openDB returns a fresh database for storage "mariadb", nil for "memory".
func openDB(t testing.TB, storage string) *sql.DB {
	t.Helper()
	if storage == "memory" {
		return nil
	}
	db, err := sql.Open("mysql", testdb.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newTiler(t testing.TB, db *sql.DB, l *testLog, cacheBytes int64) *Tiler {
	t.Helper()
	tl, err := New(context.Background(), Config{Origin: testOrigin, Leaves: l.source, DB: db, CacheBytes: cacheBytes,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

// --- The independent client: computations straight from RFC 6962 and
// C2SP tlog-tiles, sharing no code with the package. ---

func leafHashes(leaves [][]byte) [][]byte {
	out := make([][]byte, len(leaves))
	for i, l := range leaves {
		out[i] = rfc6962.DefaultHasher.HashLeaf(l)
	}
	return out
}

// mth is RFC 6962's MTH over leaf hashes, by its recursive definition.
func mth(h [][]byte) []byte {
	switch len(h) {
	case 0:
		return rfc6962.DefaultHasher.EmptyRoot()
	case 1:
		return h[0]
	}
	k := 1
	for k*2 < len(h) {
		k *= 2
	}
	return rfc6962.DefaultHasher.HashChildren(mth(h[:k]), mth(h[k:]))
}

// wantTile is tile n of level L, w wide, per the C2SP formula: hash i is
// MTH(D[(n*256+i)*256^L : (n*256+i+1)*256^L]).
func wantTile(lh [][]byte, L int, n uint64, w int) []byte {
	span := uint64(1) << (8 * L)
	var out []byte
	for i := range uint64(w) {
		lo := (n*256 + i) * span
		out = append(out, mth(lh[lo:lo+span])...)
	}
	return out
}

// roots returns the RFC 6962 root of every tree size in sizes, computed by
// merkle's compact ranges.
func roots(t testing.TB, leaves [][]byte, sizes []uint64) map[uint64][]byte {
	t.Helper()
	want := map[uint64]bool{}
	for _, s := range sizes {
		want[s] = true
	}
	out := map[uint64][]byte{0: rfc6962.DefaultHasher.EmptyRoot()}
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	r := rf.NewEmptyRange(0)
	for i, l := range leaves {
		if err := r.Append(rfc6962.DefaultHasher.HashLeaf(l), nil); err != nil {
			t.Fatal(err)
		}
		if want[uint64(i+1)] {
			root, err := r.GetRootHash(nil)
			if err != nil {
				t.Fatal(err)
			}
			out[uint64(i+1)] = root
		}
	}
	return out
}

func cp(size uint64, root []byte) checkpoint.Checkpoint {
	return checkpoint.Checkpoint{Origin: testOrigin, Size: size, Hash: root}
}

// catchUp catches tl up to size with the true root.
func catchUp(t testing.TB, tl *Tiler, l *testLog, size uint64) []byte {
	t.Helper()
	root := mth(leafHashes(l.leaves[:size]))
	if err := tl.CatchUp(context.Background(), cp(size, root)); err != nil {
		t.Fatalf("CatchUp(%d): %v", size, err)
	}
	if got, gotRoot := tl.Latest(); got != size || !bytes.Equal(gotRoot, root) {
		t.Fatalf("after CatchUp(%d), Latest() = %d, %x; want %d, %x", size, got, gotRoot, size, root)
	}
	return root
}

// serve mounts tl under /log/ the way the personality does.
func serve(t testing.TB, tl *Tiler) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/log/tile/", http.StripPrefix("/log", tl))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

type response struct {
	code   int
	header http.Header
	body   []byte
}

func get(t testing.TB, srv *httptest.Server, path string, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	// A transport of our own that does not gunzip behind our back.
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return response{resp.StatusCode, resp.Header, body}
}

// decodeBundle splits a C2SP entry bundle into its entries.
func decodeBundle(t testing.TB, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			t.Fatalf("bundle: %d trailing bytes", len(b))
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			t.Fatalf("bundle: entry of %d bytes, %d left", n, len(b)-2)
		}
		out = append(out, b[2:2+n])
		b = b[2+n:]
	}
	return out
}

// checkServed fetches every tile and entry bundle of the tree of the given
// size over HTTP, as a tlog-tiles client would, and compares them with the
// independent computation. The tile list comes from tlog.NewTiles, which
// knows nothing of this package.
func checkServed(t testing.TB, srv *httptest.Server, leaves [][]byte, size uint64) {
	t.Helper()
	lh := leafHashes(leaves[:size])
	for _, tile := range tlog.NewTiles(8, 0, int64(size)) {
		full := tile.W == 256
		path := "/log/tile/" + strings.TrimPrefix(tile.Path(), "tile/8/")
		r := get(t, srv, path)
		if r.code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, r.code, r.body)
		}
		if want := wantTile(lh, tile.L, uint64(tile.N), tile.W); !bytes.Equal(r.body, want) {
			t.Fatalf("GET %s: %d bytes differ from the independent computation (%d bytes)", path, len(r.body), len(want))
		}
		checkHeaders(t, path, r, full)
		if tile.L != 0 {
			continue
		}
		bpath := "/log/tile/entries/" + strings.TrimPrefix(tile.Path(), "tile/8/0/")
		r = get(t, srv, bpath, "Accept-Encoding", "gzip")
		if r.code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", bpath, r.code, r.body)
		}
		got := decodeBundle(t, r.body)
		lo := uint64(tile.N) * 256
		want := leaves[lo : lo+uint64(tile.W)]
		if len(got) != len(want) {
			t.Fatalf("GET %s: %d entries, want %d", bpath, len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("GET %s: entry %d differs", bpath, lo+uint64(i))
			}
		}
		checkHeaders(t, bpath, r, full)
	}
}

func checkHeaders(t testing.TB, path string, r response, full bool) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("GET %s: Content-Type %q", path, ct)
	}
	cc := r.header.Get("Cache-Control")
	if full && cc != "public, max-age=31536000, immutable" {
		t.Errorf("GET %s (full): Cache-Control %q", path, cc)
	}
	if !full && (strings.Contains(cc, "immutable") || !strings.Contains(cc, "max-age=60")) {
		t.Errorf("GET %s (partial): Cache-Control %q", path, cc)
	}
}

// httpTileReader is a tlog.TileReader over the served tiles: tlog's own
// client code, which authenticates every tile it reads against the tree.
type httpTileReader struct {
	t   testing.TB
	srv *httptest.Server
}

func (r httpTileReader) Height() int { return 8 }

func (r httpTileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tile := range tiles {
		resp := get(r.t, r.srv, "/log/tile/"+strings.TrimPrefix(tile.Path(), "tile/8/"))
		if resp.code != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %d", tile.Path(), resp.code)
		}
		out[i] = resp.body
	}
	return out, nil
}

func (httpTileReader) SaveTiles([]tlog.Tile, [][]byte) {}

// checkWithTlog has tlog read the served tiles of the tree of the given size
// and root: the tree hash, record proofs and a tree proof must all check.
func checkWithTlog(t testing.TB, srv *httptest.Server, leaves [][]byte, size uint64, root []byte, older uint64, olderRoot []byte) {
	t.Helper()
	var th tlog.Hash
	copy(th[:], root)
	hr := tlog.TileHashReader(tlog.Tree{N: int64(size), Hash: th}, httpTileReader{t, srv})
	got, err := tlog.TreeHash(int64(size), hr)
	if err != nil {
		t.Fatalf("tlog.TreeHash(%d) over the served tiles: %v", size, err)
	}
	if got != th {
		t.Fatalf("tlog.TreeHash(%d) = %x, want %x", size, got, root)
	}
	for _, i := range []uint64{0, size / 3, size / 2, size - 1} {
		p, err := tlog.ProveRecord(int64(size), int64(i), hr)
		if err != nil {
			t.Fatalf("tlog.ProveRecord(%d, %d): %v", size, i, err)
		}
		if err := tlog.CheckRecord(p, int64(size), th, int64(i), tlog.RecordHash(leaves[i])); err != nil {
			t.Fatalf("tlog.CheckRecord(%d, %d): %v", size, i, err)
		}
	}
	if older > 0 && older < size {
		p, err := tlog.ProveTree(int64(size), int64(older), hr)
		if err != nil {
			t.Fatalf("tlog.ProveTree(%d, %d): %v", size, older, err)
		}
		var oh tlog.Hash
		copy(oh[:], olderRoot)
		if err := tlog.CheckTree(p, int64(size), th, int64(older), oh); err != nil {
			t.Fatalf("tlog.CheckTree(%d, %d): %v", size, older, err)
		}
	}
}
