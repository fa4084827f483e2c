package personality

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/carelog/carelog/internal/testdb"
)

// TestReplicasStartingTogetherShareOneTree starts several logs for one
// origin on an empty database at the same moment: they must all find the
// same Trillian tree.
func TestReplicasStartingTogetherShareOneTree(t *testing.T) {
	signer, verifier, _, _, reg := newKeys(t)
	dsn := testdb.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 4
	ids := make([]int64, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			l, err := New(ctx, Config{Signer: signer, Verifier: verifier, Submitters: reg, MySQLDSN: dsn})
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = l.TreeID()
			l.Close()
		}(i)
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if ids[i] != ids[0] {
			t.Fatalf("replicas use trees %v; want one", ids)
		}
	}
}
