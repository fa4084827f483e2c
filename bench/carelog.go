package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/carelog/carelog/api"
	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/client"
)

// Log is the harness's client of a running carelog log, over its public
// HTTP API only, as an EHR system, a patient portal or an auditor would
// reach it.
type Log struct {
	url string
	hc  *http.Client
	c   *client.Log
}

// NewLog returns a client of the log at url with room for conns
// connections kept alive.
func NewLog(url, logVKey string, policy *checkpoint.Policy, conns int) (*Log, error) {
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute,
		DisableCompression: true,
	}}
	c, err := client.New(client.Config{URL: url, LogKey: logVKey, Policy: policy, HTTPClient: hc})
	if err != nil {
		return nil, err
	}
	return &Log{url: strings.TrimRight(url, "/"), hc: hc, c: c}, nil
}

// Close drops the kept-alive connections.
func (l *Log) Close() { l.hc.CloseIdleConnections() }

// Ack is a durable acknowledgement: the log answered 200 with an index.
type Ack struct {
	Index    uint64
	LeafHash []byte
	At       time.Time // when the answer arrived
}

// errNoIndex means the log accepted an entry without a durable index (202).
var errNoIndex = errors.New("the log answered 202 (accepted, no durable index yet)")

// Add submits one signed entry and returns its acknowledgement. Only a 200
// with an index and the entry's leaf hash counts. The promise's signature is
// not checked here: that is the submitter's CPU, which in production is not
// on the log's machine (the SDK's Submit checks it).
func (l *Log) Add(ctx context.Context, raw []byte) (Ack, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.url+api.PathAddEntry, bytes.NewReader(raw))
	if err != nil {
		return Ack{}, err
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := l.hc.Do(req)
	if err != nil {
		return Ack{}, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return Ack{}, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusAccepted:
		return Ack{}, errNoIndex
	default:
		return Ack{}, fmt.Errorf("add-entry answered %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	var r api.AddEntryResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return Ack{}, fmt.Errorf("add-entry: %w", err)
	}
	want := checkpoint.LeafHash(raw)
	if r.Index == nil || !bytes.Equal(r.LeafHash, want) {
		return Ack{}, errors.New("add-entry: 200 without an index or with another entry's leaf hash")
	}
	return Ack{Index: *r.Index, LeafHash: want, At: time.Now()}, nil
}

// Acks keeps every acknowledgement of a run by index: the leaves the
// harness knows the log holds.
type Acks struct {
	mu     sync.Mutex
	byIdx  map[uint64][]byte
	dupIdx int
}

// NewAcks returns an empty record.
func NewAcks() *Acks { return &Acks{byIdx: map[uint64][]byte{}} }

// Add records a.
func (a *Acks) Add(ack Ack) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.byIdx[ack.Index]; ok {
		a.dupIdx++ // two entries acknowledged at one index: a bug in the log
	}
	a.byIdx[ack.Index] = ack.LeafHash
}

// Max is the largest index acknowledged.
func (a *Acks) Max() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	var m uint64
	for i := range a.byIdx {
		m = max(m, i)
	}
	return m
}

// Len is how many indices were acknowledged.
func (a *Acks) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.byIdx)
}

// add is the load's operation: submit the next entry and record the ack.
func (l *Log) add(es *Entries, acks *Acks) func(context.Context) error {
	return func(ctx context.Context) error {
		ack, err := l.Add(ctx, es.Next())
		if err != nil {
			return err
		}
		if acks != nil {
			acks.Add(ack)
		}
		return nil
	}
}

// Ingest measures end-to-end ingest: clients concurrent submitters, each
// sending its next signed entry as soon as the previous one is durably
// acknowledged. It also returns how fast the cosigned checkpoint grew in
// the same window: acknowledgements faster than that pile up a backlog.
// probe, if not nil, is called as the window opens and closes.
func Ingest(ctx context.Context, l *Log, es *Entries, acks *Acks, clients int, warmup, window time.Duration, probe func(end bool)) (acked, cosigned Rate) {
	var size [2]uint64
	var at [2]time.Time
	mark := func(end bool) {
		i := 0
		if end {
			i = 1
		}
		if cp, err := l.c.Checkpoint(ctx); err == nil {
			size[i] = cp.Size
		}
		at[i] = time.Now()
		if probe != nil {
			probe(end)
		}
	}
	acked = closedLoop(ctx, clients, warmup, window, l.add(es, acks), mark)
	return acked, Rate{Ops: int64(size[1]) - int64(size[0]), Elapsed: at[1].Sub(at[0])}
}

