package personality

import (
	"context"
	"database/sql"
	"net/http"
	"testing"
	"time"

	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/entry"
)

func TestPatientEvents(t *testing.T) {
	for _, storage := range []string{"memory", ""} {
		t.Run(map[string]string{"memory": "memory", "": "mariadb"}[storage], func(t *testing.T) {
			f := newFixture(t, storage)
			f.gen.Patients = 5
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			want := map[string]int{}
			const n = 60
			for i := 0; i < n; i++ {
				ev := f.gen.Next(time.Now())
				raw, err := entry.Sign(ev, f.sub)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.client.Submit(ctx, raw); err != nil {
					t.Fatal(err)
				}
				if ev.Patient != "" {
					want[ev.Patient]++
				}
			}
			var cpSize uint64
			waitUntil(t, ctx, func() bool {
				cp, err := f.client.Checkpoint(ctx)
				if err == nil {
					cpSize = cp.Size
				}
				return cpSize == n
			})
			cp, _ := f.client.Checkpoint(ctx)
			for p, count := range want {
				var evs []client.PatientEvent
				waitUntil(t, ctx, func() bool {
					var err error
					evs, err = f.client.PatientEvents(ctx, p, cp.Checkpoint)
					if err != nil && client.StatusOf(err) != http.StatusServiceUnavailable {
						t.Fatal(err)
					}
					return err == nil
				})
				if len(evs) != count {
					t.Errorf("patient has %d verified events, want %d", len(evs), count)
				}
			}
			if storage == "" {
				// An index that fell behind (a tree indexed by an older
				// version, a lost table) is rebuilt from the leaves.
				db, err := sql.Open("mysql", f.cfg.MySQLDSN)
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				for _, q := range []string{"DELETE FROM carelog_patient_index", "DELETE FROM carelog_index_state"} {
					if _, err := db.Exec(q); err != nil {
						t.Fatal(err)
					}
				}
				for p, count := range want {
					waitUntil(t, ctx, func() bool {
						evs, err := f.client.PatientEvents(ctx, p, cp.Checkpoint)
						return err == nil && len(evs) == count
					})
				}
			}
			nobody := f.gen.Pseudonym(999)
			if evs, err := f.client.PatientEvents(ctx, nobody, cp.Checkpoint); err != nil || len(evs) != 0 {
				t.Errorf("unknown patient: %d events, %v", len(evs), err)
			}
			if _, err := f.client.PatientEvents(ctx, "not-a-pseudonym", cp.Checkpoint); client.StatusOf(err) != http.StatusBadRequest {
				t.Errorf("bad pseudonym: got %v, want 400", err)
			}
		})
	}
}

func waitUntil(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("timed out")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
