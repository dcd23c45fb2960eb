package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/airlay/airlay/auth"
	"github.com/airlay/airlay/events"
	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

const connKey = "c" // the one melody session key: *conn

// storeTimeout bounds one user or dataset check.
const storeTimeout = 5 * time.Second

func (s *Server) newMelody() *melody.Melody {
	m := melody.New()
	m.Config.MaxMessageSize = s.cfg.MaxMessageBytes
	m.Config.MessageBufferSize = min(windowFrames, s.cfg.SendQueue)
	m.Config.WriteWait = s.cfg.WriteTimeout
	m.Config.PingPeriod = s.cfg.PingInterval
	m.Config.PongWait = s.cfg.PongTimeout
	m.Upgrader.CheckOrigin = s.originAllowed // its own origin, or allowed_origins
	// Zero sizes make gorilla reuse the 4 KiB read and write buffers that
	// net/http allocated for the connection: they stay alive anyway (melody
	// runs the read loop inside the HTTP handler), so separate ones would
	// only add memory.
	m.Upgrader.ReadBufferSize = 0
	m.Upgrader.WriteBufferSize = 0

	m.HandleConnect(s.wsConnect)
	m.HandleDisconnect(s.wsDisconnect)
	m.HandleMessage(s.wsMessage)
	m.HandleMessageBinary(s.wsBinary)
	m.HandleSentMessage(func(sess *melody.Session, frame []byte) { connOf(sess).sent(frame) })
	m.HandleError(s.wsError)
	return m
}

func connOf(sess *melody.Session) *conn {
	// The socket knows its connection once wsConnect ran: cheaper than a
	// map lookup on every frame sent.
	if bc, ok := sess.WebsocketConnection().NetConn().(*batchConn); ok {
		if c := bc.owner.Load(); c != nil {
			return c
		}
	}
	// Keys is written only when the session is created, so reading it
	// without melody's lock is safe.
	return sess.Keys[connKey].(*conn)
}

// handleWS upgrades GET /ws. melody's read loop runs inside this call for
// the connection's whole life, so everything this frame does not need is
// in calls of its own: the goroutine keeps the stack its deepest call ever
// needed (see events.ParseRequest).
func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	// Counted before the closing check, so that Shutdown either sees this
	// upgrade and waits for it to register, or this sees the shutdown.
	s.upgrading.Add(1)
	var c *conn
	defer func() {
		if c == nil || c.sess == nil { // wsConnect (same goroutine) did not run
			s.upgrading.Add(-1)
		}
	}()
	c, keys := s.admit(w, r)
	if c == nil {
		return
	}
	defer s.connCount.Add(-1)
	if err := s.mel.HandleRequestWithKeys(w, r, keys); err != nil {
		s.upgradeFailed(r, err)
	}
}

// admit counts a new connection and makes its state, or answers 503 and
// returns nil when the server is closing or full.
//
//go:noinline
func (s *Server) admit(w http.ResponseWriter, r *http.Request) (*conn, map[string]any) {
	if s.closing.Load() {
		writeAnswer(w, http.StatusServiceUnavailable, "Service unavailable", events.Unavailable)
		return nil, nil
	}
	if n := s.connCount.Add(1); n > int64(s.cfg.MaxConnections) {
		s.connCount.Add(-1)
		s.warn.Warn("connection refused: max_connections reached", "remote", r.RemoteAddr)
		writeAnswer(w, http.StatusServiceUnavailable, "Service unavailable", events.Unavailable)
		return nil, nil
	}
	c := &conn{srv: s, id: s.connSeq.Add(1), opened: time.Now(), subs: make(map[events.Key]struct{}), room: make(chan struct{}, 1)}
	c.queue.maxFrames, c.queue.maxBytes, c.queue.window = s.cfg.SendQueue, int(s.cfg.SendQueueBytes), min(windowFrames, s.cfg.SendQueue)
	return c, map[string]any{connKey: c}
}

// upgradeFailed logs a refused upgrade; the upgrader has answered (403 for
// a refused origin, 400 for a bad handshake).
//
//go:noinline
func (s *Server) upgradeFailed(r *http.Request, err error) {
	s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
}

