// Package client is the Go client of the airlay event server's /ws protocol.
//
// It connects with a timeout, attaches and detaches subscriptions and returns
// the server's answer to each, delivers events to a handler or a channel,
// asks a TokenProvider for a token whenever it needs one (refreshing it
// before it expires), and reconnects after a drop with exponential backoff
// and full jitter, re-attaching every subscription it holds.
//
//	c, err := client.Dial(ctx, client.Options{
//		URL:     "ws://localhost:8081/ws",
//		Token:   func(ctx context.Context) (string, error) { return login(ctx) },
//		OnEvent: func(e client.Event) { log.Printf("%s %s %s", e.Type, e.ID, e.Data) },
//	})
//	...
//	a, err := c.Attach(ctx, client.Sub{Type: "issueUpdate", ID: "610217e481f6fc54736209e0"})
//	// a.Code == 0: attached; otherwise a.Message says why not
//	...
//	c.Close()
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/airlay/airlay/events"
)

// Connection states reported to Options.OnState.
const (
	StateOpen  = "open"  // connected, and every subscription re-attached
	StateClose = "close" // a connection ended (Reason says how)
	StateFail  = "fail"  // a connection attempt failed
)

// Close reasons.
const (
	ReasonNormal = "normal" // the client's own Close
	ReasonDrop   = "drop"   // the server or the network ended it
)

// Close codes of the server beside the standard ones.
const (
	CloseTokenExpired = 4001
	CloseSlowConsumer = 4008
)

// Defaults of Options.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultKeepAlive      = 30 * time.Second
)

const (
	writeWait = 10 * time.Second // longest one frame may take to write
	closeWait = time.Second      // how long Close waits for the server's close frame
)

// State is a change of the connection's state.
type State struct {
	State  string // StateOpen, StateClose or StateFail
	Reason string // StateClose: ReasonNormal or ReasonDrop
	Code   int    // StateClose: the close code the server sent (1001 shutdown, 4001 token expired, ...); 0 when none came
	Text   string // StateClose: the server's close reason
	Err    error  // StateFail: why; StateClose with ReasonDrop: the read error
	// Retry is the wait before the next connection attempt (StateFail,
	// StateClose with ReasonDrop); 0 when the client does not retry.
	Retry time.Duration
}

// Sub names a subscription: an event type ("issueUpdate", "notification",
// ...) and, except for notification, the object's ObjectId.
type Sub struct {
	Type string
	ID   string
}

func (s Sub) String() string {
	if s.ID == "" {
		return s.Type
	}
	return s.Type + ":" + s.ID
}

// key is how the server tells subscriptions apart: ObjectIds in lower case,
// and one notification subscription whatever its id.
func (s Sub) key() Sub {
	if s.Type == events.Notification.String() {
		return Sub{Type: s.Type}
	}
	if id, ok := events.NormalizeID(s.ID); ok {
		s.ID = id
	}
	return s
}

// Answer is the server's answer to one request.
type Answer struct {
	Status  int         `json:"status"`
	Message string      `json:"message"`
	Code    events.Code `json:"code"`
	// Recovered is the answer of an attach with since (a re-attach after a
	// reconnect): false means events of that subscription may have been
	// missed (see Options.OnReload). Nil for other answers.
	Recovered *bool `json:"recovered,omitempty"`
}

// OK reports whether the request was done (code 0).
func (a Answer) OK() bool { return a.Code == events.OK && a.Status == http.StatusOK }

// Event is one event from the server.
type Event struct {
	Type string
	ID   string
	Data json.RawMessage // a JSON array
	Pos  string          // the event's position (the client resumes after it)
	Raw  []byte          // the frame as received
}

// Request is a question of a backend (POST /api/ask) to this user's
// frontend; the reply names its ID.
type Request struct {
	ID   string
	Data json.RawMessage // a JSON array
	Raw  []byte          // the frame as received
}

