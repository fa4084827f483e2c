// Command carelog-log runs the carelog log personality. It only parses
// flags (or a JSON config file of the same names) and wires; the log is
// package personality.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/internal/flagfile"
	"github.com/carelog/carelog/personality"
	"github.com/carelog/carelog/submitter"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "carelog-log:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("carelog-log", flag.ExitOnError)
	var (
		config         = fs.String("config", "", "JSON file of settings named like these flags; flags win")
		listen         = fs.String("listen", "127.0.0.1:8080", "HTTP listen address")
		prefix         = fs.String("prefix", "", "path prefix of every HTTP route, e.g. /carelog")
		grpcListen     = fs.String("grpc-listen", "", "gRPC listen address for EHR systems (empty: off)")
		keyFile        = fs.String("key", "", "file with the log's Ed25519 note private key (its name is the origin); required")
		submitters     = fs.String("submitters", "", "submitter registry JSON file; required")
		policyFile     = fs.String("policy", "", "witness policy file (tlog-policy syntax); empty: no witnesses required")
		mysqlDSN       = fs.String("mysql", "", "MariaDB/MySQL DSN, e.g. root@tcp(127.0.0.1:3306)/carelog (the database is created if missing)")
		memory         = fs.Bool("memory", false, "try-out mode: Trillian on memory storage, NOTHING IS KEPT")
		trillianLog    = fs.String("trillian-log", "", "external Trillian log server host:port (empty: run Trillian in-process)")
		trillianAdmin  = fs.String("trillian-admin", "", "external Trillian admin server host:port (default: --trillian-log)")
		treeID         = fs.Int64("tree-id", 0, "existing Trillian tree to use (0: create one on first start and reuse it)")
		trillianSchema = fs.String("trillian-schema", "", "path of Trillian's storage/mysql/schema/storage.sql (default: found with go list)")
		ckptInterval   = fs.Duration("checkpoint-interval", time.Second, "how often to sign a checkpoint if the tree grew")
		seqInterval    = fs.Duration("sequencer-interval", 100*time.Millisecond, "in-process Trillian sequencer interval")
		seqBatch       = fs.Int("sequencer-batch", 1000, "in-process Trillian sequencer batch size")
		sequencing     = fs.String("sequencing", "batched", "batched (the log assigns indices; PREORDERED_LOG trees) or trillian (QueueLeaf); applies to new trees")
		batchDelay     = fs.Duration("batch-delay", 5*time.Millisecond, "batched sequencing: how long to wait to fill a batch")
		leaseTTL       = fs.Duration("lease-ttl", 10*time.Second, "batched sequencing: lifetime of the sequencer lease among replicas")
		witnessTimeout = fs.Duration("witness-timeout", 5*time.Second, "timeout of one exchange with a witness")
		witnessRetry   = fs.Duration("witness-retry", 3*time.Second, "how often to push again a checkpoint that does not yet meet the policy")
		mmd            = fs.Duration("max-merge-delay", time.Minute, "maximum merge delay the log promises")
		rateLimit      = fs.Float64("rate-limit", 0, "entries per second per submitter (0: unlimited)")
		rateBurst      = fs.Int("rate-burst", 100, "burst size of the per-submitter rate limit")
		logLevel       = fs.String("log-level", "info", "debug, info, warn or error")
	)
	_ = fs.Parse(os.Args[1:])
	if err := flagfile.Apply(fs, *config); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	if *keyFile == "" || *submitters == "" {
		return fmt.Errorf("--key and --submitters are required (see -help; `carelog keygen` makes keys)")
	}
	signer, verifier, err := personality.LoadKey(*keyFile)
	if err != nil {
		return err
	}
	reg, err := submitter.Load(*submitters)
	if err != nil {
		return err
	}
	var policy *checkpoint.Policy
	if *policyFile != "" {
		b, err := os.ReadFile(*policyFile)
		if err != nil {
			return err
		}
		if policy, err = checkpoint.ParsePolicy(b); err != nil {
			return fmt.Errorf("%s: %w", *policyFile, err)
		}
	}
	cfg := personality.Config{
		Signer: signer, Verifier: verifier, Submitters: reg, Policy: policy,
		MySQLDSN: *mysqlDSN, Memory: *memory,
		TrillianLogAddr: *trillianLog, TrillianAdminAddr: *trillianAdmin, TreeID: *treeID, TrillianSchema: *trillianSchema,
		SequencerInterval: *seqInterval, SequencerBatch: *seqBatch, CheckpointInterval: *ckptInterval,
		Sequencing: *sequencing, BatchDelay: *batchDelay, LeaseTTL: *leaseTTL,
		WitnessTimeout: *witnessTimeout, WitnessRetry: *witnessRetry,
		MaxMergeDelay: *mmd, RateLimit: *rateLimit, RateBurst: *rateBurst,
		Listen: *listen, Prefix: *prefix, GRPCListen: *grpcListen, Logger: logger,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	l, err := personality.New(startCtx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer l.Close()
	logger.Info("carelog-log started", slog.String("origin", l.Origin()), slog.Int64("tree_id", l.TreeID()))
	return l.Run(ctx)
}
