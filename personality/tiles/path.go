package tiles

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// ErrMalformedPath means a request path is not a C2SP tlog-tiles path.
var ErrMalformedPath = errors.New("tiles: malformed tile path")

// C2SP tlog-tiles paths are the Go checksum database's tile paths
// (golang.org/x/mod/sumdb/tlog) with two differences: the height element is
// gone (it is always 8), and record data lives under "entries" instead of
// "data". Both use the same strict encoding of N in groups of three digits
// ("x001/x234/067") and the same ".p/<W>" suffix for partial tiles, so tlog
// does the encoding and the strict parsing, and these functions only add and
// remove the height.
const tlogPrefix = "tile/8/"

// TilePath returns the path, relative to the log's prefix, of hash tile n at
// level, width hashes wide (256 for a full tile), for example
// "tile/0/x001/x234/067" or "tile/1/000.p/17".
func TilePath(level int, n uint64, width int) string {
	return "tile/" + strings.TrimPrefix(tlog.Tile{H: tileHeight, L: level, N: int64(n), W: width}.Path(), tlogPrefix)
}

// EntriesPath returns the path, relative to the log's prefix, of entry
// bundle n, width entries wide (256 for a full bundle), for example
// "tile/entries/x001/067.p/5".
func EntriesPath(n uint64, width int) string {
	p := tlog.Tile{H: tileHeight, L: -1, N: int64(n), W: width}.Path()
	return "tile/entries/" + strings.TrimPrefix(p, tlogPrefix+"data/")
}

// parseTilePath parses what follows "/tile/" in a hash tile path.
func parseTilePath(rest string) (level uint, n uint64, width uint64, err error) {
	t, err := tlog.ParseTilePath(tlogPrefix + rest)
	if err != nil || t.H != tileHeight || t.L < 0 || t.L > maxTileLevel {
		return 0, 0, 0, fmt.Errorf("%w: want /tile/<L>/<N>[.p/<W>], L from 0 to %d, N in zero-padded groups of three digits (x001/x234/067), W from 1 to 255", ErrMalformedPath, maxTileLevel)
	}
	return uint(t.L), uint64(t.N), uint64(t.W), nil
}

// parseEntriesPath parses what follows "/tile/entries/" in an entry bundle path.
func parseEntriesPath(rest string) (n uint64, width uint64, err error) {
	t, err := tlog.ParseTilePath(tlogPrefix + "data/" + rest)
	if err != nil || t.H != tileHeight || t.L != -1 {
		return 0, 0, fmt.Errorf("%w: want /tile/entries/<N>[.p/<W>], N in zero-padded groups of three digits (x001/x234/067), W from 1 to 255", ErrMalformedPath)
	}
	return uint64(t.N), uint64(t.W), nil
}
