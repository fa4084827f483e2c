package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/carelog/carelog/ehrsim"
)

func cmdSimulate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	var lf logFlags
	lf.register(fs, true)
	keyFile := fs.String("key", "", "the submitter's private key file (required); its name is the simulated system")
	rate := fs.Float64("rate", 10, "events per second (0: as fast as possible)")
	count := fs.Int("count", 0, "stop after this many events (0: until interrupted)")
	conc := fs.Int("concurrency", 16, "submissions in flight")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "random seed")
	snoop := fs.Int("snoop-every", 25, "one event in N comes from a snooping staff member (0: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keyFile == "" {
		return errors.New("--key is required")
	}
	c, err := lf.client()
	if err != nil {
		return err
	}
	signer, err := submitterSigner(*keyFile)
	if err != nil {
		return err
	}
	g := ehrsim.New(signer.Name(), *seed)
	g.SnoopEvery = *snoop
	var stats ehrsim.Stats
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		done <- ehrsim.Run(ctx, ehrsim.RunConfig{Log: c, Signer: signer, Generator: g, Rate: *rate, Count: *count, Concurrency: *conc}, &stats)
	}()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			el := time.Since(start).Seconds()
			fmt.Fprintf(os.Stderr, "done: %s in %.1fs (%.0f accepted/s)\n", &stats, el, float64(stats.Accepted.Load())/el)
			return err
		case <-t.C:
			fmt.Fprintf(os.Stderr, "%s so far\n", &stats)
		}
	}
}
