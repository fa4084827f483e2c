package personality

import "github.com/prometheus/client_golang/prometheus"

// metrics of one log instance, on its own registry so that several logs can
// run in one process (tests, the demo).
type metrics struct {
	reg               *prometheus.Registry
	entries           *prometheus.CounterVec
	checkpointSize    prometheus.Gauge
	checkpointsSigned prometheus.Counter
	signRefusals      prometheus.Counter
	requests          *prometheus.HistogramVec
	sequencerLeader   prometheus.Gauge
	batchSize         prometheus.Histogram
	sequenced         prometheus.Gauge
	fedToTrillian     prometheus.Counter
	witnessFailures   *prometheus.CounterVec
	cosignedSize      prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		entries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carelog_log_entries_total",
			Help: "Submitted entries by result: accepted, duplicate, refused_4xx, conflict, rate_limited, backend_error.",
		}, []string{"result"}),
		checkpointSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "carelog_log_checkpoint_size",
			Help: "Tree size of the latest signed checkpoint.",
		}),
		checkpointsSigned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carelog_log_checkpoints_signed_total",
			Help: "Checkpoints signed and recorded.",
		}),
		signRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carelog_log_sign_refusals_total",
			Help: "Times the log refused to sign because Trillian's tree was smaller than or inconsistent with the last signed checkpoint. Any increase is an integrity incident.",
		}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "carelog_log_http_request_seconds",
			Help:    "HTTP requests by route and status code.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route", "code"}),
		sequencerLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "carelog_log_sequencer_leader",
			Help: "1 while this replica holds the sequencer lease (batched sequencing).",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "carelog_log_sequencer_batch_entries",
			Help:    "New entries per committed batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		sequenced: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "carelog_log_sequenced_entries",
			Help: "Entries with a durable index (next index to assign).",
		}),
		fedToTrillian: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carelog_log_trillian_fed_entries_total",
			Help: "Entries written to Trillian with AddSequencedLeaves (re-sends after a restart included).",
		}),
		witnessFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carelog_log_witness_failures_total",
			Help: "Pushes to a witness that did not yield a valid cosignature, by witness.",
		}, []string{"witness"}),
		cosignedSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "carelog_log_cosigned_checkpoint_size",
			Help: "Tree size of the latest checkpoint that meets the witness policy (what /checkpoint serves).",
		}),
	}
	m.reg.MustRegister(m.witnessFailures, m.cosignedSize, m.sequencerLeader, m.batchSize, m.sequenced, m.fedToTrillian, m.entries, m.checkpointSize, m.checkpointsSigned, m.signRefusals, m.requests,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}
