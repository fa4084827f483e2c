package monitor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/client"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// vantage is a witness or peer monitor whose view of each log is compared
// with the log's own.
type vantage struct {
	source   string // "witness/<name>" or "peer/<name>"
	url      string
	verifier note.Verifier // its cosignature/v1 key; nil: only the log's signature is required
}

// errUnproven means the log would not prove a checkpoint it signed
// consistent with another it signed; the pass is incomplete.
var errUnproven = errors.New("the log gave no consistency proof between two checkpoints it signed")

// follow polls the log, every witness and every peer for their latest
// checkpoint of ls and checks each against everything held. It returns the
// operational problems met; integrity findings become alerts.
func (m *Monitor) follow(ctx context.Context, ls *logState) []error {
	var errs []error
	if err := m.followLog(ctx, ls); err != nil {
		errs = append(errs, err)
	}
	for _, v := range m.vantages {
		if err := m.followVantage(ctx, ls, v); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func (m *Monitor) followLog(ctx context.Context, ls *logState) error {
	raw, err := ls.client.RawCheckpoint(ctx)
	if err != nil {
		ls.setSource("log", nil, err)
		m.metrics.pollErrors.WithLabelValues(ls.origin, "log").Inc()
		return fmt.Errorf("log %s: %w", ls.origin, err)
	}
	cp, err := ls.client.OpenCheckpoint(raw)
	if err != nil {
		ls.setSource("log", nil, err)
		a := newAlert(KindBadCheckpoint, ls.origin, noteID(raw),
			fmt.Sprintf("the log served a checkpoint that does not verify: %v", err))
		a.Evidence = []Evidence{{Source: "log", Note: string(raw)}}
		if errors.Is(err, checkpoint.ErrNotCosigned) {
			// Signed by the log all the same: it can still prove a fork.
			if s, oerr := checkpoint.Open(raw, ls.origin, ls.verifier); oerr == nil {
				if err := m.observe(ctx, ls, "log", s); err != nil {
					return errors.Join(m.fault(ctx, a), err)
				}
			}
		}
		return m.fault(ctx, a)
	}
	ls.setSource("log", cp, nil)
	v := ls.verifiedSnapshot()
	var rollback error
	if v != nil && cp.Size < v.Size {
		a := newAlert(KindRollback, ls.origin, fmt.Sprintf("%d|%x", cp.Size, cp.Hash),
			fmt.Sprintf("the log served a checkpoint of size %d after one of size %d", cp.Size, v.Size))
		a.Evidence = []Evidence{{Source: "monitor", Note: string(v.Note)}, {Source: "log", Note: string(raw)}}
		rollback = m.fault(ctx, a)
	}
	if err := m.observe(ctx, ls, "log", cp); err != nil {
		return errors.Join(rollback, err)
	}
	if rollback != nil {
		return rollback
	}
	if v == nil || cp.Size > v.Size {
		nv := storedCheckpoint{Size: cp.Size, Root: cp.Hash, Note: raw, Source: "log", At: m.now()}
		if err := m.store.setVerified(ctx, ls.id, nv); err != nil {
			return err
		}
		ls.setVerified(&nv)
		m.metrics.verified(ls, m.checkpointTime(ls, &nv))
		m.log.Info("checkpoint verified", slog.String("log", ls.origin), slog.Uint64("size", cp.Size))
	}
	return nil
}

func (m *Monitor) followVantage(ctx context.Context, ls *logState, v vantage) error {
	fail := func(err error) error {
		ls.setSource(v.source, nil, err)
		m.metrics.pollErrors.WithLabelValues(ls.origin, v.source).Inc()
		return fmt.Errorf("%s, log %s: %w", v.source, ls.origin, err)
	}
	url := strings.TrimRight(v.url, "/") + "/" + checkpoint.OriginID(ls.origin) + "/checkpoint"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fail(err)
	}
	resp, err := m.cfg.HTTPClient.Do(req)
	if err != nil {
		return fail(err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return fail(err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		// It holds nothing for this log (yet).
		ls.setSource(v.source, nil, nil)
		return nil
	default:
		return fail(fmt.Errorf("answered %d", resp.StatusCode))
	}
	var extra []note.Verifier
	if v.verifier != nil {
		extra = append(extra, v.verifier)
	}
	s, err := checkpoint.Open(body, ls.origin, ls.verifier, extra...)
	if err != nil {
		return fail(err)
	}
	if v.verifier != nil && !signedBy(s, v.verifier) {
		return fail(errors.New("the checkpoint lacks its valid cosignature"))
	}
	ls.setSource(v.source, s, nil)
	return m.observe(ctx, ls, v.source, s)
}

func signedBy(s *checkpoint.Signed, v note.Verifier) bool {
	for _, sig := range s.Opened.Sigs {
		if sig.Name == v.Name() && sig.Hash == v.KeyHash() {
			return true
		}
	}
	return false
}

// observe checks a log-signed checkpoint against the checkpoints held for
// the log, from any source, and holds it if it fits. It returns an error
// if it does not, or if that could not be decided.
//
// The held checkpoints are kept mutually consistent: each new one is
// checked against its nearest held neighbours below and above (same size:
// same root; otherwise a consistency proof from the log). Being a prefix is
// transitive, so that proves it consistent with every held checkpoint, and
// any two checkpoints from any sources that cannot both be true are caught
// as a split view, with both signed notes as evidence.
func (m *Monitor) observe(ctx context.Context, ls *logState, source string, cp *checkpoint.Signed) error {
	same, pred, succ, err := m.store.neighbours(ctx, ls.id, cp.Size)
	if err != nil {
		return err
	}
	if same != nil {
		if bytes.Equal(same.Root, cp.Hash) {
			return nil
		}
		return m.splitView(ctx, ls, same, source, cp, "the same size with different root hashes")
	}
	this := checkpoint.Checkpoint{Origin: ls.origin, Size: cp.Size, Hash: cp.Hash}
	for _, other := range []*storedCheckpoint{pred, succ} {
		if other == nil {
			continue
		}
		o := checkpoint.Checkpoint{Origin: ls.origin, Size: other.Size, Hash: other.Root}
		older, newer := o, this
		if other.Size > cp.Size {
			older, newer = this, o
		}
		err := ls.client.VerifyConsistency(ctx, older, newer)
		switch {
		case err == nil:
		case errors.Is(err, checkpoint.ErrInconsistent), errors.Is(err, checkpoint.ErrSameSizeNewRoot), errors.Is(err, checkpoint.ErrSmaller):
			return m.splitView(ctx, ls, other, source, cp, fmt.Sprintf("no valid consistency proof from size %d to %d", older.Size, newer.Size))
		case client.StatusOf(err) >= 400 && client.StatusOf(err) < 500 && client.StatusOf(err) != http.StatusTooManyRequests:
			// An honest log can prove any two checkpoints it signed
			// consistent. A refusal can be brief (a replica that has not
			// yet loaded its newest checkpoint); one that lasts longer than
			// the merge delay is a split view: the log signed a tree it
			// will not stand by.
			key := fmt.Sprintf("%d|%x|%d|%x", older.Size, older.Hash, newer.Size, newer.Hash)
			since := ls.refusedSince(key, m.now())
			if m.now().Sub(since) >= m.cfg.MergeDelay {
				return m.splitView(ctx, ls, other, source, cp, fmt.Sprintf(
					"the log has refused since %s to prove consistency from size %d to %d between two checkpoints it signed (%v)",
					since.UTC().Format(time.RFC3339), older.Size, newer.Size, err))
			}
			ls.setSource(source, cp, fmt.Errorf("%w (%d→%d): %v", errUnproven, older.Size, newer.Size, err))
			return fmt.Errorf("log %s, checkpoint from %s: %w (%d→%d): %v", ls.origin, source, errUnproven, older.Size, newer.Size, err)
		default:
			return fmt.Errorf("log %s: consistency proof %d→%d: %w", ls.origin, older.Size, newer.Size, err)
		}
	}
	return m.store.hold(ctx, ls.id, storedCheckpoint{Size: cp.Size, Root: cp.Hash, Note: cp.Note, Source: source, At: m.now()})
}

func (m *Monitor) splitView(ctx context.Context, ls *logState, held *storedCheckpoint, source string, cp *checkpoint.Signed, why string) error {
	a1 := fmt.Sprintf("%d|%x", held.Size, held.Root)
	a2 := fmt.Sprintf("%d|%x", cp.Size, cp.Hash)
	if a2 < a1 {
		a1, a2 = a2, a1
	}
	a := newAlert(KindSplitView, ls.origin, a1+"|"+a2,
		fmt.Sprintf("split view: the checkpoint of size %d from %s and the checkpoint of size %d from %s are both signed by the log but cannot both be true: %s",
			held.Size, held.Source, cp.Size, source, why))
	a.Evidence = []Evidence{{Source: held.Source, Note: string(held.Note)}, {Source: source, Note: string(cp.Note)}}
	return m.fault(ctx, a)
}

// checkpointTime is when a checkpoint was made, as far as anyone attests:
// the newest cosignature/v1 timestamp of a policy witness on it, or else
// when the monitor first verified it.
func (m *Monitor) checkpointTime(ls *logState, c *storedCheckpoint) time.Time {
	t := c.At
	if ls.policy == nil {
		return t
	}
	s, err := checkpoint.Open(c.Note, ls.origin, ls.verifier, ls.policy.Verifiers()...)
	if err != nil {
		return t
	}
	var newest time.Time
	for _, sig := range s.Opened.Sigs {
		if sig.Name == ls.verifier.Name() && sig.Hash == ls.verifier.KeyHash() {
			continue
		}
		if ct, err := fnote.CoSigV1Timestamp(sig); err == nil && ct.After(newest) {
			newest = ct
		}
	}
	if newest.IsZero() {
		return t
	}
	return newest
}

// checkStale raises stale-log alerts: a checkpoint older than StaleAfter,
// or no new checkpoint for longer than the merge delay while a promise made
// after the current one is pending.
func (m *Monitor) checkStale(ctx context.Context, ls *logState) error {
	v := ls.verifiedSnapshot()
	if v == nil {
		return nil
	}
	now := m.now()
	id := fmt.Sprintf("%d|%x", v.Size, v.Root)
	var stale error
	if m.cfg.StaleAfter > 0 {
		if age := now.Sub(m.checkpointTime(ls, v)); age > m.cfg.StaleAfter {
			a := newAlert(KindStaleLog, ls.origin, "age|"+id,
				fmt.Sprintf("the log's checkpoint of size %d is %s old, more than the allowed %s", v.Size, age.Round(time.Second), m.cfg.StaleAfter))
			a.Evidence = []Evidence{{Source: "log", Note: string(v.Note)}}
			stale = m.fault(ctx, a)
		}
	}
	if now.Sub(v.At) <= m.cfg.MergeDelay {
		return stale
	}
	pending, err := m.store.pendingPromises(ctx, ls.id)
	if err != nil {
		return errors.Join(stale, err)
	}
	for _, p := range pending {
		if p.Accepted.After(v.At) {
			a := newAlert(KindStaleLog, ls.origin, "pending|"+id,
				fmt.Sprintf("the log's checkpoint has stayed at size %d for %s, longer than the merge delay %s, while promises are pending",
					v.Size, now.Sub(v.At).Round(time.Second), m.cfg.MergeDelay))
			a.Evidence = []Evidence{{Source: "log", Note: string(v.Note)}, {Source: "promise", Note: string(p.Note)}}
			return errors.Join(stale, m.fault(ctx, a))
		}
	}
	return stale
}

func noteID(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