// Fill submits entries until acks holds at least n indices.
func Fill(ctx context.Context, l *Log, es *Entries, acks *Acks, clients int, n int) Rate {
	left := n - acks.Len()
	return dispatch(ctx, clients, func() bool { left--; return left >= 0 }, l.add(es, acks))
}

// DelayResult is what MeasureDelays saw.
type DelayResult struct {
	Target   float64 // entries per second asked for
	Achieved Rate    // entries acknowledged in the window
	// Merge is acknowledgement → inclusion proof served by the log;
	// Cosigned is acknowledgement → /checkpoint serves a checkpoint that
	// covers the entry and meets the witness policy (verified here).
	Merge, Cosigned Delays
	// Unresolved counts acknowledged entries that were not included (or
	// not cosigned) before the harness stopped waiting.
	UnresolvedMerge, UnresolvedCosigned int
}

// pollEvery is how often the delay trackers ask the log; it bounds the
// measurement's resolution.
const pollEvery = 10 * time.Millisecond

// MeasureDelays submits at a steady rate (open loop: entries are sent on
// schedule whether or not earlier ones are answered, up to clients in
// flight) for warmup+window, and for every entry acknowledged in the window
// measures the delay until the log serves its inclusion proof and until
// /checkpoint serves a cosigned checkpoint covering it. It then waits up to
// wait for the stragglers.
func MeasureDelays(ctx context.Context, l *Log, es *Entries, acks *Acks, rate float64, clients int, warmup, window, wait time.Duration) (DelayResult, error) {
	res := DelayResult{Target: rate}
	tr := &delayTracker{l: l}
	pollCtx, stopPolls := context.WithCancel(ctx)
	defer stopPolls()
	var polls sync.WaitGroup
	polls.Go(func() { tr.pollProofs(pollCtx) })
	polls.Go(func() { tr.pollCheckpoints(pollCtx) })

	start := time.Now()
	open, shut := start.Add(warmup), start.Add(warmup+window)
	tokens := make(chan struct{}, clients)
	var workers sync.WaitGroup
	var first firstError
	var mu sync.Mutex
	var inWindow, failed int64
	for range clients {
		workers.Go(func() {
			for range tokens {
				ack, err := l.Add(ctx, es.Next())
				if err != nil {
					first.set(err)
					mu.Lock()
					failed++
					mu.Unlock()
					continue
				}
				acks.Add(ack)
				if ack.At.After(open) && ack.At.Before(shut) {
					mu.Lock()
					inWindow++
					mu.Unlock()
					tr.track(ack)
				}
			}
		})
	}
	// Pace: by time t, rate*t entries have been handed out.
	sent := 0
	tick := time.NewTicker(time.Millisecond)
	for now := time.Now(); now.Before(shut) && ctx.Err() == nil; now = <-tick.C {
		for due := int(rate * now.Sub(start).Seconds()); sent < due; sent++ {
			tokens <- struct{}{} // blocks when all clients are busy: the log is behind
		}
	}
	tick.Stop()
	close(tokens)
	workers.Wait()
	res.Achieved = Rate{Ops: inWindow, Errors: failed, Elapsed: window, FirstError: first.get()}

	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) && ctx.Err() == nil && !tr.settled() {
		sleep(ctx, 50*time.Millisecond)
	}
	stopPolls()
	polls.Wait()
	if err := tr.failure(); err != nil {
		return res, err
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	res.Merge, res.Cosigned = summarize(tr.merge), summarize(tr.cosigned)
	res.UnresolvedMerge, res.UnresolvedCosigned = len(tr.mergePending), len(tr.cosignPending)
	return res, nil
}

// delayTracker resolves acknowledged entries as the log makes them
// provable, and records the delays.
//
// Both conditions are monotone in the index: the log serves inclusion
// proofs up to the size of its latest signed checkpoint, and /checkpoint
// only grows. So one answer resolves every pending entry at or below it,
// and the proof poller can binary-search the pending entries instead of
// asking about each one.
type delayTracker struct {
	l *Log

	mu            sync.Mutex
	mergePending  []Ack
	cosignPending []Ack
	merge         []time.Duration
	cosigned      []time.Duration
	err           error
}

func (t *delayTracker) track(a Ack) {
	t.mu.Lock()
	t.mergePending = append(t.mergePending, a)
	t.cosignPending = append(t.cosignPending, a)
	t.mu.Unlock()
}

func (t *delayTracker) settled() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.mergePending) == 0 && len(t.cosignPending) == 0
}

func (t *delayTracker) fail(err error) {
	t.mu.Lock()
	if t.err == nil {
		t.err = err
	}
	t.mu.Unlock()
}

