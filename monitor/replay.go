package monitor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/carelog/carelog/api"
	"github.com/carelog/carelog/checkpoint"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

var rangeFactory = &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// cloneRange copies a compact range; Append reuses the hash slice's array.
func cloneRange(r *compact.Range) *compact.Range {
	hs := append([][]byte(nil), r.Hashes()...)
	c, err := rangeFactory.NewRange(r.Begin(), r.End(), hs)
	if err != nil {
		panic(err) // a range's own hashes always fit it
	}
	return c
}

func rootOf(r *compact.Range) []byte {
	if r.End() == 0 {
		return rfc6962.DefaultHasher.EmptyRoot()
	}
	h, err := r.GetRootHash(nil)
	if err != nil {
		panic(err) // ranges here always begin at 0
	}
	return h
}

// chunk is Workers batches of consecutive entries, fetched and checked in
// parallel.
type chunk struct {
	start, end uint64
	entries    []checked
	err        error
}

// replay downloads and verifies the log's entries from the persisted
// position up to the latest verified checkpoint.
//
// Each chunk is committed only once its entries are proven to be the
// prefix of the signed tree: the compact range after the chunk must give
// the root of every held checkpoint it passes, and a consistency proof from
// the log must take its root to the verified checkpoint's. Nothing the log
// says is trusted before that check, and nothing after the last committed
// chunk is remembered, so a killed replay resumes from verified data and
// skips nothing.
func (m *Monitor) replay(ctx context.Context, ls *logState) error {
	target := ls.verifiedSnapshot()
	if target == nil {
		return nil
	}
	st, err := m.store.replayState(ctx, ls.id)
	if err != nil {
		return err
	}
	ls.setProgress(st.Position, target.Size, "")
	if st.Position >= target.Size {
		return nil
	}
	rng, err := rangeFactory.NewRange(0, st.Position, st.Range)
	if err != nil {
		return fmt.Errorf("monitor state: compact range: %w", err)
	}
	rules, err := newRuleEngine(ls.origin, m.cfg.Rules, st.Rules)
	if err != nil {
		return err
	}
	targetCP := checkpoint.Checkpoint{Origin: ls.origin, Size: target.Size, Hash: target.Root}

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chunks := make(chan chunk, 1) // fetch the next chunk while this one is processed
	go m.fetchChunks(cctx, ls, st.Position, target.Size, chunks)

	started, startPos := time.Now(), st.Position
	lastLog := started
	for pos := st.Position; pos < target.Size; {
		var c chunk
		select {
		case c = <-chunks:
		case <-ctx.Done():
			return ctx.Err()
		}
		if c.err != nil {
			return c.err
		}
		next := cloneRange(rng)
		held, err := m.store.heldIn(ctx, ls.id, pos, c.end)
		if err != nil {
			return err
		}
		bad := uint64(0) // a size whose recomputed root is wrong
		var badCP *storedCheckpoint
		for i, e := range c.entries {
			_ = next.Append(e.LeafHash, nil) // same factory: cannot fail
			size := pos + uint64(i) + 1
			for len(held) > 0 && held[0].Size == size {
				if !bytes.Equal(rootOf(next), held[0].Root) {
					bad, badCP = size, &held[0]
				}
				held = held[1:]
			}
			if badCP != nil {
				break
			}
		}
		if badCP == nil {
			ok, err := m.provePrefix(ctx, ls, next, targetCP)
			if err != nil {
				return err
			}
			if !ok {
				bad, badCP = c.end, target
			}
		}
		if badCP != nil {
			return m.rewriteFound(ctx, ls, rng, c, bad, badCP, targetCP, target)
		}

		var alerts []Alert
		var rows []patientRow
		for _, e := range c.entries {
			as, row := rules.apply(e)
			alerts = append(alerts, as...)
			if row != nil {
				rows = append(rows, *row)
			}
		}
		ruleState, err := rules.marshal()
		if err != nil {
			return err
		}
		now := m.now()
		for i := range alerts {
			alerts[i].Time = now
		}
		raised, err := m.store.commitBatch(ctx, ls.id, replayState{Position: c.end, Range: next.Hashes(), Rules: ruleState}, rows, alerts)
		if err != nil {
			return fmt.Errorf("monitor state: %w", err)
		}
		rng, pos = next, c.end
		m.announce(raised)
		m.metrics.entries.WithLabelValues(ls.origin).Add(float64(len(c.entries)))
		ls.setProgress(pos, target.Size, "")
		ls.updateRate(pos-startPos, time.Since(started))
		m.metrics.replayed(ls)
		if m.testHookBatch != nil {
			m.testHookBatch(ls.origin, pos)
		}
		if time.Since(lastLog) > 10*time.Second || pos == target.Size {
			lastLog = time.Now()
			p := ls.progressSnapshot()
			m.log.Info("replay progress", slog.String("log", ls.origin), slog.Uint64("position", pos),
				slog.Uint64("target", target.Size), slog.Float64("entries_per_second", p.Rate), slog.Duration("eta", p.ETA()))
		}
	}
	return nil
}

