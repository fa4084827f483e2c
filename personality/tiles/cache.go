package tiles

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// cacheKey names an immutable resource: a full hash tile (level ≥ 0, w
// 256, held expanded) or an entry bundle (level entriesLevel, w entries).
type cacheKey struct {
	level int
	n     uint64
	w     uint64
}

const entriesLevel = -1

// lru is a byte-bounded least-recently-used cache of immutable values: full
// tiles and entry bundles, which never change (nor does a partial bundle:
// the first W entries of a bundle are fixed), so a cached value is never
// stale.
type lru struct {
	mu    sync.Mutex
	max   int64
	used  int64
	order list.List // front: most recently used; values are *lruEntry
	items map[cacheKey]*list.Element
}

type lruEntry struct {
	key cacheKey
	val []byte
}

func newLRU(maxBytes int64) *lru {
	return &lru{max: maxBytes, items: make(map[cacheKey]*list.Element)}
}

func (c *lru) get(k cacheKey) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*lruEntry).val, true
}

func (c *lru) put(k cacheKey, v []byte) {
	size := int64(cap(v))
	if size > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		c.order.MoveToFront(e)
		return
	}
	c.items[k] = c.order.PushFront(&lruEntry{key: k, val: v})
	c.used += size
	for c.used > c.max {
		e := c.order.Back()
		le := e.Value.(*lruEntry)
		c.order.Remove(e)
		delete(c.items, le.key)
		c.used -= int64(cap(le.val))
	}
}

func (c *lru) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

// flight lets concurrent misses for the same resource share one load: when a
// tile becomes full, every client polling the log asks for it at once.
type flight struct {
	mu    sync.Mutex
	calls map[cacheKey]*flightCall
}

type flightCall struct {
	done chan struct{}
	val  []byte
	err  error
}

// loadTimeout bounds a shared load, which outlives the request that started it.
const loadTimeout = 30 * time.Second

// do runs load once for concurrent callers with the same key. The load runs
// detached from the first caller's cancellation (others may still want the
// result); each caller stops waiting when its own context ends.
func (f *flight) do(ctx context.Context, k cacheKey, load func(context.Context) ([]byte, error)) ([]byte, error) {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = make(map[cacheKey]*flightCall)
	}
	c, ok := f.calls[k]
	if !ok {
		c = &flightCall{done: make(chan struct{})}
		f.calls[k] = c
		go func() {
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
			defer cancel()
			c.val, c.err = load(lctx)
			f.mu.Lock()
			delete(f.calls, k)
			f.mu.Unlock()
			close(c.done)
		}()
	}
	f.mu.Unlock()
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