func (t *delayTracker) failure() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// resolve moves every pending entry with index < size, from *pending to
// *into, with its delay to at.
func resolve(pending *[]Ack, into *[]time.Duration, size uint64, at time.Time) {
	kept := (*pending)[:0]
	for _, a := range *pending {
		if a.Index < size {
			*into = append(*into, max(0, at.Sub(a.At)))
		} else {
			kept = append(kept, a)
		}
	}
	*pending = kept
}

// provable asks the log for the inclusion proof of a in the smallest tree
// that holds it; the log serves it once a signed checkpoint covers a.
func (t *delayTracker) provable(ctx context.Context, a Ack) (bool, error) {
	_, err := t.l.c.InclusionProof(ctx, a.LeafHash, a.Index+1)
	switch {
	case err == nil:
		return true, nil
	case client.StatusOf(err) == http.StatusBadRequest: // beyond the latest checkpoint
		return false, nil
	default:
		return false, err
	}
}

func (t *delayTracker) pollProofs(ctx context.Context) {
	for ctx.Err() == nil {
		t.mu.Lock()
		snap := make([]Ack, len(t.mergePending))
		copy(snap, t.mergePending)
		t.mu.Unlock()
		if len(snap) > 0 {
			// The largest i with snap[i] provable (sorted by index), or -1.
			sortAcks(snap)
			lo, hi := -1, len(snap) // snap[lo] provable (or lo == -1), snap[hi] not
			var found time.Time
			for probe := 0; lo+1 < hi; probe++ {
				mid := (lo + hi) / 2
				if probe == 0 {
					mid = len(snap) - 1 // usually everything is provable: ask about the last first
				}
				ok, err := t.provable(ctx, snap[mid])
				if err != nil {
					if ctx.Err() == nil {
						t.fail(fmt.Errorf("inclusion proof of index %d: %w", snap[mid].Index, err))
					}
					return
				}
				if ok {
					lo, found = mid, time.Now()
				} else {
					hi = mid
				}
			}
			if lo >= 0 {
				t.mu.Lock()
				resolve(&t.mergePending, &t.merge, snap[lo].Index+1, found)
				t.mu.Unlock()
			}
		}
		sleep(ctx, pollEvery)
	}
}

func (t *delayTracker) pollCheckpoints(ctx context.Context) {
	var size uint64
	for ctx.Err() == nil {
		if n, ok := t.cosignedSize(ctx, size); ok && n > size {
			size = n
			at := time.Now()
			t.mu.Lock()
			resolve(&t.cosignPending, &t.cosigned, size, at)
			t.mu.Unlock()
		}
		sleep(ctx, pollEvery)
	}
}

// cosignedSize fetches /checkpoint; when its size is beyond last, it
// verifies the log's signature and the witness policy before believing it.
func (t *delayTracker) cosignedSize(ctx context.Context, last uint64) (uint64, bool) {
	raw, err := t.l.c.RawCheckpoint(ctx)
	if err != nil {
		return 0, false
	}
	body, err := checkpoint.NoteText(raw)
	if err != nil {
		return 0, false
	}
	cp, err := checkpoint.ParseBody(body)
	if err != nil || cp.Size <= last {
		return 0, false
	}
	if _, err := t.l.c.OpenCheckpoint(raw); err != nil {
		t.fail(fmt.Errorf("the log served a checkpoint that does not verify: %w", err))
		return 0, false
	}
	return cp.Size, true
}

func sortAcks(as []Ack) {
	for i := 1; i < len(as); i++ { // nearly sorted already: insertion sort
		for j := i; j > 0 && as[j].Index < as[j-1].Index; j-- {
			as[j], as[j-1] = as[j-1], as[j]
		}
	}
}

// Tree is a prefix of the log the harness has read and recomputed itself.
type Tree struct {
	Size       uint64
	LeafHashes [][]byte
	Root       []byte
}

// WaitForCosigned waits until /checkpoint serves a cosigned checkpoint of
// at least size, and returns it.
func (l *Log) WaitForCosigned(ctx context.Context, size uint64, timeout time.Duration) (*checkpoint.Signed, error) {
	deadline := time.Now().Add(timeout)
	for {
		cp, err := l.c.Checkpoint(ctx)
		if err == nil && cp.Size >= size {
			return cp, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err == nil {
				err = fmt.Errorf("the cosigned checkpoint is at %d", cp.Size)
			}
			return nil, fmt.Errorf("no cosigned checkpoint of size %d within %s: %w", size, timeout, err)
		}
		sleep(ctx, 100*time.Millisecond)
	}
}

