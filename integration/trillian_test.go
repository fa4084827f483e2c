package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/internal/testdb"
)

// TestTrillianSignerDown runs Trillian as separate processes (log server
// and sequencer, carelog-trillian) with carelog-log pointing at them. With
// the sequencer down, entries are still accepted with durable indices;
// when it returns, they are integrated and the tree has every one of them.
func TestTrillianSignerDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k := newKeyset(t)
	dsn := testdb.New(t)
	srv := start(t, "carelog-trillian", "--mysql", dsn, "--listen", "127.0.0.1:0")
	seq := startUntil(t, "sequencing", "carelog-trillian", "--mysql", dsn, "--listen", "", "--sequencer", "--sequencer-interval", "50ms")
	lg := startLog(t, k, dsn, "--trillian-log", strings.TrimPrefix(srv.url(), "http://"))
	c := logClient(t, lg.url(), k.logVKey)
	clients := func() []*client.Log { return []*client.Log{c} }

	entries := signedEntries(t, k, 21, 600)
	res := runLoad(ctx, t, clients, entries[:200], 8)
	checkTree(t, ctx, c, res)

	seq.kill9()
	more := runLoad(ctx, t, clients, entries[200:], 8) // accepted with the sequencer down
	for h, e := range more.acked {
		res.acked[h] = e
	}
	if n, err := logSize(lg.url()); err != nil || n != 200 {
		t.Fatalf("with the sequencer down the tree moved to %d (%v); want 200", n, err)
	}
	seq.restart()
	checkTree(t, ctx, c, res)
}
