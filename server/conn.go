package server

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/airlay/airlay/auth"
	"github.com/airlay/airlay/events"
	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

// Close codes the server sends besides the standard ones.
const (
	CloseTokenExpired = 4001 // the latest token presented has expired
	CloseSlowConsumer = 4008 // the send queue was full
)

// conn is the server's state of one WebSocket connection. It implements
// events.Subscriber.
type conn struct {
	srv    *Server
	sess   *melody.Session
	id     uint64
	opened time.Time

	mu      sync.Mutex
	user    string // the user this connection belongs to; "" until the first valid token
	name    string
	expires time.Time // latest exp among the valid tokens presented
	timer   *time.Timer
	subs    map[events.Key]struct{}
	// inflight holds deliveries queued to melody and not yet written, in
	// order, so that each write can be matched to its event (latency,
	// ?wait counts). Bounded by the send queue.
	inflight []*events.Delivery
	gone     bool // disconnected: nothing more is queued

	// queued counts text frames handed to melody and not yet written; the
	// batchConn holds a frame back while more wait.
	queued atomic.Int32
	// roomAt is the queue length an answer waits to drop below (0: no one
	// waits); room wakes it.
	roomAt atomic.Int32
	room   chan struct{}

	closing     atomic.Bool // a close was started by the server
	closeReason atomic.Pointer[string]
}

var _ events.Subscriber = (*conn)(nil)

// LogValue describes the connection in log lines; never the token.
func (c *conn) LogValue() slog.Value {
	c.mu.Lock()
	user := c.user
	c.mu.Unlock()
	return slog.GroupValue(slog.Uint64("id", c.id), slog.String("user", user), slog.String("remote", c.sess.Request.RemoteAddr))
}

// Send queues a delivery. It never blocks: a full queue makes melody call
// the error hook, which drops this connection as a slow consumer.
func (c *conn) Send(d *events.Delivery) {
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		if d.Tracker != nil {
			d.Tracker.Dropped()
		}
		return
	}
	c.inflight = append(c.inflight, d)
	c.mu.Unlock()
	c.queued.Add(1)
	_ = c.sess.Write(d.Frame) // a closed session is settled by disconnected
}

// sent is called by melody's writer after each text frame was written.
func (c *conn) sent(frame []byte) {
	if q := c.queued.Add(-1); q < c.roomAt.Load() {
		select {
		case c.room <- struct{}{}:
		default:
		}
	}
	c.mu.Lock()
	if len(c.inflight) == 0 || &c.inflight[0].Frame[0] != &frame[0] {
		c.mu.Unlock()
		return // a response, not an event
	}
	d := c.inflight[0]
	c.inflight[0] = nil
	c.inflight = c.inflight[1:]
	if len(c.inflight) == 0 {
		c.inflight = c.inflight[:0:0] // let the backing array go once drained
	}
	c.mu.Unlock()
	c.srv.metrics.delivered.Inc()
	c.srv.metrics.latency.Observe(time.Since(d.Accepted).Seconds())
	if d.Tracker != nil {
		d.Tracker.Delivered()
	}
}

// awaitRoom waits until fewer than limit frames are queued, at most
// timeout. Only the connection's reader calls it.
func (c *conn) awaitRoom(limit int32, timeout time.Duration) bool {
	if c.queued.Load() < limit {
		return true
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	defer c.roomAt.Store(0)
	for {
		c.roomAt.Store(limit)
		if c.queued.Load() < limit || c.closing.Load() {
			return true
		}
		select {
		case <-c.room:
		case <-timer.C:
			return c.queued.Load() < limit
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
	}
	if cl.ExpiresAt.After(c.expires) {
		c.expires = cl.ExpiresAt
		d := time.Until(c.expires)
		if c.timer == nil {
			c.timer = time.AfterFunc(d, c.expire)
		} else {
			c.timer.Reset(d)
		}
	}
	return true
}

// owner returns the connection's user, "" when unclaimed.
func (c *conn) owner() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.user
}

func (c *conn) expire() {
	c.mu.Lock()
	left := time.Until(c.expires)
	if left > 0 && !c.gone { // extended after the timer fired
		c.timer.Reset(left)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.close(CloseTokenExpired, "token expired")
}

// close starts closing the connection with a close frame. It never blocks:
// the frame is written with a short deadline from its own goroutine, since
// the writer may be stuck behind a slow peer.
func (c *conn) close(code int, reason string) {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	c.closeReason.Store(&reason)
	ws := c.sess.WebsocketConnection()
	go func() {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
		// Give a well-behaved peer a moment to answer the close, then cut.
		time.AfterFunc(500*time.Millisecond, func() { _ = ws.Close() })
	}()
}

// setReason records why the connection went away, unless the server already
// decided.
func (c *conn) setReason(reason string) {
	c.closeReason.CompareAndSwap(nil, &reason)
}

// disconnected removes every subscription and settles what was in flight.
func (c *conn) disconnected() (subs int) {
	c.mu.Lock()
	c.gone = true
	if c.timer != nil {
		c.timer.Stop()
	}
	keys := c.subs
	c.subs = nil
	pending := c.inflight
	c.inflight = nil
	c.mu.Unlock()
	for k := range keys {
		c.srv.hub.Unsubscribe(k, c)
	}
	for _, d := range pending {
		if d.Tracker != nil {
			d.Tracker.Dropped()
		}
	}
	return len(keys)
}
