package bench

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/carelog/carelog/ehrsim"
	"github.com/carelog/carelog/entry"
	"github.com/carelog/carelog/submitter"
	"golang.org/x/mod/sumdb/note"
)

// Entries is a supply of signed access events from one simulated EHR
// system. Most are signed ahead of the measured phases, on every core, so
// that the submitter's own signing does not compete with the log for this
// machine's CPU while it is measured (a real EHR signs on its own
// machines). When they run out, Next signs new ones on the spot.
type Entries struct {
	signer note.Signer
	vkey   string

	signed  [][]byte
	taken   atomic.Int64
	mu      sync.Mutex // guards gen
	gen     *ehrsim.Generator
	onSpot  atomic.Int64
	meanLen int
}

// NewEntries makes a new submitter key named system and signs n events with
// it ahead of time.
func NewEntries(system string, n int) (*Entries, error) {
	skey, vkey, err := submitter.GenerateEd25519(system)
	if err != nil {
		return nil, err
	}
	signer, err := submitter.NewSigner(skey)
	if err != nil {
		return nil, err
	}
	e := &Entries{signer: signer, vkey: vkey, signed: make([][]byte, n),
		gen: ehrsim.New(system, uint64(time.Now().UnixNano()))}
	workers := runtime.GOMAXPROCS(0)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			// One generator per worker: generators are not safe for
			// concurrent use, and distinct seeds give distinct event ids.
			g := ehrsim.New(system, uint64(time.Now().UnixNano())+uint64(w)*0x9e3779b97f4a7c15)
			for i := w; i < n; i += workers {
				raw, err := entry.Sign(g.Next(time.Now()), signer)
				if err != nil {
					errs[w] = err
					return
				}
				e.signed[i] = raw
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("signing simulated events: %w", err)
		}
	}
	total := 0
	for _, r := range e.signed {
		total += len(r)
	}
	if n > 0 {
		e.meanLen = total / n
	}
	return e, nil
}

// Submitter is the registry entry of the simulated system.
func (e *Entries) Submitter() submitter.Submitter {
	return submitter.Submitter{Name: e.signer.Name(), Keys: []submitter.Key{{VKey: e.vkey}}}
}

// Next returns a signed event that has not been returned before.
func (e *Entries) Next() []byte {
	if i := e.taken.Add(1) - 1; i < int64(len(e.signed)) {
		raw := e.signed[i]
		e.signed[i] = nil // the log keeps it now; let it be collected
		return raw
	}
	e.onSpot.Add(1)
	e.mu.Lock()
	ev := e.gen.Next(time.Now())
	e.mu.Unlock()
	raw, err := entry.Sign(ev, e.signer)
	if err != nil {
		panic(fmt.Sprintf("bench: ehrsim made an invalid event: %v", err))
	}
	return raw
}

// MeanSize is the mean size in bytes of the signed events made ahead.
func (e *Entries) MeanSize() int { return e.meanLen }

// SignedOnTheSpot is how many events had to be signed during measurement
// because the ones signed ahead ran out.
func (e *Entries) SignedOnTheSpot() int64 { return e.onSpot.Load() }