// Options configure a Client. URL is required; Token is required for
// Attach and Detach.
type Options struct {
	// URL of the server's WebSocket endpoint: ws://HOST:PORT/ws or wss://...
	// (http and https are taken as ws and wss).
	URL string
	// Token gives the access token for requests.
	Token TokenProvider
	// Header is sent with every handshake (an Origin, for example).
	Header http.Header
	// ConnectTimeout bounds one connection attempt (TCP, TLS, WebSocket
	// handshake); 0: DefaultConnectTimeout.
	ConnectTimeout time.Duration

	// OnEvent is called for each event, in order, on the connection's
	// reader: while it runs no answer or event is read, so it must not
	// wait for Attach, Detach or Close (start a goroutine for those).
	OnEvent func(Event)
	// Events, when set, receives each event after OnEvent, on the same
	// reader: a full channel holds back answers and events, and past the
	// server's send_queue gets the connection closed (4008, then a
	// reconnect).
	Events chan<- Event
	// OnState is called for each state change, one at a time. It must not
	// call Close.
	OnState func(State)
	// OnError is called when a re-attach after a reconnect or a token
	// refresh fails (a *RefusedError when the server refused it). The
	// subscription stays in the client's set and is tried again after the
	// next reconnect; Detach removes it.
	OnError func(error)

	// OnRequest answers the requests of POST /api/ask: with it set, a
	// request event (the client holds Sub{Type: "request"}: attach it) is
	// handed to OnRequest in a goroutine of its own, not to OnEvent or
	// Events, and what it returns is sent as the reply (a JSON array; nil
	// is []). An error sends no reply (the backend gets 504 at its
	// timeout). The first reply of any connection of the user wins; the
	// reply's answer (code 5 when another won or the request timed out)
	// goes to OnError as a *RefusedError. Requests are not kept by the
	// server for resuming: one sent while the client was away is lost.
	OnRequest func(ctx context.Context, r Request) (json.RawMessage, error)

	// OnReload is called, on the connection's reader, when a re-attach
	// after a reconnect answered recovered:false: events of s while the
	// client was away may be lost (history expired, another epoch after a
	// server restart), so the application should reload that object. With
	// recovered:true the missed events arrive through OnEvent and Events,
	// in order, before newer ones. The client keeps the position of the
	// last event of each subscription and re-attaches with it as since (a
	// subscription that got no event yet: the position of the latest event
	// of any subscription, which proves the same for it; none at all
	// before the first event: a plain attach);
	// after a reload it keeps that position until a newer event comes (so
	// a second drop before one asks again, and may reload again: never a
	// change missed). It must not wait for Attach, Detach or Close.
	OnReload func(s Sub)

	// NoReconnect stops the client at the first drop instead of
	// reconnecting: Done is closed and Err returns a *DropError.
	NoReconnect bool
	// BackoffMin and BackoffMax bound the wait between connection attempts
	// (see Backoff); 0: DefaultBackoffMin, DefaultBackoffMax.
	BackoffMin, BackoffMax time.Duration
	// Rand returns numbers in [0, 1) for the jitter; nil: math/rand/v2.
	Rand func() float64
	// RefreshBefore: a token is replaced this long before its exp (but not
	// before three quarters of its life), and the connection's authorisation
	// is extended by sending the new token (an idempotent attach). 0:
	// DefaultRefreshBefore; negative: never ahead of time, the client then
	// reconnects with a fresh token when the server closes with 4001.
	RefreshBefore time.Duration
	// KeepAlive: the client pings this often, and a connection that stays
	// silent (no frame, ping or pong) for 2.5 times as long is a drop. 0:
	// DefaultKeepAlive.
	KeepAlive time.Duration
	// Dialer, when set, opens connections (proxies, TLS settings).
	Dialer *websocket.Dialer
}

