package server

import (
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/airlay/airlay/auth"
	"github.com/airlay/airlay/events"
	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

// conn is the server's state of one WebSocket connection. It implements
// events.Subscriber.
type conn struct {
	srv    *Server
	sess   *melody.Session
	id     uint64
	opened time.Time

	// handling is held while the reader answers a request, so that a close
	// decided meanwhile (expiry) goes after that answer.
	handling sync.Mutex
	failures int // code-2 answers in a row; the reader's alone

	mu      sync.Mutex
	user    string // the user this connection belongs to; "" until the first valid token
	name    string
	expires time.Time // latest exp among the valid tokens presented
	// timer fires at auth_timeout after the open while no valid token came
	// (4002), then at expires (4001).
	timer *time.Timer
	subs  map[events.Key]struct{}
	gone  bool // disconnected

	logUser atomic.Pointer[string] // user for log lines, readable without mu

	queue sendQueue
	// roomAt is the queue length an answer waits to drop below (0: no one
	// waits); room wakes it.
	roomAt atomic.Int32
	room   chan struct{}

	closing     atomic.Bool // a close was started by the server
	closeReason atomic.Pointer[string]
	closeItem   atomic.Pointer[events.Delivery] // the close frame queued by closeAfterQueue
}

var _ events.Subscriber = (*conn)(nil)

// LogValue describes the connection in log lines; never the token.
func (c *conn) LogValue() slog.Value {
	user := ""
	if p := c.logUser.Load(); p != nil {
		user = *p
	}
	return slog.GroupValue(slog.Uint64("id", c.id), slog.String("user", user), slog.String("remote", c.sess.Request.RemoteAddr))
}

// name is the connection's id as the console and presence name it.
func (c *conn) connName() string { return strconv.FormatUint(c.id, 10) }

// write hands a frame to melody; the queue calls it under its lock.
func (c *conn) write(d *events.Delivery) {
	if d == c.closeItem.Load() {
		_ = c.sess.CloseWithMsg(d.Frame) // melody writes it after the frames before it, then closes
		return
	}
	_ = c.sess.Write(d.Frame)
}

// Send queues a delivery. It never blocks: a connection whose queue is full
// is closed as a slow consumer.
func (c *conn) Send(d *events.Delivery) {
	switch c.queue.push(d, c.write) {
	case pushed:
		return
	case pushFull:
		c.slowConsumer()
	}
	if d.Tracker != nil {
		d.Tracker.Dropped()
	}
}

// slowConsumer closes the connection with 4008, once.
func (c *conn) slowConsumer() {
	if c.closing.Load() {
		return
	}
	c.queue.seal() // no frame after the one refused: the client sees a close, not a gap
	c.srv.metrics.slowConsumers.Inc()
	c.srv.warn.Warn("slow consumer: send queue full, closing", "conn", c, "code", events.SlowConsumer.Code)
	c.close(events.SlowConsumer)
}

// sent is called by melody's writer after each text frame was written.
func (c *conn) sent(frame []byte) {
	d := c.queue.sent(c.write)
	if q := c.queue.length.Load(); q < c.roomAt.Load() {
		select {
		case c.room <- struct{}{}:
		default:
		}
	}
	if d == nil || d.Accepted.IsZero() {
		return // an answer
	}
	c.srv.metrics.delivered.Inc()
	c.srv.metrics.latency.Observe(time.Since(d.Accepted).Seconds())
	if d.Tracker != nil {
		d.Tracker.Delivered()
	}
}

// awaitRoom waits until fewer than limit frames are queued, at most
// timeout. Only the connection's reader calls it.
func (c *conn) awaitRoom(limit int32, timeout time.Duration) bool {
	if c.queue.length.Load() < limit {
		return true
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	defer c.roomAt.Store(0)
	for {
		c.roomAt.Store(limit)
		if c.queue.length.Load() < limit || c.closing.Load() {
			return true
		}
		select {
		case <-c.room:
		case <-timer.C:
			return c.queue.length.Load() < limit
		}
	}
}

// claim binds the connection to the token's user and extends its expiry.
// It reports false when the connection belongs to another user.
func (c *conn) claim(cl auth.Claims) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.user != "" && c.user != cl.UserID {
		return false
	}
	if c.user == "" {
		c.user, c.name = cl.UserID, cl.Name
		user := cl.UserID // a copy: &cl.UserID would move cl to the heap on every call
		c.logUser.Store(&user)
		if !c.gone {
			c.srv.users.add(user, c)
		}
	}
	if cl.ExpiresAt.After(c.expires) {
		c.expires = cl.ExpiresAt
		d := time.Until(c.expires)
		c.timer.Reset(d)
	}
	return true
}

// apply adds or removes the subscription to key.
func (c *conn) apply(key events.Key, action events.Action) {
	c.mu.Lock()
	_, held := c.subs[key]
	switch {
	case action == events.Attach && !held:
		c.subs[key] = struct{}{}
		c.mu.Unlock()
		c.srv.hub.Subscribe(key, c)
	case action == events.Detach && held:
		delete(c.subs, key)
		c.mu.Unlock()
		c.srv.hub.Unsubscribe(key, c)
	default:
		c.mu.Unlock()
	}
}

// withdraw removes the subscription to k, when held, and queues frame(pos)
// (the contract's detached message) in its place: access to it was
// revoked. It reports whether the subscription was held.
func (c *conn) withdraw(k events.Key, floor events.Pos, frame func(pos string) []byte) bool {
	c.mu.Lock()
	_, held := c.subs[k]
	if held {
		delete(c.subs, k)
	}
	c.mu.Unlock()
	if !held {
		return false
	}
	full := false
	c.srv.hub.Withdraw(k, c, floor, func(pos string) {
		full = c.queue.push(&events.Delivery{Frame: frame(pos)}, c.write) == pushFull
	})
	if full {
		c.slowConsumer()
	}
	return true
}

// owner returns the connection's user, "" when unclaimed.
func (c *conn) owner() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.user
}

