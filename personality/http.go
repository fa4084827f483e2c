package personality

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/carelog/carelog/api"
	"github.com/carelog/carelog/entry"
	"github.com/carelog/carelog/promise"
	"github.com/carelog/carelog/submitter"
	"github.com/google/trillian"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/transparency-dev/formats/proof"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// apiError is an error with the HTTP status it maps to. Errors become
// statuses once, here at the edge, with a message that tells the caller what
// to fix and never echoes submitted values (they may be PHI).
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...)}
}

// statusOf maps any error of the personality to an HTTP status and message.
func statusOf(err error) (int, string) {
	var ae *apiError
	var fe *entry.FieldError
	switch {
	case errors.As(err, &ae):
		return ae.status, ae.msg
	case errors.Is(err, entry.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, err.Error()
	case errors.As(err, &fe), errors.Is(err, entry.ErrMalformed), errors.Is(err, entry.ErrManySignatures),
		errors.Is(err, entry.ErrTimeInTheFuture):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, entry.ErrUnsigned), errors.Is(err, entry.ErrBadSignature), errors.Is(err, entry.ErrSourceMismatch),
		errors.Is(err, submitter.ErrUnknownKey), errors.Is(err, submitter.ErrKeyNotValid):
		return http.StatusForbidden, err.Error()
	case errors.Is(err, errConflict):
		return http.StatusConflict, err.Error()
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "the request timed out; nothing was stored, try again"
	}
	switch status.Code(err) { // status.Code sees through %w wrapping
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return http.StatusServiceUnavailable, "the log's storage backend is unavailable; nothing was stored, try again"
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests, "the log's storage backend is over its quota; try again later"
	}
	return http.StatusInternalServerError, "internal error"
}

func (l *Log) routes() http.Handler {
	mux := http.NewServeMux()
	methods := map[string][]string{}
	handle := func(pattern, route string, h func(http.ResponseWriter, *http.Request) error) {
		method, path, _ := strings.Cut(pattern, " ")
		methods[path] = append(methods[path], method)
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
			if err := h(sw, r); err != nil {
				code, msg := statusOf(err)
				if code >= 500 {
					l.logger.Error("request failed", "route", route, "error", err)
				}
				api.WriteError(sw, code, msg)
			}
			l.metrics.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Observe(time.Since(start).Seconds())
		})
	}
	handle("POST "+api.PathAddEntry, "add-entry", l.handleAddEntry)
	handle("GET "+api.PathCheckpoint, "checkpoint", l.handleCheckpoint)
	handle("GET "+api.PathInclusionProof, "proof-inclusion", l.handleInclusion)
	handle("GET "+api.PathConsistencyProof, "proof-consistency", l.handleConsistency)
	handle("GET "+api.PathProofBundle, "proof-bundle", l.handleBundle)
	handle("GET "+api.PathEntries, "entries", l.handleEntries)
	handle("GET "+api.PathPatientEvents+"{pseudonym}/events", "patient-events", l.handlePatientEvents)
	mux.Handle("GET /tile/", l.tiler)
	mux.HandleFunc("GET /healthz", l.handleHealth)
	mux.Handle("GET /metrics", promhttp.HandlerFor(l.metrics.reg, promhttp.HandlerOpts{}))
	// The right path with the wrong method is 405 with Allow, in JSON.
	for path, ms := range methods {
		allow := strings.Join(ms, ", ")
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			api.WriteError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; use "+allow)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		api.WriteError(w, http.StatusNotFound, "no such endpoint; see DESIGN.md section 5 for the API")
	})
	var h http.Handler = mux
	if l.cfg.Prefix != "" {
		h = http.StripPrefix(l.cfg.Prefix, mux)
	}
	return h
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (l *Log) handleAddEntry(w http.ResponseWriter, r *http.Request) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, entry.MaxEntrySize))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			l.metrics.entries.WithLabelValues("refused_4xx").Inc()
			return errorf(http.StatusRequestEntityTooLarge, "entry is larger than %d bytes", entry.MaxEntrySize)
		}
		return errorf(http.StatusBadRequest, "could not read the request body")
	}
	resp, code, err := l.AddEntry(r.Context(), body)
	if err != nil {
		return err
	}
	api.WriteJSON(w, code, resp)
	return nil
}

