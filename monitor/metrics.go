package monitor

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics live in a registry of their own, so two monitors in one process
// (as in tests) do not collide. Labels are origins, source names from the
// config and alert kinds: never anything from an entry.
type metrics struct {
	reg             *prometheus.Registry
	alerts          *prometheus.CounterVec
	entries         *prometheus.CounterVec
	pollErrors      *prometheus.CounterVec
	position        *prometheus.GaugeVec
	verifiedSize    *prometheus.GaugeVec
	lag             *prometheus.GaugeVec
	checkpointTime  *prometheus.GaugeVec
	pendingPromises *prometheus.GaugeVec
	outbox          prometheus.Gauge
	deliveries      *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carelog_monitor_alerts_total", Help: "Alerts raised, by log and kind.",
		}, []string{"log", "kind"}),
		entries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carelog_monitor_entries_verified_total", Help: "Entries replayed and verified.",
		}, []string{"log"}),
		pollErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carelog_monitor_poll_errors_total", Help: "Failed polls of a log, witness or peer.",
		}, []string{"log", "source"}),
		position: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "carelog_monitor_replay_position", Help: "Entries replayed and verified so far (the next index to replay).",
		}, []string{"log"}),
		verifiedSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "carelog_monitor_verified_size", Help: "Size of the log's latest verified checkpoint.",
		}, []string{"log"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "carelog_monitor_replay_lag_entries", Help: "Verified checkpoint size minus replay position.",
		}, []string{"log"}),
		checkpointTime: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "carelog_monitor_checkpoint_timestamp_seconds", Help: "When the latest verified checkpoint was made (newest witness cosignature, else first seen).",
		}, []string{"log"}),
		pendingPromises: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "carelog_monitor_pending_promises", Help: "Promises not yet seen kept or broken.",
		}, []string{"log"}),
		outbox: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "carelog_monitor_webhook_outbox", Help: "Alerts waiting for webhook delivery.",
		}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carelog_monitor_webhook_deliveries_total", Help: "Webhook delivery attempts, by result.",
		}, []string{"result"}),
	}
	m.reg.MustRegister(m.alerts, m.entries, m.pollErrors, m.position, m.verifiedSize, m.lag, m.checkpointTime,
		m.pendingPromises, m.outbox, m.deliveries)
	return m
}

// initLog makes every per-log series exist from the start, at zero.
func (m *metrics) initLog(origin string) {
	for _, k := range Kinds {
		m.alerts.WithLabelValues(origin, string(k))
	}
	m.entries.WithLabelValues(origin)
	m.position.WithLabelValues(origin)
	m.verifiedSize.WithLabelValues(origin)
	m.lag.WithLabelValues(origin)
	m.pendingPromises.WithLabelValues(origin)
}

func (m *metrics) verified(ls *logState, made time.Time) {
	v := ls.verifiedSnapshot()
	if v == nil {
		return
	}
	m.verifiedSize.WithLabelValues(ls.origin).Set(float64(v.Size))
	m.checkpointTime.WithLabelValues(ls.origin).Set(float64(made.Unix()))
	m.replayed(ls)
}

func (m *metrics) replayed(ls *logState) {
	p := ls.progressSnapshot()
	m.position.WithLabelValues(ls.origin).Set(float64(p.Position))
	if v := ls.verifiedSnapshot(); v != nil && v.Size >= p.Position {
		m.lag.WithLabelValues(ls.origin).Set(float64(v.Size - p.Position))
	}
}
