// Package monitor is carelog's monitor: the independent party that trusts
// nothing a log says without a proof.
//
// For every configured log it
//
//   - follows checkpoints from the log, from every witness's C2SP
//     tlog-witness monitoring endpoint and from peer monitors, verifying the
//     log's signature (and, for the log's own checkpoint, the witness
//     policy), and keeps every checkpoint it holds consistent with every
//     other: two log-signed checkpoints that cannot both be true are a
//     split view, alerted with both notes as evidence; a smaller checkpoint
//     after a larger one is a rollback;
//   - replays the whole log: downloads every entry in parallel batches,
//     recomputes the Merkle root with a compact range and proves each batch
//     a prefix of the signed tree before committing it, so a rewritten entry
//     is named by index; and checks each entry's submitter signature and
//     schema with package entry;
//   - audits promises handed to it (POST /promises or a drop directory): an
//     entry not included within the maximum merge delay is a broken promise;
//   - applies health-care watch rules (emergency access, watched patients,
//     snooping, keys outside their validity window) and keeps its own
//     pseudonym → indices index.
//
// Alerts go to a durable webhook outbox, Prometheus metrics, structured
// logs, GET /status and GET /alerts. State lives in SQLite in the state
// directory. The monitor never imports the log's stack (Trillian, MySQL) or
// the witness: it must not be able to trust the log's database by accident.
package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/client"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// Monitor follows, replays and audits the configured logs.
type Monitor struct {
	cfg      Config
	store    *store
	logs     []*logState
	vantages []vantage
	metrics  *metrics
	log      *slog.Logger
	now      func() time.Time
	cosigner note.Signer
	wake     chan struct{}

	// testHookBatch, if set, runs after each committed replay batch.
	testHookBatch func(origin string, position uint64)
}

// logState is what the monitor knows about one log.
type logState struct {
	origin   string
	id       int64
	client   *client.Log
	verifier note.Verifier
	policy   *checkpoint.Policy
	advanced chan struct{} // signalled when the verified checkpoint grows

	mu       sync.Mutex
	verified *storedCheckpoint
	progress Progress
	sources  map[string]SourceStatus
	// refused records since when the log has refused to prove two of its
	// checkpoints consistent (in memory: a restart starts the clock again).
	refused map[string]time.Time
}

// refusedSince records a refusal of the proof named by key and returns
// when the refusals began.
func (ls *logState) refusedSince(key string, now time.Time) time.Time {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.refused == nil {
		ls.refused = map[string]time.Time{}
	}
	t, ok := ls.refused[key]
	if !ok {
		ls.refused[key], t = now, now
	}
	return t
}

// Progress is a log's replay progress.
type Progress struct {
	// Position is the number of entries replayed and verified.
	Position uint64 `json:"position"`
	// Target is the size of the verified checkpoint being replayed to.
	Target uint64 `json:"target"`
	// Rate is entries verified per second in the current replay.
	Rate float64 `json:"entries_per_second"`
	// ETASeconds estimates the time to reach Target at Rate.
	ETASeconds float64 `json:"eta_seconds"`
	// Halted says why the replay stopped short of Target, if it did.
	Halted string `json:"halted,omitempty"`
}

// ETA is ETASeconds as a duration.
func (p Progress) ETA() time.Duration { return time.Duration(p.ETASeconds * float64(time.Second)) }

// SourceStatus is the latest checkpoint one source showed for a log.
type SourceStatus struct {
	Size    uint64    `json:"size"`
	Root    []byte    `json:"root,omitempty"`
	Fetched time.Time `json:"fetched"`
	Error   string    `json:"error,omitempty"`
}

func (ls *logState) verifiedSnapshot() *storedCheckpoint {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.verified
}

func (ls *logState) setVerified(v *storedCheckpoint) {
	ls.mu.Lock()
	ls.verified = v
	ls.mu.Unlock()
	select {
	case ls.advanced <- struct{}{}:
	default:
	}
}

func (ls *logState) setProgress(pos, target uint64, halted string) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.progress.Position, ls.progress.Target, ls.progress.Halted = pos, target, halted
	ls.progress.ETASeconds = 0
	if ls.progress.Rate > 0 && target > pos {
		ls.progress.ETASeconds = float64(target-pos) / ls.progress.Rate
	}
}

func (ls *logState) updateRate(done uint64, elapsed time.Duration) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if elapsed <= 0 {
		return
	}
	ls.progress.Rate = float64(done) / elapsed.Seconds()
	if t, p := ls.progress.Target, ls.progress.Position; t > p && ls.progress.Rate > 0 {
		ls.progress.ETASeconds = math.Round(float64(t-p) / ls.progress.Rate)
	}
}

func (ls *logState) progressSnapshot() Progress {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.progress
}

