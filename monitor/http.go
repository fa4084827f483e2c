package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/carelog/carelog/api"
	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/entry"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves the monitor's HTTP API:
//
//	GET  /status                       per log: verified checkpoint, replay progress and ETA, sources, alert counts
//	GET  /alerts?after=&kind=&log=&class=&limit=
//	GET  /metrics                      Prometheus
//	POST /promises                     a promise note (or the log's add-entry JSON answer) to audit
//	GET  /<hex sha256(origin)>/checkpoint  the latest checkpoint verified, for peer monitors
//	GET  /patients/<pseudonym>?log=<origin>  indices of that patient's entries, from the monitor's own index
//
// Nothing here changes what the monitor trusts; acknowledging alerts is a
// local operation (carelog-monitor -ack), not an HTTP one.
func (m *Monitor) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", m.handleStatus)
	mux.HandleFunc("GET /alerts", m.handleAlerts)
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("POST /promises", m.handlePromise)
	mux.HandleFunc("GET /{id}/checkpoint", m.handleCheckpoint)
	mux.HandleFunc("GET /patients/{pseudonym}/indices", m.handlePatient)
	return mux
}

func (m *Monitor) serve(ctx context.Context, wg *sync.WaitGroup, errc chan<- error) error {
	ln, err := net.Listen("tcp", m.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("monitor: listen: %w", err)
	}
	srv := &http.Server{
		Handler:           m.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	m.log.Info("serving", slog.String("addr", ln.Addr().String()))
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	})
	wg.Go(func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	return nil
}

func (m *Monitor) handleStatus(w http.ResponseWriter, r *http.Request) {
	st, err := m.Status(r.Context())
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, "monitor state unavailable")
		return
	}
	n, _ := m.store.outboxLen(r.Context())
	api.WriteJSON(w, http.StatusOK, struct {
		Logs          []LogStatus `json:"logs"`
		WebhookOutbox int         `json:"webhook_outbox"`
	}{st, n})
}

func (m *Monitor) handleAlerts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := AlertFilter{Kind: Kind(q.Get("kind")), Log: q.Get("log"), Class: Class(q.Get("class"))}
	var err error
	if v := q.Get("after"); v != "" {
		if f.AfterID, err = strconv.ParseInt(v, 10, 64); err != nil {
			api.WriteError(w, http.StatusBadRequest, `parameter "after" must be an alert id`)
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil {
			api.WriteError(w, http.StatusBadRequest, `parameter "limit" must be a number`)
			return
		}
	}
	as, err := m.store.alerts(r.Context(), f)
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, "monitor state unavailable")
		return
	}
	api.WriteJSON(w, http.StatusOK, struct {
		Alerts []Alert `json:"alerts"`
	}{as})
}

func (m *Monitor) handlePromise(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		api.WriteError(w, http.StatusRequestEntityTooLarge, "a promise is at most 64 KiB")
		return
	}
	rec, err := m.AddPromise(r.Context(), b)
	switch {
	case errors.Is(err, ErrNotAPromise):
		api.WriteError(w, http.StatusBadRequest, "the body must be a carelog/promise/v1 note signed by a log this monitor follows, or the log's add-entry answer")
	case err != nil:
		api.WriteError(w, http.StatusInternalServerError, "monitor state unavailable")
	default:
		api.WriteJSON(w, http.StatusAccepted, rec)
	}
}

// handleCheckpoint serves, like a witness's monitoring endpoint, the latest
// checkpoint this monitor verified for the log, with the log's signature and
// the witness cosignatures it came with, plus the monitor's own
// cosignature/v1 when it has a key.
func (m *Monitor) handleCheckpoint(w http.ResponseWriter, r *http.Request) {
	for _, ls := range m.logs {
		if checkpoint.OriginID(ls.origin) != r.PathValue("id") {
			continue
		}
		v := ls.verifiedSnapshot()
		if v == nil {
			break
		}
		n := v.Note
		if m.cosigner != nil {
			var err error
			if n, err = m.cosign(n); err != nil {
				api.WriteError(w, http.StatusInternalServerError, "cannot cosign")
				return
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(n)
		return
	}
	api.WriteError(w, http.StatusNotFound, "no verified checkpoint for that log")
}

func (m *Monitor) handlePatient(w http.ResponseWriter, r *http.Request) {
	p := r.PathValue("pseudonym")
	if err := entry.CheckPseudonym(p); err != nil {
		api.WriteError(w, http.StatusBadRequest, "pseudonym "+err.Error())
		return
	}
	origin := r.URL.Query().Get("log")
	if origin == "" && len(m.logs) == 1 {
		origin = m.logs[0].origin
	}
	idx, err := m.PatientIndices(r.Context(), origin, p)
	if err != nil {
		api.WriteError(w, http.StatusNotFound, `unknown log: pass its origin as parameter "log"`)
		return
	}
	api.WriteJSON(w, http.StatusOK, struct {
		Log     string   `json:"log"`
		Indices []uint64 `json:"indices"`
	}{origin, idx})
}