// provePrefix reports whether the compact range (from index 0) is a prefix
// of the tree the target checkpoint signs: equal roots at the same size, or
// a consistency proof from the log that verifies. An error means the proof
// could not be fetched.
func (m *Monitor) provePrefix(ctx context.Context, ls *logState, r *compact.Range, target checkpoint.Checkpoint) (bool, error) {
	root := rootOf(r)
	if r.End() == target.Size {
		return bytes.Equal(root, target.Hash), nil
	}
	p, err := ls.client.ConsistencyProof(ctx, r.End(), target.Size)
	if err != nil {
		return false, fmt.Errorf("log %s: consistency proof %d→%d: %w", ls.origin, r.End(), target.Size, err)
	}
	older := checkpoint.Checkpoint{Origin: ls.origin, Size: r.End(), Hash: root}
	return checkpoint.VerifyConsistency(older, target, p) == nil, nil
}

// rewriteFound locates the first entry of the chunk whose served bytes do
// not belong to the signed tree, by bisection over prefix sizes (a prefix
// that includes a rewritten entry never proves consistent), and raises the
// rewrite alert. The replay stops before the chunk and the pass reports it
// as an error; it is retried on the next pass and the alert is not repeated.
func (m *Monitor) rewriteFound(ctx context.Context, ls *logState, verified *compact.Range, c chunk, bad uint64,
	badCP *storedCheckpoint, target checkpoint.Checkpoint, targetStored *storedCheckpoint) error {
	good := func(size uint64) (bool, error) {
		r := cloneRange(verified)
		for _, e := range c.entries[:size-c.start] {
			_ = r.Append(e.LeafHash, nil)
		}
		return m.provePrefix(ctx, ls, r, target)
	}
	lo, hi := c.start, bad // good(lo) holds: lo was verified before
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		ok, err := good(mid)
		if err != nil {
			return err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	a := newAlert(KindRewrite, ls.origin, fmt.Sprint(lo),
		fmt.Sprintf("entry %d as served by the log does not hash to the signed tree of size %d: the entry was rewritten or replaced after it was logged; entries [%d, %d) are not verified",
			lo, badCP.Size, lo, c.end))
	a.Index, a.Range, a.Time = u64(lo), &IndexRange{Start: lo, End: c.end}, m.now()
	a.Evidence = []Evidence{{Source: "log", Note: string(targetStored.Note)}}
	if badCP != targetStored {
		a.Evidence = append(a.Evidence, Evidence{Source: badCP.Source, Note: string(badCP.Note)})
	}
	halted := fmt.Sprintf("stopped before entry %d: it does not match the signed tree", lo)
	ls.setProgress(c.start, target.Size, halted)
	m.log.Error("replay halted", slog.String("log", ls.origin), slog.Uint64("index", lo))
	return m.fault(ctx, a)
}

// fetchChunks sends chunks of [from, to) in order until done or cancelled.
func (m *Monitor) fetchChunks(ctx context.Context, ls *logState, from, to uint64, out chan<- chunk) {
	size := uint64(m.cfg.Workers * m.cfg.BatchSize)
	for start := from; start < to; start += size {
		c := m.fetchChunk(ctx, ls, start, min(start+size, to))
		select {
		case out <- c:
		case <-ctx.Done():
			return
		}
		if c.err != nil {
			return
		}
	}
}

func (m *Monitor) fetchChunk(ctx context.Context, ls *logState, start, end uint64) chunk {
	c := chunk{start: start, end: end, entries: make([]checked, end-start)}
	batch := uint64(m.cfg.BatchSize)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for b := start; b < end; b += batch {
		wg.Add(1)
		go func(b, e uint64) {
			defer wg.Done()
			es, err := fetchEntries(ctx, ls, b, e)
			if err != nil {
				mu.Lock()
				c.err = errors.Join(c.err, err)
				mu.Unlock()
				return
			}
			copy(c.entries[b-start:], checkEntries(es, m.cfg.Submitters))
		}(b, min(b+batch, end))
	}
	wg.Wait()
	return c
}

// fetchEntries gets exactly the entries [start, end), asking again for the
// rest when the log answers with fewer.
func fetchEntries(ctx context.Context, ls *logState, start, end uint64) ([]api.Entry, error) {
	var out []api.Entry
	for i := start; i < end; {
		es, err := ls.client.Entries(ctx, i, end)
		if err != nil {
			return nil, fmt.Errorf("log %s: entries [%d, %d): %w", ls.origin, i, end, err)
		}
		if len(es) == 0 {
			return nil, fmt.Errorf("log %s: no entries served at index %d, below its signed size", ls.origin, i)
		}
		if uint64(len(es)) > end-i {
			es = es[:end-i]
		}
		out = append(out, es...)
		i += uint64(len(es))
	}
	return out, nil
}