// AddEntry validates and appends one signed entry. It answers 200 with the
// index when the entry already has one (a duplicate of a sequenced entry),
// else 202; both with the log's signed promise.
func (l *Log) AddEntry(ctx context.Context, raw []byte) (*api.AddEntryResponse, int, error) {
	e, err := entry.Open(raw, l.cfg.Submitters, time.Now())
	if err != nil {
		if code, _ := statusOf(err); code < 500 {
			l.metrics.entries.WithLabelValues("refused_4xx").Inc()
		}
		return nil, 0, err
	}
	if !l.limiter.allow(e.Submitter) {
		l.metrics.entries.WithLabelValues("rate_limited").Inc()
		return nil, 0, errorf(http.StatusTooManyRequests, "submitter %s is over its rate limit of %g entries/s; slow down", e.Submitter, l.cfg.RateLimit)
	}
	ap, err := l.appender.Append(ctx, e)
	if err != nil {
		if errors.Is(err, errConflict) {
			l.metrics.entries.WithLabelValues("conflict").Inc()
		} else {
			l.metrics.entries.WithLabelValues("backend_error").Inc()
		}
		return nil, 0, err
	}
	p, err := promise.Sign(promise.Promise{Origin: l.origin, LeafHash: ap.LeafHash, Accepted: ap.Accepted}, l.cfg.Signer)
	if err != nil {
		return nil, 0, err
	}
	resp := &api.AddEntryResponse{LeafHash: ap.LeafHash, Promise: p, Index: ap.Index}
	if ap.Duplicate {
		l.metrics.entries.WithLabelValues("duplicate").Inc()
	} else {
		l.metrics.entries.WithLabelValues("accepted").Inc()
	}
	if ap.Index != nil {
		return resp, http.StatusOK, nil
	}
	if ap.Duplicate {
		if cp := l.ckpt.Latest(); cp != nil && cp.Size > 0 {
			if ip, err := l.inclusion(ctx, ap.LeafHash, cp.Size); err == nil {
				idx := ip.Index
				resp.Index = &idx
				return resp, http.StatusOK, nil
			}
		}
	}
	return resp, http.StatusAccepted, nil
}

func (l *Log) handleCheckpoint(w http.ResponseWriter, r *http.Request) error {
	n := l.PublishedCheckpoint()
	if n == nil {
		return errorf(http.StatusServiceUnavailable, "no checkpoint has been published yet; try again shortly")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, err := w.Write(n)
	return err
}

// latestSize is the size of the latest signed checkpoint: the largest tree
// the log serves proofs and entries for.
func (l *Log) latestSize() uint64 {
	if cp := l.ckpt.Latest(); cp != nil {
		return cp.Size
	}
	return 0
}

func uintParam(r *http.Request, name string, required bool) (uint64, bool, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		if required {
			return 0, false, errorf(http.StatusBadRequest, "query parameter %q is required", name)
		}
		return 0, false, nil
	}
	v, err := strconv.ParseUint(s, 10, 63)
	if err != nil {
		return 0, false, errorf(http.StatusBadRequest, "query parameter %q must be a non-negative decimal integer", name)
	}
	return v, true, nil
}

func hashParam(r *http.Request) ([]byte, error) {
	s := r.URL.Query().Get("hash")
	if s == "" {
		return nil, errorf(http.StatusBadRequest, `query parameter "hash" is required (base64url leaf hash)`)
	}
	h, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(h) != 32 {
		return nil, errorf(http.StatusBadRequest, `query parameter "hash" must be a base64url SHA-256 leaf hash (32 bytes)`)
	}
	return h, nil
}

func (l *Log) handleInclusion(w http.ResponseWriter, r *http.Request) error {
	h, err := hashParam(r)
	if err != nil {
		return err
	}
	size, _, err := uintParam(r, "size", true)
	if err != nil {
		return err
	}
	p, err := l.InclusionProof(r.Context(), h, size)
	if err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusOK, p)
	return nil
}

