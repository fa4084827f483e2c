package personality

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/carelog/carelog/checkpoint"
)

// TestRefusesSwappedTreeOnMariaDB plays an operator mistake or an attack on
// real Trillian and MariaDB: the log's tables say it signed a checkpoint of
// 20 entries, but the Trillian tree underneath now holds a different
// history. The restarted log must refuse to sign, say so on /healthz, and
// keep serving the checkpoint it signed.
func TestRefusesSwappedTreeOnMariaDB(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The log the world saw: 20 entries, checkpoint signed.
	a := newFixture(t, "")
	fillAndSign(t, ctx, a, 20)
	signed := a.log.PublishedCheckpoint()
	a.stop()

	// Another Trillian history for the same origin and key: 25 other entries.
	b := newFixture(t, "")
	b.cfg.Signer, b.cfg.Verifier = a.cfg.Signer, a.cfg.Verifier
	b.stop()
	b.logVKey = a.logVKey
	b.start()
	fillAndSign(t, ctx, b, 25)
	b.stop()

	// Graft the first log's checkpoint record onto the second database.
	db, err := sql.Open("mysql", b.cfg.MySQLDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cp, err := checkpoint.ParseBody(signedBody(t, signed))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"DELETE FROM carelog_checkpoints", "DELETE FROM carelog_latest",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec("INSERT INTO carelog_checkpoints (origin, size, root, note, signed_at) VALUES (?, ?, ?, ?, 0)", testOrigin, cp.Size, cp.Hash, signed); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO carelog_latest (origin, size, root) VALUES (?, ?, ?)", testOrigin, cp.Size, cp.Hash); err != nil {
		t.Fatal(err)
	}

	b.start()
	err = b.log.SignCheckpoint(ctx)
	if !errors.Is(err, ErrRefusedToSign) || !errors.Is(err, checkpoint.ErrInconsistent) {
		t.Fatalf("signing over a swapped tree: got %v, want a refusal for inconsistency", err)
	}
	if got := b.log.PublishedCheckpoint(); string(got) != string(signed) {
		t.Fatalf("published checkpoint changed:\n%s", got)
	}
	resp, err := http.Get(b.srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h struct {
		Status  string `json:"status"`
		Refusal string `json:"signing_halted"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&h)
	if resp.StatusCode != http.StatusServiceUnavailable || h.Status != "integrity-alert" || h.Refusal == "" {
		t.Fatalf("healthz: %d %+v, want 503 integrity-alert", resp.StatusCode, h)
	}
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM carelog_checkpoints").Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d checkpoints recorded after the refusal (err %v), want only the grafted one", n, err)
	}
}

// fillAndSign submits n entries and waits until a checkpoint covers them.
func fillAndSign(t *testing.T, ctx context.Context, f *fixture, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := f.client.Submit(ctx, f.signedEvent()); err != nil {
			t.Fatal(err)
		}
	}
	for {
		if err := f.log.SignCheckpoint(ctx); err != nil {
			t.Fatal(err)
		}
		if cp, err := f.client.Checkpoint(ctx); err == nil && cp.Size == uint64(n) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("tree did not reach %d entries", n)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func signedBody(t *testing.T, msg []byte) []byte {
	t.Helper()
	for i := 0; i+1 < len(msg); i++ {
		if msg[i] == '\n' && msg[i+1] == '\n' {
			return msg[:i+1]
		}
	}
	t.Fatal("not a signed note")
	return nil
}