func (s *Server) wsConnect(sess *melody.Session) {
	c := connOf(sess)
	c.sess = sess
	if bc, ok := sess.WebsocketConnection().NetConn().(*batchConn); ok {
		bc.owner.Store(c)
	}
	c.mu.Lock()
	c.timer = time.AfterFunc(s.cfg.AuthTimeout, c.expire)
	c.mu.Unlock()
	// Any frame is a sign of life: melody extends the read deadline for a
	// pong, wsMessage for a request, this for a ping. It then answers as
	// gorilla's default handler does, but with the write deadline of every
	// other frame (write_timeout, not 1 s: see batchConn.SetWriteDeadline).
	ws := sess.WebsocketConnection()
	ws.SetPingHandler(func(data string) error {
		c.alive()
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(s.cfg.WriteTimeout))
		var ne net.Error
		if err == websocket.ErrCloseSent || errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	})
	s.connsMu.Lock()
	s.conns[c] = struct{}{}
	s.connsMu.Unlock()
	s.upgrading.Add(-1) // registered; handleWS sees c.sess set and leaves the count alone
	s.metrics.connections.Inc()
	s.metrics.connectionsTotal.Inc()
	// At debug level: formatting a log line takes more stack than the
	// reader goroutine (this one) needs otherwise, and a goroutine keeps
	// the stack it grew to for its whole life: an Info line here would
	// cost 4 KiB per idle connection. The close line (Info) carries the
	// duration.
	s.log.Debug("connection open", "conn", c)
	if s.closing.Load() { // upgraded while Shutdown collected the connections
		c.close(events.Shutdown)
	}
}

func (s *Server) wsDisconnect(sess *melody.Session) {
	c := connOf(sess)
	subs := c.disconnected()
	reason := "closed"
	if p := c.closeReason.Load(); p != nil {
		reason = *p
	}
	s.metrics.connections.Dec()
	s.metrics.closes.WithLabelValues(closeLabel(reason)).Inc()
	level := slog.LevelInfo
	if c.logUser.Load() == nil {
		// Never authenticated: anyone can open and drop such connections
		// at will, so their closes are counted (the metric) but logged
		// only at debug level.
		level = slog.LevelDebug
	}
	s.log.Log(context.Background(), level, "connection closed", "conn", c, "reason", reason, "subscriptions", subs, "duration", time.Since(c.opened).Round(time.Millisecond))
	// Last, so that Shutdown returns only once every close is accounted for.
	s.connsMu.Lock()
	delete(s.conns, c)
	if len(s.conns) == 0 && s.closing.Load() {
		s.connsDrained.Broadcast()
	}
	s.connsMu.Unlock()
}

// closeLabel maps a close reason to a bounded metric label.
func closeLabel(reason string) string {
	if reason == "client closed" {
		return reason
	}
	for _, d := range events.Disconnects {
		if d.Reason == reason {
			return reason
		}
	}
	return "error"
}

func (s *Server) wsError(sess *melody.Session, err error) {
	c := connOf(sess)
	var ce *websocket.CloseError
	switch {
	case errors.Is(err, melody.ErrMessageBufferFull):
		// The queue never hands melody more than its channel holds; should
		// it happen all the same, the frame is lost: drop the connection.
		c.slowConsumer()
	case errors.Is(err, melody.ErrWriteClosed), errors.Is(err, melody.ErrSessionClosed):
		// a write raced with the close; disconnected settles it
	case isWriteTimeout(err):
		// The peer stopped reading: its socket buffer is full and a write
		// waited write_timeout. That is a slow consumer too, though its
		// queue may not have filled (and no close frame can get through).
		if c.closing.CompareAndSwap(false, true) {
			c.closeReason.Store(&events.SlowConsumer.Reason)
			s.metrics.slowConsumers.Inc()
			s.warn.Warn("slow consumer: write timed out, dropping", "conn", c)
		}
	case errors.Is(err, websocket.ErrReadLimit):
		c.setReason(events.MessageTooBig.Reason)
	case errors.As(err, &ce):
		c.setReason("client closed")
		s.log.Debug("client close", "conn", c, "code", ce.Code)
	default:
		c.setReason(fmt.Sprintf("connection error: %v", err))
	}
}

// isWriteTimeout reports whether err is a socket write that hit its
// deadline.
// gorilla replaces a timeout's *net.OpError by an error of its own that
// keeps only the text ("write tcp ...: i/o timeout") and Timeout().
func isWriteTimeout(err error) bool {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Op == "write"
	}
	return strings.HasPrefix(err.Error(), "write ")
}

