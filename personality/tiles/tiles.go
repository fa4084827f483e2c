// Package tiles serves a log as C2SP tlog-tiles (https://c2sp.org/tlog-tiles)
// and builds its inclusion and consistency proofs, from hashes it stores
// itself rather than from Trillian.
//
// A Tiler follows the log: CatchUp reads the leaves the log gained since the
// last call, hashes them into tiles, checks that they hash to the root of a
// signed checkpoint, and stores the tiles durably. Only then are they served.
//
// A tile is 256 consecutive hashes of one level of the RFC 6962 Merkle tree:
// at tile level 0 the leaf hashes, at tile level L the roots of the full
// tiles of level L-1, so that tile level L holds tree level 8L. The tile of a
// level that is still growing is partial, served as "<N>.p/<W>" for each
// width W the tree has reached. Tiles are stored as rows of concatenated
// hashes (see schema.sql); the tree nodes between tile levels, which proofs
// need, are recomputed from a tile's hashes when the tile is loaded and kept
// with it in a bounded memory cache, so a warm proof reads memory only.
package tiles

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/merkle/proof"
)

// Named errors; callers map them to status codes at their edge.
var (
	// ErrRootMismatch means the log's leaves do not hash to the root of the
	// checkpoint given to CatchUp (or the checkpoint disagrees with tiles
	// already verified). Nothing was kept; it is an integrity incident.
	ErrRootMismatch = errors.New("tiles: the log's leaves do not hash to the checkpoint's root")
	// ErrNotCaughtUp means a proof was asked for a tree larger than the
	// tiles have been caught up to.
	ErrNotCaughtUp = errors.New("tiles: tree size beyond what the tiles are caught up to")
	// ErrBadRange means a proof was asked for an index not below the tree
	// size, or from an older size larger than the newer one.
	ErrBadRange = errors.New("tiles: invalid proof range")
)

// LeafSource returns the log's leaves (entry bytes, in order) from index
// start: at least one and at most end-start of them. CatchUp asks for at
// most 1000 at a time, entry bundles for at most 256. It is called
// concurrently (by CatchUp and by HTTP requests for entry bundles).
type LeafSource func(ctx context.Context, start, end uint64) ([][]byte, error)

