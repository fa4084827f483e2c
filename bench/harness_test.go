package bench

import (
	"regexp"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- { // 1..100 ms, unsorted
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := summarize(ds)
	want := Delays{Count: 100, P50: 50 * time.Millisecond, P99: 99 * time.Millisecond, Max: 100 * time.Millisecond}
	if got != want {
		t.Errorf("summarize(1..100 ms) = %+v, want %+v", got, want)
	}
	if ds[0] != 100*time.Millisecond {
		t.Error("summarize sorted its argument in place")
	}
	if got := summarize([]time.Duration{7}); got.P50 != 7 || got.P99 != 7 || got.Max != 7 {
		t.Errorf("summarize of one = %+v", got)
	}
	if got := summarize(nil); got != (Delays{}) {
		t.Errorf("summarize(nil) = %+v", got)
	}
}

// TestResolve checks the delay trackers' bookkeeping: every pending entry
// below the size is resolved once, with its own delay, and the others stay.
func TestResolve(t *testing.T) {
	t0 := time.Unix(1000, 0)
	pending := []Ack{
		{Index: 5, At: t0},
		{Index: 2, At: t0.Add(time.Second)},
		{Index: 9, At: t0},
		{Index: 7, At: t0.Add(3 * time.Second)}, // acknowledged after it was seen provable
	}
	var got []time.Duration
	resolve(&pending, &got, 8, t0.Add(2*time.Second))
	want := []time.Duration{2 * time.Second, time.Second, 0}
	if len(got) != len(want) {
		t.Fatalf("resolved %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("delay %d = %s, want %s", i, got[i], want[i])
		}
	}
	if len(pending) != 1 || pending[0].Index != 9 {
		t.Errorf("still pending %+v, want only index 9", pending)
	}
}

func TestSortAcks(t *testing.T) {
	as := []Ack{{Index: 3}, {Index: 1}, {Index: 2}, {Index: 0}}
	sortAcks(as)
	for i, a := range as {
		if a.Index != uint64(i) {
			t.Fatalf("sorted %+v", as)
		}
	}
}

// TestSummaryLine pins the machine-readable last line's format.
func TestSummaryLine(t *testing.T) {
	r := &Result{
		QueueLeaf: QueueLeafResult{Queued: Rate{Ops: 1000, Elapsed: time.Second}},
		Ingest:    Rate{Ops: 3500, Elapsed: time.Second},
		RefProofs: Rate{Ops: 500, Elapsed: time.Second},
		Proofs:    Rate{Ops: 12000, Elapsed: time.Second},
		Delays: DelayResult{
			Merge:    Delays{P99: 812 * time.Millisecond},
			Cosigned: Delays{P99: 1234 * time.Millisecond},
		},
	}
	want := "carelog-bench ingest_ratio=3.50 proof_ratio=24.00 merge_p99_ms=812 cosigned_p99_ms=1234 ingest_per_s=3500 proofs_per_s=12000"
	if got := r.Summary(); got != want {
		t.Errorf("Summary() =\n%s\nwant\n%s", got, want)
	}
	re := regexp.MustCompile(`^carelog-bench ingest_ratio=[0-9.]+ proof_ratio=[0-9.]+ merge_p99_ms=[0-9]+ cosigned_p99_ms=[0-9]+ ingest_per_s=[0-9]+ proofs_per_s=[0-9]+$`)
	if !re.MatchString((&Result{}).Summary()) {
		t.Errorf("the summary of an empty result does not parse: %q", (&Result{}).Summary())
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567", -4321: "-4,321"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:3306": true, "localhost:3306": true, "[::1]:3306": true, "db.example:3306": false, "10.0.0.5:3306": false} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v", addr, got)
		}
	}
}
