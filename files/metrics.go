package files

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the series of a store. With GridFS each instance counts the
// files it placed (summed over the instances: the cluster's) and the
// expired files it removed.
type Metrics struct {
	files    prometheus.Gauge
	bytes    prometheus.Gauge
	expiries prometheus.Counter
}

// NewMetrics makes the series; serve Collectors on /metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		files:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "airlay_files_stored", Help: "Temporary download files this instance placed whose link has not expired (on disk, or in GridFS with MongoDB)."}),
		bytes:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "airlay_files_stored_bytes", Help: "Bytes of the temporary download files counted by airlay_files_stored."}),
		expiries: prometheus.NewCounter(prometheus.CounterOpts{Name: "airlay_files_expired_total", Help: "Temporary download files this instance removed because their link expired."}),
	}
}

// Collectors returns the series.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.files, m.bytes, m.expiries}
}