// Client is a connection to the server that comes back after drops. Its
// methods are safe for concurrent use.
type Client struct {
	opts    Options
	dialer  *websocket.Dialer
	tokens  *tokens
	backoff Backoff // used by the run goroutine only

	ctx       context.Context // canceled by Close
	cancel    context.CancelFunc
	closeOnce sync.Once
	done      chan struct{}
	err       error // why the client stopped; set before done is closed

	mu      sync.Mutex
	subs    map[Sub]subEntry // by key
	seq     uint64
	cur     *conn
	ready   chan struct{} // closed when cur is set
	refresh *time.Timer
	// lastPos is the position of the latest event got on any subscription:
	// the since of a subscription that got none itself (positions of one
	// server are ordered across subscriptions, so nothing of it after
	// lastPos was missed while it was held).
	lastPos string

	cbMu sync.Mutex // OnState and OnError run one at a time
}

type subEntry struct {
	sub Sub // as attached (the id sent again on re-attach)
	seq uint64
	pos string // the position of the last event got; "" before the first
}

// Dial connects to the server and returns a client that stays connected
// until Close. ctx bounds the first connection attempt (as does
// ConnectTimeout); a failed first attempt is returned, not retried.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	u, err := url.Parse(opts.URL)
	if err != nil || opts.URL == "" {
		return nil, fmt.Errorf("client: bad URL %q", opts.URL)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return nil, fmt.Errorf("client: URL %q: scheme must be ws or wss", opts.URL)
	}
	opts.URL = u.String()
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = DefaultKeepAlive
	}
	if opts.RefreshBefore == 0 {
		opts.RefreshBefore = DefaultRefreshBefore
	}
	c := &Client{
		opts:    opts,
		tokens:  &tokens{provider: opts.Token, before: opts.RefreshBefore, now: time.Now},
		backoff: Backoff{Min: opts.BackoffMin, Max: opts.BackoffMax, Rand: opts.Rand},
		done:    make(chan struct{}),
		subs:    make(map[Sub]subEntry),
		ready:   make(chan struct{}),
	}
	c.dialer = opts.Dialer
	if c.dialer == nil {
		c.dialer = &websocket.Dialer{Proxy: http.ProxyFromEnvironment}
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	cn, err := c.connect(ctx)
	if err != nil {
		c.cancel()
		c.report(State{State: StateFail, Err: err})
		return nil, err
	}
	c.attachConn(cn)
	go c.run(cn)
	<-cn.resubDone // "open" is reported before Dial returns
	return c, nil
}

// Attach subscribes to s and returns the server's answer. Code 0 adds s to
// the client's set, which is re-attached after every reconnect. While the
// client is between connections, Attach waits for the next one (bounded by
// ctx); a connection lost before the answer came is retried on the next one.
// The error is nil whenever the server answered, whatever the code.
func (c *Client) Attach(ctx context.Context, s Sub) (Answer, error) {
	return c.do(ctx, "attach", s)
}

// Detach unsubscribes from s and returns the server's answer; code 0 removes
// s from the client's set. It waits and retries like Attach.
func (c *Client) Detach(ctx context.Context, s Sub) (Answer, error) {
	return c.do(ctx, "detach", s)
}

// Request sends one raw request frame and returns its answer. A JSON object
// without an "auth" member gets the client's token. An attach or detach
// answered 0 updates the client's set as Attach and Detach do.
func (c *Client) Request(ctx context.Context, frame []byte) (Answer, error) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(frame, &obj) != nil || obj == nil {
		return c.roundTrip(ctx, func(string) []byte { return frame }, false, nil)
	}
	var req struct {
		Action string `json:"action"`
		Event  struct {
			Type string `json:"type"`
			ID   string `json:"id"`
		} `json:"event"`
	}
	_ = json.Unmarshal(frame, &req)
	var settle func(Answer)
	if (req.Action == "attach" || req.Action == "detach") && req.Event.Type != "" {
		s := Sub{Type: req.Event.Type, ID: req.Event.ID}
		settle = func(a Answer) { c.settle(req.Action, s, a) }
	}
	if _, has := obj["auth"]; has {
		return c.roundTrip(ctx, func(string) []byte { return frame }, false, settle)
	}
	return c.roundTrip(ctx, func(tok string) []byte {
		obj["auth"], _ = json.Marshal(tok)
		b, _ := json.Marshal(obj)
		return b
	}, true, settle)
}