func (ls *logState) setSource(name string, cp *checkpoint.Signed, err error) {
	s := SourceStatus{Fetched: time.Now()}
	if cp != nil {
		s.Size, s.Root = cp.Size, cp.Hash
	}
	if err != nil {
		s.Error = err.Error()
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.sources[name] = s
}

// New opens the monitor's state and checks the configuration. Close it
// when done.
func New(cfg Config) (*Monitor, error) {
	cfg.setDefaults()
	if len(cfg.Logs) == 0 {
		return nil, errors.New("monitor: no logs configured")
	}
	if cfg.Submitters == nil {
		return nil, errors.New("monitor: a submitter registry is required to check entries")
	}
	m := &Monitor{
		cfg:     cfg,
		metrics: newMetrics(),
		log:     cfg.Logger,
		now:     cfg.Now,
		wake:    make(chan struct{}, 1),
	}
	for _, w := range cfg.Witnesses {
		v, err := fnote.NewVerifierForCosignatureV1(w.VKey)
		if err != nil {
			return nil, fmt.Errorf("monitor: witness %q: %w", w.Name, err)
		}
		if w.URL == "" {
			return nil, fmt.Errorf("monitor: witness %q: no URL", w.Name)
		}
		m.vantages = append(m.vantages, vantage{source: "witness/" + w.Name, url: w.URL, verifier: v})
	}
	for _, p := range cfg.Peers {
		vt := vantage{source: "peer/" + p.Name, url: p.URL}
		if p.VKey != "" {
			v, err := fnote.NewVerifierForCosignatureV1(p.VKey)
			if err != nil {
				return nil, fmt.Errorf("monitor: peer %q: %w", p.Name, err)
			}
			vt.verifier = v
		}
		if p.URL == "" {
			return nil, fmt.Errorf("monitor: peer %q: no URL", p.Name)
		}
		m.vantages = append(m.vantages, vt)
	}
	if cfg.CosignKey != "" {
		s, err := fnote.NewSignerForCosignatureV1(cfg.CosignKey)
		if err != nil {
			return nil, fmt.Errorf("monitor: cosigning key: %w", err)
		}
		m.cosigner = s
	}
	st, err := openStore(cfg.StateDir, cfg.WebhookURL != "")
	if err != nil {
		return nil, err
	}
	m.store = st
	ctx := context.Background()
	seen := map[string]bool{}
	for i, lc := range cfg.Logs {
		pol := lc.Policy
		if pol == nil {
			pol = checkpoint.NoWitnesses() // the config names no policy file
		}
		c, err := client.New(client.Config{URL: lc.URL, Origin: lc.Origin, LogKey: lc.VKey, Policy: pol, HTTPClient: cfg.HTTPClient})
		if err != nil {
			st.close()
			return nil, fmt.Errorf("monitor: logs[%d]: %w", i, err)
		}
		if seen[c.Origin()] {
			st.close()
			return nil, fmt.Errorf("monitor: log %q configured twice", c.Origin())
		}
		seen[c.Origin()] = true
		ls := &logState{origin: c.Origin(), client: c, verifier: c.Verifier(), policy: lc.Policy,
			advanced: make(chan struct{}, 1), sources: map[string]SourceStatus{}}
		if ls.id, err = st.logID(ctx, ls.origin); err != nil {
			st.close()
			return nil, fmt.Errorf("monitor state: %w", err)
		}
		if ls.verified, err = st.verified(ctx, ls.id); err != nil {
			st.close()
			return nil, fmt.Errorf("monitor state: %w", err)
		}
		rs, err := st.replayState(ctx, ls.id)
		if err != nil {
			st.close()
			return nil, err
		}
		ls.progress.Position = rs.Position
		if ls.verified != nil {
			ls.progress.Target = ls.verified.Size
		}
		m.metrics.initLog(ls.origin)
		m.metrics.replayed(ls)
		if ls.verified != nil {
			m.metrics.verified(ls, m.checkpointTime(ls, ls.verified))
		}
		m.logs = append(m.logs, ls)
	}
	return m, nil
}

// Close closes the state store.
func (m *Monitor) Close() error { return m.store.close() }

// raise stores new alerts and announces them; known ones are ignored.
func (m *Monitor) raise(ctx context.Context, alerts ...Alert) error {
	now := m.now()
	for i := range alerts {
		if alerts[i].Time.IsZero() {
			alerts[i].Time = now
		}
	}
	raised, err := m.store.raise(ctx, alerts...)
	if err != nil {
		return fmt.Errorf("monitor state: %w", err)
	}
	m.announce(raised)
	return nil
}

// fault raises an alert for a condition that keeps the pass from
// verifying further (a log serving a checkpoint that does not fit, a halted
// replay, a stale log) and returns it as an error too, so that a pass is not
// clean while the condition lasts, even once the alert was acknowledged.
func (m *Monitor) fault(ctx context.Context, a Alert) error {
	if err := m.raise(ctx, a); err != nil {
		return err
	}
	return fmt.Errorf("log %s: %s: %s", a.Log, a.Kind, a.Message)
}

// announce logs and counts alerts just stored, and wakes the webhook.
func (m *Monitor) announce(raised []Alert) {
	for _, a := range raised {
		m.metrics.alerts.WithLabelValues(a.Log, string(a.Kind)).Inc()
		attrs := []any{slog.Int64("id", a.ID), slog.String("kind", string(a.Kind)), slog.String("log", a.Log), slog.String("message", a.Message)}
		if a.Index != nil {
			attrs = append(attrs, slog.Uint64("index", *a.Index))
		}
		if a.Class == ClassIntegrity {
			m.log.Error("integrity alert", attrs...)
		} else {
			m.log.Warn("watch alert", attrs...)
		}
	}
	if len(raised) > 0 {
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
}

// Exit codes of carelog-monitor. RunOnce's Result maps to one of them.
const (
	// ExitClean: the pass completed and found nothing.
	ExitClean = 0
	// ExitUsage: bad flags or configuration (set by the binary).
	ExitUsage = 2
	// ExitOperational: the pass could not complete (a log, witness or peer
	// unreachable, alerts not delivered, state not writable), and there is
	// no integrity alert.
	ExitOperational = 3
	// ExitIntegrity: there is an unacknowledged integrity alert (raised in
	// this pass or earlier). It wins over every other code.
	ExitIntegrity = 4
	// ExitWatch: the pass completed and raised only watch alerts.
	ExitWatch = 5
)

// Result is the outcome of one RunOnce pass.
type Result struct {
	// Raised counts the alerts raised during this pass.
	Raised int `json:"raised"`
	// Alerts are the alerts raised during this pass (the first 1000).
	Alerts []Alert `json:"alerts"`
	// OpenIntegrityAlerts counts unacknowledged integrity alerts in the
	// state, from this pass and earlier ones.
	OpenIntegrityAlerts int `json:"open_integrity_alerts"`
	// Errors are the operational problems of this pass.
	Errors []string `json:"errors,omitempty"`
	// Undelivered counts alerts still waiting in the webhook outbox.
	Undelivered int `json:"undelivered"`
	// Logs is each log's status after the pass.
	Logs []LogStatus `json:"logs"`
}

// ExitCode maps the result to the binary's exit code. A pass that found
// tampering never exits 0.
func (r *Result) ExitCode() int {
	integrity, watch := r.OpenIntegrityAlerts > 0, r.Raised > len(r.Alerts)
	for _, a := range r.Alerts {
		switch a.Class {
		case ClassIntegrity:
			integrity = true
		case ClassWatch:
			watch = true
		}
	}
	switch {
	case integrity:
		return ExitIntegrity
	case len(r.Errors) > 0 || r.Undelivered > 0:
		return ExitOperational
	case watch:
		return ExitWatch
	}
	return ExitClean
}

// RunOnce makes one full pass: promise intake, then for each log, following
// checkpoints from every source, replaying up to the verified checkpoint,
// checking staleness and auditing promises; then webhook delivery (bounded by
// OnceDeliveryTimeout). Problems are reported in the Result, never hidden.
func (m *Monitor) RunOnce(ctx context.Context) *Result {
	res := &Result{}
	fail := func(err error) {
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
		}
	}
	lastID, err := m.lastAlertID(ctx)
	fail(err)
	fail(m.ingestPromiseDir(ctx))
	for _, ls := range m.logs {
		for _, err := range m.follow(ctx, ls) {
			fail(err)
		}
		fail(m.replay(ctx, ls))
		fail(m.checkStale(ctx, ls))
		fail(m.auditPromises(ctx, ls))
	}
	if m.cfg.WebhookURL != "" {
		n, err := m.deliverOnce(ctx)
		fail(err)
		res.Undelivered = n
	}
	bg := context.WithoutCancel(ctx)
	if res.Alerts, err = m.store.alerts(bg, AlertFilter{AfterID: lastID}); err != nil {
		fail(err)
	}
	if err := m.store.db.QueryRowContext(bg, `SELECT COUNT(*) FROM alerts WHERE id > ?`, lastID).Scan(&res.Raised); err != nil {
		fail(err)
	}
	if res.OpenIntegrityAlerts, err = m.store.openIntegrity(bg); err != nil {
		fail(err)
		res.OpenIntegrityAlerts = 1 // unknown: never report clean
	}
	if res.Logs, err = m.Status(bg); err != nil {
		fail(err)
	}
	return res
}

func (m *Monitor) lastAlertID(ctx context.Context) (int64, error) {
	var id int64
	err := m.store.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM alerts`).Scan(&id)
	return id, err
}

// Run follows, replays and audits until ctx ends, serving HTTP on
// ListenAddr if set. It returns nil after a graceful stop.
func (m *Monitor) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	srvErr := make(chan error, 1)
	if m.cfg.ListenAddr != "" {
		if err := m.serve(ctx, &wg, srvErr); err != nil {
			return err
		}
	}
	if m.cfg.WebhookURL != "" {
		wg.Go(func() { m.deliverLoop(ctx) })
	}
	wg.Go(func() {
		every(ctx, m.cfg.PollInterval, nil, func() {
			if err := m.ingestPromiseDir(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn("promise directory", slog.String("error", err.Error()))
			}
		})
	})
	for _, ls := range m.logs {
		wg.Go(func() {
			every(ctx, m.cfg.PollInterval, nil, func() {
				errs := m.follow(ctx, ls)
				errs = append(errs, m.checkStale(ctx, ls), m.auditPromises(ctx, ls))
				m.logErrors(ctx, ls, "follow", errs...)
			})
		})
		wg.Go(func() {
			every(ctx, m.cfg.PollInterval, ls.advanced, func() {
				m.logErrors(ctx, ls, "replay", m.replay(ctx, ls))
			})
		})
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-srvErr:
		cancel()
	}
	wg.Wait()
	return err
}

func (m *Monitor) logErrors(ctx context.Context, ls *logState, what string, errs ...error) {
	for _, err := range errs {
		if err != nil && ctx.Err() == nil {
			m.log.Warn(what+" failed", slog.String("log", ls.origin), slog.String("error", err.Error()))
		}
	}
}

// every runs f now and then each interval (or when kick fires) until ctx
// ends.
func every(ctx context.Context, interval time.Duration, kick <-chan struct{}, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		f()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
	}
}

// Alerts lists stored alerts.
func (m *Monitor) Alerts(ctx context.Context, f AlertFilter) ([]Alert, error) {
	return m.store.alerts(ctx, f)
}

// Acknowledge marks alerts as acknowledged by an operator, so they no longer
// make RunOnce exit with ExitIntegrity. It returns how many changed.
func (m *Monitor) Acknowledge(ctx context.Context, ids ...int64) (int, error) {
	return m.store.acknowledge(ctx, ids)
}

// PatientIndices returns the indices of the entries of a log that name the
// pseudonym, from the monitor's own index (replayed entries only), to
// cross-check what the log serves for that patient.
func (m *Monitor) PatientIndices(ctx context.Context, origin, pseudonym string) ([]uint64, error) {
	for _, ls := range m.logs {
		if ls.origin == origin {
			return m.store.patientIndices(ctx, ls.id, pseudonym)
		}
	}
	return nil, fmt.Errorf("monitor: unknown log %q", origin)
}

// LogStatus is one log's state for GET /status.
type LogStatus struct {
	Origin string `json:"origin"`
	// Verified is the log's latest verified checkpoint.
	Verified *VerifiedCheckpoint `json:"verified,omitempty"`
	Replay   Progress            `json:"replay"`
	// Sources is the latest checkpoint each source showed ("log",
	// "witness/<name>", "peer/<name>").
	Sources         map[string]SourceStatus `json:"sources"`
	PendingPromises int                     `json:"pending_promises"`
	Alerts          map[Kind]int            `json:"alerts"`
}

// VerifiedCheckpoint is a checkpoint the monitor verified.
type VerifiedCheckpoint struct {
	Size       uint64    `json:"size"`
	Root       []byte    `json:"root"`
	Note       string    `json:"note"`
	VerifiedAt time.Time `json:"verified_at"`
}

// Status reports each log's state.
func (m *Monitor) Status(ctx context.Context) ([]LogStatus, error) {
	var out []LogStatus
	for _, ls := range m.logs {
		s := LogStatus{Origin: ls.origin, Replay: ls.progressSnapshot(), Sources: map[string]SourceStatus{}}
		if v := ls.verifiedSnapshot(); v != nil {
			s.Verified = &VerifiedCheckpoint{Size: v.Size, Root: v.Root, Note: string(v.Note), VerifiedAt: v.At}
		}
		ls.mu.Lock()
		for k, v := range ls.sources {
			s.Sources[k] = v
		}
		ls.mu.Unlock()
		pending, err := m.store.pendingPromises(ctx, ls.id)
		if err != nil {
			return nil, err
		}
		s.PendingPromises = len(pending)
		if s.Alerts, err = m.store.alertCounts(ctx, ls.origin); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// cosign adds the monitor's cosignature/v1 to a checkpoint note it
// verified, for peers.
func (m *Monitor) cosign(msg []byte) ([]byte, error) {
	return checkpoint.Cosign(msg, m.cosigner)
}
