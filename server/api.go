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
	writeError(w, status, message, code, "")
}

// writeError writes an answer with "detail": one line saying what exactly
// was wrong. A detail never holds a secret or a token; it may quote a
// field name or an event type the caller sent.
func writeError(w http.ResponseWriter, status int, message string, code events.Code, detail string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	b := events.AppendAnswer(nil, status, message, code)
	if detail != "" {
		d, _ := json.Marshal(detail)
		b = append(append(append(b[:len(b)-1], `,"detail":`...), d...), '}')
	}
	_, _ = w.Write(append(b, '\n'))
}

// detailOf is the detail of a refused request: err without the sentinel's
// words, which the message already says.
func detailOf(err error) string {
	d := strings.Replace(err.Error(), events.ErrInvalidRequest.Error()+": ", "", 1)
	d = strings.Replace(d, "json: ", "", 1)
	if len(d) > 300 {
		d = d[:300] + "..."
	}
	return d
}

// detailPath is a request path for a detail, cut to 100 bytes.
func detailPath(p string) string {
	if len(p) > 100 {
		return strconv.Quote(p[:100]) + "..."
	}
	return strconv.Quote(p)
}

// originAllowed reports whether the request may come from its Origin: no
// Origin (not a browser), the server's own origin (a page this server
// served, such as /live: same-origin, not a cross-origin request), or one
// in allowed_origins.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	return origin == "" || sameOrigin(r, origin) || s.cfg.OriginAllowed(origin)
}

// sameOrigin reports whether origin is the one the request was sent to:
// its scheme (https when the connection or the proxy's X-Forwarded-Proto
// says so) and its Host.
func sameOrigin(r *http.Request, origin string) bool {
	scheme := "http"
	if r.TLS != nil || strings.EqualFold(strings.TrimSpace(strings.Split(r.Header.Get("X-Forwarded-Proto"), ",")[0]), "https") {
		scheme = "https"
	}
	return r.Host != "" && strings.EqualFold(origin, scheme+"://"+r.Host)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// cors answers browser calls to /api/*: an allowed Origin gets CORS headers
// and its preflight answered; another Origin gets 403. A request without
// Origin (not from a browser) or from the server's own origin passes.
func (s *Server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		if !s.originAllowed(r) {
			writeError(w, http.StatusForbidden, "Origin not allowed", events.InvalidRequest,
				"origin "+strconv.Quote(origin)+" is not in allowed_origins")
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
		writeError(w, http.StatusNotFound, "Not found", events.InvalidRequest, "publish_token is empty in the server's configuration: this endpoint is off")
		return false
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, "Method not allowed", events.InvalidRequest, r.Method+" is not allowed here: use POST")
		return false
	}
	return s.checkBearer(w, r)
}

// checkBearer answers 401 unless the request carries the publish token.
func (s *Server) checkBearer(w http.ResponseWriter, r *http.Request) bool {
	return checkSecret(w, r, s.cfg.PublishToken, "publish_token")
}

// checkSecret answers 401 (code 1 without a bearer token, 2 with another
// one, with a detail that says which) unless the request carries
// "Authorization: Bearer <secret>"; name is the secret's key.
func checkSecret(w http.ResponseWriter, r *http.Request, secret, name string) bool {
	h := r.Header.Get("Authorization")
	scheme, token, _ := strings.Cut(h, " ")
	token = strings.TrimSpace(token)
	switch {
	case h == "":
		writeError(w, http.StatusUnauthorized, events.TokenNotSet.Message(), events.TokenNotSet, "no Authorization header: send Authorization: Bearer <"+name+">")
		return false
	case !strings.EqualFold(scheme, "Bearer") || token == "":
		writeError(w, http.StatusUnauthorized, events.TokenNotSet.Message(), events.TokenNotSet, "the Authorization header is not of the form Bearer <"+name+">")
		return false
	case subtle.ConstantTimeCompare([]byte(token), []byte(secret)) != 1:
		writeError(w, http.StatusUnauthorized, events.InvalidToken.Message(), events.InvalidToken, "the bearer token is not this server's "+name)
		return false
	}
	return true
}

// readBody reads a publish body: at most limit (max_publish_bytes) bytes
// within timeout (body_timeout); past the limit the answer is 413, past the
// time 408.
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
			writeError(w, http.StatusRequestEntityTooLarge, "Request too large", events.InvalidRequest,
				"the body is over max_publish_bytes ("+strconv.FormatInt(limit, 10)+" bytes)")
		case errors.As(err, &ne) && ne.Timeout():
			writeError(w, http.StatusRequestTimeout, "Request timeout", events.InvalidRequest,
				"the body did not arrive within body_timeout ("+timeout.String()+")")
		default:
			writeError(w, http.StatusBadRequest, events.InvalidRequest.Message(), events.InvalidRequest, "the body could not be read: "+err.Error())
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
			writeError(w, http.StatusBadRequest, events.InvalidRequest.Message(), events.InvalidRequest, "wait must be a number of seconds from 0 to 60")
			return
		}
		wait = time.Duration(secs * float64(time.Second))
	}
	key, keySet := "", len(r.Header.Values("Idempotency-Key")) > 0
	if keySet {
		key = r.Header.Get("Idempotency-Key")
		if len(r.Header.Values("Idempotency-Key")) > 1 || !events.ValidIdempotencyKey(key) {
			writeError(w, http.StatusBadRequest, events.InvalidRequest.Message(), events.InvalidRequest,
				"Idempotency-Key must be given once, 1 to 128 printable ASCII characters")
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
		writeError(w, http.StatusBadRequest, events.InvalidRequest.Message(), events.InvalidRequest, detailOf(err))
		return
	}
	var tr *events.Tracker
	if waitSet {
		tr = events.NewTracker()
		tr.SetWait(wait) // a ClusterBroker's other instances report within it
	}
	dup, err := s.publish(r.Context(), key, evs, tr)
	if err != nil {
		s.log.Error("publish failed", "err", err, "events", len(evs), "idempotency_key", keySet)
		writeError(w, http.StatusServiceUnavailable, events.Unavailable.Message(), events.Unavailable,
			"the broker (MongoDB) failed: the events may or may not have been published; retry with the same Idempotency-Key to publish them exactly once")
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
	History struct {
		TTLSeconds int64 `json:"ttl_seconds"`
	} `json:"history"`
}

// handleConfig is GET /api/config: discovery, no secrets.
func (s *Server) handleConfig(w http.ResponseWriter, r *http.Request) {
	a := configAnswer{Version: Version, WebSocket: "/ws", PublishEnabled: s.cfg.PublishToken != "", FilesEnabled: s.files != nil}
	for _, t := range events.WireTypes {
		a.EventTypes = append(a.EventTypes, t.String())
	}
	a.Limits.MaxSubscriptions = s.cfg.MaxSubscriptions
	a.Limits.MaxMessageBytes = s.cfg.MaxMessageBytes
	a.History.TTLSeconds = int64(s.hub.History().TTL() / time.Second)
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
		if checkSecret(w, r, s.cfg.MetricsToken, "metrics_token") {
			next.ServeHTTP(w, r)
		}
	})
}
