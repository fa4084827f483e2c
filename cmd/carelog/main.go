// Command carelog is the carelog command-line tool: keys, submitting signed
// access events, and verifying what the log says.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

var commands = map[string]command{
	"bench":          {"measure ingest, merge delay, cosigning and proofs against raw Trillian (docs/benchmarks.md)", cmdBench},
	"demo":           {"run the whole network (log, 3 witnesses, monitor, simulated EHR) on this machine", cmdDemo},
	"keygen":         {"make a note key pair for a log, submitter or witness", cmdKeygen},
	"example-event":  {"print a valid example access event (JSON) to edit and submit", cmdExampleEvent},
	"submit":         {"sign an access event and submit it to a log", cmdSubmit},
	"checkpoint":     {"fetch and verify a log's checkpoint", cmdCheckpoint},
	"verify":         {"verify inclusion (online or from a bundle) or consistency", cmdVerify},
	"simulate":       {"run a simulated EHR against a log (a load generator)", cmdSimulate},
	"patient-report": {"list, with verified proofs, every access to one patient's records", cmdPatientReport},
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: carelog <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-14s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(os.Stderr, "\nRun 'carelog <command> -help' for a command's flags.")
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "-help" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		os.Exit(2)
	}
	c, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "carelog: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := c.run(ctx, os.Args[2:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "carelog %s: %v\n", os.Args[1], err)
		var ee exitError
		if asExit(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}