// wsMessage answers one text frame. melody calls it serially per connection,
// so answers keep the order of requests.
//
// A connection is closed with 4003 right after its max_token_failures-th
// code-2 answer in a row. Only a valid token ends a row: requests that
// present none (codes 1 and 5) neither count nor reset it, so a connection
// without a valid token costs at most max_token_failures RSA checks.
func (s *Server) wsMessage(sess *melody.Session, frame []byte) {
	c := connOf(sess)
	c.alive()
	// Nothing more than this in this frame: the reader's stack keeps the
	// size of its deepest call (see handleWS).
	c.handling.Lock()
	switch {
	case c.closing.Load():
		// a close frame is on its way; nothing may follow it
	case !utf8.Valid(frame):
		c.close(events.InvalidUTF8)
	default:
		code, answered := s.handleRequest(c, frame)
		if !answered {
			s.answer(sess, code)
		}
		s.countTokenFailure(c, code)
	}
	c.handling.Unlock()
}

// countTokenFailure keeps the row of code-2 answers and closes the
// connection with 4003 after its max_token_failures-th (behind that answer
// in the queue).
//
//go:noinline
func (s *Server) countTokenFailure(c *conn, code events.Code) {
	switch code {
	case events.InvalidToken:
		c.failures++
		if c.failures >= s.cfg.MaxTokenFailures {
			c.closeAfterQueue(events.TokenFailures)
		}
	case events.TokenNotSet, events.InvalidRequest:
	default:
		c.failures = 0
	}
}

// wsBinary answers a binary frame: code 5.
func (s *Server) wsBinary(sess *melody.Session, _ []byte) {
	c := connOf(sess)
	c.alive()
	c.handling.Lock()
	defer c.handling.Unlock()
	if !c.closing.Load() {
		s.answer(sess, events.InvalidRequest)
	}
}

func (s *Server) answer(sess *melody.Session, code events.Code) {
	c := connOf(sess)
	if !s.awaitAnswerRoom(c) {
		return
	}
	s.metrics.requests[code].Inc()
	s.pushAnswer(c, answerDeliveries[code])
}

// awaitAnswerRoom holds the reader until the send queue has room for an
// answer. A client that sends requests faster than it reads the answers
// waits here (its own reader goroutine), keeping half of the send queue
// free for events; only if the queue does not drain within write_timeout
// is it a slow consumer (then it reports false).
func (s *Server) awaitAnswerRoom(c *conn) bool {
	if !c.awaitRoom(int32(max(1, s.cfg.SendQueue/2)), s.cfg.WriteTimeout) {
		c.slowConsumer()
		return false
	}
	return true
}

// pushAnswer queues an answer frame; it never blocks.
func (s *Server) pushAnswer(c *conn, d *events.Delivery) {
	if c.queue.push(d, c.write) == pushFull {
		c.slowConsumer()
	}
}

// resume answers an attach with since: the subscription, the answer with
// "recovered" and the replay go in one step of the hub (see Hub.Resume),
// so that the answer comes first, then the replayed events, then live ones.
func (s *Server) resume(c *conn, key events.Key, since string) {
	if !s.awaitAnswerRoom(c) {
		return
	}
	s.metrics.requests[events.OK].Inc()
	c.mu.Lock()
	_, held := c.subs[key]
	if !held {
		c.subs[key] = struct{}{}
	}
	c.mu.Unlock()
	if held {
		s.metrics.resumes.WithLabelValues("held").Inc()
		s.pushAnswer(c, recoveredAnswers[1])
		return
	}
	s.hub.Resume(key, c, since, s.cfg.MaxReplay, func(added, recovered bool) {
		switch {
		case !added:
			s.metrics.resumes.WithLabelValues("held").Inc()
		case recovered:
			s.metrics.resumes.WithLabelValues("recovered").Inc()
		default:
			s.metrics.resumes.WithLabelValues("not_recovered").Inc()
		}
		if recovered {
			s.pushAnswer(c, recoveredAnswers[1])
		} else {
			s.pushAnswer(c, recoveredAnswers[0])
		}
	})
}

