package server

import (
	"net/http"
	"runtime"
	"strconv"

	"github.com/airlay/airlay/auth"
	"github.com/airlay/airlay/events"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus series. No label carries a user or an
// object id.
type metrics struct {
	reg *prometheus.Registry

	connections      prometheus.Gauge
	connectionsTotal prometheus.Counter
	closes           *prometheus.CounterVec
	subscriptions    prometheus.GaugeFunc
	requests         []prometheus.Counter // by code
	published        *prometheus.CounterVec
	delivered        prometheus.Counter
	slowConsumers    prometheus.Counter
	latency          prometheus.Histogram
	publishRequests  *prometheus.CounterVec
	duplicates       prometheus.Counter // publishes answered as a repeated Idempotency-Key
	resumes          *prometheus.CounterVec
}

func newMetrics(hub *events.Hub, verifier *auth.Verifier, extra []prometheus.Collector) *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &metrics{reg: reg}
	m.connections = prometheus.NewGauge(prometheus.GaugeOpts{Name: "airlay_connections", Help: "Open WebSocket connections."})
	m.connectionsTotal = prometheus.NewCounter(prometheus.CounterOpts{Name: "airlay_connections_opened_total", Help: "WebSocket connections accepted."})
	m.closes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "airlay_connections_closed_total", Help: "WebSocket connections closed, by reason."}, []string{"reason"})
	m.subscriptions = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "airlay_subscriptions", Help: "Subscriptions held by all connections."}, func() float64 { return float64(hub.Subscriptions()) })
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "airlay_requests_total", Help: "WebSocket requests answered, by code."}, []string{"code"})
	for c := events.OK; c <= events.Unavailable; c++ {
		m.requests = append(m.requests, reqs.WithLabelValues(strconv.Itoa(int(c))))
	}
	m.published = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "airlay_events_published_total", Help: "Events accepted for delivery, by type."}, []string{"type"})
	for _, t := range events.Types {
		m.published.WithLabelValues(t.String())
	}
	m.delivered = prometheus.NewCounter(prometheus.CounterOpts{Name: "airlay_events_delivered_total", Help: "(connection, event) pairs written to sockets."})
	m.slowConsumers = prometheus.NewCounter(prometheus.CounterOpts{Name: "airlay_slow_consumer_disconnects_total", Help: "Connections closed because their send queue was full."})
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "airlay_delivery_latency_seconds",
		Help:    "Time from accepting an event to writing it to one connection.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	})
	m.publishRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "airlay_publish_requests_total", Help: "POST /api/events requests, by HTTP status."}, []string{"status"})
	for _, c := range []prometheus.Collector{m.connections, m.connectionsTotal, m.closes, m.subscriptions, reqs, m.published, m.delivered, m.slowConsumers, m.latency, m.publishRequests} {
		f(c)
	}
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "airlay_token_rsa_verifications_total", Help: "Token signatures checked (cache hits and tokens refused before their signature cost none)."},
		func() float64 { return float64(verifier.RSAVerifications()) }))
	m.duplicates = prometheus.NewCounter(prometheus.CounterOpts{Name: "airlay_publish_duplicates_total", Help: "POST /api/events answered 200 duplicate: an Idempotency-Key seen within idempotency_window; nothing published."})
	f(m.duplicates)
	m.resumes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "airlay_resumes_total", Help: "Attach requests with since, by result: recovered (replayed from history), not_recovered (answered recovered:false), held (the subscription was held already)."}, []string{"result"})
	for _, r := range []string{"recovered", "not_recovered", "held"} {
		m.resumes.WithLabelValues(r)
	}
	f(m.resumes)
	if h := hub.History(); h != nil {
		f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "airlay_history_events", Help: "Events kept in the history for resuming."}, func() float64 { return float64(h.Len()) }))
		f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "airlay_history_bytes", Help: "Memory counted for the history (frames plus a fixed overhead per event); at most history_bytes."}, func() float64 { return float64(h.Bytes()) }))
		f(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "airlay_history_evicted_total", Help: "Events dropped from the history, for room (history_bytes) or age (history_ttl)."}, func() float64 { return float64(h.Evicted()) }))
		f(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "airlay_history_replayed_total", Help: "Events sent again from the history to resumed subscriptions."}, func() float64 { return float64(h.Replayed()) }))
	}
	// airlay_build_info{version,goversion} 1: which build runs (a
	// dashboard's version panel, an alert on mixed versions).
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "airlay_build_info",
		Help:        "Always 1; the labels say which build of airlay runs.",
		ConstLabels: prometheus.Labels{"version": Version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	f(buildInfo)
	for _, c := range extra {
		f(c)
	}
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