// Config is what a Tiler needs. Zero values take the documented defaults.
type Config struct {
	// Origin is the log's checkpoint origin; stored tiles are keyed by it.
	Origin string
	// Leaves reads the log's leaves (for catching up and for entry bundles).
	Leaves LeafSource
	// DB stores the tiles durably, in tables carelog_tile_* that New
	// creates if missing. Nil keeps them in memory: the log's try-out mode,
	// which keeps nothing.
	DB *sql.DB
	// CacheBytes bounds the memory cache of full hash tiles (16 KiB each
	// with their inner nodes) and entry bundles. Default 64 MiB.
	CacheBytes int64
	// Registry, if set, gets the metrics (carelog_tiles_*).
	Registry prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

const (
	defaultCacheBytes = 64 << 20
	// maxLeavesPerRead is the most leaves CatchUp asks of LeafSource at once.
	maxLeavesPerRead = 1000
	// commitEvery is how many leaves a long catch-up hashes between durable
	// commits, so that an interrupted one resumes near where it stopped.
	commitEvery = 8192
	// warmTiles is the most tiles completed by one catch-up that go
	// straight into the cache (the newest ones, which clients ask for next).
	warmTiles = 64
)

// Tiler follows one log and serves it as tiles. It is an http.Handler for
// GET /tile/... and GET /tile/entries/... (mount it with http.StripPrefix
// under the log's prefix). Its methods are safe for concurrent use.
type Tiler struct {
	origin string
	leaves LeafSource
	store  store
	logger *slog.Logger
	m      *metrics
	cache  *lru
	flight flight

	// snap is what is served: the verified tree and its edge tiles.
	snap atomic.Pointer[snapshot]

	catchMu sync.Mutex // one CatchUp at a time
	// work is the tree as stored up to the pending position, ready to grow;
	// nil when it must be reloaded from the store. Guarded by catchMu.
	work *builder
}

// snapshot is an immutable view of the verified tree.
type snapshot struct {
	size  uint64
	root  []byte
	edges []*edgeTile // by tile level; nil where the level has no partial tile
}

// New opens (creating if needed) the stored tiles of cfg.Origin and serves
// them up to their last verified size.
func New(ctx context.Context, cfg Config) (*Tiler, error) {
	if cfg.Origin == "" {
		return nil, errors.New("tiles: an origin is required")
	}
	if cfg.Leaves == nil {
		return nil, errors.New("tiles: a leaf source is required")
	}
	if cfg.CacheBytes <= 0 {
		cfg.CacheBytes = defaultCacheBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := &Tiler{
		origin: cfg.Origin,
		leaves: cfg.Leaves,
		logger: cfg.Logger.With(slog.String("component", "tiles")),
		cache:  newLRU(cfg.CacheBytes),
	}
	if cfg.DB != nil {
		s, err := newMySQLStore(ctx, cfg.DB, cfg.Origin)
		if err != nil {
			return nil, err
		}
		t.store = s
	} else {
		t.store = newMemoryStore()
	}
	t.m = newMetrics(cfg.Registry, t.cache)
	t.snap.Store(&snapshot{root: emptyRoot})
	pos, err := t.store.position(ctx)
	if err != nil {
		return nil, err
	}
	if err := t.follow(ctx, pos); err != nil {
		return nil, err
	}
	return t, nil
}

// Latest returns the tree size the tiles are caught up to and its root.
// Tiles, bundles and proofs are served up to that size.
func (t *Tiler) Latest() (size uint64, root []byte) {
	s := t.snap.Load()
	return s.size, append([]byte(nil), s.root...)
}

// follow makes the served snapshot the stored verified position, if it is
// not already (at start, or after another replica caught up the same log).
func (t *Tiler) follow(ctx context.Context, pos position) error {
	cur := t.snap.Load()
	if pos.size == cur.size && bytes.Equal(pos.root, cur.root) {
		return nil
	}
	if pos.size < cur.size {
		return fmt.Errorf("tiles: stored tiles went back from size %d to %d; refusing to serve them", cur.size, pos.size)
	}
	b, err := loadBuilder(pos.size, t.reader(ctx))
	if err != nil {
		return err
	}
	edges := b.edges()
	root, err := rootFromEdges(pos.size, edges)
	if err != nil {
		return err
	}
	// The stored root was checked against a checkpoint when it was stored;
	// a difference now means the stored hashes were damaged.
	if !bytes.Equal(root, pos.root) {
		return fmt.Errorf("tiles: stored tiles at size %d do not hash to their stored root; refusing to serve them", pos.size)
	}
	t.publish(&snapshot{size: pos.size, root: root, edges: edges})
	if pos.pending == pos.size {
		t.work = b
	} else {
		t.work = nil
	}
	return nil
}

func (t *Tiler) publish(s *snapshot) {
	t.snap.Store(s)
	t.m.size.Set(float64(s.size))
}

func (t *Tiler) reader(ctx context.Context) tileReader {
	return func(level uint, n uint64) ([]byte, error) { return t.store.readTile(ctx, level, n) }
}

// CatchUp makes the tiles cover the tree of cp's size: it reads the leaves
// the tiles lack, hashes them, checks that the tree hashes to cp's root,
// stores the tiles and only then serves them. A checkpoint no larger than
// what is served is checked against the stored tiles.
//
// It refuses with ErrRootMismatch, keeping nothing, if the root differs.
// Long catch-ups store progress every few thousand leaves (unverified, not
// served) so that an interrupted one, by a cancelled context or a crash,
// resumes there. Calling it again with the same checkpoint does nothing.
func (t *Tiler) CatchUp(ctx context.Context, cp checkpoint.Checkpoint) error {
	if cp.Origin != t.origin {
		return fmt.Errorf("tiles: checkpoint of %q given to the tiles of %q", cp.Origin, t.origin)
	}
	if len(cp.Hash) != hashSize {
		return fmt.Errorf("tiles: checkpoint root has %d bytes, want %d", len(cp.Hash), hashSize)
	}
	t.catchMu.Lock()
	defer t.catchMu.Unlock()

	pos, err := t.store.position(ctx)
	if err != nil {
		return err
	}
	if err := t.follow(ctx, pos); err != nil {
		return err
	}
	snap := t.snap.Load()
	if cp.Size <= snap.size {
		root, err := t.rootAt(ctx, snap, cp.Size)
		if err != nil {
			return err
		}
		if !bytes.Equal(root, cp.Hash) {
			t.m.mismatches.Inc()
			t.logger.Error("checkpoint root differs from the verified tiles", slog.Uint64("size", cp.Size), slog.Uint64("tiles_size", snap.size))
			return fmt.Errorf("%w: size %d, already verified up to %d", ErrRootMismatch, cp.Size, snap.size)
		}
		return nil
	}

	if pos.pending > cp.Size {
		// An earlier catch-up went past this checkpoint without being
		// verified. Start again from the verified size.
		next := position{size: pos.size, root: pos.root, pending: pos.size}
		if err := t.store.commit(ctx, pos, next, nil); err != nil {
			return err
		}
		pos, t.work = next, nil
	}
	b := t.work
	t.work = nil // put back only on success; any failure reloads from the store
	if b == nil || b.size != pos.pending {
		if b, err = loadBuilder(pos.pending, t.reader(ctx)); err != nil {
			return err
		}
	}

	start := time.Now()
	from := b.size
	for b.size < cp.Size {
		n := min(cp.Size-b.size, maxLeavesPerRead)
		leaves, err := t.leaves(ctx, b.size, b.size+n)
		if err != nil {
			return fmt.Errorf("tiles: reading leaves [%d, %d): %w", b.size, b.size+n, err)
		}
		if len(leaves) == 0 || uint64(len(leaves)) > n {
			return fmt.Errorf("tiles: the log returned %d leaves for [%d, %d)", len(leaves), b.size, b.size+n)
		}
		for _, l := range leaves {
			b.addLeaf(l)
		}
		t.m.leaves.Add(float64(len(leaves)))
		if b.size < cp.Size && b.size-pos.pending >= commitEvery {
			rows, _ := b.flush()
			next := position{size: pos.size, root: pos.root, pending: b.size}
			if err := t.store.commit(ctx, pos, next, rows); err != nil {
				return err
			}
			pos = next
		}
	}

	edges := b.edges()
	root, err := rootFromEdges(cp.Size, edges)
	if err != nil {
		return err
	}
	if !bytes.Equal(root, cp.Hash) {
		t.m.mismatches.Inc()
		t.logger.Error("the log's leaves do not hash to the checkpoint's root; tiles not updated",
			slog.Uint64("size", cp.Size), slog.Uint64("tiles_size", pos.size))
		// Forget the unverified progress too: the next catch-up reads
		// every leaf after the verified size again.
		if pos.pending != pos.size {
			if err := t.store.commit(ctx, pos, position{size: pos.size, root: pos.root, pending: pos.size}, nil); err != nil {
				t.logger.Error("could not reset the unverified tiles", slog.Any("error", err))
			}
		}
		return fmt.Errorf("%w: size %d", ErrRootMismatch, cp.Size)
	}
	rows, full := b.flush()
	if err := t.store.commit(ctx, pos, position{size: cp.Size, root: root, pending: cp.Size}, rows); err != nil {
		return err
	}
	// Verified and durable: now the new tiles may be cached and served.
	for _, f := range full[max(0, len(full)-warmTiles):] {
		t.cache.put(cacheKey{level: int(f.level), n: f.n, w: tileWidth}, f.nodes)
	}
	t.publish(&snapshot{size: cp.Size, root: root, edges: edges})
	t.work = b
	t.logger.Debug("tiles caught up", slog.Uint64("from", from), slog.Uint64("size", cp.Size), slog.Duration("took", time.Since(start)))
	return nil
}

// rootAt is the root of the tree of the given size, no larger than s's.
// Its subtrees may sit in full tiles by now, so it reads them like a proof.
func (t *Tiler) rootAt(ctx context.Context, s *snapshot, size uint64) ([]byte, error) {
	if size == s.size {
		return s.root, nil
	}
	return foldRoot(size, func(level uint, index uint64) ([]byte, error) {
		return t.node(ctx, s, level, index)
	})
}

// node returns the hash of tree node (level, index), which must be complete
// in the tree of s. The slice is shared: callers copy it.
func (t *Tiler) node(ctx context.Context, s *snapshot, level uint, index uint64) ([]byte, error) {
	L, n, j, k := tileCoords(level, index)
	if fullTileAt(s.size, L, n) {
		nodes, err := t.fullTile(ctx, L, n)
		if err != nil {
			return nil, err
		}
		o := nodeOffset(j, k)
		return nodes[o : o+hashSize], nil
	}
	if int(L) < len(s.edges) {
		if h, ok := s.edges[L].node(n, j, k); ok {
			return h, nil
		}
	}
	return nil, fmt.Errorf("%w: (%d, %d) of size %d", errNotInTree, level, index, s.size)
}

// fullTile returns the expanded nodes of full tile n of level L, from the
// cache or else the store.
func (t *Tiler) fullTile(ctx context.Context, L uint, n uint64) ([]byte, error) {
	key := cacheKey{level: int(L), n: n, w: tileWidth}
	if nodes, ok := t.cache.get(key); ok {
		t.m.cacheHit[kindHash].Inc()
		return nodes, nil
	}
	t.m.cacheMiss[kindHash].Inc()
	return t.flight.do(ctx, key, func(ctx context.Context) ([]byte, error) {
		row, err := t.store.readTile(ctx, L, n)
		if err != nil {
			return nil, err
		}
		if len(row) != tileBytes {
			return nil, fmt.Errorf("tiles: stored full tile %d/%d has %d bytes, want %d", L, n, len(row), tileBytes)
		}
		nodes := expand(row)
		t.cache.put(key, nodes)
		return nodes, nil
	})
}

// InclusionProof returns the RFC 6962 inclusion proof of leaf index in the
// tree of the given size, which must be no larger than Latest's.
func (t *Tiler) InclusionProof(ctx context.Context, index, size uint64) ([][]byte, error) {
	s := t.snap.Load()
	if size > s.size {
		return nil, fmt.Errorf("%w: size %d, tiles at %d", ErrNotCaughtUp, size, s.size)
	}
	if index >= size {
		return nil, fmt.Errorf("%w: index %d is not below size %d", ErrBadRange, index, size)
	}
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRange, err)
	}
	t.m.inclusion.Inc()
	return t.prove(ctx, s, nodes)
}