// Reply sends data (a JSON array; nil is []) as the reply to the request
// id and returns the server's answer: code 0 when it was taken, 5 when the
// id is not an open request of this user (another reply won, it timed out,
// or it is unknown). It waits and retries like Attach.
func (c *Client) Reply(ctx context.Context, id string, data json.RawMessage) (Answer, error) {
	if len(data) == 0 {
		data = json.RawMessage("[]")
	}
	return c.roundTrip(ctx, func(tok string) []byte {
		type ref struct {
			Type string `json:"type"`
			ID   string `json:"id"`
		}
		b, _ := json.Marshal(struct {
			Auth   string          `json:"auth"`
			Action string          `json:"action"`
			Event  ref             `json:"event"`
			Data   json.RawMessage `json:"data"`
		}{tok, "reply", ref{"request", id}, data})
		return b
	}, true, func(a Answer) {
		if a.Code == events.TokenNotSet || a.Code == events.InvalidToken {
			c.tokens.invalidate()
		}
	})
}

// answerRequest runs OnRequest for r and sends its reply.
func (c *Client) answerRequest(r Request) {
	data, err := c.opts.OnRequest(c.ctx, r)
	if err != nil || c.ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, time.Minute)
	defer cancel()
	a, err := c.Reply(ctx, r.ID, data)
	if err == nil && !a.OK() {
		c.reportErr(&RefusedError{Action: "reply", Sub: Sub{Type: "request", ID: r.ID}, Answer: a})
	}
}

// Subs returns the subscriptions the client holds, in the order they were
// attached.
func (c *Client) Subs() []Sub {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snapshot()
}

// Close closes the connection with 1000 (reported as a close with
// ReasonNormal), stops reconnecting and waits for the client to stop.
// Pending Attach and Detach calls return ErrClosed.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()
		c.mu.Lock()
		cn := c.cur
		if c.refresh != nil {
			c.refresh.Stop()
		}
		c.mu.Unlock()
		if cn != nil {
			cn.closeNormal()
		}
	})
	<-c.done
	return nil
}

// Done is closed when the client has stopped: after Close, or after a drop
// with NoReconnect.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the client stopped: nil after Close, a *DropError after a
// drop with NoReconnect. It is nil while the client runs.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

func (c *Client) do(ctx context.Context, action string, s Sub) (Answer, error) {
	if action == "attach" || action == "detach" {
		if s.Type == "" {
			return Answer{}, errors.New("client: Sub.Type is empty")
		}
	}
	return c.roundTrip(ctx, func(tok string) []byte { return requestFrame(tok, action, s) }, true,
		func(a Answer) { c.settle(action, s, a) })
}

// roundTrip sends a request on the current connection (waiting for one) and
// waits for its answer; a connection lost first means sending it again on
// the next one. build makes the frame from the token (needToken).
func (c *Client) roundTrip(ctx context.Context, build func(tok string) []byte, needToken bool, settle func(Answer)) (Answer, error) {
	for {
		cn, err := c.waitConn(ctx)
		if err != nil {
			return Answer{}, err
		}
		tok := ""
		if needToken {
			t, fresh, err := c.tokens.get(ctx)
			if err != nil {
				return Answer{}, fmt.Errorf("token: %w", err)
			}
			if fresh {
				c.armRefresh()
			}
			tok = t
		}
		w := newWaiter(settle)
		cn.send(build(tok), w)
		select {
		case r := <-w.done:
			if r.err != nil {
				continue // lost: send again on the next connection
			}
			return r.a, nil
		case <-ctx.Done():
			return Answer{}, ctx.Err() // the answer, when it comes, still settles the set
		}
	}
}

// settle updates the set with an answer; it runs on the reader, so the set
// changes in the order the server handled the requests, before the next
// connection takes its snapshot.
func (c *Client) settle(action string, s Sub, a Answer) {
	if a.Code == events.TokenNotSet || a.Code == events.InvalidToken {
		c.tokens.invalidate()
	}
	if !a.OK() {
		return
	}
	k := s.key()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch action {
	case "attach":
		if _, held := c.subs[k]; !held {
			c.seq++
			c.subs[k] = subEntry{sub: s, seq: c.seq}
		}
	case "detach":
		delete(c.subs, k)
	}
}

