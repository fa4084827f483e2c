package witness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"golang.org/x/mod/sumdb/note"
)

// Reasons why two log-signed checkpoints cannot both be true.
const (
	// ReasonSameSizeDifferentRoot: both checkpoints have the same size and
	// different root hashes. The two notes alone prove the split view.
	ReasonSameSizeDifferentRoot = "same-size-different-root"
	// ReasonInconsistentProof: the checkpoints have different sizes and the
	// consistency proof the log served between them does not verify. The
	// proof is part of the evidence.
	ReasonInconsistentProof = "inconsistent-proof"
	// ReasonProofRefused: the checkpoints have different sizes and the log
	// refused (with a 4xx answer) to serve a consistency proof between two
	// checkpoints it signed. Anyone can ask the log again; an honest log
	// can always answer.
	ReasonProofRefused = "proof-refused"
)

// PeerLog is the Peer of evidence found in pull mode, where the conflicting
// checkpoint came from the log itself rather than from a peer witness.
const PeerLog = "log"

// Evidence is a proven split view: two checkpoints, both signed by the log,
// that cannot both be true. It is served as JSON at GET /evidence.
type Evidence struct {
	ID     int64  `json:"id"`
	Origin string `json:"origin"`
	// Peer is the name of the peer witness whose cosigned checkpoint
	// conflicts with ours, or PeerLog in pull mode.
	Peer    string `json:"peer"`
	PeerURL string `json:"peer_url,omitempty"`
	// Reason is one of the Reason constants.
	Reason string `json:"reason"`
	// Detail is a human-readable explanation.
	Detail string `json:"detail,omitempty"`
	// Ours is the checkpoint this witness cosigned, as a signed note with
	// the log's signature and the witness's cosignature.
	Ours string `json:"ours"`
	// Theirs is the conflicting checkpoint, as a signed note with the log's
	// signature (and the peer's cosignature, when it came from a peer).
	Theirs string `json:"theirs"`
	// Proof is the consistency proof the log served between the two, when
	// Reason is ReasonInconsistentProof.
	Proof     [][]byte   `json:"proof,omitempty"`
	FoundAt   time.Time  `json:"found_at"`
	ClearedAt *time.Time `json:"cleared_at,omitempty"`
}

// EvidenceList is the JSON body of GET /evidence.
type EvidenceList struct {
	Evidence []Evidence `json:"evidence"`
}

// ErrNotEvidence means a piece of evidence does not prove what it claims.
var ErrNotEvidence = errors.New("witness: not evidence of a split view")

// VerifyEvidence checks e with nothing but the log's public key: both
// checkpoints must carry a valid signature of logVerifier for e.Origin, and
// they must conflict as e.Reason says. For ReasonSameSizeDifferentRoot and
// ReasonInconsistentProof the check is complete. For ReasonProofRefused it
// proves that the log signed both checkpoints; whether they are consistent
// can then only be settled by a consistency proof, which the log owes.
func VerifyEvidence(e Evidence, logVerifier note.Verifier) error {
	ours, err := checkpoint.Open([]byte(e.Ours), e.Origin, logVerifier)
	if err != nil {
		return fmt.Errorf("%w: our checkpoint: %v", ErrNotEvidence, err)
	}
	theirs, err := checkpoint.Open([]byte(e.Theirs), e.Origin, logVerifier)
	if err != nil {
		return fmt.Errorf("%w: their checkpoint: %v", ErrNotEvidence, err)
	}
	older, newer := ours.Checkpoint, theirs.Checkpoint
	if newer.Size < older.Size {
		older, newer = newer, older
	}
	switch e.Reason {
	case ReasonSameSizeDifferentRoot:
		if older.Size != newer.Size || bytes.Equal(older.Hash, newer.Hash) {
			return fmt.Errorf("%w: sizes %d and %d with roots that do not differ at one size", ErrNotEvidence, older.Size, newer.Size)
		}
	case ReasonInconsistentProof:
		if older.Size == newer.Size {
			return fmt.Errorf("%w: same size, no proof needed", ErrNotEvidence)
		}
		if checkpoint.VerifyConsistency(older, newer, e.Proof) == nil {
			return fmt.Errorf("%w: the proof verifies", ErrNotEvidence)
		}
	case ReasonProofRefused:
		if older.Size == newer.Size {
			return fmt.Errorf("%w: same size, no proof needed", ErrNotEvidence)
		}
	default:
		return fmt.Errorf("%w: unknown reason %q", ErrNotEvidence, e.Reason)
	}
	return nil
}

// noteText returns the text of a signed note: everything up to and
// including the newline before the blank line that starts the signatures.
func noteText(msg string) string {
	if i := strings.LastIndex(msg, "\n\n"); i >= 0 {
		return msg[:i+1]
	}
	return msg
}

// record stores new evidence and, if it was not on record yet, raises the
// alarm: a log line, the metrics, and the webhook. From the moment it is
// stored the witness refuses to cosign the log (see addCheckpoint).
func (w *Witness) record(ctx context.Context, e *Evidence) (bool, error) {
	e.FoundAt = time.Now().UTC()
	inserted, err := w.store.addEvidence(ctx, e)
	if err != nil || !inserted {
		return false, err
	}
	w.log.Error("split view: two log-signed checkpoints cannot both be true; refusing to cosign this log until an operator clears the evidence",
		slog.String("origin", e.Origin), slog.String("peer", e.Peer), slog.String("reason", e.Reason), slog.String("detail", e.Detail),
		slog.Int64("evidence_id", e.ID))
	w.metrics.evidence.WithLabelValues(e.Origin).Inc()
	w.metrics.frozen.WithLabelValues(e.Origin).Set(1)
	if w.cfg.WebhookURL != "" {
		if err := w.postWebhook(ctx, e); err != nil {
			w.metrics.webhookFailures.Inc()
			w.log.Warn("evidence webhook failed", slog.String("origin", e.Origin), slog.Int64("evidence_id", e.ID), slog.String("error", err.Error()))
		}
	}
	return true, nil
}

// postWebhook POSTs e as JSON to the configured webhook.
func (w *Witness) postWebhook(ctx context.Context, e *Evidence) error {
	body, err := json.Marshal(e)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.WebhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// ListEvidence returns the evidence recorded in the state directory dir,
// for one origin or (origin "") all of them, cleared or not. It may run
// while the witness is running.
func ListEvidence(ctx context.Context, dir, origin string) ([]Evidence, error) {
	s, err := openExistingStore(dir)
	if err != nil {
		return nil, err
	}
	defer s.close()
	return s.listEvidence(ctx, origin)
}

// ClearEvidence marks all open evidence for origin in the state directory
// dir as cleared, so the witness cosigns that log again (still only
// checkpoints consistent with the last one it cosigned). It returns how many
// pieces of evidence it cleared. It may run while the witness is running;
// the witness sees the change at its next request.
func ClearEvidence(ctx context.Context, dir, origin string) (int, error) {
	if origin == "" {
		return 0, errors.New("witness: clear evidence: no origin")
	}
	s, err := openExistingStore(dir)
	if err != nil {
		return 0, err
	}
	defer s.close()
	return s.clearEvidence(ctx, origin)
}
