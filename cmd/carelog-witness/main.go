// Command carelog-witness runs a carelog witness: a C2SP tlog-witness that
// cosigns consistent checkpoints, keeps its state in SQLite, and gossips
// with peer witnesses to prove split views. See docs/witness.md.
//
// Usage:
//
//	carelog-witness -key FILE -config FILE -state DIR [flags]   serve
//	carelog-witness keygen -name NAME -out FILE                 make a key
//	carelog-witness vkey -key FILE                              print the cosignature vkey
//	carelog-witness evidence list -state DIR [-origin ORIGIN]   show evidence (JSON)
//	carelog-witness evidence clear -state DIR -origin ORIGIN    resume cosigning a log
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/carelog/carelog/witness"
)

const usage = `usage:
  carelog-witness [serve] -key FILE -config FILE -state DIR [flags]
  carelog-witness keygen -name NAME -out FILE
  carelog-witness vkey -key FILE
  carelog-witness evidence list -state DIR [-origin ORIGIN]
  carelog-witness evidence clear -state DIR -origin ORIGIN

serve flags:
`

func main() {
	err := run(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "carelog-witness:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "keygen":
			return keygen(args[1:])
		case "vkey":
			return vkey(args[1:])
		case "evidence":
			return evidence(args[1:])
		case "serve":
			args = args[1:]
		}
	}
	return serve(args)
}

func serve(args []string) error {
	fs := flag.NewFlagSet("carelog-witness", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	var cfg witness.Config
	fs.StringVar(&cfg.Addr, "listen", witness.DefaultAddr, "TCP address to serve on")
	fs.StringVar(&cfg.Prefix, "prefix", "", "path prefix of every endpoint, e.g. /witness")
	fs.StringVar(&cfg.StateDir, "state", "", "state directory (SQLite database "+witness.StateFile+"); required")
	keyFile := fs.String("key", "", "witness private key file (Ed25519 note key, see keygen); required")
	configFile := fs.String("config", "", "JSON file listing logs, peers and the evidence webhook; required")
	fs.DurationVar(&cfg.GossipInterval, "gossip-interval", witness.DefaultGossipInterval, "how often to gossip with peers; negative disables")
	fs.DurationVar(&cfg.PullInterval, "pull-interval", 0, "how often to pull each log's checkpoint (needs the log's url); 0 disables")
	webhook := fs.String("webhook", "", "URL to POST new split-view evidence to (overrides the config file)")
	logJSON := fs.Bool("log-json", false, "write logs as JSON instead of text")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *keyFile == "" || *configFile == "" || cfg.StateDir == "" {
		return errors.New("-key, -config and -state are required")
	}

	var h slog.Handler = slog.NewTextHandler(os.Stderr, nil)
	if *logJSON {
		h = slog.NewJSONHandler(os.Stderr, nil)
	}
	cfg.Logger = slog.New(h)

	key, err := witness.ReadKeyFile(*keyFile)
	if err != nil {
		return err
	}
	cfg.Key = key
	if err := witness.LoadConfigFile(*configFile, &cfg); err != nil {
		return err
	}
	if *webhook != "" {
		cfg.WebhookURL = *webhook
	}

	w, err := witness.New(cfg)
	if err != nil {
		return err
	}
	defer w.Close()
	fmt.Fprintln(os.Stderr, "cosignature/v1 vkey:", w.VerifierKey())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return w.Run(ctx)
}

func keygen(args []string) error {
	fs := flag.NewFlagSet("carelog-witness keygen", flag.ContinueOnError)
	name := fs.String("name", "", "key name, e.g. witness.example.org; required")
	out := fs.String("out", "", "file to write the private key to (must not exist); required")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" || *out == "" {
		return errors.New("keygen: -name and -out are required")
	}
	skey, vkey, err := witness.GenerateKey(*name)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if _, err := fmt.Fprintln(f, skey); err != nil {
		f.Close()
		return fmt.Errorf("keygen: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	fmt.Println(vkey)
	return nil
}

func vkey(args []string) error {
	fs := flag.NewFlagSet("carelog-witness vkey", flag.ContinueOnError)
	keyFile := fs.String("key", "", "witness private key file; required")
	if err := fs.Parse(args); err != nil {
		return err
	}
	skey, err := witness.ReadKeyFile(*keyFile)
	if err != nil {
		return err
	}
	v, err := witness.CosignatureVKey(skey)
	if err != nil {
		return err
	}
	fmt.Println(v)
	return nil
}

func evidence(args []string) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "clear") {
		return errors.New("usage: carelog-witness evidence list|clear -state DIR [-origin ORIGIN]")
	}
	cmd := args[0]
	fs := flag.NewFlagSet("carelog-witness evidence "+cmd, flag.ContinueOnError)
	state := fs.String("state", "", "state directory of the witness; required")
	origin := fs.String("origin", "", "log origin (required for clear)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *state == "" {
		return errors.New("evidence: -state is required")
	}
	ctx := context.Background()
	if cmd == "list" {
		list, err := witness.ListEvidence(ctx, *state, *origin)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(witness.EvidenceList{Evidence: list})
	}
	if *origin == "" {
		return errors.New("evidence clear: -origin is required")
	}
	n, err := witness.ClearEvidence(ctx, *state, *origin)
	if err != nil {
		return err
	}
	fmt.Printf("cleared %d piece(s) of evidence for %s; the witness cosigns this log again\n", n, *origin)
	return nil
}