// snapshot returns the set in attach order; c.mu held.
func (c *Client) snapshot() []Sub {
	list := make([]subEntry, 0, len(c.subs))
	for _, e := range c.subs {
		list = append(list, e)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].seq < list[j].seq })
	out := make([]Sub, len(list))
	for i, e := range list {
		out[i] = e.sub
	}
	return out
}

// waitConn returns the current connection, waiting for one.
func (c *Client) waitConn(ctx context.Context) (*conn, error) {
	for {
		if c.ctx.Err() != nil {
			return nil, ErrClosed
		}
		c.mu.Lock()
		cn, ready := c.cur, c.ready
		c.mu.Unlock()
		if cn != nil {
			return cn, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.done:
			return nil, ErrClosed
		}
	}
}

func requestFrame(tok, action string, s Sub) []byte { return resumeFrame(tok, action, s, "") }

// resumeFrame is a request with since (omitted when empty).
func resumeFrame(tok, action string, s Sub, since string) []byte {
	type ev struct {
		Type string `json:"type"`
		ID   string `json:"id,omitempty"`
	}
	b, _ := json.Marshal(struct {
		Auth   string `json:"auth"`
		Action string `json:"action"`
		Event  ev     `json:"event"`
		Since  string `json:"since,omitempty"`
	}{tok, action, ev{s.Type, s.ID}, since})
	return b
}

// posOf returns the position of the last event got for s.
func (c *Client) posOf(s Sub) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.subs[s.key()].pos
}

// sinceOf returns what a re-attach of s sends as since: the position of
// its last event, else that of the latest event of any subscription.
func (c *Client) sinceOf(s Sub) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.Type == "request" {
		return "" // nothing to resume: requests are kept in no history
	}
	if p := c.subs[s.key()].pos; p != "" {
		return p
	}
	return c.lastPos
}

// Pos returns the position of the last event got for s ("" before the
// first, or when s is not held): what a re-attach sends as since.
func (c *Client) Pos(s Sub) string { return c.posOf(s) }

// advance records pos as the last position of the subscription of an
// event (on the reader).
func (c *Client) advance(typ, id, pos string) {
	if pos == "" {
		return
	}
	k := Sub{Type: typ, ID: id}.key()
	c.mu.Lock()
	c.lastPos = pos
	if e, ok := c.subs[k]; ok {
		e.pos = pos
		c.subs[k] = e
	}
	c.mu.Unlock()
}

// --- the connection's life ----------------------------------------------

// run reads the current connection until it ends, then reconnects with
// backoff until it is closed.
func (c *Client) run(cn *conn) {
	defer close(c.done)
	for {
		rerr := c.serve(cn)
		c.detachConn(cn)
		code, text := closeInfo(rerr)
		if c.ctx.Err() != nil {
			c.report(State{State: StateClose, Reason: ReasonNormal, Code: code, Text: text})
			return
		}
		if cn.usable.Load() {
			c.backoff.Reset()
		}
		if code == CloseTokenExpired {
			c.tokens.invalidate()
		}
		var d time.Duration
		if !c.opts.NoReconnect {
			d = c.backoff.Next()
		}
		if ferr := cn.failed(); ferr != nil {
			c.report(State{State: StateFail, Err: ferr, Retry: d})
		} else {
			c.report(State{State: StateClose, Reason: ReasonDrop, Code: code, Text: text, Err: rerr, Retry: d})
		}
		if c.opts.NoReconnect {
			c.err = &DropError{Code: code, Text: text, Err: rerr}
			if ferr := cn.failed(); ferr != nil {
				c.err = ferr
			}
			return
		}
		for {
			if !c.sleep(d) {
				c.report(State{State: StateClose, Reason: ReasonNormal})
				return
			}
			var err error
			cn, err = c.connect(c.ctx)
			if err == nil {
				break
			}
			if c.ctx.Err() != nil {
				c.report(State{State: StateClose, Reason: ReasonNormal})
				return
			}
			d = c.backoff.Next()
			c.report(State{State: StateFail, Err: err, Retry: d})
		}
		c.attachConn(cn)
	}
}

