package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/internal/testdb"
	"golang.org/x/mod/sumdb/tlog"
)

// httpTiles reads C2SP tlog-tiles from a log with plain HTTP, as a generic
// tlog-tiles client would. sumdb/tlog names tiles tile/8/L/N; C2SP drops the
// height, which is always 8.
type httpTiles struct {
	t    *testing.T
	base string
}

func (h httpTiles) Height() int { return 8 }

func (h httpTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tile := range tiles {
		b, err := h.get("/" + strings.Replace(tile.Path(), "tile/8/", "tile/", 1))
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

func (h httpTiles) SaveTiles([]tlog.Tile, [][]byte) {}

func (h httpTiles) get(path string) ([]byte, error) {
	resp, err := http.Get(h.base + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %d %s", path, resp.StatusCode, b)
	}
	return b, nil
}

// TestTilesReadPath reads a running log through tlog-tiles only: the tree
// hash computed from the served hash tiles equals the signed checkpoint's
// root, inclusion and consistency proofs built by an independent client
// from those tiles verify, and every entry bundle holds exactly the log's
// entries.
func TestTilesReadPath(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k := newKeyset(t)
	lg := startLog(t, k, testdb.New(t))
	c := logClient(t, lg.url(), k.logVKey)
	entries := signedEntries(t, k, 11, 600) // two full tiles and a partial one
	runLoad(ctx, t, func() []*client.Log { return []*client.Log{c} }, entries, 16)
	var size uint64
	waitFor(t, "600 entries in a checkpoint", time.Minute, func() (bool, error) {
		cp, err := c.Checkpoint(ctx)
		if err == nil {
			size = cp.Size
		}
		return size == 600, err
	})
	cp, err := c.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tr := httpTiles{t: t, base: lg.url()}
	hr := tlog.TileHashReader(tlog.Tree{N: int64(cp.Size), Hash: tlog.Hash(cp.Hash)}, tr)
	root, err := tlog.TreeHash(int64(cp.Size), hr)
	if err != nil {
		t.Fatalf("tree hash from tiles: %v", err)
	}
	if root != tlog.Hash(cp.Hash) {
		t.Fatal("the tree hash computed from the served tiles is not the signed root")
	}
	for _, i := range []int64{0, 1, 255, 256, 511, 512, 599} {
		p, err := tlog.ProveRecord(int64(cp.Size), i, hr)
		if err != nil {
			t.Fatalf("proof of %d from tiles: %v", i, err)
		}
		es, err := c.Entries(ctx, uint64(i), uint64(i)+1)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, int64(cp.Size), root, i, tlog.RecordHash(es[0].Data)); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	for _, old := range []int64{1, 256, 300, 599} {
		p, err := tlog.ProveTree(int64(cp.Size), old, hr)
		if err != nil {
			t.Fatal(err)
		}
		oldRoot, err := tlog.TreeHash(old, hr)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckTree(p, int64(cp.Size), root, old, oldRoot); err != nil {
			t.Fatalf("tree %d→%d: %v", old, cp.Size, err)
		}
	}
	// Entry bundles: uint16 length-prefixed entries, in order.
	var got [][]byte
	for _, path := range []string{"/tile/entries/000", "/tile/entries/001", "/tile/entries/002.p/88"} {
		b, err := tr.get(path)
		if err != nil {
			t.Fatal(err)
		}
		for len(b) > 0 {
			n := int(binary.BigEndian.Uint16(b))
			got = append(got, b[2:2+n])
			b = b[2+n:]
		}
	}
	if len(got) != 600 {
		t.Fatalf("entry bundles hold %d entries, want 600", len(got))
	}
	for start := 0; start < 600; start += 300 {
		es, err := c.Entries(ctx, uint64(start), uint64(start+300))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if string(e.Data) != string(got[e.Index]) {
				t.Fatalf("entry bundle differs from /entries at %d", e.Index)
			}
		}
	}
	// Beyond the tree: 404. A full tile never changes: immutable caching.
	if _, err := tr.get("/tile/entries/003"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("bundle beyond the tree: %v", err)
	}
	resp, err := http.Get(lg.url() + "/tile/0/000")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
		t.Fatalf("full tile Cache-Control %q, want immutable", cc)
	}
}
