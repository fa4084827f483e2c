package integration

// Tests of carelog-monitor against the real network: carelog-log on
// MariaDB through Trillian, real carelog-witness processes, and the
// monitor binary itself, run either as a one-shot pass (-once: exit code
// and JSON result) or as a server (GET /alerts, /status, POST /promises).
// The attacks are played the way an insider would: by editing the log's
// database behind its back, by running a second log with the same key, by
// restoring an old backup.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/ehrsim"
	"github.com/carelog/carelog/entry"
	"github.com/carelog/carelog/internal/testdb"
	"github.com/carelog/carelog/promise"
	"github.com/carelog/carelog/submitter"
	"github.com/go-sql-driver/mysql"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// monitorConf is carelog-monitor's JSON config file (docs/monitor.md),
// written by the test exactly as an operator would write it.
type monitorConf struct {
	path string // where it is written

	StateDir       string              `json:"state_dir"`
	Logs           []map[string]string `json:"logs"`
	Witnesses      []map[string]string `json:"witnesses,omitempty"`
	SubmittersFile string              `json:"submitters_file"`
	PromiseDir     string              `json:"promise_dir,omitempty"`
	MergeDelay     string              `json:"merge_delay,omitempty"`
	PollInterval   string              `json:"poll_interval,omitempty"`
	Rules          map[string]any      `json:"rules,omitempty"`
	Webhook        map[string]string   `json:"webhook,omitempty"`
	Replay         map[string]int      `json:"replay,omitempty"`
}

// newMonitorConf is a monitor that follows one log (with the policy file,
// if any) and nothing else, with its own state directory.
func newMonitorConf(t *testing.T, k *keyset, logURL, policyFile string) *monitorConf {
	t.Helper()
	dir := t.TempDir()
	l := map[string]string{"url": logURL, "origin": k.origin, "vkey": k.logVKey}
	if policyFile != "" {
		l["policy_file"] = policyFile
	}
	return &monitorConf{
		path:           filepath.Join(dir, "monitor.json"),
		StateDir:       filepath.Join(dir, "state"),
		Logs:           []map[string]string{l},
		SubmittersFile: k.submittersFile,
		PollInterval:   "200ms",
	}
}

func (c *monitorConf) addWitness(w *witnessProc) {
	c.Witnesses = append(c.Witnesses, map[string]string{"name": w.name, "vkey": w.cosigVKey, "url": w.url()})
}

func (c *monitorConf) write(t *testing.T) string {
	t.Helper()
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, c.path, string(b))
	return c.path
}

// monAlert is an alert as the monitor shows it (webhook body, GET /alerts,
// -once output), per docs/monitor.md.
type monAlert struct {
	ID      int64     `json:"id"`
	UID     string    `json:"uid"`
	Kind    string    `json:"kind"`
	Class   string    `json:"class"`
	Log     string    `json:"log"`
	Time    time.Time `json:"time"`
	Message string    `json:"message"`
	Index   *uint64   `json:"index"`
	Range   *struct {
		Start uint64 `json:"start"`
		End   uint64 `json:"end"`
	} `json:"range"`
	Patient   string `json:"patient"`
	Actor     string `json:"actor"`
	Submitter string `json:"submitter"`
	Evidence  []struct {
		Source string `json:"source"`
		Note   string `json:"note"`
	} `json:"evidence"`
	Acknowledged bool `json:"acknowledged"`
}

// index is the alert's index, or "-" if it names none.
func (a monAlert) index() string {
	if a.Index == nil {
		return "-"
	}
	return strconv.FormatUint(*a.Index, 10)
}

func (a monAlert) String() string {
	return fmt.Sprintf("#%d %s index=%s: %s", a.ID, a.Kind, a.index(), a.Message)
}

// monLogStatus is one log in -once's result and in GET /status.
type monLogStatus struct {
	Origin   string `json:"origin"`
	Verified *struct {
		Size uint64 `json:"size"`
		Root []byte `json:"root"`
		Note string `json:"note"`
	} `json:"verified"`
	Replay struct {
		Position uint64 `json:"position"`
		Target   uint64 `json:"target"`
		Halted   string `json:"halted"`
	} `json:"replay"`
	Sources map[string]struct {
		Size  uint64 `json:"size"`
		Error string `json:"error"`
	} `json:"sources"`
	PendingPromises int `json:"pending_promises"`
}

// onceResult is what carelog-monitor -once prints.
type onceResult struct {
	Raised              int            `json:"raised"`
	Alerts              []monAlert     `json:"alerts"`
	OpenIntegrityAlerts int            `json:"open_integrity_alerts"`
	Errors              []string       `json:"errors"`
	Undelivered         int            `json:"undelivered"`
	Logs                []monLogStatus `json:"logs"`
}

// runMonitorOnce runs carelog-monitor -once with the config and returns its exit
// code and printed result.
func runMonitorOnce(t *testing.T, conf *monitorConf) (int, *onceResult) {
	t.Helper()
	path := conf.write(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "carelog-monitor"), "-config", path, "-once")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("carelog-monitor -once: %v\n%s", err, tail(stderr.String(), 40))
	}
	var res onceResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("carelog-monitor -once (exit %d) printed no JSON result: %v\nstdout:\n%s\nstderr:\n%s", code, err, stdout.String(), tail(stderr.String(), 40))
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("carelog-monitor -once (exit %d) stderr:\n%s", code, tail(stderr.String(), 30))
		}
	})
	return code, &res
}

// serveMonitor runs carelog-monitor as a server. It logs
// {"msg":"serving","addr":...} once it listens, which start waits for.
func serveMonitor(t *testing.T, conf *monitorConf) *process {
	t.Helper()
	return start(t, "carelog-monitor", "-config", conf.write(t), "--listen", "127.0.0.1:0")
}

func fetchJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return json.Unmarshal(b, v)
}

// monitorAlerts reads GET /alerts (with an optional query).
func monitorAlerts(t *testing.T, m *process, query string) []monAlert {
	t.Helper()
	var body struct {
		Alerts []monAlert `json:"alerts"`
	}
	if err := fetchJSON(m.url()+"/alerts"+query, &body); err != nil {
		t.Fatal(err)
	}
	return body.Alerts
}

func monitorStatus(m *process) (*monLogStatus, error) {
	var body struct {
		Logs []monLogStatus `json:"logs"`
	}
	if err := fetchJSON(m.url()+"/status", &body); err != nil {
		return nil, err
	}
	if len(body.Logs) != 1 {
		return nil, fmt.Errorf("status lists %d logs", len(body.Logs))
	}
	return &body.Logs[0], nil
}

// waitReplayed waits until the running monitor has verified a checkpoint
// of at least size entries and replayed all of it.
func waitReplayed(t *testing.T, m *process, size uint64) *monLogStatus {
	t.Helper()
	var st *monLogStatus
	waitFor(t, fmt.Sprintf("the monitor to verify and replay %d entries", size), time.Minute, func() (bool, error) {
		var err error
		st, err = monitorStatus(m)
		if err != nil {
			return false, err
		}
		return st.Verified != nil && st.Verified.Size >= size && st.Replay.Position == st.Verified.Size, nil
	})
	return st
}

