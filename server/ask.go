package server

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/airlay/airlay/events"
	"github.com/prometheus/client_golang/prometheus"
)

// defaultAskTimeout and maxAskTimeout bound POST /api/ask's ?timeout.
const (
	defaultAskTimeout = 10 * time.Second
	maxAskTimeout     = 60 * time.Second
)

// localAsks carries requests to this instance's connections only: the
// AskBroker of a broker that is not one (mongodb.Broker, for now).
type localAsks struct{ hub *events.Hub }

func (l localAsks) Ask(_ context.Context, _ *events.Asks, ev events.Event) (int, error) {
	return l.hub.Publish([]events.Event{ev}, nil), nil
}

func (l localAsks) Reply(_ context.Context, asks *events.Asks, user, id string, r events.AskReply) (bool, error) {
	return asks.Take(user, id, r), nil
}

// asker is what the server needs of an events.AskBroker.
type asker interface {
	Ask(ctx context.Context, asks *events.Asks, ev events.Event) (int, error)
	Reply(ctx context.Context, asks *events.Asks, user, id string, r events.AskReply) (bool, error)
}

// askMetrics count POST /api/ask and reply frames.
type askMetrics struct {
	asks         prometheus.Counter // requests sent to at least one connection
	replies      *prometheus.CounterVec
	timeouts     prometheus.Counter
	notConnected prometheus.Counter
	refused      *prometheus.CounterVec
	duration     prometheus.Histogram
}

func newAskMetrics(asks *events.Asks) (*askMetrics, []prometheus.Collector) {
	m := &askMetrics{
		asks:         prometheus.NewCounter(prometheus.CounterOpts{Name: "airlay_asks_total", Help: "POST /api/ask requests sent to at least one connection of the user."}),
		replies:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "airlay_ask_replies_total", Help: "Reply frames, by result: taken (the first reply, code 0) or refused (code 5: unknown, answered already, timed out, another user's)."}, []string{"result"}),
		timeouts:     prometheus.NewCounter(prometheus.CounterOpts{Name: "airlay_ask_timeouts_total", Help: "POST /api/ask answered 504 code 9: no reply within timeout."}),
		notConnected: prometheus.NewCounter(prometheus.CounterOpts{Name: "airlay_ask_not_connected_total", Help: "POST /api/ask answered 409 code 8: no connection of the user holds a request subscription."}),
		refused:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "airlay_ask_refused_total", Help: "POST /api/ask answered 429: a limit of open requests (max_asks_per_user, max_asks) was reached."}, []string{"limit"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "airlay_ask_duration_seconds",
			Help:    "Time from POST /api/ask to the reply taken, for answered requests.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
	}
	for _, r := range []string{"taken", "refused"} {
		m.replies.WithLabelValues(r)
	}
	for _, l := range []string{"max_asks_per_user", "max_asks"} {
		m.refused.WithLabelValues(l)
	}
	open := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "airlay_asks_open", Help: "Requests of POST /api/ask waiting for a reply on this instance."}, func() float64 { return float64(asks.Len()) })
	return m, []prometheus.Collector{m.asks, m.replies, m.timeouts, m.notConnected, m.refused, m.duration, open}
}

type askAnswer struct {
	Status  int             `json:"status"`
	Message string          `json:"message"`
	Code    int             `json:"code"`
	Reply   json.RawMessage `json:"reply"`
	Conn    string          `json:"conn"`
}

