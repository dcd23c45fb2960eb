package server

import (
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/airlay/airlay/events"
	dto "github.com/prometheus/client_model/go"
)

// The operator console's data (the console itself is on the live page).
// Both endpoints need the publish token: they show who is connected.
const (
	ConsolePath         = "/api/console"
	ConsoleAttachedPath = "/api/console/attached"
)

// maxAttachedListed bounds the connections one "who is attached" answer
// lists (it says how many there are in all).
const maxAttachedListed = 100

// consoleHistogram is a histogram as Prometheus keeps it: cumulative
// counts per upper bound. The console takes the difference of two
// snapshots for the quantiles of that interval.
type consoleHistogram struct {
	Bounds []float64 `json:"bounds"` // seconds; the last bucket (+Inf) is Count
	Counts []uint64  `json:"counts"` // cumulative, one per bound
	Count  uint64    `json:"count"`
	Sum    float64   `json:"sum"`
}

type consoleMongo struct {
	StreamUp     bool             `json:"stream_up"`
	ChangeEvents float64          `json:"change_events_total"`
	Resumes      float64          `json:"stream_resumes_total"`
	HistoryLost  float64          `json:"history_lost_total"`
	Lag          consoleHistogram `json:"lag_seconds"`
}

type consoleAnswer struct {
	Status             int              `json:"status"`
	Message            string           `json:"message"`
	Code               int              `json:"code"`
	Time               int64            `json:"time_ms"` // Unix milliseconds of this snapshot
	Version            string           `json:"version"`
	Started            int64            `json:"started_ms"`
	Connections        float64          `json:"connections"`
	MaxConnections     int              `json:"max_connections"`
	Subscriptions      float64          `json:"subscriptions"`
	ConnectionsOpened  float64          `json:"connections_opened_total"`
	EventsIn           float64          `json:"events_in_total"`  // accepted for delivery
	EventsOut          float64          `json:"events_out_total"` // (connection, event) pairs written
	SlowConsumerCloses float64          `json:"slow_consumer_closes_total"`
	Latency            consoleHistogram `json:"delivery_latency_seconds"`
	Mongo              *consoleMongo    `json:"mongodb"` // null without MongoDB
	// Instances: the live instances sharing the database (this one
	// first, "self": true), as of the latest heartbeat; null without
	// MongoDB.
	Instances []events.Instance `json:"instances"`
}

// handleConsole is GET /api/console: counters and gauges of this instance,
// read from its Prometheus registry (so the console shows what /metrics
// says, MongoDB's series included), behind the publish token.
func (s *Server) handleConsole(w http.ResponseWriter, r *http.Request) {
	if !s.consoleGate(w, r) {
		return
	}
	fams, err := s.metrics.reg.Gather()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "Internal error", events.Unavailable, "the metrics could not be read")
		return
	}
	byName := make(map[string]*dto.MetricFamily, len(fams))
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	a := consoleAnswer{
		Status: http.StatusOK, Message: events.OK.Message(),
		Time: time.Now().UnixMilli(), Version: Version, Started: s.started.UnixMilli(),
		MaxConnections:     s.cfg.MaxConnections,
		Connections:        famSum(byName["airlay_connections"]),
		Subscriptions:      famSum(byName["airlay_subscriptions"]),
		ConnectionsOpened:  famSum(byName["airlay_connections_opened_total"]),
		EventsIn:           famSum(byName["airlay_events_published_total"]),
		EventsOut:          famSum(byName["airlay_events_delivered_total"]),
		SlowConsumerCloses: famSum(byName["airlay_slow_consumer_disconnects_total"]),
		Latency:            famHistogram(byName["airlay_delivery_latency_seconds"]),
	}
	if up, ok := byName["airlay_mongodb_stream_up"]; ok {
		a.Mongo = &consoleMongo{
			StreamUp:     famSum(up) == 1,
			ChangeEvents: famSum(byName["airlay_mongodb_change_events_total"]),
			Resumes:      famSum(byName["airlay_mongodb_stream_resumes_total"]),
			HistoryLost:  famSum(byName["airlay_mongodb_history_lost_total"]),
			Lag:          famHistogram(byName["airlay_mongodb_change_lag_seconds"]),
		}
	}
	if cb, ok := s.broker.(events.ClusterBroker); ok {
		a.Instances = cb.Instances()
	}
	writeJSON(w, a)
}