// labelledMetric reads the value of a metric with labels from a /metrics page:
// the first series whose name is name.
func labelledMetric(url, name string) (float64, bool) {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// alertKinds counts alerts by kind.
func alertKinds(as []monAlert) map[string]int {
	m := map[string]int{}
	for _, a := range as {
		m[a.Kind]++
	}
	return m
}

func alertList(as []monAlert) string {
	var b strings.Builder
	for _, a := range as {
		fmt.Fprintf(&b, "\n  %s", a)
	}
	if b.Len() == 0 {
		return " none"
	}
	return b.String()
}

// routineEntries signs n events of a simulated EHR's routine traffic: reads,
// updates, searches and exports under ordinary purposes. The simulator's
// rare break-glass events are left out, so that nothing in it should make
// a watch rule fire.
func routineEntries(t *testing.T, k *keyset, seed uint64, n int) [][]byte {
	t.Helper()
	g := ehrsim.New(k.submitterName, seed)
	var out [][]byte
	for len(out) < n {
		ev := g.Next(time.Now())
		if ev.Event == "break-glass" || entry.EmergencyPurposes[ev.Purpose] {
			continue
		}
		out = append(out, signEvent(t, k, ev))
	}
	return out
}

func signEvent(t *testing.T, k *keyset, ev *entry.Event) []byte {
	t.Helper()
	b, err := entry.Sign(ev, k.submitter)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// submitInOrder submits entries one by one and returns the log's answers.
func submitInOrder(t *testing.T, ctx context.Context, c *client.Log, entries [][]byte) []*client.SubmitResult {
	t.Helper()
	out := make([]*client.SubmitResult, len(entries))
	for i, e := range entries {
		r, err := c.Submit(ctx, e)
		if err != nil {
			t.Fatalf("submitting entry %d: %v", i, err)
		}
		out[i] = r
	}
	return out
}

// waitPublishedSize waits until the log's GET /checkpoint (what the monitor
// reads) verifies with the client's key and policy at exactly size.
func waitPublishedSize(t *testing.T, ctx context.Context, c *client.Log, size uint64) *checkpoint.Signed {
	t.Helper()
	var cp *checkpoint.Signed
	waitFor(t, fmt.Sprintf("a published checkpoint of size %d", size), time.Minute, func() (bool, error) {
		var err error
		cp, err = c.Checkpoint(ctx)
		return err == nil && cp.Size == size, err
	})
	return cp
}

func openLogDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func openEvidence(t *testing.T, k *keyset, n string) *checkpoint.Signed {
	t.Helper()
	v, err := note.NewVerifier(k.logVKey)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := checkpoint.Open([]byte(n), k.origin, v)
	if err != nil {
		t.Fatalf("evidence does not verify with the log's public key: %v\n%s", err, n)
	}
	return cp
}

// TestMonitorCleanLog runs a log with three witnesses and a 2-of-3 policy
// and routine traffic from a simulated EHR. The monitor, following the log
// and the three witnesses with the same policy, must finish a one-shot pass
// with exit code 0, raise nothing, reach the tip of the log, and have heard
// from every witness; run as a server on the same state it lists no alert
// and its own patient index agrees with what the log serves for a patient.
func TestMonitorCleanLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k := newKeyset(t)
	ws, policy, lg, c := startWitnessedLog(t, k)

	const n = 60
	entries := routineEntries(t, k, 11, n)
	submitInOrder(t, ctx, c, entries)
	cp := waitPublishedSize(t, ctx, c, n)
	// Every witness has cosigned the tip, so each one's view is the same.
	waitFor(t, "all three witnesses to cosign the tip", time.Minute, func() (bool, error) {
		for _, w := range ws {
			var body []byte
			resp, err := http.Get(w.url() + "/" + checkpoint.OriginID(k.origin) + "/checkpoint")
			if err != nil {
				return false, err
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(body, []byte(fmt.Sprintf("%s\n%d\n", k.origin, n))) {
				return false, fmt.Errorf("%s: %d %q", w.name, resp.StatusCode, body)
			}
		}
		return true, nil
	})

	conf := newMonitorConf(t, k, lg.url(), policy)
	for _, w := range ws {
		conf.addWitness(w)
	}
	code, res := runMonitorOnce(t, conf)
	if code != 0 || res.Raised != 0 || len(res.Alerts) != 0 || len(res.Errors) != 0 || res.OpenIntegrityAlerts != 0 {
		t.Fatalf("clean log: exit %d, %d alerts raised:%s\nerrors: %q", code, res.Raised, alertList(res.Alerts), res.Errors)
	}
	if len(res.Logs) != 1 || res.Logs[0].Verified == nil {
		t.Fatalf("result names no verified checkpoint: %+v", res.Logs)
	}
	st := res.Logs[0]
	if st.Verified.Size != n || !bytes.Equal(st.Verified.Root, cp.Hash) || st.Replay.Position != n || st.Replay.Halted != "" {
		t.Fatalf("clean log of %d: verified size %d (root matches: %v), replay position %d, halted %q",
			n, st.Verified.Size, bytes.Equal(st.Verified.Root, cp.Hash), st.Replay.Position, st.Replay.Halted)
	}
	for _, w := range ws {
		s, ok := st.Sources["witness/"+w.name]
		if !ok || s.Error != "" || s.Size != n {
			t.Fatalf("source witness/%s: %+v (present: %v); want size %d, no error", w.name, s, ok, n)
		}
	}

	// The same state served over HTTP: no alert, and the monitor's own
	// index of a patient matches the log's answer for that patient.
	m := serveMonitor(t, conf)
	waitReplayed(t, m, n)
	if as := monitorAlerts(t, m, ""); len(as) != 0 {
		t.Fatalf("GET /alerts on a clean log:%s", alertList(as))
	}
	var patient string
	for _, raw := range entries {
		ev, err := entry.ParseEvent(entry.Text(raw))
		if err != nil {
			t.Fatal(err)
		}
		if ev.Patient != "" {
			patient = ev.Patient
			break
		}
	}
	var idx struct {
		Indices []uint64 `json:"indices"`
	}
	if err := fetchJSON(m.url()+"/patients/"+patient+"/indices", &idx); err != nil {
		t.Fatal(err)
	}
	var fromLog []uint64
	waitFor(t, "the log's patient index to match the monitor's", 30*time.Second, func() (bool, error) {
		events, err := c.PatientEvents(ctx, patient, cp.Checkpoint)
		if err != nil {
			return false, err
		}
		fromLog = fromLog[:0]
		for _, e := range events {
			fromLog = append(fromLog, e.Index)
		}
		return len(idx.Indices) > 0 && fmt.Sprint(idx.Indices) == fmt.Sprint(fromLog), fmt.Errorf("monitor %v, log %v", idx.Indices, fromLog)
	})
}

func loadRegistry(t *testing.T, k *keyset) *submitter.Registry {
	t.Helper()
	reg, err := submitter.Load(k.submittersFile)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// trillianLeafAt reads, from Trillian's tables, the tree id, identity hash and
// stored value of the leaf at index: the bytes GET /entries serves.
func trillianLeafAt(t *testing.T, db *sql.DB, index uint64) (treeID int64, identity, value []byte) {
	t.Helper()
	err := db.QueryRow(`SELECT s.TreeId, s.LeafIdentityHash, l.LeafValue FROM SequencedLeafData s
		JOIN LeafData l ON l.TreeId = s.TreeId AND l.LeafIdentityHash = s.LeafIdentityHash
		WHERE s.SequenceNumber = ?`, index).Scan(&treeID, &identity, &value)
	if err != nil {
		t.Fatalf("reading leaf %d from Trillian's tables: %v", index, err)
	}
	return treeID, identity, value
}

// TestMonitorRewriteBehindTheLog plays a DBA who covers their tracks: after
// the log signed a tree of 40 entries, they edit the access record at index
// 25 (the actor id) directly in Trillian's LeafData table, the bytes the
// log serves from GET /entries. The monitor, which had replayed the first
// 20 entries on an earlier pass, must raise a rewrite alert naming index
// 25, stop its replay before it, exit 4, and not raise it twice on the next
// pass.
//
// The edited bytes also fail their submitter's signature, but the monitor
// must call this a rewrite, not a bad entry: those bytes are not what the
// log signed (their leaf hash is not in the tree), so the replay stops
// before them and judges nothing past them. A forged leaf that the log did
// put into its signed tree is a bad entry: TestMonitorForgedEntry.
func TestMonitorRewriteBehindTheLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k := newKeyset(t)
	dsn := testdb.New(t)
	lg := startLog(t, k, dsn)
	c := logClient(t, lg.url(), k.logVKey)

	submitInOrder(t, ctx, c, routineEntries(t, k, 21, 20))
	waitPublishedSize(t, ctx, c, 20)
	conf := newMonitorConf(t, k, lg.url(), "")
	if code, res := runMonitorOnce(t, conf); code != 0 || res.Logs[0].Replay.Position != 20 {
		t.Fatalf("first pass over 20 honest entries: exit %d, position %d, alerts:%s", code, res.Logs[0].Replay.Position, alertList(res.Alerts))
	}

	submitInOrder(t, ctx, c, routineEntries(t, k, 22, 20))
	cp := waitPublishedSize(t, ctx, c, 40)

	const victim = 25
	db := openLogDB(t, dsn)
	treeID, identity, value := trillianLeafAt(t, db, victim)
	ev, err := entry.ParseEvent(entry.Text(value))
	if err != nil {
		t.Fatal(err)
	}
	from := []byte(`"id":"` + ev.Actor.ID + `"`)
	edited := bytes.Replace(value, from, []byte(`"id":"staff-9999"`), 1)
	if bytes.Equal(edited, value) {
		t.Fatalf("actor id not found in the leaf: %s", value)
	}
	if _, err := db.Exec("UPDATE LeafData SET LeafValue = ? WHERE TreeId = ? AND LeafIdentityHash = ?", edited, treeID, identity); err != nil {
		t.Fatal(err)
	}
	// Preconditions: the log now serves the edited bytes, which no longer
	// carry a valid submitter signature, under a checkpoint signed before.
	es, err := c.Entries(ctx, victim, victim+1)
	if err != nil || len(es) != 1 || !bytes.Equal(es[0].Data, edited) {
		t.Fatalf("after the edit, GET /entries serves %+v (%v); the test needs it to serve the edited leaf", es, err)
	}
	if _, err := entry.OpenForReplay(edited, loadRegistry(t, k)); err == nil {
		t.Fatal("the edited entry still verifies; the edit must break its signature")
	}

	code, res := runMonitorOnce(t, conf)
	if code != 4 {
		t.Fatalf("rewritten entry: exit %d, want 4; alerts:%s\nerrors: %q", code, alertList(res.Alerts), res.Errors)
	}
	if got := alertKinds(res.Alerts); len(got) != 1 || got["rewrite"] != 1 {
		t.Fatalf("alerts %v, want exactly one rewrite:%s", got, alertList(res.Alerts))
	}
	a := res.Alerts[0]
	if a.Index == nil || *a.Index != victim || a.Class != "integrity" || a.Log != k.origin {
		t.Fatalf("rewrite alert names index %v (class %s, log %s), want %d: %s", a.Index, a.Class, a.Log, victim, a)
	}
	if a.Range == nil || a.Range.Start != victim || a.Range.End <= victim {
		t.Fatalf("rewrite alert range %+v, want [%d, ...)", a.Range, victim)
	}
	if len(a.Evidence) == 0 {
		t.Fatal("rewrite alert carries no signed checkpoint")
	}
	if ev := openEvidence(t, k, a.Evidence[0].Note); ev.Size != cp.Size || !bytes.Equal(ev.Hash, cp.Hash) {
		t.Fatalf("evidence is the checkpoint of size %d, want the signed tree of size %d", ev.Size, cp.Size)
	}
	st := res.Logs[0]
	if st.Replay.Position > victim || st.Replay.Position < 20 || st.Replay.Halted == "" {
		t.Fatalf("replay position %d (halted %q): want it stopped at or before %d and after the verified 20", st.Replay.Position, st.Replay.Halted, victim)
	}

	// Next pass: the same finding, not a second alert; still exit 4.
	code, res = runMonitorOnce(t, conf)
	if code != 4 || res.Raised != 0 || res.OpenIntegrityAlerts != 1 {
		t.Fatalf("second pass: exit %d, %d new alerts, %d open integrity alerts; want 4, 0, 1:%s", code, res.Raised, res.OpenIntegrityAlerts, alertList(res.Alerts))
	}
}

// TestMonitorSplitView runs a forked log: two carelog-log processes with the
// same key on two databases, each showing its tree to its own witness. The
// monitor follows log A (with A's witness policy) and both witnesses; the
// witness of branch B shows it B's checkpoint, cosigned. The monitor must
// raise a split-view alert whose evidence is the two conflicting
// checkpoints, each verifiable with nothing but the log's public key.
func TestMonitorSplitView(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k := newKeyset(t)
	wa, wb := newWitnessKeys(t, "wa.test"), newWitnessKeys(t, "wb.test")
	logs := []map[string]string{{"origin": k.origin, "key": k.logVKey}}
	wa.start(t, witnessConfig{Logs: logs})
	wb.start(t, witnessConfig{Logs: logs})
	policyA, policyB := policyFor(t, 1, wa), policyFor(t, 1, wb)
	logA := startLog(t, k, testdb.New(t), "--policy", policyA)
	logB := startLog(t, k, testdb.New(t), "--policy", policyB)
	ca := policyClient(t, logA.url(), k.logVKey, policyA)
	cb := policyClient(t, logB.url(), k.logVKey, policyB)

	// Branch A (the one the monitor reads) is ahead of branch B, so the
	// monitor needs a consistency proof from A to judge B's checkpoint.
	submitInOrder(t, ctx, ca, routineEntries(t, k, 31, 8))
	submitInOrder(t, ctx, cb, routineEntries(t, k, 32, 5))
	cpA := waitPublishedSize(t, ctx, ca, 8)
	cpB := waitPublishedSize(t, ctx, cb, 5)
	waitFor(t, "witness B to hold branch B", 30*time.Second, func() (bool, error) {
		resp, err := http.Get(wb.url() + "/" + checkpoint.OriginID(k.origin) + "/checkpoint")
		if err != nil {
			return false, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return bytes.HasPrefix(body, []byte(fmt.Sprintf("%s\n5\n", k.origin))), nil
	})

	conf := newMonitorConf(t, k, logA.url(), policyA)
	conf.addWitness(wa)
	conf.addWitness(wb)
	code, res := runMonitorOnce(t, conf)
	if code != 4 {
		t.Fatalf("forked log: exit %d, want 4; alerts:%s\nerrors: %q", code, alertList(res.Alerts), res.Errors)
	}
	var split []monAlert
	for _, a := range res.Alerts {
		if a.Kind == "split-view" {
			split = append(split, a)
		}
	}
	if len(split) != 1 {
		t.Fatalf("want one split-view alert, got:%s", alertList(res.Alerts))
	}
	a := split[0]
	if len(a.Evidence) != 2 {
		t.Fatalf("split-view evidence has %d notes, want 2", len(a.Evidence))
	}
	bySource := map[string]*checkpoint.Signed{}
	for _, e := range a.Evidence {
		bySource[e.Source] = openEvidence(t, k, e.Note)
	}
	fromLog, fromWitness := bySource["log"], bySource["witness/"+wb.name]
	if fromLog == nil || fromWitness == nil {
		t.Fatalf("evidence sources %v, want log and witness/%s", sourcesOf(bySource), wb.name)
	}
	if fromLog.Size != cpA.Size || !bytes.Equal(fromLog.Hash, cpA.Hash) || fromWitness.Size != cpB.Size || !bytes.Equal(fromWitness.Hash, cpB.Hash) {
		t.Fatalf("evidence: log %d/%x, witness %d/%x; want branch A %d/%x and branch B %d/%x",
			fromLog.Size, fromLog.Hash, fromWitness.Size, fromWitness.Hash, cpA.Size, cpA.Hash, cpB.Size, cpB.Hash)
	}
	// The witness's note carries its cosignature: B's branch really was
	// shown to it. And the two cannot both be true: log A's own proof from
	// 5 to 8 does not lead from B's root.
	if cosigners(fromWitness, wb) != 1 {
		t.Fatal("the witness's checkpoint in the evidence lacks its cosignature")
	}
	if err := ca.VerifyConsistency(ctx, fromWitness.Checkpoint, fromLog.Checkpoint); err == nil {
		t.Fatal("the two checkpoints in the evidence are consistent")
	}
	t.Logf("split view: %s", a.Message)
}

func sourcesOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// copyLogDatabase copies every table of the database of dsn into the (empty)
// database of dst: a backup, as an operator would take it while the log is
// stopped, and its restore.
func copyLogDatabase(t *testing.T, src, dst string) {
	t.Helper()
	s, err := mysql.ParseDSN(src)
	if err != nil {
		t.Fatal(err)
	}
	d, err := mysql.ParseDSN(dst)
	if err != nil {
		t.Fatal(err)
	}
	db := openLogDB(t, dst)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, "SELECT table_name FROM information_schema.tables WHERE table_schema = ? AND table_type = 'BASE TABLE'", s.DBName)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	rows.Close()
	if _, err := conn.ExecContext(ctx, "SET FOREIGN_KEY_CHECKS = 0"); err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		for _, q := range []string{
			fmt.Sprintf("CREATE TABLE `%s`.`%s` LIKE `%s`.`%s`", d.DBName, tb, s.DBName, tb),
			fmt.Sprintf("INSERT INTO `%s`.`%s` SELECT * FROM `%s`.`%s`", d.DBName, tb, s.DBName, tb),
		} {
			if _, err := conn.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	if len(tables) < 5 {
		t.Fatalf("copied only tables %v", tables)
	}
}

// TestMonitorRollback restores the log's database from a backup taken at
// size 10 after the log had published size 20, and restarts carelog-log on
// it at the same address: a log that lost state and serves its older,
// smaller checkpoint. The monitor, which verified size 20, must raise a
// rollback alert with both checkpoints as evidence and exit 4. When the
// restored log then takes new entries and grows past 20 on a different
// history, the monitor must also prove the fork: a split-view alert.
func TestMonitorRollback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k := newKeyset(t)
	dsn, backup := testdb.New(t), testdb.New(t)
	// A short lease: the restarted log takes over the sequencer lease of
	// the process it replaces quickly.
	lg := startLog(t, k, dsn, "--lease-ttl", "1s")
	c := logClient(t, lg.url(), k.logVKey)

	submitInOrder(t, ctx, c, routineEntries(t, k, 41, 10))
	old := waitPublishedSize(t, ctx, c, 10)
	lg.stop()
	copyLogDatabase(t, dsn, backup)
	lg.restart()
	submitInOrder(t, ctx, c, routineEntries(t, k, 42, 10))
	newer := waitPublishedSize(t, ctx, c, 20)

	conf := newMonitorConf(t, k, lg.url(), "")
	if code, res := runMonitorOnce(t, conf); code != 0 || res.Logs[0].Verified.Size != 20 {
		t.Fatalf("before the restore: exit %d, verified %+v, alerts:%s", code, res.Logs[0].Verified, alertList(res.Alerts))
	}

	// The operator restores last night's backup and restarts the log.
	lg.stop()
	lg.args = setFlag(lg.args, "--mysql", backup)
	lg.restart()
	if cp := waitPublishedSize(t, ctx, c, 10); !bytes.Equal(cp.Hash, old.Hash) {
		t.Fatal("the restored log does not serve the old checkpoint")
	}

	code, res := runMonitorOnce(t, conf)
	if code != 4 {
		t.Fatalf("rolled-back log: exit %d, want 4; alerts:%s\nerrors: %q", code, alertList(res.Alerts), res.Errors)
	}
	if got := alertKinds(res.Alerts); len(got) != 1 || got["rollback"] != 1 {
		t.Fatalf("alerts %v, want exactly one rollback (the smaller tree is a prefix: no split view yet):%s", got, alertList(res.Alerts))
	}
	a := res.Alerts[0]
	var sizes []uint64
	for _, e := range a.Evidence {
		cp := openEvidence(t, k, e.Note)
		sizes = append(sizes, cp.Size)
		want := map[uint64][]byte{10: old.Hash, 20: newer.Hash}[cp.Size]
		if !bytes.Equal(cp.Hash, want) {
			t.Fatalf("evidence checkpoint of size %d is not the one the log published", cp.Size)
		}
	}
	if fmt.Sprint(sizes) != "[20 10]" && fmt.Sprint(sizes) != "[10 20]" {
		t.Fatalf("rollback evidence sizes %v, want the verified 20 and the served 10", sizes)
	}
	if res.Logs[0].Verified.Size != 20 {
		t.Fatalf("after the rollback the monitor's verified checkpoint is size %d; it must keep 20", res.Logs[0].Verified.Size)
	}

	// The restored log goes on with other entries: a second history under
	// the same key. Once it is past 20 its own proofs give it away.
	submitInOrder(t, ctx, c, routineEntries(t, k, 43, 15))
	waitPublishedSize(t, ctx, c, 25)
	code, res = runMonitorOnce(t, conf)
	if code != 4 {
		t.Fatalf("forked after restore: exit %d, want 4; alerts:%s", code, alertList(res.Alerts))
	}
	if got := alertKinds(res.Alerts); got["split-view"] != 1 || got["rollback"] != 0 {
		t.Fatalf("after the restored log grew past 20 on another history: new alerts %v, want one split-view (and the rollback not again):%s", got, alertList(res.Alerts))
	}
	t.Logf("rollback: %s", a.Message)
}

// TestMonitorBrokenPromise runs a classic QueueLeaf log (Trillian's own
// sequencer integrates queued entries). With integration paused, the log
// accepts entry X and gives its promise; an insider deletes X from
// Trillian's queue before it is integrated; the log then integrates later
// entries (Y) normally. X's promise is handed to the monitor through POST
// /promises (the log's whole add-entry answer), Y's through the promise
// directory. After the merge delay the monitor must raise broken-promise
// for X, with the promise and the checkpoint that lacks it as evidence, and
// nothing for Y, whose promise is kept.
func TestMonitorBrokenPromise(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k := newKeyset(t)
	dsn := testdb.New(t)
	lg := startLog(t, k, dsn, "--sequencing", "trillian")
	c := logClient(t, lg.url(), k.logVKey)
	submitInOrder(t, ctx, c, routineEntries(t, k, 51, 5))
	waitPublishedSize(t, ctx, c, 5)

	// Pause integration: Trillian's sequencer runs once an hour.
	lg.stop()
	lg.args = setFlag(lg.args, "--sequencer-interval", "1h")
	lg.restart()
	entries := routineEntries(t, k, 52, 2)
	x, y := entries[0], entries[1]
	resp, err := http.Post(lg.url()+"/add-entry", "text/plain", bytes.NewReader(x))
	if err != nil {
		t.Fatal(err)
	}
	answerX, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("add-entry answered %d %s; want 202 (queued, not yet integrated)", resp.StatusCode, answerX)
	}
	var ansX struct {
		Promise string `json:"promise"`
	}
	if err := json.Unmarshal(answerX, &ansX); err != nil || ansX.Promise == "" {
		t.Fatalf("add-entry answer has no promise: %s", answerX)
	}
	logV, _ := note.NewVerifier(k.logVKey)
	pX, err := promise.Open([]byte(ansX.Promise), k.origin, logV)
	if err != nil {
		t.Fatal(err)
	}

	// The insider deletes X from Trillian's queue and leaf table.
	db := openLogDB(t, dsn)
	evX, _ := entry.ParseEvent(entry.Text(x))
	identity := entry.IdentityHash(k.submitterName, evX.ID)
	var deleted int64
	for _, q := range []string{"DELETE FROM Unsequenced WHERE LeafIdentityHash = ?", "DELETE FROM LeafData WHERE LeafIdentityHash = ?"} {
		r, err := db.Exec(q, identity)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := r.RowsAffected()
		deleted += n
	}
	if deleted != 2 {
		t.Fatalf("deleted %d rows for the queued entry; want its Unsequenced and LeafData rows", deleted)
	}

	// Integration resumes; the log takes and integrates Y.
	lg.stop()
	lg.args = setFlag(lg.args, "--sequencer-interval", "50ms")
	lg.restart()
	resY, err := c.Submit(ctx, y)
	if err != nil {
		t.Fatal(err)
	}
	cp := waitPublishedSize(t, ctx, c, 6)
	if _, err := c.VerifyInclusion(ctx, pX.LeafHash, cp.Checkpoint); client.StatusOf(err) != http.StatusNotFound {
		t.Fatalf("precondition: X must be missing from the tree of size 6; inclusion proof: %v", err)
	}

	const mergeDelay = 3 * time.Second
	conf := newMonitorConf(t, k, lg.url(), "")
	conf.MergeDelay = mergeDelay.String()
	conf.PromiseDir = t.TempDir()
	writeFile(t, filepath.Join(conf.PromiseDir, "y.promise"), resY.Promise)
	m := serveMonitor(t, conf)
	post, err := http.Post(m.url()+"/promises", "application/json", bytes.NewReader(answerX))
	if err != nil {
		t.Fatal(err)
	}
	receipt, _ := io.ReadAll(post.Body)
	post.Body.Close()
	if post.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /promises answered %d %s; want 202", post.StatusCode, receipt)
	}
	// A promise the log never signed is refused.
	forged := strings.Replace(ansX.Promise, base64.StdEncoding.EncodeToString(pX.LeafHash), base64.StdEncoding.EncodeToString(checkpoint.LeafHash(y)), 1)
	post, err = http.Post(m.url()+"/promises", "text/plain", strings.NewReader(forged))
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusBadRequest {
		t.Fatalf("POST /promises with a promise whose signature does not verify: %d, want 400", post.StatusCode)
	}

	var broken []monAlert
	waitFor(t, "a broken-promise alert", 30*time.Second, func() (bool, error) {
		broken = monitorAlerts(t, m, "?kind=broken-promise")
		return len(broken) > 0, nil
	})
	waitFor(t, "the promise directory to be read and Y's promise kept", 30*time.Second, func() (bool, error) {
		st, err := monitorStatus(m)
		if err != nil {
			return false, err
		}
		_, statErr := os.Stat(filepath.Join(conf.PromiseDir, "y.promise"))
		return st.PendingPromises == 0 && errors.Is(statErr, os.ErrNotExist), fmt.Errorf("%d pending, promise file: %v", st.PendingPromises, statErr)
	})
	all := monitorAlerts(t, m, "")
	if len(broken) != 1 || len(all) != 1 {
		t.Fatalf("want exactly one alert, broken-promise for X; got:%s", alertList(all))
	}
	a := broken[0]
	hX := base64.StdEncoding.EncodeToString(pX.LeafHash)
	if a.Class != "integrity" || !strings.Contains(a.Message, hX) {
		t.Fatalf("broken-promise alert does not name X's leaf hash %s: %s", hX, a)
	}
	if !a.Time.After(pX.Accepted.Add(mergeDelay)) {
		t.Fatalf("broken-promise raised at %v, before the merge delay ran out at %v", a.Time, pX.Accepted.Add(mergeDelay))
	}
	var gotPromise, gotCheckpoint bool
	for _, e := range a.Evidence {
		switch e.Source {
		case "promise":
			p, err := promise.Open([]byte(e.Note), k.origin, logV)
			gotPromise = err == nil && bytes.Equal(p.LeafHash, pX.LeafHash)
		case "log":
			ecp := openEvidence(t, k, e.Note)
			gotCheckpoint = ecp.Size == cp.Size && bytes.Equal(ecp.Hash, cp.Hash)
		}
	}
	if !gotPromise || !gotCheckpoint {
		t.Fatalf("evidence: X's signed promise %v, the checkpoint of size 6 %v; want both", gotPromise, gotCheckpoint)
	}

	// The one-shot pass on the same state reports it: exit 4.
	m.stop()
	if code, res := runMonitorOnce(t, conf); code != 4 || res.OpenIntegrityAlerts != 1 || res.Raised != 0 {
		t.Fatalf("-once after a broken promise: exit %d, %d open integrity alerts, %d new; want 4, 1, 0", code, res.OpenIntegrityAlerts, res.Raised)
	}
}

