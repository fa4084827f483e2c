// Package client is carelog's Go SDK for EHR submitters, patient portals,
// auditors and monitors. It signs and submits access events, waits for their
// inclusion, and verifies everything the log says against the log's key and
// the witness policy: checkpoints, inclusion and consistency proofs, and
// offline C2SP tlog-proof bundles. It trusts nothing without a proof.
package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/carelog/carelog/api"
	"github.com/carelog/carelog/checkpoint"
	"golang.org/x/mod/sumdb/note"
)

// Config says which log to talk to and how to trust it.
type Config struct {
	// URL is the log's base URL, including any path prefix.
	URL string
	// Origin is the log's origin line (also its key name).
	Origin string
	// LogKey is the log's note verifier key (vkey).
	LogKey string
	// Policy is the witness policy checkpoints must meet. It is required:
	// pass checkpoint.NoWitnesses() to check the log's signature only (for
	// logs run without witnesses), so that never happens by omission.
	Policy *checkpoint.Policy
	// HTTPClient defaults to a client with a 30 s timeout.
	HTTPClient *http.Client
}

// Log is a client of one carelog log.
type Log struct {
	base     string
	origin   string
	verifier note.Verifier
	policy   *checkpoint.Policy
	hc       *http.Client
}

// New builds a client.
func New(cfg Config) (*Log, error) {
	if cfg.URL == "" {
		return nil, errors.New("client: log URL is required")
	}
	if _, err := url.Parse(cfg.URL); err != nil {
		return nil, fmt.Errorf("client: log URL: %w", err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(cfg.LogKey))
	if err != nil {
		return nil, fmt.Errorf("client: log key: %w", err)
	}
	if cfg.Origin == "" {
		cfg.Origin = v.Name()
	}
	if v.Name() != cfg.Origin {
		return nil, fmt.Errorf("client: log key is named %q but the origin is %q", v.Name(), cfg.Origin)
	}
	p := cfg.Policy
	if p == nil {
		return nil, errors.New("client: a witness policy is required (checkpoint.NoWitnesses() checks the log's signature only)")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Log{base: strings.TrimRight(cfg.URL, "/"), origin: cfg.Origin, verifier: v, policy: p, hc: hc}, nil
}

// Origin returns the log's origin.
func (l *Log) Origin() string { return l.origin }

// Verifier returns the log's key verifier.
func (l *Log) Verifier() note.Verifier { return l.verifier }

// Policy returns the witness policy in force.
func (l *Log) Policy() *checkpoint.Policy { return l.policy }

// HTTPError is an error answer from the log.
type HTTPError struct {
	Status  int
	Message string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("log answered %d: %s", e.Status, e.Message)
}

// StatusOf returns the HTTP status of err if it is an *HTTPError, else 0.
func StatusOf(err error) int {
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Status
	}
	return 0
}

func (l *Log) do(ctx context.Context, method, path string, body []byte, okStatus ...int) ([]byte, int, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, l.base+path, r)
	if err != nil {
		return nil, 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	}
	resp, err := l.hc.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("client: reading %s: %w", path, err)
	}
	for _, s := range okStatus {
		if resp.StatusCode == s {
			return b, resp.StatusCode, nil
		}
	}
	var e api.Error
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if len(msg) > 300 {
		msg = msg[:300]
	}
	return nil, resp.StatusCode, &HTTPError{Status: resp.StatusCode, Message: msg}
}

func (l *Log) getJSON(ctx context.Context, path string, v any) error {
	b, _, err := l.do(ctx, http.MethodGet, path, nil, http.StatusOK)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("client: %s: bad JSON: %w", path, err)
	}
	return nil
}

// SubmitResult is the log's answer to a submission.
type SubmitResult struct {
	// Sequenced is true when the log answered 200 with an index.
	Sequenced bool
	Index     uint64
	LeafHash  []byte
	// Promise is the log's signed promise note, verified.
	Promise string
}

// Submit sends a signed entry (see entry.Sign) to the log and verifies the
// promise that comes back.
func (l *Log) Submit(ctx context.Context, signedEntry []byte) (*SubmitResult, error) {
	b, status, err := l.do(ctx, http.MethodPost, api.PathAddEntry, signedEntry, http.StatusOK, http.StatusAccepted)
	if err != nil {
		return nil, err
	}
	var r api.AddEntryResponse
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("client: add-entry: bad JSON: %w", err)
	}
	if status != http.StatusOK {
		r.Index = nil // only a 200 means the index is durable
	}
	return l.submitResult(signedEntry, r.LeafHash, r.Promise, r.Index)
}

// submitResult checks the log's answer to a submission of signedEntry, over
// HTTP or gRPC: the leaf hash must be the entry's and the promise must
// verify with the log key and be for that leaf.
func (l *Log) submitResult(signedEntry, leafHash []byte, promise string, index *uint64) (*SubmitResult, error) {
	if want := checkpoint.LeafHash(signedEntry); !bytes.Equal(leafHash, want) {
		return nil, errors.New("client: the log answered with the leaf hash of another entry")
	}
	if err := l.verifyPromise(promise, leafHash); err != nil {
		return nil, err
	}
	res := &SubmitResult{LeafHash: leafHash, Promise: promise}
	if index != nil {
		res.Sequenced, res.Index = true, *index
	}
	return res, nil
}

// RawCheckpoint fetches the log's checkpoint note without verifying it.
func (l *Log) RawCheckpoint(ctx context.Context) ([]byte, error) {
	b, _, err := l.do(ctx, http.MethodGet, api.PathCheckpoint, nil, http.StatusOK)
	return b, err
}

// Checkpoint fetches the log's checkpoint and verifies its log signature and
// the witness policy.
func (l *Log) Checkpoint(ctx context.Context) (*checkpoint.Signed, error) {
	b, err := l.RawCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	return l.OpenCheckpoint(b)
}