// ConsistencyProof returns the RFC 6962 consistency proof from the tree of
// size old to the tree of the given size, which must be no larger than
// Latest's. It is empty when old is 0 or equals size.
func (t *Tiler) ConsistencyProof(ctx context.Context, old, size uint64) ([][]byte, error) {
	s := t.snap.Load()
	if size > s.size {
		return nil, fmt.Errorf("%w: size %d, tiles at %d", ErrNotCaughtUp, size, s.size)
	}
	if old > size {
		return nil, fmt.Errorf("%w: old size %d is larger than size %d", ErrBadRange, old, size)
	}
	nodes, err := proof.Consistency(old, size)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRange, err)
	}
	t.m.consistency.Inc()
	return t.prove(ctx, s, nodes)
}

// prove fetches a proof's nodes (all complete subtrees) into one buffer and
// folds the ones that make up its ephemeral node.
func (t *Tiler) prove(ctx context.Context, s *snapshot, nodes proof.Nodes) ([][]byte, error) {
	buf := make([]byte, len(nodes.IDs)*hashSize)
	hashes := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, err := t.node(ctx, s, id.Level, id.Index)
		if err != nil {
			return nil, err
		}
		hashes[i] = buf[i*hashSize : (i+1)*hashSize : (i+1)*hashSize]
		copy(hashes[i], h)
	}
	return nodes.Rehash(hashes, hashChildren)
}