// TestMonitorForgedEntry plays an insider who inserts forged access events
// into the log's own sequencing table (carelog_leaves) while the log is
// down, before they reach Trillian: one signed in the EHR's name by a key
// that is not registered, one genuine entry whose content was altered after
// signing. On restart the log feeds them into the tree and signs it, so the
// tree and its checkpoints are consistent and only the entries betray the
// forgery. The monitor must raise a bad-entry alert naming each index, no
// rewrite, exit 4, and still replay to the tip.
func TestMonitorForgedEntry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k := newKeyset(t)
	dsn := testdb.New(t)
	lg := startLog(t, k, dsn, "--lease-ttl", "1s")
	c := logClient(t, lg.url(), k.logVKey)
	submitInOrder(t, ctx, c, routineEntries(t, k, 61, 10))
	waitPublishedSize(t, ctx, c, 10)
	lg.stop()

	// Forgery 1: a well-formed event in ehr.integration's name, signed by
	// a key the registry does not know.
	rogueSKey, _, err := submitter.GenerateEd25519(k.submitterName)
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := submitter.NewSigner(rogueSKey)
	if err != nil {
		t.Fatal(err)
	}
	ev := ehrsim.New(k.submitterName, 62).Next(time.Now())
	ev.Event, ev.Action, ev.Purpose, ev.Patient = "read", "R", "TREAT", ehrsim.New(k.submitterName, 62).Pseudonym(7)
	forged1, err := entry.Sign(ev, rogue)
	if err != nil {
		t.Fatal(err)
	}
	// Forgery 2: a genuine entry whose actor was changed after signing.
	genuine := routineEntries(t, k, 63, 1)[0]
	gev, _ := entry.ParseEvent(entry.Text(genuine))
	forged2 := bytes.Replace(genuine, []byte(`"id":"`+gev.Actor.ID+`"`), []byte(`"id":"staff-7777"`), 1)
	reg := loadRegistry(t, k)
	for i, f := range [][]byte{forged1, forged2} {
		if _, err := entry.OpenForReplay(f, reg); err == nil || bytes.Equal(f, genuine) {
			t.Fatalf("forgery %d verifies as an entry", i+1)
		}
	}

	db := openLogDB(t, dsn)
	var hasLeafHash bool
	if err := db.QueryRow("SELECT COUNT(*) > 0 FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'carelog_leaves' AND column_name = 'leaf_hash'").Scan(&hasLeafHash); err != nil {
		t.Fatal(err)
	}
	for i, f := range [][]byte{forged1, forged2} {
		fev, err := entry.ParseEvent(entry.Text(f))
		if err != nil {
			t.Fatal(err)
		}
		cols, args := "origin, leaf_index, identity_hash, leaf_value, accepted_at", []any{k.origin, 10 + i, entry.IdentityHash(k.submitterName, fev.ID), f, time.Now().UnixNano()}
		if hasLeafHash {
			cols, args = cols+", leaf_hash", append(args, checkpoint.LeafHash(f))
		}
		if _, err := db.Exec("INSERT INTO carelog_leaves ("+cols+") VALUES (?"+strings.Repeat(", ?", len(args)-1)+")", args...); err != nil {
			t.Fatal(err)
		}
	}

	lg.restart()
	submitInOrder(t, ctx, c, routineEntries(t, k, 64, 5))
	cp := waitPublishedSize(t, ctx, c, 17)
	es, err := c.Entries(ctx, 10, 12)
	if err != nil || len(es) != 2 || !bytes.Equal(es[0].Data, forged1) || !bytes.Equal(es[1].Data, forged2) {
		t.Fatalf("precondition: the log must serve the forgeries at 10 and 11 (%v)", err)
	}

	conf := newMonitorConf(t, k, lg.url(), "")
	code, res := runMonitorOnce(t, conf)
	if code != 4 {
		t.Fatalf("forged entries: exit %d, want 4; alerts:%s\nerrors: %q", code, alertList(res.Alerts), res.Errors)
	}
	if got := alertKinds(res.Alerts); len(got) != 1 || got["bad-entry"] != 2 {
		t.Fatalf("alerts %v, want exactly two bad-entry (the tree itself is consistent):%s", got, alertList(res.Alerts))
	}
	for i, a := range res.Alerts {
		if a.Index == nil || *a.Index != uint64(10+i) || a.Class != "integrity" {
			t.Fatalf("bad-entry alert %d names index %v, want %d: %s", i, a.Index, 10+i, a)
		}
	}
	st := res.Logs[0]
	if st.Replay.Position != cp.Size || st.Replay.Halted != "" {
		t.Fatalf("replay position %d (halted %q), want the tip %d: a bad entry does not stop the replay", st.Replay.Position, st.Replay.Halted, cp.Size)
	}
	for _, a := range res.Alerts {
		t.Logf("%s", a)
	}
}

