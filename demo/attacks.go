package demo

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/ehrsim"
	"github.com/carelog/carelog/entry"
	"github.com/carelog/carelog/monitor"
	"github.com/carelog/carelog/personality"
)

// detectWithin bounds how long a staged attack may go unnoticed.
const detectWithin = 90 * time.Second

// stageSplitView runs a second log with the same key but another history
// (as a log operator would to show one history to auditors and another to
// patients) and shows it only to the victim witness. The honest witnesses'
// gossip with the victim, and the monitor following every witness, must
// prove the split with two checkpoints signed by the same key.
func stageSplitView(ctx context.Context, cfg Config, logger *slog.Logger, ks *keys, forkNode node, witNodes []node,
	honest int, mon *monitor.Monitor, goRun func(string, func() error)) error {
	out := cfg.Out
	victim := ks.witnesses[honest]
	victimPolicy, err := checkpoint.ParsePolicy([]byte(policy(ks.witnesses[honest:], witNodes[honest:])))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nATTACK (split view): starting a forked log at %s: same origin, same signing key, another history.\n", forkNode.url())
	fmt.Fprintf(out, "It is shown only to %s, which has never seen the real log.\n", victim.name)
	fork, err := personality.New(ctx, personality.Config{
		Signer: ks.logSigner, Verifier: ks.logVerifier, Submitters: ks.registry, Policy: victimPolicy,
		Memory: true, CheckpointInterval: time.Second, WitnessRetry: time.Second,
		Logger: logger.With("component", "forked-log"),
	})
	if err != nil {
		return fmt.Errorf("forked log: %w", err)
	}
	defer fork.Close()
	goRun("forked log", func() error { return fork.Serve(ctx, forkNode.ln) })
	fc, err := client.New(client.Config{URL: forkNode.url(), LogKey: ks.logVKey, Policy: victimPolicy})
	if err != nil {
		return err
	}
	g := ehrsim.New(submitterName, 666)
	for i := 0; i < 3; i++ {
		raw, err := entry.Sign(g.Next(time.Now()), ks.submitter)
		if err != nil {
			return err
		}
		if _, err := fc.Submit(ctx, raw); err != nil {
			return fmt.Errorf("forked log: %w", err)
		}
	}
	deadline := time.Now().Add(detectWithin)
	for {
		cp, err := fc.Checkpoint(ctx)
		if err == nil && cp.Size == 3 {
			fmt.Fprintf(out, "%s cosigned the forked checkpoint of size 3.\n", victim.name)
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: the forked log never got its checkpoint cosigned (%v)", ErrNotDetected, err)
		}
		if err := sleep(ctx, 300*time.Millisecond); err != nil {
			return err
		}
	}

	fmt.Fprintf(out, "Waiting for the witnesses' gossip and the monitor to notice (at most %s)...\n", detectWithin)
	var alerts []monitor.Alert
	var evidence map[string]json.RawMessage
	for time.Now().Before(deadline) {
		alerts, _ = mon.Alerts(ctx, monitor.AlertFilter{Kind: monitor.KindSplitView})
		evidence = witnessEvidence(witNodes)
		if len(alerts) > 0 && len(evidence) > 0 {
			break
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
	for name, ev := range evidence {
		fmt.Fprintf(out, "\nEvidence at %s (GET /evidence):\n%s\n", name, indent(ev))
	}
	for _, a := range alerts {
		b, _ := json.MarshalIndent(a, "", "  ")
		fmt.Fprintf(out, "\nMonitor alert (GET /alerts):\n%s\n", b)
	}
	switch {
	case len(alerts) == 0 && len(evidence) == 0:
		return ErrNotDetected
	case len(alerts) == 0:
		return fmt.Errorf("%w by the monitor (the witnesses did prove it)", ErrNotDetected)
	case len(evidence) == 0:
		return fmt.Errorf("%w by the witnesses (the monitor did alert)", ErrNotDetected)
	}
	fmt.Fprintf(out, "\nDETECTED: the split view was proven by %d witness(es) and the monitor, with two checkpoints signed by the log's own key.\n", len(evidence))
	return nil
}

// witnessEvidence fetches GET /evidence from every witness and keeps the
// non-empty answers.
func witnessEvidence(nodes []node) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for _, n := range nodes {
		resp, err := http.Get(n.url() + "/evidence")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		var body struct {
			Evidence []json.RawMessage `json:"evidence"`
		}
		if json.Unmarshal(b, &body) == nil && len(body.Evidence) > 0 {
			out[n.name] = b
		}
	}
	return out
}

// stageRewrite plays the insider: a database administrator who snooped and
// then edits their own access event in the database, behind the log's
// back, to blame a colleague. A new auditor replaying the log must catch
// it.
func stageRewrite(ctx context.Context, cfg Config, logger *slog.Logger, ks *keys, lg *personality.Log, c *client.Log,
	logNode node, pol *checkpoint.Policy, ws []monitor.WitnessConfig) error {
	out := cfg.Out
	fmt.Fprintln(out, "\nATTACK (rewrite): waiting for the snooper's accesses to be logged...")
	var target uint64
	var original []byte
	found := false
	for deadline := time.Now().Add(detectWithin); !found; {
		cp, err := c.Checkpoint(ctx)
		if err == nil && cp.Size > 0 {
			es, err := c.Entries(ctx, 0, min(cp.Size, 1000))
			if err == nil {
				for _, e := range es {
					if bytes.Contains(entry.Text(e.Data), []byte(`"`+ehrsim.SnooperID+`"`)) {
						target, original, found = e.Index, e.Data, true
						break
					}
				}
			}
		}
		if !found {
			if time.Now().After(deadline) {
				return fmt.Errorf("no snooping access was logged in time")
			}
			if err := sleep(ctx, time.Second); err != nil {
				return err
			}
		}
	}
	forged := bytes.Replace(original, []byte(`"`+ehrsim.SnooperID+`"`), []byte(`"staff-0001"`), 1)
	db, err := sql.Open("mysql", cfg.MySQLDSN)
	if err != nil {
		return err
	}
	defer db.Close()
	res, err := db.ExecContext(ctx, `UPDATE LeafData SET LeafValue = ? WHERE TreeId = ? AND LeafIdentityHash =
		(SELECT LeafIdentityHash FROM SequencedLeafData WHERE TreeId = ? AND SequenceNumber = ?)`,
		forged, lg.TreeID(), lg.TreeID(), target)
	if err != nil {
		return fmt.Errorf("editing the database: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("editing the database: %d rows changed", n)
	}
	// A thorough insider edits carelog's own copy too.
	_, _ = db.ExecContext(ctx, "UPDATE carelog_leaves SET leaf_value = ? WHERE origin = ? AND leaf_index = ?", forged, origin, target)
	fmt.Fprintf(out, "Edited entry %d in Trillian's LeafData (and carelog_leaves): actor %s is now staff-0001.\n", target, ehrsim.SnooperID)
	if es, err := c.Entries(ctx, target, target+1); err == nil && bytes.Equal(es[0].Data, forged) {
		fmt.Fprintln(out, "The log now serves the edited entry.")
	}

	fmt.Fprintln(out, "A new auditor replays the log from scratch (carelog-monitor --once with fresh state)...")
	audCfg := monitorConfig(cfg.Dir, fmt.Sprintf("auditor-%d", time.Now().Unix()), logNode.url(), ks, pol, ws, logger)
	aud, err := monitor.New(audCfg)
	if err != nil {
		return err
	}
	defer aud.Close()
	octx, cancel := context.WithTimeout(ctx, detectWithin)
	defer cancel()
	result := aud.RunOnce(octx)
	caught := false
	for _, a := range result.Alerts {
		if (a.Kind == monitor.KindRewrite || a.Kind == monitor.KindBadEntry) && coversIndex(a, target) {
			b, _ := json.MarshalIndent(a, "", "  ")
			fmt.Fprintf(out, "\nAuditor alert:\n%s\n", b)
			caught = true
		}
	}
	fmt.Fprintf(out, "auditor exit code: %d (state in %s)\n", result.ExitCode(), audCfg.StateDir)
	if !caught {
		return fmt.Errorf("%w: no rewrite or bad-entry alert for index %d", ErrNotDetected, target)
	}
	fmt.Fprintf(out, "\nDETECTED: the edited entry %d no longer hashes to the root the log signed and the witnesses cosigned.\n", target)
	return nil
}

func coversIndex(a monitor.Alert, i uint64) bool {
	if a.Index != nil && *a.Index == i {
		return true
	}
	return a.Range != nil && a.Range.Start <= i && i < a.Range.End
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func indent(b []byte) string {
	var buf bytes.Buffer
	if json.Indent(&buf, b, "  ", "  ") != nil {
		return string(b)
	}
	return "  " + strings.TrimSpace(buf.String())
}
