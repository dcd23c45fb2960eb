package mongodb

import (
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the package's Prometheus series; the server serves them on
// /metrics beside its own. Labels are bounded: configured collections,
// cache names, operation names.
type metrics struct {
	changes     *prometheus.CounterVec // by collection
	lag         prometheus.Histogram
	resumes     prometheus.Counter
	historyLost prometheus.Counter
	streamUp    prometheus.Gauge
	cache       *prometheus.CounterVec // by cache (user, dataset) and result (hit, miss)
	errors      *prometheus.CounterVec // by operation
	collections []string

	reopens    prometheus.Counter
	noEvents   *prometheus.CounterVec // by collection and reason
	lookups    *prometheus.CounterVec // by collection
	tokenSaves prometheus.Counter
	streamLag  prometheus.GaugeFunc

	heartbeats prometheus.Counter
	instances  prometheus.Gauge
	messages   *prometheus.CounterVec // by kind (ask, reply)
	revoked    *prometheus.CounterVec // by what (subscription, connection)
	seenAt     atomic.Int64           // unix nanoseconds: cluster time of the latest change read, or when the stream was last caught up
	now        func() time.Time
}

func newMetrics(cfg *Config) *metrics {
	m := &metrics{}
	m.changes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "airlay_mongodb_change_events_total", Help: "Change events read from the change stream, by collection."}, []string{"collection"})
	m.collections = append(m.collections, cfg.Events)
	for _, s := range cfg.Sources {
		if !slices.Contains(m.collections, s.Collection) {
			m.collections = append(m.collections, s.Collection)
		}
	}
	for _, c := range m.collections {
		m.changes.WithLabelValues(c)
	}
	m.lag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "airlay_mongodb_change_lag_seconds",
		Help:    "Time from a change in MongoDB (its wall or cluster time) to its delivery to the hub.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	})
	m.resumes = prometheus.NewCounter(prometheus.CounterOpts{Name: "airlay_mongodb_stream_resumes_total", Help: "Change streams opened after a resume token (by the driver after an error, or by airlay after a failure or a restart)."})
	m.historyLost = prometheus.NewCounter(prometheus.CounterOpts{Name: "airlay_mongodb_history_lost_total", Help: "Times the resume token was older than the oplog and the stream restarted from now (events in between are lost)."})
	m.streamUp = prometheus.NewGauge(prometheus.GaugeOpts{Name: "airlay_mongodb_stream_up", Help: "1 while the change stream is open and answering."})
	m.cache = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "airlay_mongodb_cache_requests_total", Help: "User and dataset-access checks, by cache and result (hit: answered from the cache)."}, []string{"cache", "result"})
	for _, c := range []string{"user", "dataset"} {
		for _, r := range []string{"hit", "miss"} {
			m.cache.WithLabelValues(c, r)
		}
	}
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "airlay_mongodb_errors_total", Help: "MongoDB operations that failed, by operation."}, []string{"op"})
	for _, op := range []string{"watch", "find_user", "find_dataset", "insert_event", "save_token", "load_token", "create_index", "decode", "lookup", "heartbeat", "read_instances", "insert_message", "revoke"} {
		m.errors.WithLabelValues(op)
	}
	m.reopens = prometheus.NewCounter(prometheus.CounterOpts{Name: "airlay_mongodb_stream_reopens_total", Help: "Times the source opened its change stream again (after an error, an invalidate, a history loss or a skipped event)."})
	m.noEvents = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "airlay_mongodb_changes_without_event_total", Help: "Change events read that produced no event, by collection and reason (" + strings.Join(noEventReasons, ", ") + ")."}, []string{"collection", "reason"})
	m.lookups = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "airlay_mongodb_document_lookups_total", Help: "Documents read for an update whose mapping needs them, by collection."}, []string{"collection"})
	for _, s := range cfg.Sources {
		if s.needsLookup() {
			m.lookups.WithLabelValues(s.Collection)
		}
	}
	m.heartbeats = prometheus.NewCounter(prometheus.CounterOpts{Name: "airlay_mongodb_heartbeats_total", Help: "Heartbeats this instance wrote into instances_collection."})
	m.instances = prometheus.NewGauge(prometheus.GaugeOpts{Name: "airlay_instances_live", Help: "Live instances sharing the database (this one included), as of the latest heartbeat read."})
	m.messages = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "airlay_mongodb_messages_total", Help: "Messages this instance wrote into messages_collection, by kind (ask, reply)."}, []string{"kind"})
	m.revoked = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "airlay_revoked_total", Help: "Access withdrawn from open connections after a change in MongoDB: subscriptions detached (a dataset stopped naming the user), connections closed (the user was deleted)."}, []string{"what"})
	for _, k := range []string{kindAsk, kindReply} {
		m.messages.WithLabelValues(k)
	}
	for _, w := range []string{"subscription", "connection"} {
		m.revoked.WithLabelValues(w)
	}
	m.tokenSaves = prometheus.NewCounter(prometheus.CounterOpts{Name: "airlay_mongodb_token_saves_total", Help: "Writes of this instance's resume token."})
	m.now = time.Now
	m.streamLag = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "airlay_mongodb_stream_lag_seconds",
		Help: "Now minus the cluster time of the latest change the stream read; while the stream is caught up (its last read came back empty), now minus the time of that read. Grows while the stream is down or behind.",
	}, m.lagNow)
	return m
}

// noEvent counts a change of coll that produced no event.
func (m *metrics) noEvent(coll, why string) {
	if !slices.Contains(m.collections, coll) {
		coll = "other"
	}
	m.noEvents.WithLabelValues(coll, why).Inc()
}

// seen records the time of a change read.
func (m *metrics) seen(at time.Time) {
	if !at.IsZero() {
		m.seenAt.Store(at.UnixNano())
	}
}

// caughtUp records a read that found nothing more: the stream has seen
// everything up to now.
func (m *metrics) caughtUp(now time.Time) { m.seenAt.Store(now.UnixNano()) }

func (m *metrics) lagNow() float64 {
	at := m.seenAt.Load()
	if at == 0 {
		return 0
	}
	return max(0, m.now().Sub(time.Unix(0, at)).Seconds())
}

// changeRead counts a change of collection coll.
func (m *metrics) changeRead(coll string) {
	if !slices.Contains(m.collections, coll) {
		coll = "other"
	}
	m.changes.WithLabelValues(coll).Inc()
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.changes, m.lag, m.resumes, m.historyLost, m.streamUp, m.cache, m.errors, m.reopens, m.noEvents, m.lookups, m.tokenSaves, m.streamLag, m.heartbeats, m.instances, m.messages, m.revoked}
}
