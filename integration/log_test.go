package integration

import (
	"context"
	"database/sql"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/ehrsim"
	"github.com/carelog/carelog/entry"
	"github.com/carelog/carelog/internal/testdb"
	"github.com/carelog/carelog/promise"
	"github.com/carelog/carelog/submitter"
	_ "github.com/go-sql-driver/mysql"
	"golang.org/x/mod/sumdb/note"
)

func startLog(t *testing.T, k *keyset, dsn string, extra ...string) *process {
	args := append([]string{
		"--key", k.logKeyFile, "--submitters", k.submittersFile, "--mysql", dsn,
		"--listen", "127.0.0.1:0", "--checkpoint-interval", "200ms", "--sequencer-interval", "50ms",
	}, extra...)
	return start(t, "carelog-log", args...)
}

// TestLogUnderLoadWithRestart submits a few thousand signed entries from
// many goroutines, kills carelog-log with SIGKILL in the middle and restarts
// it, and then checks every promise the log made: every acknowledged entry
// has an index, exactly one leaf, and an inclusion proof that verifies; every
// checkpoint the log ever signed verifies and is consistent with the one
// before; duplicates never make a second leaf.
func TestLogUnderLoadWithRestart(t *testing.T) {
	const total, workers = 3000, 32
	k := newKeyset(t)
	dsn := testdb.New(t)
	lg := startLog(t, k, dsn)
	c := logClient(t, lg.url(), k.logVKey)
	logV, _ := note.NewVerifier(k.logVKey)

	gen := ehrsim.New(k.submitterName, 42)
	entries := make([][]byte, total)
	for i := range entries {
		b, err := entry.Sign(gen.Next(time.Now()), k.submitter)
		if err != nil {
			t.Fatal(err)
		}
		entries[i] = b
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Watch checkpoints as a client would, all through the run.
	var watched []*checkpoint.Signed
	watchDone := make(chan struct{})
	watchCtx, stopWatch := context.WithCancel(ctx)
	go func() {
		defer close(watchDone)
		for watchCtx.Err() == nil {
			if cp, err := c.Checkpoint(watchCtx); err == nil {
				if n := len(watched); n == 0 || watched[n-1].Size != cp.Size || string(watched[n-1].Hash) != string(cp.Hash) {
					watched = append(watched, cp)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	// Submit; a worker retries an entry until the log acknowledges it. The
	// log is killed once half of the entries are acknowledged.
	var acked atomic.Int64
	var restartOnce sync.Once
	restarted := make(chan struct{})
	promises := make([]string, total)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				for attempt := 0; ; attempt++ {
					res, err := c.Submit(ctx, entries[i])
					if err == nil {
						promises[i] = res.Promise
						if acked.Add(1) == total/2 {
							restartOnce.Do(func() {
								lg.kill9()
								go func() { lg.restart(); close(restarted) }()
							})
						}
						break
					}
					if ctx.Err() != nil {
						return
					}
					if s := client.StatusOf(err); s != 0 && s != http.StatusServiceUnavailable {
						t.Errorf("entry %d refused with %v", i, err)
						break
					}
					time.Sleep(50 * time.Millisecond) // the log is restarting
				}
			}
		}()
	}
	for i := 0; i < total; i++ {
		jobs <- i
		if i%10 == 0 { // some entries are sent twice, concurrently
			jobs <- i
		}
	}
	close(jobs)
	wg.Wait()
	<-restarted
	if t.Failed() {
		t.FailNow()
	}

	// Every acknowledged entry gets a verified index.
	waitFor(t, "all entries in a checkpoint", 2*time.Minute, func() (bool, error) {
		cp, err := c.Checkpoint(ctx)
		return err == nil && cp.Size >= total, err
	})
	final, err := c.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if final.Size != total {
		t.Fatalf("tree has %d leaves for %d distinct entries: duplicates made extra leaves", final.Size, total)
	}
	indices := make([]uint64, total)
	var seen sync.Map
	var pwg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range entries {
		pwg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer pwg.Done()
			defer func() { <-sem }()
			h := checkpoint.LeafHash(entries[i])
			p, err := promise.Open([]byte(promises[i]), k.origin, logV)
			if err != nil || string(p.LeafHash) != string(h) {
				t.Errorf("entry %d: promise does not verify: %v", i, err)
				return
			}
			idx, err := c.VerifyInclusion(ctx, h, final.Checkpoint)
			if err != nil {
				t.Errorf("entry %d: inclusion: %v", i, err)
				return
			}
			if other, dup := seen.LoadOrStore(idx, i); dup {
				t.Errorf("entries %d and %d share index %d", i, other, idx)
			}
			indices[i] = idx
		}(i)
	}
	pwg.Wait()

	// Every leaf is a valid signed entry.
	reg, err := submitter.Load(k.submittersFile)
	if err != nil {
		t.Fatal(err)
	}
	for start := uint64(0); start < total; start += 1000 {
		es, err := c.Entries(ctx, start, start+1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if _, err := entry.OpenForReplay(e.Data, reg); err != nil {
				t.Fatalf("leaf %d does not verify as an entry: %v", e.Index, err)
			}
		}
	}

	stopWatch()
	<-watchDone
	checkCheckpointHistory(t, ctx, c, dsn, k.origin, logV)
	if len(watched) < 2 {
		t.Fatalf("saw only %d checkpoints", len(watched))
	}
	for i := 1; i < len(watched); i++ {
		if err := c.VerifyConsistency(ctx, watched[i-1].Checkpoint, watched[i].Checkpoint); err != nil {
			t.Fatalf("checkpoints seen by a client, %d then %d: %v", watched[i-1].Size, watched[i].Size, err)
		}
	}
	t.Logf("%d entries, %d acknowledgements (with duplicates), %d checkpoints seen", total, acked.Load(), len(watched))

	// A duplicate submitted now gets the original's answer, with its index.
	res, err := c.Submit(ctx, entries[7])
	if err != nil {
		t.Fatal(err)
	}
	if !res.Sequenced || res.Index != indices[7] || res.Promise != promises[7] {
		t.Fatalf("late duplicate answered %+v; want index %d and the original promise", res, indices[7])
	}
	// The same event id with other bytes is a conflict.
	ev, _ := entry.ParseEvent(entry.Text(entries[7]))
	ev.Outcome = 4
	other, _ := entry.Sign(ev, k.submitter)
	if _, err := c.Submit(ctx, other); client.StatusOf(err) != http.StatusConflict {
		t.Fatalf("reused event id: got %v, want 409", err)
	}
}

// checkCheckpointHistory reads every checkpoint the log ever signed from its
// own table, in signing order, and checks that each verifies, none is
// smaller than the one before, and each is consistent with the one before.
func checkCheckpointHistory(t *testing.T, ctx context.Context, c *client.Log, dsn, origin string, v note.Verifier) {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT note FROM carelog_checkpoints WHERE origin = ? ORDER BY signed_at, size", origin)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var prev *checkpoint.Signed
	n := 0
	for rows.Next() {
		var msg []byte
		if err := rows.Scan(&msg); err != nil {
			t.Fatal(err)
		}
		cp, err := checkpoint.Open(msg, origin, v)
		if err != nil {
			t.Fatalf("signed checkpoint %d does not verify: %v", n, err)
		}
		if prev != nil {
			if cp.Size <= prev.Size {
				t.Fatalf("signed size %d after %d", cp.Size, prev.Size)
			}
			if err := c.VerifyConsistency(ctx, prev.Checkpoint, cp.Checkpoint); err != nil {
				t.Fatalf("signed checkpoints %d and %d: %v", prev.Size, cp.Size, err)
			}
		}
		prev = cp
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 2 {
		t.Fatalf("only %d checkpoints signed", n)
	}
}