// handleRequest runs the checks in the contract's order: shape (5), token
// (1, 2), user (3), limit (6), access (4). A failed check changes nothing.
// answered reports that the answer was queued already (an attach with
// since, whose answer goes with its replay).
func (s *Server) handleRequest(c *conn, frame []byte) (_ events.Code, answered bool) {
	// Every step that needs a large frame (logging, contexts, the store)
	// is a call of its own: this runs on every connection's reader, whose
	// stack keeps the size of its deepest call (see events.ParseRequest).
	req, err := events.ParseRequest(frame)
	if err != nil {
		return events.InvalidRequest, false
	}
	claims, err := s.verifier.Verify(req.Token)
	if err != nil {
		return s.tokenRefused(c, err), false
	}
	if owner := c.owner(); owner != "" && owner != claims.UserID {
		return events.InvalidToken, false
	}
	if req.Action == events.Reply {
		return s.handleReply(c, &claims, &req), false
	}
	key := req.Key
	if key.Type.PerUser() {
		key.ID = claims.UserID
	}
	if code := s.checkStore(c, claims.UserID, key, req.Action == events.Attach); code != events.OK {
		return code, false
	}
	if !c.claim(claims) {
		return events.InvalidToken, false // another user claimed it meanwhile
	}
	if req.HasSince && key.Type == events.RequestType {
		s.resumeRequests(c, key)
		return events.OK, true
	}
	if req.HasSince {
		s.resume(c, key, req.Since)
		return events.OK, true
	}
	c.apply(key, req.Action)
	return events.OK, false
}

// handleReply answers a reply frame: the user check (3), then the
// request (5 unless it is an open request of this user). A reply that is
// taken claims the connection as an attach does; a refused one changes
// nothing.
//
//go:noinline
func (s *Server) handleReply(c *conn, claims *auth.Claims, req *events.Request) events.Code {
	if code := s.checkStore(c, claims.UserID, req.Key, false); code != events.OK {
		return code
	}
	code := s.reply(c, claims.UserID, req)
	if code == events.OK && !c.claim(*claims) {
		return events.InvalidToken // cannot happen: the reader is serial and the owner was checked
	}
	return code
}

// resumeRequests answers an attach of request with since: requests are
// kept in no history (a stale one is of no use), so nothing is replayed:
// recovered:false, or true when the subscription was held already.
//
//go:noinline
func (s *Server) resumeRequests(c *conn, key events.Key) {
	if !s.awaitAnswerRoom(c) {
		return
	}
	s.metrics.requests[events.OK].Inc()
	c.mu.Lock()
	_, held := c.subs[key]
	c.mu.Unlock()
	c.apply(key, events.Attach)
	if held {
		s.pushAnswer(c, recoveredAnswers[1])
	} else {
		s.pushAnswer(c, recoveredAnswers[0])
	}
}

// tokenRefused answers a token that Verify refused.
//
//go:noinline
func (s *Server) tokenRefused(c *conn, err error) events.Code {
	if errors.Is(err, auth.ErrNoToken) {
		return events.TokenNotSet
	}
	s.log.Debug("invalid token", "conn", c, "err", err)
	return events.InvalidToken
}

// checkStore asks the store whether the user exists and, for an attach,
// may see the dataset; and whether the connection has room for one more
// subscription.
//
//go:noinline
func (s *Server) checkStore(c *conn, user string, key events.Key, attach bool) events.Code {
	ctx := context.Background()
	if _, open := s.store.(auth.Open); !open { // the open store needs no deadline (and its timer)
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, storeTimeout)
		defer cancel()
	}
	ok, err := s.store.UserExists(ctx, user)
	if err != nil {
		s.warn.Warn("user check failed", "conn", c, "err", err)
		return events.Unavailable
	}
	if !ok {
		return events.UserNotExists
	}
	if !attach {
		return events.OK
	}
	c.mu.Lock()
	_, held := c.subs[key]
	full := len(c.subs) >= s.cfg.MaxSubscriptions
	c.mu.Unlock()
	if !held && full {
		return events.TooManySubscription
	}
	if key.Type.NeedsDatasetAccess() {
		ok, err := s.store.CanSeeDataset(ctx, user, key.ID)
		if err != nil {
			s.warn.Warn("dataset check failed", "conn", c, "err", err)
			return events.Unavailable
		}
		if !ok {
			return events.NoDatasetAccess
		}
	}
	return events.OK
}
