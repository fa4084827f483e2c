package demo

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"

	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/ehrsim"
	"github.com/carelog/carelog/monitor"
)

func walkthrough(w io.Writer, dir string, n Network, memory bool) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("carelog demo network is up.")
	if memory {
		p("  (The log runs Trillian on its MEMORY storage: nothing is kept when this stops. Use --mysql DSN to keep it.)")
	}
	p("")
	p("  log       %s   origin %s", n.Log.URL, n.Log.Origin)
	for _, wt := range n.Witnesses {
		p("  witness   %s   %s", wt.URL, wt.Name)
	}
	p("  monitor   %s", n.Monitor.URL)
	p("  policy    2 of %d witnesses   (%s)", len(n.Witnesses), filepath.Join(dir, "witnesses.policy"))
	p("  state     %s   (network.json, keys, witness and monitor state, demo.log)", dir)
	p("")
	p("A simulated EHR (%s) is submitting signed access events: mostly reads under treatment,", n.Submitter.Name)
	p("some searches and exports, a rare break-glass, and one staff member (%s) who snoops.", ehrsim.SnooperID)
	p("")
	p("Try, in another terminal (go build -o bin/ ./cmd/... first, or use 'go run ./cmd/carelog'):")
	p("  bin/carelog checkpoint --log %s --log-key %s --policy %s", n.Log.URL, filepath.Join(dir, "log.vkey"), filepath.Join(dir, "witnesses.policy"))
	p("  bin/carelog example-event --system %s > event.json", n.Submitter.Name)
	p("  bin/carelog submit --log %s --log-key %s --policy %s --key %s --wait 30s --bundle event.proof event.json",
		n.Log.URL, filepath.Join(dir, "log.vkey"), filepath.Join(dir, "witnesses.policy"), n.Submitter.SKeyFile)
	p("  bin/carelog verify bundle --log-key %s --policy %s event.proof", filepath.Join(dir, "log.vkey"), filepath.Join(dir, "witnesses.policy"))
	p("  curl %s/status      # replay position, verified checkpoint, alerts", n.Monitor.URL)
	p("  curl %s/alerts      # break-glass and snooping alerts appear within a minute or two", n.Monitor.URL)
	if len(n.Witnesses) > 0 {
		p("  curl %s/evidence    # split views this witness proved (none, unless attacked)", n.Witnesses[0].URL)
	}
	p("")
	p("Ctrl-C stops everything.")
}

func progress(ctx context.Context, w io.Writer, c *client.Log, mon *monitor.Monitor, stats *ehrsim.Stats) {
	line := fmt.Sprintf("EHR: %s", stats)
	if cp, err := c.Checkpoint(ctx); err == nil {
		line += fmt.Sprintf(" | log: cosigned checkpoint of size %d", cp.Size)
	}
	if st, err := mon.Status(ctx); err == nil && len(st) > 0 {
		s := st[0]
		if s.Verified != nil {
			line += fmt.Sprintf(" | monitor: verified %d", s.Verified.Size)
		}
		var kinds []string
		for k, n := range s.Alerts {
			kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
		}
		sort.Strings(kinds)
		if len(kinds) > 0 {
			line += ", alerts " + strings.Join(kinds, " ")
		} else {
			line += ", no alerts"
		}
	}
	fmt.Fprintln(w, line)
}
