package tiles

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/carelog/carelog/api"
)

// Cache headers. A full tile or bundle never changes. A partial one never
// changes either, but C2SP lets a log delete it once the full one exists, so
// caches keep it only briefly.
const (
	cacheFull    = "public, max-age=31536000, immutable"
	cachePartial = "public, max-age=60"
)

// errEntryMismatch means a leaf read from the log does not hash to the tile
// hash verified for it: the log's leaf storage changed under the tiles.
var errEntryMismatch = errors.New("tiles: the log's entries do not match its verified tiles")

// ServeHTTP serves GET (and HEAD) /tile/<L>/<N>[.p/<W>] and
// /tile/entries/<N>[.p/<W>], relative to wherever the Tiler is mounted
// (strip the log's prefix with http.StripPrefix). Resources beyond the tree
// the tiles are caught up to are 404; malformed paths are 400.
func (t *Tiler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind, code := t.serve(w, r)
	t.m.requests.WithLabelValues(kindNames[kind], strconv.Itoa(code)).Inc()
}

func (t *Tiler) serve(w http.ResponseWriter, r *http.Request) (kind, code int) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return kindHash, writeError(w, http.StatusMethodNotAllowed, "tiles are read with GET")
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/tile/")
	if !ok {
		return kindHash, writeError(w, http.StatusNotFound, "not a tile path: want /tile/<L>/<N>[.p/<W>] or /tile/entries/<N>[.p/<W>]")
	}
	if e, ok := strings.CutPrefix(rest, "entries/"); ok {
		return kindEntries, t.serveEntries(w, r, e)
	}
	return kindHash, t.serveHashTile(w, r, rest)
}

func (t *Tiler) serveHashTile(w http.ResponseWriter, r *http.Request, rest string) int {
	L, n, width, err := parseTilePath(rest)
	if err != nil {
		return writeError(w, http.StatusBadRequest, err.Error())
	}
	s := t.snap.Load()
	var hashes []byte
	switch {
	case fullTileAt(s.size, L, n):
		nodes, err := t.fullTile(r.Context(), L, n)
		if err != nil {
			return t.internalError(w, r, "reading a tile", err)
		}
		hashes = nodes[:width*hashSize]
	case width < tileWidth && edgeAt(s.size, L, n, width):
		hashes = s.edges[L].nodes[:width*hashSize]
	default:
		return writeError(w, http.StatusNotFound, fmt.Sprintf("tile %s is beyond the tree of size %d", TilePath(int(L), n, int(width)), s.size))
	}
	return writeBlob(w, r, hashes, width == tileWidth, false)
}

func (t *Tiler) serveEntries(w http.ResponseWriter, r *http.Request, rest string) int {
	n, width, err := parseEntriesPath(rest)
	if err != nil {
		return writeError(w, http.StatusBadRequest, err.Error())
	}
	s := t.snap.Load()
	if !fullTileAt(s.size, 0, n) && !(width < tileWidth && edgeAt(s.size, 0, n, width)) {
		return writeError(w, http.StatusNotFound, fmt.Sprintf("entry bundle %s is beyond the tree of size %d", EntriesPath(n, int(width)), s.size))
	}
	b, err := t.bundle(r.Context(), s, n, width)
	if err != nil {
		return t.internalError(w, r, "reading entries", err)
	}
	return writeBlob(w, r, b, width == tileWidth, true)
}

// bundle returns entry bundle n, width entries wide, which the tree of s
// holds: from the cache (cut from the full bundle if that is there), or else
// read from the log once however many clients ask at the same time.
func (t *Tiler) bundle(ctx context.Context, s *snapshot, n, width uint64) ([]byte, error) {
	if b, ok := t.cache.get(cacheKey{level: entriesLevel, n: n, w: tileWidth}); ok {
		t.m.cacheHit[kindEntries].Inc()
		return bundlePrefix(b, width), nil
	}
	key := cacheKey{level: entriesLevel, n: n, w: width}
	if width < tileWidth {
		if b, ok := t.cache.get(key); ok {
			t.m.cacheHit[kindEntries].Inc()
			return b, nil
		}
	}
	t.m.cacheMiss[kindEntries].Inc()
	return t.flight.do(ctx, key, func(ctx context.Context) ([]byte, error) {
		b, err := t.readBundle(ctx, s, n, width)
		if err == nil {
			t.cache.put(key, b)
		}
		return b, err
	})
}

