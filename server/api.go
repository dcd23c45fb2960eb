package server

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/airlay/airlay/events"
)

// writeAnswer writes the contract's answer {"status","message","code"}.
func writeAnswer(w http.ResponseWriter, status int, message string, code events.Code) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(events.AppendAnswer(nil, status, message, code), '\n'))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// cors answers browser calls to /api/*: an allowed Origin gets CORS headers
// and its preflight answered; another Origin gets 403. A request without
// Origin (not from a browser) passes.
func (s *Server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		if !s.cfg.OriginAllowed(origin) {
			writeAnswer(w, http.StatusForbidden, "Origin not allowed", events.InvalidRequest)
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "GET, POST")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// backendPost lets through a POST that carries the publish token to an
// endpoint that is enabled; otherwise it answers 404, 405 or 401 and
// reports false. It is the gate of the backend endpoints (/api/events,
// /api/files).
func (s *Server) backendPost(w http.ResponseWriter, r *http.Request, enabled bool) bool {
	if !enabled {
		writeAnswer(w, http.StatusNotFound, "Not found", events.InvalidRequest)
		return false
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeAnswer(w, http.StatusMethodNotAllowed, "Method not allowed", events.InvalidRequest)
		return false
	}
	return s.checkBearer(w, r)
}

// checkBearer answers 401 unless the request carries the publish token.
func (s *Server) checkBearer(w http.ResponseWriter, r *http.Request) bool {
	return checkSecret(w, r, s.cfg.PublishToken)
}

// checkSecret answers 401 (code 1 without a bearer token, 2 with another
// one) unless the request carries "Authorization: Bearer <secret>".
func checkSecret(w http.ResponseWriter, r *http.Request, secret string) bool {
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		writeAnswer(w, http.StatusUnauthorized, events.TokenNotSet.Message(), events.TokenNotSet)
		return false
	}
	if subtle.ConstantTimeCompare([]byte(token), []byte(secret)) != 1 {
		writeAnswer(w, http.StatusUnauthorized, events.InvalidToken.Message(), events.InvalidToken)
		return false
	}
	return true
}

// readBody reads at most limit bytes within timeout; past the limit the
// answer is 413, past the time 408.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, timeout time.Duration) ([]byte, bool) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(timeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		// The deadline stays: net/http reads what is left of the body
		// before it answers, and that read must not wait without end.
		w.Header().Set("Connection", "close")
		var tooBig *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &tooBig):
			writeAnswer(w, http.StatusRequestEntityTooLarge, "Request too large", events.InvalidRequest)
		case errors.As(err, &ne) && ne.Timeout():
			writeAnswer(w, http.StatusRequestTimeout, "Request timeout", events.InvalidRequest)
		default:
			writeAnswer(w, http.StatusBadRequest, events.InvalidRequest.Message(), events.InvalidRequest)
		}
		return nil, false
	}
	// A read deadline left in force would cancel the request's context
	// when it passes (net/http watches the connection after the body), and
	// with it a ?wait that is still waiting.
	_ = rc.SetReadDeadline(time.Time{})
	return body, true
}

type publishAnswer struct {
	Status    int    `json:"status"`
	Message   string `json:"message"`
	Code      int    `json:"code"`
	Delivered int64  `json:"delivered"`
	Pending   int64  `json:"pending"`
	// Duplicate: the Idempotency-Key was published before within
	// idempotency_window; nothing was published again.
	Duplicate bool `json:"duplicate,omitempty"`
}

type duplicateAnswer struct {
	Status    int    `json:"status"`
	Message   string `json:"message"`
	Code      int    `json:"code"`
	Duplicate bool   `json:"duplicate"`
}

