package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/carelog/carelog/bench"
)

func cmdBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: carelog bench [flags]

Measures raw Trillian (the reference) and carelog end to end against one
MariaDB/MySQL server, in one run, and prints one table; the last line is
machine-readable. Progress goes to stderr. See docs/benchmarks.md.

flags:
`)
		fs.PrintDefaults()
	}
	var cfg bench.Config
	fs.StringVar(&cfg.MySQL, "mysql", "root@tcp(127.0.0.1:3306)/", "MariaDB/MySQL server DSN, without a database: fresh databases carelog_bench_* are created and dropped")
	fs.DurationVar(&cfg.Duration, "duration", 20*time.Second, "measured window of the throughput runs (raw QueueLeaf, carelog ingest)")
	fs.DurationVar(&cfg.LatencyDuration, "latency-duration", 20*time.Second, "measured window of the merge and cosigning delay run")
	fs.DurationVar(&cfg.ProofDuration, "proof-duration", 10*time.Second, "measured window of each inclusion proof run")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "unmeasured warm-up before every window")
	fs.IntVar(&cfg.Clients, "clients", 32, "concurrent clients of the raw QueueLeaf reference and of both proof runs")
	fs.IntVar(&cfg.IngestClients, "ingest-clients", 256, "concurrent submitters of carelog's ingest and delay runs")
	fs.Uint64Var(&cfg.Tree, "tree", 70_000, "tree size of the inclusion proof runs")
	ckpt := fs.Duration("checkpoint-interval", 250*time.Millisecond, "carelog-log --checkpoint-interval")
	logArgs := fs.String("log-args", "", "more carelog-log flags, space-separated, e.g. \"--batch-delay 2ms\"")
	fs.StringVar(&cfg.Bin, "bin", "", "directory holding carelog-log and carelog-witness (default: go build them from this source tree)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the databases and the working directory")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.LogArgs = append([]string{"--checkpoint-interval", ckpt.String()}, strings.Fields(*logArgs)...)
	cfg.Progress = os.Stderr
	res, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	res.WriteTable(os.Stdout)
	fmt.Println(res.Summary())
	return nil
}