// consoleGate lets a GET with the publish token through.
func (s *Server) consoleGate(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.PublishToken == "" {
		writeError(w, http.StatusNotFound, "Not found", events.InvalidRequest, "publish_token is empty in the server's configuration: the console's data is off")
		return false
	}
	return s.checkBearer(w, r)
}

// famSum adds up every series of a counter or gauge family (0 when absent).
func famSum(f *dto.MetricFamily) float64 {
	var v float64
	if f == nil {
		return 0
	}
	for _, m := range f.GetMetric() {
		switch {
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		}
	}
	return v
}

// famHistogram returns the first histogram of a family.
func famHistogram(f *dto.MetricFamily) consoleHistogram {
	h := consoleHistogram{Bounds: []float64{}, Counts: []uint64{}}
	if f == nil || len(f.GetMetric()) == 0 || f.GetMetric()[0].Histogram == nil {
		return h
	}
	ph := f.GetMetric()[0].Histogram
	for _, b := range ph.GetBucket() {
		h.Bounds = append(h.Bounds, b.GetUpperBound())
		h.Counts = append(h.Counts, b.GetCumulativeCount())
	}
	h.Count, h.Sum = ph.GetSampleCount(), ph.GetSampleSum()
	return h
}

type attachedConn struct {
	Conn          string `json:"conn"`
	User          string `json:"user"`
	Remote        string `json:"remote"`
	Opened        string `json:"opened"`
	Subscriptions int    `json:"subscriptions"`
}

type attachedAnswer struct {
	Status      int            `json:"status"`
	Message     string         `json:"message"`
	Code        int            `json:"code"`
	Type        string         `json:"type"`
	ID          string         `json:"id"`
	Total       int            `json:"total"`
	Connections []attachedConn `json:"connections"` // the first 100, oldest first
}

// handleAttached is GET /api/console/attached?type=T&id=ID: the connections
// of this instance holding that subscription (for notification, id is the
// user). It walks the connections, which an operator's question may cost.
func (s *Server) handleAttached(w http.ResponseWriter, r *http.Request) {
	if !s.consoleGate(w, r) {
		return
	}
	q := r.URL.Query()
	t, ok := events.ParseType(q.Get("type"))
	if !ok {
		writeError(w, http.StatusBadRequest, events.InvalidRequest.Message(), events.InvalidRequest, "type must be one of the event types of /api/config")
		return
	}
	id, ok := events.NormalizeID(q.Get("id"))
	if !ok {
		what := "id"
		if t.PerUser() {
			what = "id (the user, for notification)"
		}
		writeError(w, http.StatusBadRequest, events.InvalidRequest.Message(), events.InvalidRequest, what+" must be an ObjectId (24 hex digits)")
		return
	}
	key := events.Key{Type: t, ID: id}
	s.connsMu.Lock()
	list := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		list = append(list, c)
	}
	s.connsMu.Unlock()
	a := attachedAnswer{Status: http.StatusOK, Message: events.OK.Message(), Type: t.String(), ID: id, Connections: []attachedConn{}}
	var held []attachedConn
	var opened []time.Time
	for _, c := range list {
		c.mu.Lock()
		_, ok := c.subs[key]
		n, user := len(c.subs), c.user
		c.mu.Unlock()
		if !ok {
			continue
		}
		held = append(held, attachedConn{Conn: strconv.FormatUint(c.id, 10), User: user, Remote: c.sess.Request.RemoteAddr, Opened: c.opened.UTC().Format(time.RFC3339), Subscriptions: n})
		opened = append(opened, c.opened)
	}
	idx := make([]int, len(held))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(i, j int) bool { return opened[idx[i]].Before(opened[idx[j]]) })
	a.Total = len(held)
	for _, i := range idx {
		if len(a.Connections) == maxAttachedListed {
			break
		}
		a.Connections = append(a.Connections, held[i])
	}
	writeJSON(w, a)
}
