package tiles

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"

	"github.com/transparency-dev/merkle/compact"
)

// Geometry of a C2SP tlog-tiles tile: 256 hashes (tree height 8) of 32 bytes.
const (
	tileHeight = 8
	tileWidth  = 1 << tileHeight
	hashSize   = sha256.Size
	tileBytes  = tileWidth * hashSize
	// nodesPerTile counts every node of the height-8 subtree a full tile
	// spans: 256 tile hashes, 128 above them, ..., and its root.
	nodesPerTile = 2*tileWidth - 1
	// maxTileLevel is the highest level C2SP allows in a tile path.
	maxTileLevel = 63
)

var (
	leafPrefix = []byte{0x00}
	// emptyRoot is the RFC 6962 hash of the empty tree: SHA-256 of nothing.
	emptyRoot = func() []byte { h := sha256.Sum256(nil); return h[:] }()
)

// errNotInTree means a node was asked of a tree that does not hold it; it
// is a bug in the caller's arithmetic, never a client's mistake.
var errNotInTree = errors.New("tiles: node not in the tree")

// A tile's nodes are kept "expanded": the tile's hashes (height 0 within the
// tile) followed by every complete subtree hash above them, height by height,
// up to the tile's root. A proof then reads any node of the tile with one
// slice expression instead of rehashing up to 255 hashes.
//
//	height j:  0    1    2    ...  7    8
//	nodes:     256  128  64   ...  2    1
//	offset:    0    256  384  ...  508  510   (in hashes: 512 - 512>>j)
func nodeOffset(j uint, k uint64) uint64 {
	return (2*tileWidth - 2*tileWidth>>j + k) * hashSize
}

// rootOffset is where a full tile's root (height 8) sits in its nodes.
var rootOffset = nodeOffset(tileHeight, 0)

// expand returns the expanded nodes of a tile whose hashes are level0
// (1 to 256 hashes). For a partial tile only the complete subtrees are
// computed; the rest stay zero and are never read.
func expand(level0 []byte) []byte {
	nodes := make([]byte, nodesPerTile*hashSize)
	copy(nodes, level0)
	w := uint64(len(level0) / hashSize)
	var buf [1 + 2*hashSize]byte
	buf[0] = 0x01
	for j := uint(1); j <= tileHeight; j++ {
		for k := range w >> j {
			// The two children of (j, k) are adjacent at height j-1.
			c := nodeOffset(j-1, 2*k)
			copy(buf[1:], nodes[c:c+2*hashSize])
			h := sha256.Sum256(buf[:])
			copy(nodes[nodeOffset(j, k):], h[:])
		}
	}
	return nodes
}

func hashChildren(l, r []byte) []byte {
	var buf [1 + 2*hashSize]byte
	buf[0] = 0x01
	copy(buf[1:], l)
	copy(buf[1+hashSize:], r)
	h := sha256.Sum256(buf[:])
	return h[:]
}

// tileCoords maps the tree node (level, index) of RFC 6962 to the tile that
// holds it: the tile level L, the tile number n within that level, the
// node's height j within the tile (0..7) and its index k at that height.
// A node at a level that is a multiple of 8 is a hash of a tile, never the
// root of one: the tile above holds it.
func tileCoords(level uint, index uint64) (L uint, n uint64, j uint, k uint64) {
	L, j = level/tileHeight, level%tileHeight
	shift := tileHeight - j
	return L, index >> shift, j, index & (1<<shift - 1)
}

// edgeTile is the partial tile at the right edge of one level of a tree:
// tile n of the level, w (1..255) hashes wide, expanded.
type edgeTile struct {
	n     uint64
	w     uint64
	nodes []byte
}

// node returns node (j, k) of the edge tile, if it is complete.
func (e *edgeTile) node(n uint64, j uint, k uint64) ([]byte, bool) {
	if e == nil || e.n != n || (k+1)<<j > e.w {
		return nil, false
	}
	o := nodeOffset(j, k)
	return e.nodes[o : o+hashSize : o+hashSize], true
}

// fullTileAt reports whether tile n of level L is full in a tree of the
// given size. (size >> 8L is the number of hashes at tile level L; shifts
// of 64 or more give 0.)
func fullTileAt(size uint64, L uint, n uint64) bool {
	return n < size>>(tileHeight*L)>>tileHeight
}

// edgeAt reports whether the tree of the given size has at least w hashes
// in the partial tile n of level L.
func edgeAt(size uint64, L uint, n, w uint64) bool {
	avail := size >> (tileHeight * L)
	return n == avail>>tileHeight && w <= avail&(tileWidth-1)
}

// rootFromEdges computes the RFC 6962 root of the tree of the given size
// from its edge tiles alone. That is always possible: the root folds the
// maximal perfect subtrees of [0, size), and a maximal subtree is never
// inside a full tile (the full tile's own subtree would be larger).
func rootFromEdges(size uint64, edges []*edgeTile) ([]byte, error) {
	return foldRoot(size, func(level uint, index uint64) ([]byte, error) {
		L, n, j, k := tileCoords(level, index)
		if int(L) < len(edges) {
			if h, ok := edges[L].node(n, j, k); ok {
				return h, nil
			}
		}
		return nil, fmt.Errorf("%w: (%d, %d) of size %d", errNotInTree, level, index, size)
	})
}