// InclusionProof proves that the entry with this RFC 6962 leaf hash is in
// the tree of the given size (at most the latest signed checkpoint's).
func (l *Log) InclusionProof(ctx context.Context, leafHash []byte, size uint64) (*api.InclusionProof, error) {
	if len(leafHash) != 32 {
		return nil, errorf(http.StatusBadRequest, "a leaf hash is 32 bytes")
	}
	if err := l.checkSize(size); err != nil {
		return nil, err
	}
	return l.inclusion(ctx, leafHash, size)
}

func (l *Log) checkSize(size uint64) error {
	latest := l.latestSize()
	if size == 0 {
		return errorf(http.StatusBadRequest, `"size" must be at least 1`)
	}
	if size > latest {
		return errorf(http.StatusBadRequest, "size %d is beyond the latest signed checkpoint (size %d)", size, latest)
	}
	return nil
}

func (l *Log) inclusion(ctx context.Context, leafHash []byte, size uint64) (*api.InclusionProof, error) {
	notFound := errorf(http.StatusNotFound, "no entry with this leaf hash in the tree of size %d", size)
	if l.seq != nil {
		// Batched sequencing knows every leaf's index; the proof comes from
		// the tiles, with no Trillian query.
		idx, ok, err := l.seq.indexOf(ctx, leafHash, size)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, notFound
		}
		p, err := l.tiler.InclusionProof(ctx, idx, size)
		if err != nil {
			return nil, fmt.Errorf("inclusion proof from tiles: %w", err)
		}
		return &api.InclusionProof{Index: idx, Size: size, Proof: nonNil(p)}, nil
	}
	resp, err := l.trill.log.GetInclusionProofByHash(ctx, &trillian.GetInclusionProofByHashRequest{
		LogId: l.treeID, LeafHash: leafHash, TreeSize: int64(size), OrderBySequence: true})
	if err != nil {
		if c := status.Code(err); c == codes.NotFound || c == codes.InvalidArgument {
			return nil, notFound
		}
		return nil, fmt.Errorf("inclusion proof: %w", err)
	}
	for _, p := range resp.GetProof() {
		if p.LeafIndex >= 0 && uint64(p.LeafIndex) < size {
			return &api.InclusionProof{Index: uint64(p.LeafIndex), Size: size, Proof: nonNil(p.Hashes)}, nil
		}
	}
	return nil, notFound
}

func nonNil(h [][]byte) [][]byte {
	if h == nil {
		return [][]byte{}
	}
	return h
}

func (l *Log) handleConsistency(w http.ResponseWriter, r *http.Request) error {
	old, _, err := uintParam(r, "old", true)
	if err != nil {
		return err
	}
	size, _, err := uintParam(r, "size", true)
	if err != nil {
		return err
	}
	p, err := l.ConsistencyProof(r.Context(), old, size)
	if err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusOK, p)
	return nil
}

// ConsistencyProof proves that the tree of size old is a prefix of the tree
// of size size (at most the latest signed checkpoint's).
func (l *Log) ConsistencyProof(ctx context.Context, old, size uint64) (*api.ConsistencyProof, error) {
	if old > size {
		return nil, errorf(http.StatusBadRequest, `"old" (%d) must not exceed "size" (%d)`, old, size)
	}
	if size > l.latestSize() {
		return nil, errorf(http.StatusBadRequest, "size %d is beyond the latest signed checkpoint (size %d)", size, l.latestSize())
	}
	out := &api.ConsistencyProof{Old: old, Size: size, Proof: [][]byte{}}
	if old > 0 && old < size {
		p, err := l.tiler.ConsistencyProof(ctx, old, size)
		if err != nil {
			return nil, fmt.Errorf("consistency proof from tiles: %w", err)
		}
		out.Proof = nonNil(p)
	}
	return out, nil
}

func (l *Log) handleBundle(w http.ResponseWriter, r *http.Request) error {
	h, err := hashParam(r)
	if err != nil {
		return err
	}
	b, err := l.ProofBundle(r.Context(), h)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, err = w.Write(b)
	return err
}