// readBundle reads the first width leaves of bundle n from the log, checks
// each against its verified level-0 tile hash, and encodes them as C2SP
// requires: each entry a big-endian uint16 length, then its bytes.
func (t *Tiler) readBundle(ctx context.Context, s *snapshot, n, width uint64) ([]byte, error) {
	var hashes []byte
	if fullTileAt(s.size, 0, n) {
		nodes, err := t.fullTile(ctx, 0, n)
		if err != nil {
			return nil, err
		}
		hashes = nodes[:tileBytes]
	} else if len(s.edges) > 0 && edgeAt(s.size, 0, n, width) {
		hashes = s.edges[0].nodes[:s.edges[0].w*hashSize]
	} else {
		return nil, fmt.Errorf("%w: bundle %d.p/%d of size %d", errNotInTree, n, width, s.size)
	}
	start := n * tileWidth
	leaves := make([][]byte, 0, width)
	for got := uint64(0); got < width; got = uint64(len(leaves)) {
		more, err := t.leaves(ctx, start+got, start+width)
		if err != nil {
			return nil, fmt.Errorf("tiles: reading leaves [%d, %d): %w", start+got, start+width, err)
		}
		if len(more) == 0 || uint64(len(more)) > width-got {
			return nil, fmt.Errorf("tiles: the log returned %d leaves for [%d, %d)", len(more), start+got, start+width)
		}
		leaves = append(leaves, more...)
	}
	size := 0
	for i, l := range leaves {
		if len(l) > 0xffff {
			// Cannot happen with carelog's entry size limit, and C2SP
			// bundles have no encoding for it.
			return nil, fmt.Errorf("tiles: leaf %d has %d bytes, more than an entry bundle can hold", start+uint64(i), len(l))
		}
		size += 2 + len(l)
	}
	out := make([]byte, 0, size)
	h := sha256.New()
	var sum [hashSize]byte
	for i, l := range leaves {
		h.Reset()
		h.Write(leafPrefix)
		h.Write(l)
		if !bytes.Equal(h.Sum(sum[:0]), hashes[i*hashSize:(i+1)*hashSize]) {
			t.m.corrupt.Inc()
			t.logger.Error("a leaf read from the log does not hash to its verified tile hash", slog.Uint64("index", start+uint64(i)))
			return nil, fmt.Errorf("%w: leaf %d", errEntryMismatch, start+uint64(i))
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(l)))
		out = append(out, l...)
	}
	return out, nil
}

// bundlePrefix returns the first width entries of an encoded bundle.
func bundlePrefix(b []byte, width uint64) []byte {
	off := 0
	for range width {
		off += 2 + int(binary.BigEndian.Uint16(b[off:]))
	}
	return b[:off]
}

func (t *Tiler) internalError(w http.ResponseWriter, r *http.Request, what string, err error) int {
	if r.Context().Err() != nil {
		// The client went away; nobody reads this answer.
		return writeError(w, http.StatusServiceUnavailable, "request cancelled")
	}
	if !errors.Is(err, errEntryMismatch) {
		t.logger.Error("serving tiles", slog.String("path", r.URL.Path), slog.Any("error", err))
	}
	return writeError(w, http.StatusInternalServerError, what+" failed; the log's operators have the details in its logs")
}

func writeError(w http.ResponseWriter, code int, msg string) int {
	// A missing tile appears later; never let a cache keep the 404.
	w.Header().Set("Cache-Control", "no-store")
	api.WriteError(w, code, msg)
	return code
}

var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return zw
}}

// writeBlob answers with a tile or bundle. Bundles are gzipped for clients
// that accept it, as C2SP recommends; hashes do not compress.
func writeBlob(w http.ResponseWriter, r *http.Request, b []byte, full, compressible bool) int {
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("X-Content-Type-Options", "nosniff")
	if full {
		h.Set("Cache-Control", cacheFull)
	} else {
		h.Set("Cache-Control", cachePartial)
	}
	if compressible {
		h.Add("Vary", "Accept-Encoding")
		if acceptsGzip(r.Header.Get("Accept-Encoding")) {
			h.Set("Content-Encoding", "gzip")
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodHead {
				return http.StatusOK
			}
			zw := gzipWriters.Get().(*gzip.Writer)
			zw.Reset(w)
			_, _ = zw.Write(b)
			_ = zw.Close()
			zw.Reset(nil)
			gzipWriters.Put(zw)
			return http.StatusOK
		}
	}
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
	return http.StatusOK
}

// acceptsGzip reports whether an Accept-Encoding header admits gzip (and
// does not refuse it with q=0).
func acceptsGzip(header string) bool {
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}
