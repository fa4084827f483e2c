package ehrsim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/entry"
	"golang.org/x/mod/sumdb/note"
)

// RunConfig drives a simulated EHR against a log.
type RunConfig struct {
	Log       *client.Log
	Signer    note.Signer
	Generator *Generator
	// Rate is events per second (0: as fast as Concurrency allows).
	Rate float64
	// Count stops after this many events (0: until ctx ends).
	Count int
	// Concurrency is how many submissions may be in flight.
	Concurrency int
	// OnAccepted, if set, is called for every accepted event (from several
	// goroutines).
	OnAccepted func(ev *entry.Event, res *client.SubmitResult)
}

// Stats counts what a run did.
type Stats struct {
	Accepted, Refused, Failed atomic.Int64
}

func (s *Stats) String() string {
	return fmt.Sprintf("%d accepted, %d refused, %d failed", s.Accepted.Load(), s.Refused.Load(), s.Failed.Load())
}

// Run submits events until ctx ends or Count is reached. A refusal by the
// log (4xx) is counted, not fatal: a load generator keeps going.
func Run(ctx context.Context, cfg RunConfig, stats *Stats) error {
	if cfg.Log == nil || cfg.Signer == nil || cfg.Generator == nil {
		return errors.New("ehrsim: Log, Signer and Generator are required")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	var tick <-chan time.Time
	if cfg.Rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / cfg.Rate))
		defer t.Stop()
		tick = t.C
	}
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex // the generator is not safe for concurrent use
	for i := 0; cfg.Count == 0 || i < cfg.Count; i++ {
		if tick != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-tick:
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case sem <- struct{}{}:
		}
		mu.Lock()
		ev := cfg.Generator.Next(time.Now())
		mu.Unlock()
		raw, err := entry.Sign(ev, cfg.Signer)
		if err != nil {
			<-sem
			return fmt.Errorf("ehrsim: generated an invalid event: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res, err := cfg.Log.Submit(ctx, raw)
			switch {
			case err == nil:
				stats.Accepted.Add(1)
				if cfg.OnAccepted != nil {
					cfg.OnAccepted(ev, res)
				}
			case client.StatusOf(err) >= 400 && client.StatusOf(err) < 500:
				stats.Refused.Add(1)
			case ctx.Err() == nil:
				stats.Failed.Add(1)
			}
		}()
	}
	return nil
}
