// Command carelog-monitor runs carelog's monitor (package monitor): it
// follows a log's checkpoints and its witnesses', replays and verifies every
// entry, audits promises, applies watch rules, and alerts.
//
//	carelog-monitor -config monitor.json           # run until SIGINT/SIGTERM
//	carelog-monitor -config monitor.json -once     # one pass; exit code says what it found
//	carelog-monitor -config monitor.json -ack 3,7  # acknowledge alerts 3 and 7
//
// Exit codes: 0 clean, 2 usage or configuration error, 3 operational error,
// 4 integrity alert, 5 watch alerts only (see docs/monitor.md).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/carelog/carelog/monitor"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("carelog-monitor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "JSON config file (see docs/monitor.md); required")
	once := fs.Bool("once", false, "run one full pass, print the result as JSON and exit with its code")
	listen := fs.String("listen", "", "address for /status, /alerts, /metrics, POST /promises (overrides the config)")
	stateDir := fs.String("state", "", "state directory (overrides the config)")
	ack := fs.String("ack", "", "acknowledge these alert ids (comma-separated) and exit")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return monitor.ExitUsage
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintln(stderr, "carelog-monitor: -log-level:", err)
		return monitor.ExitUsage
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lv}))
	if *configPath == "" {
		fmt.Fprintln(stderr, "carelog-monitor: -config is required")
		fs.Usage()
		return monitor.ExitUsage
	}
	cfg, err := monitor.LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintln(stderr, "carelog-monitor:", err)
		return monitor.ExitUsage
	}
	if *listen != "" {
		cfg.ListenAddr = *listen
	}
	if *stateDir != "" {
		cfg.StateDir = *stateDir
	}
	cfg.Logger = logger

	m, err := monitor.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "carelog-monitor:", err)
		return monitor.ExitUsage
	}
	defer m.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	switch {
	case *ack != "":
		var ids []int64
		for _, s := range strings.Split(*ack, ",") {
			id, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
			if err != nil {
				fmt.Fprintf(stderr, "carelog-monitor: -ack: %q is not an alert id\n", s)
				return monitor.ExitUsage
			}
			ids = append(ids, id)
		}
		n, err := m.Acknowledge(ctx, ids...)
		if err != nil {
			fmt.Fprintln(stderr, "carelog-monitor:", err)
			return monitor.ExitOperational
		}
		fmt.Fprintf(stdout, "acknowledged %d alert(s)\n", n)
		return monitor.ExitClean
	case *once:
		res := m.RunOnce(ctx)
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
		return res.ExitCode()
	default:
		if err := m.Run(ctx); err != nil {
			logger.Error("monitor stopped", slog.String("error", err.Error()))
			return monitor.ExitOperational
		}
		return monitor.ExitClean
	}
}
