package witness

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the witness's Prometheus metrics, in a registry of its own so
// that several witnesses can run in one process. Labels carry log origins
// and peer names only, never anything from an entry.
type metrics struct {
	reg             *prometheus.Registry
	requests        *prometheus.CounterVec
	cosignatures    *prometheus.CounterVec
	size            *prometheus.GaugeVec
	evidence        *prometheus.CounterVec
	frozen          *prometheus.GaugeVec
	gossipRounds    prometheus.Counter
	gossipFailures  *prometheus.CounterVec
	pullFailures    *prometheus.CounterVec
	webhookFailures prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carelog_witness_add_checkpoint_requests_total",
			Help: "add-checkpoint requests by HTTP status code.",
		}, []string{"code"}),
		cosignatures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carelog_witness_cosignatures_total",
			Help: "Checkpoints cosigned, by log origin (push and pull).",
		}, []string{"origin"}),
		size: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "carelog_witness_cosigned_tree_size",
			Help: "Tree size of the latest cosigned checkpoint, by log origin.",
		}, []string{"origin"}),
		evidence: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carelog_witness_split_view_evidence_total",
			Help: "New split-view evidence found, by log origin.",
		}, []string{"origin"}),
		frozen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "carelog_witness_log_frozen",
			Help: "1 while open split-view evidence stops the witness from cosigning the log.",
		}, []string{"origin"}),
		gossipRounds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carelog_witness_gossip_rounds_total",
			Help: "Gossip rounds run.",
		}),
		gossipFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carelog_witness_gossip_failures_total",
			Help: "Failed gossip exchanges (peer unreachable, bad answer, log proof unavailable), by peer.",
		}, []string{"peer"}),
		pullFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carelog_witness_pull_failures_total",
			Help: "Failed pulls of a log's checkpoint, by log origin.",
		}, []string{"origin"}),
		webhookFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carelog_witness_webhook_failures_total",
			Help: "Evidence webhook POSTs that failed.",
		}),
	}
	m.reg.MustRegister(m.requests, m.cosignatures, m.size, m.evidence, m.frozen,
		m.gossipRounds, m.gossipFailures, m.pullFailures, m.webhookFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