// handlePublish is POST /api/events.
func (s *Server) handlePublish(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w}
	defer func() { s.metrics.publishRequests.WithLabelValues(strconv.Itoa(sw.status)).Inc() }()
	w = sw
	if !s.backendPost(w, r, s.cfg.PublishToken != "") {
		return
	}
	var wait time.Duration
	waitSet := r.URL.Query().Has("wait")
	if waitSet {
		secs, err := strconv.ParseFloat(r.URL.Query().Get("wait"), 64)
		if err != nil || math.IsNaN(secs) || secs < 0 || secs > 60 {
			writeAnswer(w, http.StatusBadRequest, events.InvalidRequest.Message(), events.InvalidRequest)
			return
		}
		wait = time.Duration(secs * float64(time.Second))
	}
	key, keySet := "", len(r.Header.Values("Idempotency-Key")) > 0
	if keySet {
		key = r.Header.Get("Idempotency-Key")
		if len(r.Header.Values("Idempotency-Key")) > 1 || !events.ValidIdempotencyKey(key) {
			writeAnswer(w, http.StatusBadRequest, events.InvalidRequest.Message(), events.InvalidRequest)
			return
		}
	}
	body, ok := readBody(w, r, s.cfg.MaxPublishBytes, s.cfg.BodyTimeout)
	if !ok {
		return
	}
	evs, err := events.ParsePublish(body, s.cfg.MaxPublishEvents)
	if err != nil {
		s.log.Debug("publish refused", "err", err)
		writeAnswer(w, http.StatusBadRequest, events.InvalidRequest.Message(), events.InvalidRequest)
		return
	}
	var tr *events.Tracker
	if waitSet {
		tr = events.NewTracker()
	}
	dup, err := s.publish(r.Context(), key, evs, tr)
	if err != nil {
		s.log.Error("publish failed", "err", err, "events", len(evs), "idempotency_key", keySet)
		writeAnswer(w, http.StatusServiceUnavailable, events.Unavailable.Message(), events.Unavailable)
		return
	}
	if dup {
		// Published before under this key: nothing again. The counts of
		// the first publish are not known here.
		s.metrics.duplicates.Inc()
		if waitSet {
			writeJSON(w, publishAnswer{Status: http.StatusOK, Message: events.OK.Message(), Duplicate: true})
		} else {
			writeJSON(w, duplicateAnswer{Status: http.StatusOK, Message: events.OK.Message(), Duplicate: true})
		}
		return
	}
	for i := range evs {
		s.metrics.published.WithLabelValues(evs[i].Type.String()).Inc()
	}
	if !waitSet {
		writeAnswer(w, http.StatusOK, events.OK.Message(), events.OK)
		return
	}
	timer := time.NewTimer(wait)
	select {
	case <-tr.Done():
	case <-timer.C:
	case <-r.Context().Done():
	}
	timer.Stop()
	delivered, pending := tr.Counts()
	writeJSON(w, publishAnswer{Status: http.StatusOK, Message: events.OK.Message(), Delivered: delivered, Pending: pending})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

type configAnswer struct {
	Version        string   `json:"version"`
	WebSocket      string   `json:"websocket"`
	PublishEnabled bool     `json:"publish_enabled"`
	FilesEnabled   bool     `json:"files_enabled"`
	EventTypes     []string `json:"event_types"`
	Limits         struct {
		MaxSubscriptions int   `json:"max_subscriptions"`
		MaxMessageBytes  int64 `json:"max_message_bytes"`
	} `json:"limits"`
}

// handleConfig is GET /api/config: discovery, no secrets.
func (s *Server) handleConfig(w http.ResponseWriter, r *http.Request) {
	a := configAnswer{Version: Version, WebSocket: "/ws", PublishEnabled: s.cfg.PublishToken != "", FilesEnabled: s.files != nil}
	for _, t := range events.Types {
		a.EventTypes = append(a.EventTypes, t.String())
	}
	a.Limits.MaxSubscriptions = s.cfg.MaxSubscriptions
	a.Limits.MaxMessageBytes = s.cfg.MaxMessageBytes
	writeJSON(w, a)
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeAnswer(w, http.StatusOK, events.OK.Message(), events.OK)
}

// handleReady answers 200 while the server takes traffic; 503 once it shuts
// down, and while Options.Ready reports a dependency (MongoDB) unusable. The
// log says why when the reason changes.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if s.closing.Load() {
		writeAnswer(w, http.StatusServiceUnavailable, events.Unavailable.Message(), events.Unavailable)
		return
	}
	if s.ready != nil {
		if err := s.ready(); err != nil {
			reason := err.Error()
			if old := s.notReady.Swap(&reason); old == nil || *old != reason {
				s.log.Warn("not ready", "err", reason)
			}
			writeAnswer(w, http.StatusServiceUnavailable, events.Unavailable.Message(), events.Unavailable)
			return
		}
		if old := s.notReady.Swap(nil); old != nil {
			s.log.Info("ready again")
		}
	}
	writeAnswer(w, http.StatusOK, events.OK.Message(), events.OK)
}

// metricsGate keeps /metrics behind metrics_token when one is set.
func (s *Server) metricsGate(next http.Handler) http.Handler {
	if s.cfg.MetricsToken == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if checkSecret(w, r, s.cfg.MetricsToken) {
			next.ServeHTTP(w, r)
		}
	})
}