// craftedAccess is an event: actor reads patient's record for purpose.
func craftedAccess(g *ehrsim.Generator, actor, patient, event, purpose string) *entry.Event {
	ev := g.Next(time.Now())
	ev.Action, ev.Event, ev.Purpose, ev.Patient = "R", event, purpose, patient
	ev.Actor = entry.Actor{ID: actor, Role: "nurse", Org: "org-1"}
	ev.Resource = entry.Resource{Type: "Condition", ID: "r-crafted"}
	return ev
}

// TestMonitorWatchRules sends routine traffic, then crafted accesses
// through the log as an EHR would: a break-glass read, a read under an
// emergency purpose, a read of a watched patient, and a snooper who reads 7
// different patients' records within minutes (the limit is 5 per hour);
// beside near misses that must stay silent: an actor who reads exactly 5
// patients, and one who reads one patient's record ten times. Routine
// traffic alone raises nothing (exit 0); the crafted traffic raises exactly
// the expected watch alerts, naming the entries (exit 5, watch only); a
// pass with nothing new is clean again.
func TestMonitorWatchRules(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k := newKeyset(t)
	lg := startLog(t, k, testdb.New(t))
	c := logClient(t, lg.url(), k.logVKey)
	g := ehrsim.New(k.submitterName, 71)
	watched := ehrsim.New(k.submitterName, 999).Pseudonym(1) // not in the routine population

	conf := newMonitorConf(t, k, lg.url(), "")
	conf.Rules = map[string]any{
		"emergency":        true,
		"watched_patients": []string{watched},
		"snooping":         map[string]any{"max_patients": 5, "window": "1h"},
	}

	submitInOrder(t, ctx, c, routineEntries(t, k, 72, 60))
	waitPublishedSize(t, ctx, c, 60)
	if code, res := runMonitorOnce(t, conf); code != 0 || res.Raised != 0 {
		t.Fatalf("routine traffic: exit %d, alerts:%s", code, alertList(res.Alerts))
	}

	type want struct {
		kind, actor, patient string
	}
	var crafted [][]byte
	expect := map[int]want{} // position in crafted -> expected alert
	add := func(ev *entry.Event, w *want) {
		if w != nil {
			expect[len(crafted)] = *w
		}
		crafted = append(crafted, signEvent(t, k, ev))
	}
	add(craftedAccess(g, "staff-0900", g.Pseudonym(3), "break-glass", "ETREAT"), &want{"emergency-access", "org-1/staff-0900", g.Pseudonym(3)})
	add(craftedAccess(g, "staff-0901", g.Pseudonym(4), "read", "ETREAT"), &want{"emergency-access", "org-1/staff-0901", g.Pseudonym(4)})
	add(craftedAccess(g, "staff-0902", watched, "read", "TREAT"), &want{"watched-patient", "org-1/staff-0902", watched})
	for i := 0; i < 7; i++ { // the snooper: the 6th distinct patient is one too many
		var w *want
		if i == 5 {
			w = &want{"snooping", "org-1/" + ehrsim.SnooperID, ""}
		}
		add(craftedAccess(g, ehrsim.SnooperID, g.Pseudonym(100+i), "read", "TREAT"), w)
	}
	for i := 0; i < 5; i++ { // exactly at the limit
		add(craftedAccess(g, "staff-0800", g.Pseudonym(200+i), "read", "TREAT"), nil)
	}
	for i := 0; i < 10; i++ { // one patient, many times
		add(craftedAccess(g, "staff-0801", g.Pseudonym(300), "read", "TREAT"), nil)
	}
	crafted = append(crafted, routineEntries(t, k, 73, 20)...)
	results := submitInOrder(t, ctx, c, crafted)
	waitPublishedSize(t, ctx, c, uint64(60+len(crafted)))

	code, res := runMonitorOnce(t, conf)
	if code != 5 || res.OpenIntegrityAlerts != 0 {
		t.Fatalf("crafted traffic: exit %d (open integrity alerts %d), want 5 (watch alerts only); alerts:%s", code, res.OpenIntegrityAlerts, alertList(res.Alerts))
	}
	got := map[uint64]monAlert{}
	for _, a := range res.Alerts {
		if a.Index == nil || a.Class != "watch" {
			t.Fatalf("unexpected alert: %s (class %s)", a, a.Class)
		}
		if prev, dup := got[*a.Index]; dup {
			t.Fatalf("two alerts for entry %d: %s and %s", *a.Index, prev, a)
		}
		got[*a.Index] = a
	}
	for pos, w := range expect {
		if !results[pos].Sequenced {
			t.Fatalf("crafted entry %d has no index", pos)
		}
		idx := results[pos].Index
		a, ok := got[idx]
		if !ok {
			t.Fatalf("no %s alert for entry %d; alerts:%s", w.kind, idx, alertList(res.Alerts))
		}
		if a.Kind != w.kind || a.Actor != w.actor || a.Patient != w.patient {
			t.Fatalf("entry %d: alert %s actor %q patient %q; want %s by %q on %q", idx, a, a.Actor, a.Patient, w.kind, w.actor, w.patient)
		}
		delete(got, idx)
	}
	if len(got) != 0 {
		var extra []monAlert
		for _, a := range got {
			extra = append(extra, a)
		}
		t.Fatalf("alerts on entries that should be silent:%s", alertList(extra))
	}

	if code, res := runMonitorOnce(t, conf); code != 0 || res.Raised != 0 {
		t.Fatalf("a pass with nothing new: exit %d, alerts:%s", code, alertList(res.Alerts))
	}
}

