package personality

import (
	"context"
	"testing"
	"time"
)

func TestSubmitAndVerifyInclusion(t *testing.T) {
	for _, storage := range []string{"memory", ""} {
		name := storage
		if name == "" {
			name = "mariadb"
		}
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, storage)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			raw := f.signedEvent()
			res, err := f.client.Submit(ctx, raw)
			if err != nil {
				t.Fatal(err)
			}
			inc, err := f.client.WaitForInclusion(ctx, res.LeafHash, 20*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if inc.Checkpoint.Size != 1 || inc.Index != 0 {
				t.Fatalf("got index %d in checkpoint of size %d, want 0 in 1", inc.Index, inc.Checkpoint.Size)
			}
			// A duplicate gets the original's answer, now with the index.
			again, err := f.client.Submit(ctx, raw)
			if err != nil {
				t.Fatal(err)
			}
			if !again.Sequenced || again.Index != 0 || again.Promise != res.Promise {
				t.Fatalf("duplicate answered %+v, want index 0 and the original promise", again)
			}
		})
	}
}