// OpenCheckpoint verifies a checkpoint note with the log key and the policy.
func (l *Log) OpenCheckpoint(b []byte) (*checkpoint.Signed, error) {
	return checkpoint.OpenWithPolicy(b, l.origin, l.verifier, l.policy)
}

// ConsistencyProof fetches the proof that the tree of size old is a prefix
// of the tree of size size. It does not verify it; see VerifyConsistency.
func (l *Log) ConsistencyProof(ctx context.Context, old, size uint64) ([][]byte, error) {
	var p api.ConsistencyProof
	q := url.Values{"old": {strconv.FormatUint(old, 10)}, "size": {strconv.FormatUint(size, 10)}}
	if err := l.getJSON(ctx, api.PathConsistencyProof+"?"+q.Encode(), &p); err != nil {
		return nil, err
	}
	if p.Old != old || p.Size != size {
		return nil, fmt.Errorf("client: asked for consistency %d→%d, got %d→%d", old, size, p.Old, p.Size)
	}
	return p.Proof, nil
}

// VerifyConsistency fetches and checks a consistency proof from older to
// newer (both already verified checkpoints of this log).
func (l *Log) VerifyConsistency(ctx context.Context, older, newer checkpoint.Checkpoint) error {
	if newer.Size <= older.Size || older.Size == 0 {
		return checkpoint.VerifyConsistency(older, newer, nil)
	}
	p, err := l.ConsistencyProof(ctx, older.Size, newer.Size)
	if err != nil {
		return err
	}
	return checkpoint.VerifyConsistency(older, newer, p)
}

// InclusionProof fetches the inclusion proof of a leaf hash in the tree of
// the given size, without verifying it.
func (l *Log) InclusionProof(ctx context.Context, leafHash []byte, size uint64) (*api.InclusionProof, error) {
	var p api.InclusionProof
	q := url.Values{"hash": {base64.URLEncoding.EncodeToString(leafHash)}, "size": {strconv.FormatUint(size, 10)}}
	if err := l.getJSON(ctx, api.PathInclusionProof+"?"+q.Encode(), &p); err != nil {
		return nil, err
	}
	if p.Size != size {
		return nil, fmt.Errorf("client: asked for a proof at size %d, got %d", size, p.Size)
	}
	return &p, nil
}

// VerifyInclusion fetches the inclusion proof of a leaf hash in the tree cp
// commits to, checks it, and returns the leaf's index.
func (l *Log) VerifyInclusion(ctx context.Context, leafHash []byte, cp checkpoint.Checkpoint) (uint64, error) {
	p, err := l.InclusionProof(ctx, leafHash, cp.Size)
	if err != nil {
		return 0, err
	}
	if err := checkpoint.VerifyInclusion(cp, p.Index, leafHash, p.Proof); err != nil {
		return 0, err
	}
	return p.Index, nil
}

// Entries fetches entries [start, end).
func (l *Log) Entries(ctx context.Context, start, end uint64) ([]api.Entry, error) {
	var r api.Entries
	q := url.Values{"start": {strconv.FormatUint(start, 10)}, "end": {strconv.FormatUint(end, 10)}}
	if err := l.getJSON(ctx, api.PathEntries+"?"+q.Encode(), &r); err != nil {
		return nil, err
	}
	for i, e := range r.Entries {
		if e.Index != start+uint64(i) {
			return nil, fmt.Errorf("client: entries out of order: position %d has index %d", i, e.Index)
		}
	}
	return r.Entries, nil
}

// ProofBundle fetches the C2SP tlog-proof bundle for a leaf hash.
func (l *Log) ProofBundle(ctx context.Context, leafHash []byte) ([]byte, error) {
	q := url.Values{"hash": {base64.URLEncoding.EncodeToString(leafHash)}}
	b, _, err := l.do(ctx, http.MethodGet, api.PathProofBundle+"?"+q.Encode(), nil, http.StatusOK)
	return b, err
}

// Inclusion is a verified inclusion of an entry in a verified checkpoint.
type Inclusion struct {
	Index      uint64
	Checkpoint *checkpoint.Signed
}

// WaitForInclusion polls until the leaf is included in a checkpoint that
// verifies (log signature and policy) and its inclusion proof checks out,
// or ctx ends. It also checks that each new checkpoint is consistent with
// the previous one it saw.
func (l *Log) WaitForInclusion(ctx context.Context, leafHash []byte, poll time.Duration) (*Inclusion, error) {
	if poll <= 0 {
		poll = 200 * time.Millisecond
	}
	var last *checkpoint.Signed
	for {
		cp, err := l.Checkpoint(ctx)
		if err == nil && last != nil && cp.Size != last.Size {
			err = l.VerifyConsistency(ctx, last.Checkpoint, cp.Checkpoint)
			if err != nil {
				return nil, fmt.Errorf("client: the log's checkpoints are inconsistent: %w", err)
			}
		}
		if err == nil {
			last = cp
			if cp.Size > 0 {
				idx, perr := l.VerifyInclusion(ctx, leafHash, cp.Checkpoint)
				if perr == nil {
					return &Inclusion{Index: idx, Checkpoint: cp}, nil
				}
				if StatusOf(perr) != http.StatusNotFound {
					return nil, perr
				}
			}
		} else if StatusOf(err) == 0 && !isTransient(err) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("client: waiting for inclusion: %w", ctx.Err())
		case <-time.After(poll):
		}
	}
}

func isTransient(err error) bool {
	return !errors.Is(err, checkpoint.ErrNoLogSignature) && !errors.Is(err, checkpoint.ErrMalformed) &&
		!errors.Is(err, checkpoint.ErrWrongOrigin)
}
