package witness

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/carelog/carelog/api"
	"github.com/carelog/carelog/checkpoint"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Paths of the witness, relative to Config.Prefix.
const (
	PathAddCheckpoint = "/add-checkpoint"
	PathEvidence      = "/evidence"
	PathMetrics       = "/metrics"
	PathHealthz       = "/healthz"
	// The monitoring endpoint is /<hex sha256(origin)>/checkpoint
	// (checkpoint.OriginID).
)

// ContentTypeSize is the Content-Type of a 409 answer to add-checkpoint.
const ContentTypeSize = "text/x.tlog.size"

func (w *Witness) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathAddCheckpoint, w.handleAddCheckpoint)
	mux.HandleFunc("GET /{origin}/checkpoint", w.handleCheckpoint)
	mux.HandleFunc("GET "+PathEvidence, w.handleEvidence)
	mux.Handle("GET "+PathMetrics, promhttp.HandlerFor(w.metrics.reg, promhttp.HandlerOpts{Registry: w.metrics.reg}))
	mux.HandleFunc("GET "+PathHealthz, func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(rw, "ok\n")
	})
	if w.cfg.Prefix == "" {
		return mux
	}
	outer := http.NewServeMux()
	outer.Handle(w.cfg.Prefix+"/", http.StripPrefix(w.cfg.Prefix, mux))
	return outer
}

// handleAddCheckpoint implements C2SP tlog-witness add-checkpoint.
func (w *Witness) handleAddCheckpoint(rw http.ResponseWriter, r *http.Request) {
	code := w.addCheckpointHTTP(rw, r)
	w.metrics.requests.WithLabelValues(strconv.Itoa(code)).Inc()
}

func (w *Witness) addCheckpointHTTP(rw http.ResponseWriter, r *http.Request) int {
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, MaxAddCheckpointBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			api.WriteError(rw, http.StatusRequestEntityTooLarge, "request body is larger than "+strconv.Itoa(MaxAddCheckpointBody)+" bytes")
			return http.StatusRequestEntityTooLarge
		}
		api.WriteError(rw, http.StatusBadRequest, "cannot read request body")
		return http.StatusBadRequest
	}
	req, err := parseAddRequest(body)
	if err != nil {
		api.WriteError(rw, http.StatusBadRequest, err.Error())
		return http.StatusBadRequest
	}
	sig, err := w.addCheckpoint(r.Context(), req.old, req.proof, req.checkpoint)
	if err != nil {
		return w.writeAddError(rw, r, originOf(req.checkpoint), err)
	}
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rw.WriteHeader(http.StatusOK)
	rw.Write(sig)
	return http.StatusOK
}

// writeAddError turns an add-checkpoint error into the status code C2SP
// tlog-witness prescribes.
func (w *Witness) writeAddError(rw http.ResponseWriter, r *http.Request, origin string, err error) int {
	var conflict *ConflictError
	switch {
	case errors.As(err, &conflict):
		rw.Header().Set("Content-Type", ContentTypeSize)
		rw.WriteHeader(http.StatusConflict)
		io.WriteString(rw, strconv.FormatUint(conflict.Size, 10)+"\n")
		return http.StatusConflict
	case errors.Is(err, ErrUnknownLog):
		api.WriteError(rw, http.StatusNotFound, err.Error())
		return http.StatusNotFound
	case errors.Is(err, checkpoint.ErrNoLogSignature):
		api.WriteError(rw, http.StatusForbidden, err.Error())
		return http.StatusForbidden
	case errors.Is(err, checkpoint.ErrMalformed), errors.Is(err, checkpoint.ErrWrongOrigin), errors.Is(err, ErrOldTooLarge):
		api.WriteError(rw, http.StatusBadRequest, err.Error())
		return http.StatusBadRequest
	case errors.Is(err, ErrBadProof):
		// The log signed a checkpoint that does not extend what we
		// cosigned: possibly a fork. C2SP allows logging it.
		w.log.Warn("add-checkpoint: inconsistent checkpoint refused", slog.String("origin", origin), slog.String("error", err.Error()))
		api.WriteError(rw, http.StatusUnprocessableEntity, err.Error())
		return http.StatusUnprocessableEntity
	case errors.Is(err, ErrFrozen):
		// Not one of C2SP's codes on purpose: 423 Locked says "this log is
		// locked by this witness" without being mistaken for a bad key
		// (403), a stale size (409) or a bad proof (422).
		api.WriteError(rw, http.StatusLocked, err.Error())
		return http.StatusLocked
	case r.Context().Err() != nil:
		// The client went away or the server is shutting down.
		api.WriteError(rw, http.StatusServiceUnavailable, "request cancelled; nothing was cosigned")
		return http.StatusServiceUnavailable
	default:
		w.log.Error("add-checkpoint failed", slog.String("error", err.Error()))
		api.WriteError(rw, http.StatusInternalServerError, "internal error; nothing was cosigned")
		return http.StatusInternalServerError
	}
}

// handleCheckpoint serves the latest cosigned checkpoint of a log, with the
// log's signature and the witness's cosignature (C2SP tlog-witness
// monitoring endpoint).
func (w *Witness) handleCheckpoint(rw http.ResponseWriter, r *http.Request) {
	lg, ok := w.byID[r.PathValue("origin")]
	if !ok {
		api.WriteError(rw, http.StatusNotFound, "no such log: the path must be /<hex sha256(origin)>/checkpoint of a configured log")
		return
	}
	cur, err := w.store.latest(r.Context(), lg.origin)
	if err != nil {
		w.log.Error("read latest checkpoint", slog.String("origin", lg.origin), slog.String("error", err.Error()))
		api.WriteError(rw, http.StatusInternalServerError, "internal error")
		return
	}
	if cur == nil {
		api.WriteError(rw, http.StatusNotFound, "the witness has not cosigned a checkpoint of this log")
		return
	}
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rw.Write(cur.Note)
}

// handleEvidence serves every split view the witness has proven, cleared or
// not, oldest first. ?origin= narrows it to one log.
func (w *Witness) handleEvidence(rw http.ResponseWriter, r *http.Request) {
	list, err := w.store.listEvidence(r.Context(), r.URL.Query().Get("origin"))
	if err != nil {
		w.log.Error("read evidence", slog.String("error", err.Error()))
		api.WriteError(rw, http.StatusInternalServerError, "internal error")
		return
	}
	api.WriteJSON(rw, http.StatusOK, EvidenceList{Evidence: list})
}