// ReadTree downloads entries [0, size) with GET /entries, recomputes their
// root, and checks it against the cosigned checkpoint cp (size <= cp.Size)
// with a consistency proof, and against every acknowledgement in acks: each
// acknowledged index must hold the acknowledged entry.
func (l *Log) ReadTree(ctx context.Context, size uint64, cp *checkpoint.Signed, acks *Acks, clients int) (*Tree, error) {
	t := &Tree{Size: size, LeafHashes: make([][]byte, size)}
	const page = api.MaxEntriesPerRequest
	starts := make(chan uint64)
	var first firstError
	var wg sync.WaitGroup
	for range max(1, min(clients, 8)) {
		wg.Go(func() {
			for s := range starts {
				es, err := l.c.Entries(ctx, s, min(s+page, size))
				if err != nil {
					first.set(err)
					continue
				}
				for i, e := range es {
					t.LeafHashes[s+uint64(i)] = checkpoint.LeafHash(e.Data)
				}
			}
		})
	}
	for s := uint64(0); s < size; s += page {
		starts <- s
	}
	close(starts)
	wg.Wait()
	if err := first.get(); err != nil {
		return nil, fmt.Errorf("reading entries: %w", err)
	}
	for i, h := range t.LeafHashes {
		if h == nil {
			return nil, fmt.Errorf("reading entries: index %d missing", i)
		}
	}
	root, err := rootOf(t.LeafHashes)
	if err != nil {
		return nil, err
	}
	t.Root = root
	older := checkpoint.Checkpoint{Origin: cp.Origin, Size: size, Hash: root}
	if err := l.c.VerifyConsistency(ctx, older, cp.Checkpoint); err != nil {
		return nil, fmt.Errorf("the entries' root at %d is not consistent with the cosigned checkpoint of size %d: %w", size, cp.Size, err)
	}
	acks.mu.Lock()
	defer acks.mu.Unlock()
	if acks.dupIdx > 0 {
		return nil, fmt.Errorf("the log acknowledged %d entries at an index already acknowledged", acks.dupIdx)
	}
	for idx, h := range acks.byIdx {
		if idx < size && !bytes.Equal(t.LeafHashes[idx], h) {
			return nil, fmt.Errorf("index %d does not hold the entry acknowledged there", idx)
		}
	}
	return t, nil
}

// proof fetches one inclusion proof for a random leaf of t with
// GET /proof/inclusion (by leaf hash, as clients ask) and verifies it.
func (l *Log) proof(t *Tree) func(context.Context) error {
	cp := checkpoint.Checkpoint{Size: t.Size, Hash: t.Root}
	return func(ctx context.Context) error {
		idx := mrand.Uint64N(t.Size)
		p, err := l.c.InclusionProof(ctx, t.LeafHashes[idx], t.Size)
		if err != nil {
			return err
		}
		if p.Index != idx {
			return fmt.Errorf("proof for index %d names index %d", idx, p.Index)
		}
		return checkpoint.VerifyInclusion(cp, idx, t.LeafHashes[idx], p.Proof)
	}
}

// Proofs measures GET /proof/inclusion: clients concurrent readers, random
// leaves of t, every proof verified against t's root. probe, if not nil, is
// called as the window opens and closes.
func Proofs(ctx context.Context, l *Log, t *Tree, clients int, warmup, window time.Duration, probe func(end bool)) Rate {
	return closedLoop(ctx, clients, warmup, window, l.proof(t), probe)
}

// Pipeline is where the log's entries are, from its own /metrics: how many
// have a durable index, how many were handed to Trillian, how many are in
// the latest signed checkpoint, and in the latest cosigned one.
type Pipeline struct {
	At                                  time.Time
	Sequenced, Fed, Signed, CosignedTop uint64
}

// Pipeline reads the log's /metrics.
func (l *Log) Pipeline(ctx context.Context) (Pipeline, error) {
	p := Pipeline{At: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.url+"/metrics", nil)
	if err != nil {
		return p, err
	}
	resp, err := l.hc.Do(req)
	if err != nil {
		return p, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return p, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		var dst *uint64
		switch name {
		case "carelog_log_sequenced_entries":
			dst = &p.Sequenced
		case "carelog_log_trillian_fed_entries_total":
			dst = &p.Fed
		case "carelog_log_checkpoint_size":
			dst = &p.Signed
		case "carelog_log_cosigned_checkpoint_size":
			dst = &p.CosignedTop
		default:
			continue
		}
		var f float64
		if _, err := fmt.Sscan(val, &f); err == nil {
			*dst = uint64(f)
		}
	}
	return p, nil
}