func (c *Client) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// ConnectError is a failed connection attempt.
type ConnectError struct {
	URL     string
	Status  int    // HTTP status of a refused handshake; 0 when none came
	Message string // the server's message for a refused handshake
	Err     error
}

func (e *ConnectError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("connect %s: HTTP %d: %s", e.URL, e.Status, e.Message)
	}
	return fmt.Sprintf("connect %s: %v", e.URL, e.Err)
}

func (e *ConnectError) Unwrap() error { return e.Err }

func (c *Client) connect(ctx context.Context) (*conn, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout)
	defer cancel()
	ws, resp, err := c.dialer.DialContext(ctx, c.opts.URL, c.opts.Header)
	if err != nil {
		ce := &ConnectError{URL: c.opts.URL, Err: err}
		if resp != nil {
			ce.Status = resp.StatusCode
			ce.Message = handshakeMessage(resp)
		} else if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			ce.Err = fmt.Errorf("timed out after %v (connect timeout %v): %w", time.Since(start).Round(time.Millisecond), c.opts.ConnectTimeout, err)
		}
		return nil, ce
	}
	return &conn{ws: ws, gone: make(chan struct{}), resubDone: make(chan struct{})}, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// handshakeMessage returns the message of a refused handshake: the
// "message" of a JSON answer, else the body's first line, else the status.
func handshakeMessage(resp *http.Response) string {
	defer resp.Body.Close()
	buf := make([]byte, 1024)
	n, _ := io.ReadFull(resp.Body, buf)
	body := buf[:n]
	var a struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &a) == nil && a.Message != "" {
		return a.Message
	}
	s := string(body)
	for i, r := range s {
		if r == '\n' || r == '\r' {
			s = s[:i]
			break
		}
	}
	if s == "" {
		s = http.StatusText(resp.StatusCode)
	}
	return s
}

// attachConn makes cn the current connection and re-attaches the set on it;
// "open" is reported once every answer is in.
func (c *Client) attachConn(cn *conn) {
	c.mu.Lock()
	c.cur = cn
	close(c.ready)
	subs := c.snapshot()
	c.mu.Unlock()
	if c.ctx.Err() != nil { // Close ran while this connection was made
		cn.closeNormal()
	}
	go cn.keepAlive(c.opts.KeepAlive)
	go func() {
		defer close(cn.resubDone)
		if err := c.resubscribe(cn, subs); err != nil {
			if !errors.Is(err, errLost) {
				cn.fail(err)
			}
			return
		}
		cn.usable.Store(true)
		c.report(State{State: StateOpen})
		c.armRefresh()
	}()
}

// resubscribe attaches subs on cn, pipelined, and waits for the answers. A
// refusal is reported and does not fail the connection.
func (c *Client) resubscribe(cn *conn, subs []Sub) error {
	if len(subs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.ConnectTimeout)
	tok, fresh, err := c.tokens.get(ctx)
	cancel()
	if err != nil {
		return fmt.Errorf("re-attach: token: %w", err)
	}
	if fresh {
		c.armRefresh()
	}
	waiters := make([]*waiter, len(subs))
	for i, s := range subs {
		// The answer is judged on the reader, before the replayed events
		// that follow it.
		waiters[i] = newWaiter(func(a Answer) {
			if a.OK() && a.Recovered != nil && !*a.Recovered && c.opts.OnReload != nil {
				c.opts.OnReload(s)
			}
		})
		cn.send(resumeFrame(tok, "attach", s, c.sinceOf(s)), waiters[i])
	}
	for i, w := range waiters {
		r := <-w.done
		if r.err != nil {
			return r.err
		}
		if !r.a.OK() {
			if r.a.Code == events.TokenNotSet || r.a.Code == events.InvalidToken {
				c.tokens.invalidate()
			}
			c.reportErr(&RefusedError{Action: "attach", Sub: subs[i], Answer: r.a})
		}
	}
	return nil
}