// expire runs on the connection's timer: at auth_timeout while no valid
// token came (4002), at the latest exp afterwards (4001). A request the
// reader is answering meanwhile is answered first.
func (c *conn) expire() {
	c.handling.Lock()
	defer c.handling.Unlock()
	c.mu.Lock()
	user, left, gone := c.user, time.Until(c.expires), c.gone
	if user != "" && left > 0 && !gone { // extended after the timer fired
		c.timer.Reset(left)
	}
	c.mu.Unlock()
	switch {
	case gone, user != "" && left > 0:
	case user == "":
		c.closeAfterQueue(events.AuthTimeout)
	default:
		c.closeAfterQueue(events.TokenExpired)
	}
}

// close starts closing the connection with a close frame at once, ahead of
// anything queued (shutdown, a slow consumer, a broken frame). It never
// blocks: the frame is written with a short deadline from its own
// goroutine, since the writer may be stuck behind a slow peer; the socket
// then closes (a lingering close, see batchConn.Close).
func (c *conn) close(d events.Disconnect) {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	c.closeReason.Store(&d.Reason)
	ws := c.sess.WebsocketConnection()
	go func() {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(d.Code, d.Reason), time.Now().Add(time.Second))
		_ = ws.Close()
	}()
}

// closeAfterQueue closes the connection with a close frame that goes after
// every frame already queued (answers and events), so that the answer to
// the request that caused it arrives first. A peer that does not read lets
// the writes time out at write_timeout, which ends the connection all the
// same. Not inlined: its frame would grow the reader's stack (see
// countTokenFailure, on every request's path).
//
//go:noinline
func (c *conn) closeAfterQueue(d events.Disconnect) {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	c.closeReason.Store(&d.Reason)
	item := &events.Delivery{Frame: websocket.FormatCloseMessage(d.Code, d.Reason)}
	c.closeItem.Store(item)
	if !c.queue.pushLast(item, c.write) {
		_ = c.sess.WebsocketConnection().Close() // already going away
	}
}

// alive extends the read deadline: the client sent a frame.
//
//go:noinline
func (c *conn) alive() {
	_ = c.sess.WebsocketConnection().SetReadDeadline(time.Now().Add(c.srv.cfg.PongTimeout))
}

// setReason records why the connection went away, unless the server already
// decided.
func (c *conn) setReason(reason string) {
	c.closeReason.CompareAndSwap(nil, &reason)
}

// disconnected removes every subscription and settles what was queued.
func (c *conn) disconnected() (subs int) {
	c.mu.Lock()
	c.gone = true
	if c.timer != nil {
		c.timer.Stop()
	}
	keys := c.subs
	c.subs = nil
	user := c.user
	c.mu.Unlock()
	if user != "" {
		c.srv.users.remove(user, c)
	}
	for k := range keys {
		c.srv.hub.Unsubscribe(k, c)
	}
	for _, d := range c.queue.close() {
		if d.Tracker != nil {
			d.Tracker.Dropped()
		}
	}
	return len(keys)
}
