// Command carelog-trillian runs Trillian's log server and/or sequencer as
// their own process on MariaDB/MySQL, for deployments where carelog-log
// talks to separate Trillian servers (--trillian-log). It wires Trillian's
// own packages, as carelog-log does in-process; it only parses flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/carelog/carelog/internal/flagfile"
	"github.com/carelog/carelog/personality"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "carelog-trillian:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("carelog-trillian", flag.ExitOnError)
	config := fs.String("config", "", "JSON file of settings named like these flags; flags win")
	mysql := fs.String("mysql", "", "MariaDB/MySQL DSN, e.g. root@tcp(127.0.0.1:3306)/carelog (required)")
	listen := fs.String("listen", "127.0.0.1:8090", "gRPC address of the log and admin APIs (empty: do not serve)")
	sequencer := fs.Bool("sequencer", false, "run the sequencer (exactly one per database)")
	schema := fs.String("trillian-schema", "", "path of Trillian's storage/mysql/schema/storage.sql (default: found with go)")
	interval := fs.Duration("sequencer-interval", 100*time.Millisecond, "sequencer interval")
	batch := fs.Int("sequencer-batch", 1000, "sequencer batch size")
	_ = fs.Parse(os.Args[1:])
	if err := flagfile.Apply(fs, *config); err != nil {
		return err
	}
	if *mysql == "" {
		return fmt.Errorf("--mysql is required")
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := personality.TrillianServerConfig{MySQLDSN: *mysql, Schema: *schema, Sequencer: *sequencer,
		Tuning: personality.Config{SequencerInterval: *interval, SequencerBatch: *batch, Logger: logger}}
	if *listen != "" {
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return err
		}
		cfg.Listener = ln
	}
	return personality.RunTrillian(ctx, cfg)
}