// foldRoot computes the RFC 6962 root of the tree of the given size by
// folding, right to left, the hashes of the maximal perfect subtrees that
// make up [0, size), read with node.
func foldRoot(size uint64, node func(level uint, index uint64) ([]byte, error)) ([]byte, error) {
	if size == 0 {
		return append([]byte(nil), emptyRoot...), nil
	}
	var buf [64]compact.NodeID
	ids := compact.RangeNodes(0, size, buf[:0])
	var root []byte
	for i := len(ids) - 1; i >= 0; i-- {
		h, err := node(ids[i].Level, ids[i].Index)
		if err != nil {
			return nil, err
		}
		if root == nil {
			root = append([]byte(nil), h...)
		} else {
			root = hashChildren(h, root)
		}
	}
	return root, nil
}

// builder appends leaves to a tree held as tiles: for each tile level the
// hashes of its rightmost, growing tile. It remembers which tiles changed
// since the last flush, so that exactly those are written.
type builder struct {
	size   uint64
	levels []buildLevel
	// full lists the tiles completed since the last flush.
	full []fullTile
	// dirty has bit L set if level L's growing tile changed since the last flush.
	dirty uint64

	hasher  hash.Hash
	scratch [hashSize]byte
}

type buildLevel struct {
	n      uint64 // number of the growing tile
	hashes []byte // its hashes so far, fewer than 256
}

// fullTile is a completed tile, expanded.
type fullTile struct {
	level uint
	n     uint64
	nodes []byte
}

// tileRow is a tile's hashes as stored: all 256 for a full tile, the first
// W for a tile still growing.
type tileRow struct {
	level  uint
	n      uint64
	hashes []byte
}

func newBuilder() *builder {
	return &builder{hasher: sha256.New()}
}

// addLeaf appends one leaf (its RFC 6962 leaf hash) to the tree.
func (b *builder) addLeaf(leaf []byte) {
	b.hasher.Reset()
	b.hasher.Write(leafPrefix)
	b.hasher.Write(leaf)
	b.push(0, b.hasher.Sum(b.scratch[:0]))
	b.size++
}

func (b *builder) push(L uint, h []byte) {
	if int(L) == len(b.levels) {
		b.levels = append(b.levels, buildLevel{hashes: make([]byte, 0, tileBytes)})
	}
	lv := &b.levels[L]
	lv.hashes = append(lv.hashes, h...)
	b.dirty |= 1 << L
	if len(lv.hashes) < tileBytes {
		return
	}
	nodes := expand(lv.hashes)
	b.full = append(b.full, fullTile{level: L, n: lv.n, nodes: nodes})
	lv.n++
	lv.hashes = lv.hashes[:0]
	b.push(L+1, nodes[rootOffset:rootOffset+hashSize])
}

// flush returns the rows to store for what changed since the last flush, and
// the tiles completed meanwhile, and forgets both.
func (b *builder) flush() ([]tileRow, []fullTile) {
	rows := make([]tileRow, 0, len(b.full)+len(b.levels))
	for _, f := range b.full {
		rows = append(rows, tileRow{level: f.level, n: f.n, hashes: f.nodes[:tileBytes]})
	}
	for L := range b.levels {
		lv := &b.levels[L]
		if b.dirty&(1<<L) != 0 && len(lv.hashes) > 0 {
			rows = append(rows, tileRow{level: uint(L), n: lv.n, hashes: append([]byte(nil), lv.hashes...)})
		}
	}
	full := b.full
	b.full, b.dirty = nil, 0
	return rows, full
}

// edges returns the tree's partial tiles, expanded, indexed by level (nil
// where a level has none). They share nothing with the builder.
func (b *builder) edges() []*edgeTile {
	edges := make([]*edgeTile, len(b.levels))
	for L, lv := range b.levels {
		if len(lv.hashes) > 0 {
			edges[L] = &edgeTile{n: lv.n, w: uint64(len(lv.hashes) / hashSize), nodes: expand(lv.hashes)}
		}
	}
	return edges
}

// tileReader reads a stored tile row; nil if there is none.
type tileReader func(level uint, n uint64) ([]byte, error)

// loadBuilder rebuilds the growing tiles of a tree of the given size from
// stored rows: one row per level at most.
func loadBuilder(size uint64, read tileReader) (*builder, error) {
	b := newBuilder()
	b.size = size
	for L := uint(0); size>>(tileHeight*L) > 0; L++ {
		avail := size >> (tileHeight * L)
		lv := buildLevel{n: avail >> tileHeight, hashes: make([]byte, 0, tileBytes)}
		if w := avail & (tileWidth - 1); w > 0 {
			row, err := read(L, lv.n)
			if err != nil {
				return nil, err
			}
			if uint64(len(row)) < w*hashSize {
				return nil, fmt.Errorf("tiles: stored tile %d/%d has %d bytes, a tree of size %d needs %d", L, lv.n, len(row), size, w*hashSize)
			}
			lv.hashes = append(lv.hashes, row[:w*hashSize]...)
		}
		b.levels = append(b.levels, lv)
	}
	return b, nil
}
