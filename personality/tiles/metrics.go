package tiles

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	size        prometheus.Gauge
	leaves      prometheus.Counter
	mismatches  prometheus.Counter
	corrupt     prometheus.Counter
	cacheHit    [2]prometheus.Counter // by kindHash, kindEntries
	cacheMiss   [2]prometheus.Counter
	requests    *prometheus.CounterVec
	inclusion   prometheus.Counter
	consistency prometheus.Counter
}

const (
	kindHash = iota
	kindEntries
)

var kindNames = [2]string{"hash", "entries"}

func newMetrics(reg prometheus.Registerer, cache *lru) *metrics {
	cacheReqs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "carelog_tiles_cache_requests_total",
		Help: "Lookups of full hash tiles and entry bundles in the memory cache, by kind (hash, entries) and result (hit, miss).",
	}, []string{"kind", "result"})
	proofs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "carelog_tiles_proofs_total",
		Help: "Proofs built from the stored tiles, by type (inclusion, consistency).",
	}, []string{"type"})
	m := &metrics{
		size: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "carelog_tiles_tree_size",
			Help: "Tree size the tiles are caught up to (verified against a checkpoint) and served up to.",
		}),
		leaves: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carelog_tiles_leaves_hashed_total",
			Help: "Leaves read from the log and hashed into tiles.",
		}),
		mismatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carelog_tiles_root_mismatches_total",
			Help: "Catch-ups refused because the log's leaves do not hash to the checkpoint's root. Any increase is an integrity incident.",
		}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carelog_tiles_entry_mismatches_total",
			Help: "Entry bundles refused because a leaf read from the log does not hash to its stored tile hash. Any increase is an integrity incident.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carelog_tiles_http_requests_total",
			Help: "Tile requests by kind (hash, entries) and status code.",
		}, []string{"kind", "code"}),
		inclusion:   proofs.WithLabelValues("inclusion"),
		consistency: proofs.WithLabelValues("consistency"),
	}
	for k, name := range kindNames {
		m.cacheHit[k] = cacheReqs.WithLabelValues(name, "hit")
		m.cacheMiss[k] = cacheReqs.WithLabelValues(name, "miss")
	}
	if reg != nil {
		reg.MustRegister(m.size, m.leaves, m.mismatches, m.corrupt, cacheReqs, m.requests, proofs,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "carelog_tiles_cache_bytes",
				Help: "Bytes of full hash tiles and entry bundles held in the memory cache.",
			}, func() float64 { return float64(cache.bytes()) }))
	}
	return m
}
