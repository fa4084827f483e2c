package bench

import (
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Rate is operations per second over a measured window.
type Rate struct {
	Ops     int64         // operations completed in the window
	Errors  int64         // operations that failed in the window
	Elapsed time.Duration // length of the window
	// FirstError is the first failure seen, if any, to say what went wrong.
	FirstError error
}

// firstError keeps the first error it is given.
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) set(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// PerSecond is Ops / Elapsed.
func (r Rate) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// closedLoop runs clients goroutines that each call op back to back (a new
// operation as soon as the previous one is answered) for warmup+window, and
// counts the operations completed during window only. Operations in flight
// when the window closes finish but are not counted, and nothing is
// cancelled half-way: a request the log has acknowledged is never dropped on
// the floor by the harness.
//
// mark, if not nil, is called as the window opens (false) and closes (true),
// for measurements that must cover the same window.
func closedLoop(ctx context.Context, clients int, warmup, window time.Duration, op func(ctx context.Context) error, mark func(end bool)) Rate {
	var ok, failed atomic.Int64
	var first firstError
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for !stop.Load() && ctx.Err() == nil {
				if err := op(ctx); err != nil {
					failed.Add(1)
					first.set(err)
					if ctx.Err() == nil {
						time.Sleep(10 * time.Millisecond) // do not spin on a failing backend
					}
					continue
				}
				ok.Add(1)
			}
		})
	}
	sleep(ctx, warmup)
	n0, e0, t0 := ok.Load(), failed.Load(), time.Now()
	if mark != nil {
		mark(false)
	}
	sleep(ctx, window)
	n1, e1, t1 := ok.Load(), failed.Load(), time.Now()
	if mark != nil {
		mark(true)
	}
	stop.Store(true)
	wg.Wait()
	return Rate{Ops: n1 - n0, Errors: e1 - e0, Elapsed: t1.Sub(t0), FirstError: first.get()}
}

// dispatch runs op on clients goroutines once for every time next returns
// true (next is called from the calling goroutine only, so it may be a
// testing.B's Loop). It returns the operations completed, from the first
// dispatch to the last completion.
func dispatch(ctx context.Context, clients int, next func() bool, op func(ctx context.Context) error) Rate {
	var ok, failed atomic.Int64
	var first firstError
	work := make(chan struct{})
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range work {
				if err := op(ctx); err != nil {
					failed.Add(1)
					first.set(err)
					continue
				}
				ok.Add(1)
			}
		})
	}
	start := time.Now()
	for next() {
		select {
		case work <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	return Rate{Ops: ok.Load(), Errors: failed.Load(), Elapsed: time.Since(start), FirstError: first.get()}
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Delays is a distribution of delays.
type Delays struct {
	Count    int
	P50, P99 time.Duration
	Max      time.Duration
}

// summarize sorts ds and returns its median, 99th percentile and maximum
// (nearest-rank percentiles).
func summarize(ds []time.Duration) Delays {
	if len(ds) == 0 {
		return Delays{}
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return Delays{Count: len(ds), P50: percentile(ds, 50), P99: percentile(ds, 99), Max: ds[len(ds)-1]}
}

// percentile is the nearest-rank percentile p (0 < p <= 100) of sorted ds.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}