// ProofBundle returns a C2SP tlog-proof bundle for the entry with this leaf
// hash against the published checkpoint, with the entry itself as the
// bundle's extra data, so it verifies offline (client.OpenBundle).
func (l *Log) ProofBundle(ctx context.Context, leafHash []byte) ([]byte, error) {
	note := l.PublishedCheckpoint()
	cp := l.publishedSigned()
	if note == nil || cp == nil || cp.Size == 0 {
		return nil, errorf(http.StatusNotFound, "no entry with this leaf hash in the published tree")
	}
	p, err := l.inclusion(ctx, leafHash, cp.Size)
	if err != nil {
		return nil, err
	}
	leaves, err := l.leaves(ctx, p.Index, p.Index+1)
	if err != nil {
		return nil, err
	}
	b := proof.TLogProof{Index: p.Index, Checkpoint: note, ExtraData: leaves[0].Data}
	for _, x := range p.Proof {
		b.Hashes = append(b.Hashes, [32]byte(x))
	}
	return b.Marshal(), nil
}

func (l *Log) handleEntries(w http.ResponseWriter, r *http.Request) error {
	start, _, err := uintParam(r, "start", true)
	if err != nil {
		return err
	}
	end, _, err := uintParam(r, "end", true)
	if err != nil {
		return err
	}
	es, err := l.Entries(r.Context(), start, end)
	if err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusOK, api.Entries{Entries: es})
	return nil
}

// Entries returns entries [start, end), at most api.MaxEntriesPerRequest,
// cut at the latest signed checkpoint's size.
func (l *Log) Entries(ctx context.Context, start, end uint64) ([]api.Entry, error) {
	if end <= start {
		return nil, errorf(http.StatusBadRequest, `"end" (%d) must be greater than "start" (%d); end is exclusive`, end, start)
	}
	if end-start > api.MaxEntriesPerRequest {
		return nil, errorf(http.StatusBadRequest, "at most %d entries per request", api.MaxEntriesPerRequest)
	}
	size := l.latestSize()
	if start >= size {
		return nil, errorf(http.StatusNotFound, "start %d is beyond the latest signed checkpoint (size %d)", start, size)
	}
	return l.leaves(ctx, start, min(end, size))
}

func (l *Log) leaves(ctx context.Context, start, end uint64) ([]api.Entry, error) {
	var out []api.Entry
	for start < end {
		resp, err := l.trill.log.GetLeavesByRange(ctx, &trillian.GetLeavesByRangeRequest{
			LogId: l.treeID, StartIndex: int64(start), Count: int64(end - start)})
		if err != nil {
			return nil, fmt.Errorf("reading entries: %w", err)
		}
		if len(resp.Leaves) == 0 {
			return nil, fmt.Errorf("reading entries: trillian returned none at %d", start)
		}
		for _, lf := range resp.Leaves {
			if uint64(lf.LeafIndex) != start {
				return nil, fmt.Errorf("reading entries: trillian returned index %d, want %d", lf.LeafIndex, start)
			}
			out = append(out, api.Entry{Index: start, Data: lf.LeafValue})
			start++
			if start == end {
				break
			}
		}
	}
	return out, nil
}

func (l *Log) handleHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	h := struct {
		Status    string `json:"status"`
		Origin    string `json:"origin"`
		TreeID    int64  `json:"tree_id"`
		Size      uint64 `json:"checkpoint_size"`
		Refusal   string `json:"signing_halted,omitempty"`
		Backend   string `json:"backend,omitempty"`
		Ephemeral bool   `json:"ephemeral,omitempty"`
	}{Status: "ok", Origin: l.origin, TreeID: l.treeID, Size: l.latestSize(), Ephemeral: l.cfg.MySQLDSN == ""}
	code := http.StatusOK
	if err := l.ckpt.Refusal(); err != nil {
		h.Status, h.Refusal, code = "integrity-alert", err.Error(), http.StatusServiceUnavailable
	}
	if _, err := l.trill.log.GetLatestSignedLogRoot(ctx, &trillian.GetLatestSignedLogRootRequest{LogId: l.treeID}); err != nil {
		h.Status, h.Backend, code = "degraded", "trillian unreachable", http.StatusServiceUnavailable
	}
	api.WriteJSON(w, code, h)
}

// HTTPStatus maps an error returned by the Log's methods to the HTTP status
// and caller-facing message the HTTP API would answer with. The gRPC API
// maps from it too, so both APIs say the same thing.
func HTTPStatus(err error) (int, string) { return statusOf(err) }
