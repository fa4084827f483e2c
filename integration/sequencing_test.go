package integration

import (
	"context"
	"database/sql"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/ehrsim"
	"github.com/carelog/carelog/entry"
	"github.com/carelog/carelog/internal/testdb"
)

// submitter keeps submitting entries to whichever log URL answers, and
// records every entry the log acknowledged.
type loadResult struct {
	mu    sync.Mutex
	acked map[string][]byte // leaf hash -> entry
	sent  [][]byte
}

func (r *loadResult) ack(raw []byte) {
	r.mu.Lock()
	r.acked[string(checkpoint.LeafHash(raw))] = raw
	r.mu.Unlock()
}

// runLoad submits pre-signed entries from workers; each entry is retried
// until acknowledged or ctx ends. clients are tried in turn.
func runLoad(ctx context.Context, t *testing.T, clients func() []*client.Log, entries [][]byte, workers int) *loadResult {
	res := &loadResult{acked: map[string][]byte{}, sent: entries}
	jobs := make(chan []byte)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for raw := range jobs {
				for attempt := 0; ctx.Err() == nil; attempt++ {
					cs := clients()
					c := cs[(w+attempt)%len(cs)]
					actx, cancel := context.WithTimeout(ctx, 10*time.Second)
					_, err := c.Submit(actx, raw)
					cancel()
					if err == nil {
						res.ack(raw)
						break
					}
					if s := client.StatusOf(err); s != 0 && s != http.StatusServiceUnavailable {
						t.Errorf("entry refused: %v", err)
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}(w)
	}
	for _, e := range entries {
		select {
		case jobs <- e:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	return res
}

func signedEntries(t *testing.T, k *keyset, seed uint64, n int) [][]byte {
	t.Helper()
	g := ehrsim.New(k.submitterName, seed)
	out := make([][]byte, n)
	for i := range out {
		b, err := entry.Sign(g.Next(time.Now()), k.submitter)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

// checkTree waits until the log's checkpoint covers every acknowledged
// entry, then reads the whole tree and checks: no entry twice, no gap (the
// checkpoint size equals the number of distinct leaves), every
// acknowledged entry present, and the root the log signed is the root of
// exactly these leaves.
func checkTree(t *testing.T, ctx context.Context, c *client.Log, res *loadResult) {
	t.Helper()
	var cp *checkpoint.Signed
	waitFor(t, "the tree to cover every acknowledged entry", 2*time.Minute, func() (bool, error) {
		var err error
		cp, err = c.Checkpoint(ctx)
		return err == nil && cp.Size >= uint64(len(res.acked)), err
	})
	waitFor(t, "the tree to stop growing", time.Minute, func() (bool, error) {
		time.Sleep(500 * time.Millisecond)
		next, err := c.Checkpoint(ctx)
		if err != nil {
			return false, err
		}
		grew := next.Size != cp.Size
		cp = next
		return !grew, nil
	})
	seen := map[string]uint64{}
	leaves := make([][]byte, 0, cp.Size)
	for start := uint64(0); start < cp.Size; start += 1000 {
		es, err := c.Entries(ctx, start, min(start+1000, cp.Size))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			h := string(checkpoint.LeafHash(e.Data))
			if prev, dup := seen[h]; dup {
				t.Fatalf("entry at index %d is also at %d", e.Index, prev)
			}
			seen[h] = e.Index
			leaves = append(leaves, e.Data)
		}
	}
	if uint64(len(leaves)) != cp.Size {
		t.Fatalf("read %d leaves for a tree of size %d", len(leaves), cp.Size)
	}
	for h := range res.acked {
		if _, ok := seen[h]; !ok {
			t.Fatalf("an acknowledged entry is missing from the tree of size %d", cp.Size)
		}
	}
	// The signed root is the root of exactly these leaves, in this order.
	if err := verifyRootOf(leaves, cp.Checkpoint); err != nil {
		t.Fatal(err)
	}
}

// TestCrashSafetyUnderLoad kills carelog-log with SIGKILL at random moments
// during load, several times, restarting it each time; afterwards every
// acknowledged entry is in the tree exactly once and the tree has no gap.
func TestCrashSafetyUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	k := newKeyset(t)
	dsn := testdb.New(t)
	lg := startLog(t, k, dsn, "--lease-ttl", "1s", "--batch-delay", "2ms")
	c := logClient(t, lg.url(), k.logVKey)
	entries := signedEntries(t, k, 99, 4000)

	loadCtx, stopLoad := context.WithCancel(ctx)
	done := make(chan *loadResult, 1)
	go func() { done <- runLoad(loadCtx, t, func() []*client.Log { return []*client.Log{c} }, entries, 24) }()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	kills := 0
	for ; kills < 4; kills++ {
		select {
		case res := <-done:
			done <- res
			kills = 99
		case <-time.After(time.Duration(200+rng.IntN(1200)) * time.Millisecond):
			lg.kill9()
			lg.restart()
		}
	}
	res := <-done
	stopLoad()
	if len(res.acked) != len(entries) {
		t.Fatalf("only %d of %d entries acknowledged", len(res.acked), len(entries))
	}
	checkTree(t, ctx, c, res)
	t.Logf("%d entries, %d kills", len(entries), min(kills, 4))
}

// TestFencingTwoReplicas runs two carelog-log processes on the same
// database and tree. Only one holds the sequencer lease; the other queues
// entries for it. Both take load; the tree ends with every entry exactly
// once. Then the leader is killed and the other takes over the lease.
func TestFencingTwoReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	k := newKeyset(t)
	dsn := testdb.New(t)
	a := startLog(t, k, dsn, "--lease-ttl", "2s")
	b := startLog(t, k, dsn, "--lease-ttl", "2s")
	ca, cb := logClient(t, a.url(), k.logVKey), logClient(t, b.url(), k.logVKey)

	leaders := func() (la, lb bool) {
		return metric(a.url(), "carelog_log_sequencer_leader") == "1", metric(b.url(), "carelog_log_sequencer_leader") == "1"
	}
	waitFor(t, "one replica to take the lease", 30*time.Second, func() (bool, error) {
		la, lb := leaders()
		return la != lb, nil
	})

	entries := signedEntries(t, k, 5, 1500)
	res := runLoad(ctx, t, func() []*client.Log { return []*client.Log{ca, cb} }, entries[:1000], 16)
	if la, lb := leaders(); la == lb {
		t.Fatalf("leaders: a=%v b=%v; want exactly one", la, lb)
	}
	checkTree(t, ctx, ca, res)

	// Kill the leader; the other replica takes over and sequences.
	la, _ := leaders()
	survivor, sc := b, cb
	if la {
		a.kill9()
	} else {
		b.kill9()
		survivor, sc = a, ca
	}
	waitFor(t, "the survivor to take the lease", 30*time.Second, func() (bool, error) {
		return metric(survivor.url(), "carelog_log_sequencer_leader") == "1", nil
	})
	more := runLoad(ctx, t, func() []*client.Log { return []*client.Log{sc} }, entries[1000:], 16)
	for h, e := range more.acked {
		res.acked[h] = e
	}
	checkTree(t, ctx, sc, res)

	// The database holds one lease, at a later epoch.
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var epoch int
	if err := db.QueryRow("SELECT epoch FROM carelog_sequencer_lease").Scan(&epoch); err != nil || epoch < 2 {
		t.Fatalf("lease epoch %d (%v), want at least 2 after a takeover", epoch, err)
	}
}

// metric reads one unlabelled metric's value from a /metrics page.
func metric(url, name string) string {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == name {
			return f[1]
		}
	}
	return ""
}