// logGRPCAddr is the gRPC address a carelog-log started with --grpc-listen
// reports ({"msg":"serving gRPC","addr":...}, logged after the HTTP one).
func logGRPCAddr(t *testing.T, lg *process) string {
	t.Helper()
	var addr string
	waitFor(t, "carelog-log to serve gRPC", 30*time.Second, func() (bool, error) {
		for _, line := range strings.Split(lg.log(), "\n") {
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "serving gRPC" && rec.Addr != "" {
				addr = rec.Addr
			}
		}
		return addr != "", nil
	})
	return addr
}

// bulkSubmit signs n events of a simulated EHR (with a snooper and the
// simulator's rare break-glass reads) and submits them over gRPC bulk
// streams; it returns once the log published a checkpoint of size n.
func bulkSubmit(t *testing.T, ctx context.Context, k *keyset, lg *process, c *client.Log, seed uint64, n int) {
	t.Helper()
	g := ehrsim.New(k.submitterName, seed)
	g.SnoopEvery = 50
	entries := make([][]byte, n)
	for i := range entries {
		entries[i] = signEvent(t, k, g.Next(time.Now()))
	}
	gc, err := c.DialGRPC(logGRPCAddr(t, lg), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	const streams = 4
	var wg sync.WaitGroup
	for s := 0; s < streams; s++ {
		wg.Add(1)
		go func(part [][]byte) {
			defer wg.Done()
			res, err := gc.SubmitBulk(ctx, part)
			if err != nil {
				t.Error(err)
				return
			}
			for _, r := range res {
				if r.Err != nil {
					t.Error(r.Err)
					return
				}
			}
		}(entries[s*n/streams : (s+1)*n/streams])
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	waitPublishedSize(t, ctx, c, uint64(n))
}

// TestMonitorKilledDuringReplay loads a log with 20,000 entries from a
// simulated EHR (with a snooper, break-glass reads and a watched patient,
// so the replay raises alerts and carries snooping state). A reference
// monitor replays it in one go. A second monitor, replaying in small
// batches, is killed with SIGKILL in the middle of its replay and
// restarted on the same state: it must resume (not start over), finish at
// the tip, and end with exactly the reference's alerts, none twice, and the
// alerts it had raised before the kill unchanged.
func TestMonitorKilledDuringReplay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const n = 20000
	k := newKeyset(t)
	lg := startLog(t, k, testdb.New(t), "--grpc-listen", "127.0.0.1:0")
	c := logClient(t, lg.url(), k.logVKey)
	bulkSubmit(t, ctx, k, lg, c, 81, n)

	rules := map[string]any{
		"watched_patients": []string{ehrsim.New(k.submitterName, 81).Pseudonym(5)},
		"snooping":         map[string]any{"max_patients": 20, "window": "1h"},
	}
	ref := newMonitorConf(t, k, lg.url(), "")
	ref.Rules = rules
	code, res := runMonitorOnce(t, ref)
	if code != 5 || res.Logs[0].Replay.Position != n {
		t.Fatalf("reference pass: exit %d, position %d; want 5 (watch alerts) at %d:%s", code, res.Logs[0].Replay.Position, n, alertList(res.Alerts))
	}
	want := alertKinds(res.Alerts)
	// Compressed into seconds of event time, every busy actor of the
	// simulation crosses the snooping limit once (then stays quiet for the
	// window): the snooping state must survive the kill as well.
	if res.Raised != len(res.Alerts) || want["snooping"] == 0 || want["emergency-access"] == 0 || want["watched-patient"] == 0 {
		t.Fatalf("reference alerts %v (raised %d); the load should raise snooping, emergency and watched-patient alerts", want, res.Raised)
	}

	conf := newMonitorConf(t, k, lg.url(), "")
	conf.Rules = rules
	conf.Replay = map[string]int{"batch_size": 100, "workers": 1} // many small commits
	m := serveMonitor(t, conf)
	var killedAt uint64
	waitFor(t, "the replay to get under way", time.Minute, func() (bool, error) {
		st, err := monitorStatus(m)
		if err != nil {
			return false, err
		}
		killedAt = st.Replay.Position
		return killedAt >= n/5, nil
	})
	before := monitorAlerts(t, m, "")
	m.kill9()
	if killedAt >= n {
		t.Fatalf("the replay was already complete (%d) when the monitor was killed; the test needs a slower replay", killedAt)
	}
	t.Logf("killed at replay position %d of %d, with %d alerts raised", killedAt, n, len(before))

	m.restart()
	st := waitReplayed(t, m, n)
	if st.Verified.Size != n || st.Replay.Halted != "" {
		t.Fatalf("after restart: verified %d, halted %q", st.Verified.Size, st.Replay.Halted)
	}
	if v, ok := labelledMetric(m.url(), "carelog_monitor_entries_verified_total"); !ok || v > float64(n-killedAt) || v == 0 {
		t.Fatalf("the restarted monitor verified %v entries (read: %v); resuming from at least %d it should verify at most %d", v, ok, killedAt, n-killedAt)
	}
	after := monitorAlerts(t, m, "")
	byUID := map[string]monAlert{}
	for _, a := range after {
		if prev, dup := byUID[a.UID]; dup {
			t.Fatalf("alert raised twice: %s and %s", prev, a)
		}
		byUID[a.UID] = a
	}
	for _, a := range before {
		if b, ok := byUID[a.UID]; !ok || b.ID != a.ID {
			t.Fatalf("alert %s, raised before the kill, is gone or renumbered after the restart", a)
		}
	}
	if len(after) != len(res.Alerts) {
		t.Fatalf("interrupted monitor: %d alerts %v; reference: %d alerts %v", len(after), alertKinds(after), len(res.Alerts), want)
	}
	for _, r := range res.Alerts {
		a, ok := byUID[r.UID]
		if !ok || a.Kind != r.Kind || a.index() != r.index() {
			t.Fatalf("the reference raised %s; the interrupted monitor has no such alert (%v)", r, ok)
		}
	}
}

// webhookReceiver records every POST the monitor makes to its webhook.
type webhookReceiver struct {
	mu       sync.Mutex
	failing  bool           // answer 503 instead of 204
	ok       map[string]int // Idempotency-Key -> 2xx answers given
	failed   int            // attempts answered 503
	mismatch []string       // keys that are not the body's uid
}

func (r *webhookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var a monAlert
	body, _ := io.ReadAll(req.Body)
	key := req.Header.Get("Idempotency-Key")
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := json.Unmarshal(body, &a); err != nil || a.UID == "" || a.UID != key || req.Method != http.MethodPost {
		r.mismatch = append(r.mismatch, fmt.Sprintf("%s key %q uid %q (%v)", req.Method, key, a.UID, err))
	}
	if r.failing {
		r.failed++
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	r.ok[key]++
	w.WriteHeader(http.StatusNoContent)
}

func (r *webhookReceiver) state() (ok map[string]int, failed int, mismatch []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ok = map[string]int{}
	for k, v := range r.ok {
		ok[k] = v
	}
	return ok, r.failed, append([]string(nil), r.mismatch...)
}

func (r *webhookReceiver) setFailing(f bool) {
	r.mu.Lock()
	r.failing = f
	r.mu.Unlock()
}

// TestMonitorWebhookExactlyOnce runs the monitor as a server with a
// webhook. Three alerts are delivered; then the receiver fails (503), three
// more alerts wait in the outbox while the monitor retries, and the monitor
// is killed with SIGKILL; the receiver recovers, the monitor restarts and
// raises two more. The receiver must have accepted every alert exactly
// once, each POST carrying the alert's uid as Idempotency-Key.
func TestMonitorWebhookExactlyOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k := newKeyset(t)
	lg := startLog(t, k, testdb.New(t))
	c := logClient(t, lg.url(), k.logVKey)
	recv := &webhookReceiver{ok: map[string]int{}}
	hook := httptest.NewServer(recv)
	defer hook.Close()

	g := ehrsim.New(k.submitterName, 91)
	size := uint64(0)
	emergencies := func(n int) {
		t.Helper()
		var es [][]byte
		for i := 0; i < n; i++ {
			es = append(es, signEvent(t, k, craftedAccess(g, fmt.Sprintf("staff-09%02d", i), g.Pseudonym(i), "break-glass", "ETREAT")))
		}
		es = append(es, routineEntries(t, k, 92+size, 5)...)
		submitInOrder(t, ctx, c, es)
		size += uint64(len(es))
		waitPublishedSize(t, ctx, c, size)
	}
	delivered := func(want int) map[string]int {
		t.Helper()
		var ok map[string]int
		waitFor(t, fmt.Sprintf("%d alerts delivered", want), 30*time.Second, func() (bool, error) {
			ok, _, _ = recv.state()
			return len(ok) >= want, nil
		})
		return ok
	}

	conf := newMonitorConf(t, k, lg.url(), "")
	conf.Webhook = map[string]string{"url": hook.URL, "min_backoff": "100ms", "max_backoff": "400ms"}
	m := serveMonitor(t, conf)
	emergencies(3)
	delivered(3)

	recv.setFailing(true)
	emergencies(3)
	waitFor(t, "three alerts waiting in the outbox after failed deliveries", 30*time.Second, func() (bool, error) {
		var st struct {
			Outbox int `json:"webhook_outbox"`
		}
		err := fetchJSON(m.url()+"/status", &st)
		_, failed, _ := recv.state()
		return err == nil && st.Outbox == 3 && failed >= 2, err
	})
	m.kill9()
	recv.setFailing(false)
	m.restart()
	delivered(6)
	emergencies(2)
	delivered(8)
	waitFor(t, "an empty outbox", 30*time.Second, func() (bool, error) {
		var st struct {
			Outbox int `json:"webhook_outbox"`
		}
		err := fetchJSON(m.url()+"/status", &st)
		return err == nil && st.Outbox == 0, err
	})

	alerts := monitorAlerts(t, m, "")
	ok, failed, mismatch := recv.state()
	if len(mismatch) > 0 {
		t.Fatalf("webhook POSTs whose Idempotency-Key is not the alert's uid: %q", mismatch)
	}
	if len(alerts) != 8 || len(ok) != 8 {
		t.Fatalf("%d alerts, %d delivered; want 8 and 8:%s", len(alerts), len(ok), alertList(alerts))
	}
	for _, a := range alerts {
		if n := ok[a.UID]; n != 1 {
			t.Fatalf("alert %s was accepted by the receiver %d times; want exactly once", a, n)
		}
	}
	t.Logf("8 alerts delivered once each; %d failed attempts retried", failed)
}

// TestMonitorBrokenPromiseEmptyLog: a new QueueLeaf log accepts an entry,
// gives its promise, and never integrates anything (Trillian's sequencer
// is set to run once an hour), so it keeps publishing its signed empty
// tree. After the merge delay the promise is broken exactly as when a
// later entry is integrated instead, and the monitor must say so.
func TestMonitorBrokenPromiseEmptyLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := newKeyset(t)
	lg := startLog(t, k, testdb.New(t), "--sequencing", "trillian", "--sequencer-interval", "1h")
	c := logClient(t, lg.url(), k.logVKey)
	waitPublishedSize(t, ctx, c, 0)
	res := submitInOrder(t, ctx, c, routineEntries(t, k, 55, 1))[0]
	if res.Sequenced {
		t.Fatal("the entry was integrated at once; the test needs it to stay queued")
	}

	const mergeDelay = 2 * time.Second
	conf := newMonitorConf(t, k, lg.url(), "")
	conf.MergeDelay = mergeDelay.String()
	conf.PromiseDir = t.TempDir()
	writeFile(t, filepath.Join(conf.PromiseDir, "x.promise"), res.Promise)
	m := serveMonitor(t, conf)
	logV, _ := note.NewVerifier(k.logVKey)
	p, err := promise.Open([]byte(res.Promise), k.origin, logV)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Until(p.Accepted.Add(mergeDelay)) + 5*time.Second
	found := false
	for end := time.Now().Add(deadline); time.Now().Before(end) && !found; time.Sleep(100 * time.Millisecond) {
		found = len(monitorAlerts(t, m, "?kind=broken-promise")) > 0
	}
	if !found {
		t.Fatalf("PRODUCT BUG (monitor/promises.go, auditPromises): no broken-promise alert %s after the merge delay ran out, "+
			"for a promise against a log whose verified checkpoint has size 0. The monitor asks the log for an inclusion proof at size 0, "+
			"the log answers 400 (\"size\" must be at least 1), and the monitor reports an operational error instead of the broken promise "+
			"(-once exits 3, not 4). Alerts now:%s\nmonitor log:\n%s",
			5*time.Second, alertList(monitorAlerts(t, m, "")), tail(m.log(), 4))
	}
}