// detachConn forgets cn once its reader ended and fails what waited on it.
func (c *Client) detachConn(cn *conn) {
	c.mu.Lock()
	if c.cur == cn {
		c.cur = nil
		c.ready = make(chan struct{})
	}
	c.mu.Unlock()
	_ = cn.ws.Close()
	cn.lose()
	close(cn.gone)
	<-cn.resubDone
}

// armRefresh sets the timer that replaces the token ahead of its expiry.
func (c *Client) armRefresh() {
	if c.opts.RefreshBefore < 0 || c.ctx.Err() != nil {
		return
	}
	at := c.tokens.due()
	if at.IsZero() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refresh != nil {
		c.refresh.Stop()
	}
	c.refresh = time.AfterFunc(time.Until(at), c.refreshNow)
}

// refreshNow sends a fresh token to the server with an idempotent attach of
// the oldest subscription, which extends the connection's authorisation.
// Without subscriptions there is nothing to extend: the next request asks
// for a fresh token itself.
func (c *Client) refreshNow() {
	c.mu.Lock()
	cn := c.cur
	subs := c.snapshot()
	c.mu.Unlock()
	if cn == nil || len(subs) == 0 || c.ctx.Err() != nil {
		return // a new connection re-arms
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.ConnectTimeout+writeWait)
	defer cancel()
	a, err := c.Attach(ctx, subs[0])
	switch {
	case err != nil && c.ctx.Err() == nil:
		c.reportErr(fmt.Errorf("token refresh: %w", err))
	case err == nil && !a.OK():
		c.reportErr(&RefusedError{Action: "attach", Sub: subs[0], Answer: a})
	}
}

func (c *Client) report(s State) {
	if c.opts.OnState == nil {
		return
	}
	c.cbMu.Lock()
	defer c.cbMu.Unlock()
	c.opts.OnState(s)
}

func (c *Client) reportErr(err error) {
	if c.opts.OnError == nil {
		return
	}
	c.cbMu.Lock()
	defer c.cbMu.Unlock()
	c.opts.OnError(err)
}

// serve reads cn until it ends: answers go to their waiters in order,
// events to the handler.
func (c *Client) serve(cn *conn) error {
	ws := cn.ws
	idle := c.opts.KeepAlive * 5 / 2
	alive := func() { _ = ws.SetReadDeadline(time.Now().Add(idle)) }
	alive()
	ws.SetPongHandler(func(string) error { alive(); return nil })
	ws.SetPingHandler(func(m string) error {
		alive()
		err := ws.WriteControl(websocket.PongMessage, []byte(m), time.Now().Add(writeWait))
		if err == nil || errors.Is(err, websocket.ErrCloseSent) || isTimeout(err) {
			return nil
		}
		return err
	})
	for {
		typ, msg, err := ws.ReadMessage()
		if err != nil {
			return err
		}
		alive()
		if typ == websocket.TextMessage {
			c.handleFrame(cn, msg)
		}
	}
}

func (c *Client) handleFrame(cn *conn, msg []byte) {
	var f struct {
		Status    *int            `json:"status"`
		Message   string          `json:"message"`
		Code      int             `json:"code"`
		Recovered *bool           `json:"recovered"`
		Type      string          `json:"type"`
		ID        string          `json:"id"`
		Data      json.RawMessage `json:"data"`
		Pos       string          `json:"pos"`
	}
	if json.Unmarshal(msg, &f) != nil {
		return // not a frame of the protocol
	}
	if f.Status != nil {
		a := Answer{Status: *f.Status, Message: f.Message, Code: events.Code(f.Code), Recovered: f.Recovered}
		if w := cn.pop(); w != nil {
			if w.settle != nil {
				w.settle(a)
			}
			w.done <- result{a: a}
		}
		return
	}
	if f.Type == "request" {
		// Not a position to resume after: requests are kept in no history.
		if c.opts.OnRequest != nil {
			go c.answerRequest(Request{ID: f.ID, Data: f.Data, Raw: msg})
			return
		}
	} else {
		c.advance(f.Type, f.ID, f.Pos)
	}
	ev := Event{Type: f.Type, ID: f.ID, Data: f.Data, Pos: f.Pos, Raw: msg}
	if c.opts.OnEvent != nil {
		c.opts.OnEvent(ev)
	}
	if c.opts.Events != nil {
		select {
		case c.opts.Events <- ev:
		case <-c.ctx.Done():
		}
	}
}