// handleAsk is POST /api/ask: a request to a user's frontend, answered
// with its first reply (200), 409 code 8 when no connection of the user
// holds a request subscription, 504 code 9 when no reply came within
// ?timeout.
func (s *Server) handleAsk(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if !s.backendPost(w, r, s.cfg.PublishToken != "") {
		return
	}
	timeout := defaultAskTimeout
	if q := r.URL.Query(); q.Has("timeout") {
		secs, err := strconv.ParseFloat(q.Get("timeout"), 64)
		if err != nil || math.IsNaN(secs) || secs <= 0 || secs > maxAskTimeout.Seconds() {
			writeError(w, http.StatusBadRequest, events.InvalidRequest.Message(), events.InvalidRequest, "timeout must be a number of seconds above 0, at most 60")
			return
		}
		timeout = time.Duration(secs * float64(time.Second))
	}
	deadline := start.Add(timeout)
	body, ok := readBody(w, r, s.cfg.MaxPublishBytes, s.cfg.BodyTimeout)
	if !ok {
		return
	}
	user, data, err := events.ParseAsk(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, events.InvalidRequest.Message(), events.InvalidRequest, detailOf(err))
		return
	}
	ask, err := s.asks.Open(user)
	if err != nil {
		limit, n := "max_asks_per_user", s.cfg.MaxAsksPerUser
		if errors.Is(err, events.ErrTooManyAsks) {
			limit, n = "max_asks", s.cfg.MaxAsks
		}
		s.askMetrics.refused.WithLabelValues(limit).Inc()
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "Too many requests", events.InvalidRequest,
			err.Error()+" ("+limit+" = "+strconv.Itoa(n)+"): retry when one is answered or timed out")
		return
	}
	ctx, cancel := context.WithDeadline(r.Context(), deadline)
	defer cancel()
	reached, err := s.asker.Ask(ctx, s.asks, events.Event{Type: events.RequestType, ID: ask.ID, User: user, Data: data})
	switch {
	case err != nil && s.asks.Close(ask):
		s.log.Error("ask failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, events.Unavailable.Message(), events.Unavailable, "the broker (MongoDB) failed: the request may or may not have reached the user")
		return
	case err == nil && reached == 0 && s.asks.Close(ask):
		s.askMetrics.notConnected.Inc()
		writeError(w, http.StatusConflict, events.NotConnected.Message(), events.NotConnected, "no connection of user "+user+" holds a request subscription")
		return
	}
	s.askMetrics.asks.Inc()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	stopping := false
	select {
	case <-ask.Done():
	case <-timer.C:
	case <-r.Context().Done():
	case <-s.stopping:
		stopping = true
	}
	if ac, ok := s.asker.(events.AskCloser); ok && !stopping {
		// A reply taken on another instance a moment ago stands.
		ectx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		if err := ac.Expire(ectx, s.asks, ask); err != nil {
			s.log.Warn("ask: could not settle a timed-out request", "err", err)
		}
		cancel()
	}
	if s.asks.Close(ask) { // not answered: forgotten now, a later reply gets code 5
		if stopping { // its connections are being closed: no reply can come here
			writeError(w, http.StatusServiceUnavailable, events.Unavailable.Message(), events.Unavailable, "the server is shutting down: no reply can come; ask again (another instance)")
			return
		}
		s.askMetrics.timeouts.Inc()
		writeError(w, http.StatusGatewayTimeout, events.NoReply.Message(), events.NoReply, "no reply within "+timeout.String())
		return
	}
	<-ask.Done() // answered (Close lost to Take, which closes done right after)
	s.askMetrics.duration.Observe(time.Since(start).Seconds())
	rep := ask.Reply()
	writeJSON(w, askAnswer{Status: http.StatusOK, Message: events.OK.Message(), Reply: rep.Data, Conn: rep.Conn})
}

// reply handles a reply frame of c's user (already checked): code 0 when
// it was taken, 5 when the id is no open request of that user.
//
//go:noinline
func (s *Server) reply(c *conn, user string, req *events.Request) events.Code {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	taken, err := s.asker.Reply(ctx, s.asks, user, req.Key.ID, events.AskReply{Data: json.RawMessage(req.Data), Conn: c.connName()})
	if err != nil {
		s.warn.Warn("reply failed", "conn", c, "err", err)
		return events.Unavailable
	}
	if !taken {
		s.askMetrics.replies.WithLabelValues("refused").Inc()
		return events.InvalidRequest
	}
	s.askMetrics.replies.WithLabelValues("taken").Inc()
	return events.OK
}