func closeInfo(err error) (code int, text string) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		if ce.Code == websocket.CloseNoStatusReceived || ce.Code == websocket.CloseAbnormalClosure {
			return 0, ""
		}
		return ce.Code, ce.Text
	}
	return 0, ""
}

// --- one connection -------------------------------------------------------

type conn struct {
	ws *websocket.Conn

	wmu sync.Mutex // one writer at a time; requests queue in send order

	pmu     sync.Mutex
	pending []*waiter // requests sent and not answered, in order
	dead    bool
	failErr error // set when the connection failed before it was usable

	gone      chan struct{} // closed when the reader ended
	resubDone chan struct{} // closed when the re-attach finished or gave up
	usable    atomic.Bool   // re-attached and reported open
	closing   atomic.Bool
}

type result struct {
	a   Answer
	err error
}

type waiter struct {
	done   chan result // buffered: the reader never blocks on it
	settle func(Answer)
}

func newWaiter(settle func(Answer)) *waiter {
	return &waiter{done: make(chan result, 1), settle: settle}
}

// send writes a request; its waiter gets the answer, or errLost.
func (cn *conn) send(frame []byte, w *waiter) {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	cn.pmu.Lock()
	if cn.dead {
		cn.pmu.Unlock()
		w.done <- result{err: errLost}
		return
	}
	cn.pending = append(cn.pending, w)
	cn.pmu.Unlock()
	_ = cn.ws.SetWriteDeadline(time.Now().Add(writeWait))
	if err := cn.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		_ = cn.ws.Close() // the reader ends and fails every waiter
	}
}

func (cn *conn) pop() *waiter {
	cn.pmu.Lock()
	defer cn.pmu.Unlock()
	if len(cn.pending) == 0 {
		return nil
	}
	w := cn.pending[0]
	cn.pending[0] = nil
	cn.pending = cn.pending[1:]
	return w
}

// lose fails every waiting request with errLost.
func (cn *conn) lose() {
	cn.pmu.Lock()
	cn.dead = true
	list := cn.pending
	cn.pending = nil
	cn.pmu.Unlock()
	for _, w := range list {
		w.done <- result{err: errLost}
	}
}

// fail closes a connection that could not be made usable and keeps why.
func (cn *conn) fail(err error) {
	cn.pmu.Lock()
	cn.failErr = err
	cn.pmu.Unlock()
	_ = cn.ws.Close()
}

func (cn *conn) failed() error {
	cn.pmu.Lock()
	defer cn.pmu.Unlock()
	return cn.failErr
}

// closeNormal starts the close handshake (1000) and cuts the connection if
// the server does not answer it in time.
func (cn *conn) closeNormal() {
	if !cn.closing.CompareAndSwap(false, true) {
		return
	}
	err := cn.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(closeWait))
	if err != nil {
		_ = cn.ws.Close()
		return
	}
	t := time.AfterFunc(closeWait, func() { _ = cn.ws.Close() })
	go func() { <-cn.gone; t.Stop() }()
}

func (cn *conn) keepAlive(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-cn.gone:
			return
		case <-t.C:
			err := cn.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait))
			if errors.Is(err, websocket.ErrCloseSent) {
				return // closing: the close handshake ends it
			}
			if err != nil && !isTimeout(err) {
				_ = cn.ws.Close()
				return
			}
		}
	}
}
