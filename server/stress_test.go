package server

// The stress suite: many clients attach, detach, reconnect and get stuck at
// random while one publisher publishes numbered events, for a fixed time,
// then every (connection, event) pair is checked against what the
// connection's own requests allow. TestStress runs it in every `go test`;
// TestSoak (stress_soak_test.go) runs it for a long time and watches memory
// and goroutines.
//
// How a pair is judged. Every moment that matters is stamped with one
// process-wide counter (stressRun.clock), taken before a frame or request is
// sent and after its answer is read, so stamps order the test's own
// observations. One publish request has the window [sent, answered]; one
// attach or detach the window [sent, answered]. The server changes a
// subscription somewhere inside its request's window and accepts an event
// somewhere inside its publish window, so for connection c and event e of
// key k:
//
//   - must (exactly once): an attach of k was answered before e's publish was
//     sent, and the next detach of k was sent after e's publish was answered;
//     and c read the answer of some request sent after e's publish was
//     answered (answers and events share one queue, so that answer comes
//     after e). A connection that is closed without such a request can
//     legitimately lose what was still queued.
//   - must not: e's publish window lies outside every interval from an
//     attach being sent to the matching detach being answered (or the
//     connection being gone).
//   - otherwise undecidable: e may arrive, at most once. The run reports the
//     share of pairs that were decidable.
//
// Besides that, on every connection: events come in increasing sequence
// (one sequential publisher: acceptance order is sequence order), never
// twice, byte for byte as published, never of a key the connection did not
// attach (so never a notification of another user); every answer has the
// expected code. Slow clients (attached to the busy keys, which get large
// events, and never reading) must be closed with 4008, or cut off when the
// close frame cannot get through their full socket, each counted once by
// airlay_slow_consumer_disconnects_total, while healthy clients keep a
// bounded latency. When everything is closed, goroutines and
// subscriptions return to where they started.

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/airlay/airlay/events"
)

var (
	stressDuration = flag.Duration("stress.duration", 20*time.Second, "how long TestStress's workload runs (-short: 5s unless set)")
	stressSeed     = flag.Uint64("stress.seed", 0, "seed of the stress workload's random choices; 0: a new one, logged")
)

// stressParams shapes one stress round.
type stressParams struct {
	Seed     uint64
	Duration time.Duration
	Users    int // distinct users; each holds Clients/Users connections
	Clients  int // healthy clients, each one connection at a time
	Watchers int // healthy clients that also attach the busy keys
	Slow     int // clients that attach the busy keys and never read
	Objects  int // object keys besides the busy ones (issue, dataset, upload, download)
	Busy     int // busy keys: issues that get large events
	BusyPad  int // bytes of padding in a busy key's event
	// BusyEvery: a publish request carries an event for a busy key when this
	// long has passed since the last one. A steady rate, whatever the
	// publisher's speed (-race slows it 5x), so that once a slow client's
	// socket is full its send queue (send_queue_bytes, 4 MiB: 64 such
	// events) fills within seconds, well before write_timeout (10 s).
	BusyEvery time.Duration
	Rate      int // publish requests per second; 0: as fast as answered
}

func defaultStressParams(seed uint64, d time.Duration) stressParams {
	return stressParams{
		Seed: seed, Duration: d,
		Users: 10, Clients: 80, Watchers: 4, Slow: 3,
		Objects: 32, Busy: 2, BusyPad: 64 << 10, BusyEvery: 40 * time.Millisecond,
		Rate: 250,
	}
}

func TestStress(t *testing.T) {
	// Not parallel: it counts every goroutine of the process.
	d := *stressDuration
	if testing.Short() && !stressFlagSet("stress.duration") {
		d = 5 * time.Second
	}
	seed := *stressSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("stress: seed %d, %v (replay: go test -race -run TestStress ./server/ -stress.seed %d -stress.duration %v)", seed, d, seed, d)
	e := stressEnv(t)
	rep := stressRound(t, e, defaultStressParams(seed, d))
	rep.log(t)
}

func stressFlagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// stressEnv starts the server of a stress run: defaults, but quiet logs (the
// harness keeps them in memory, a soak would grow them).
func stressEnv(t testing.TB) *testEnv {
	return newEnv(t, func(c *Config) { c.LogLevel = slog.LevelWarn })
}

// Keys and events.

type stressKey struct {
	typ  string // wire type
	id   string // object id; for notification the recipient user
	user int    // notification: the user's index; -1 otherwise
	busy bool
}

// stressEvent is one published event. Its data is [seq,"<pad>"], the pad
// being pad bytes of one letter chosen by seq.
type stressEvent struct {
	seq int
	key int
	nid int // notification id: -1 absent, else its number
	pad int
	pub int // index of the publish request
}

type stressPub struct {
	sent, answered   int64         // clock stamps
	sentAt, answerAt time.Duration // since the run started
	first, n         int           // events seq first .. first+n-1
	wait             bool          // ?wait=10; then the counts
	delivered        int64
	pending          int64
}

func stressNID(n int) string { return fmt.Sprintf("6a000000000000%010x", n) }

func stressPadByte(seq int) byte { return 'a' + byte(seq%26) }

// frameHead appends the frame of ev up to its padding.
func (r *stressRun) frameHead(b []byte, ev *stressEvent) []byte {
	k := &r.keys[ev.key]
	b = append(b, `{"type":"`...)
	b = append(b, k.typ...)
	b = append(b, `","id":"`...)
	switch {
	case k.user < 0:
		b = append(b, k.id...)
	case ev.nid >= 0:
		b = append(b, stressNID(ev.nid)...)
	}
	b = append(b, `","data":[`...)
	b = strconv.AppendInt(b, int64(ev.seq), 10)
	return append(b, `,"`...)
}

// eventJSON is ev as the publisher sends it.
func (r *stressRun) eventJSON(b []byte, ev *stressEvent) []byte {
	k := &r.keys[ev.key]
	b = append(b, `{"type":"`...)
	b = append(b, k.typ...)
	if k.user >= 0 {
		b = append(b, `","user":"`...)
		b = append(b, k.id...)
		if ev.nid >= 0 {
			b = append(b, `","id":"`...)
			b = append(b, stressNID(ev.nid)...)
		}
	} else {
		b = append(b, `","id":"`...)
		b = append(b, k.id...)
	}
	b = append(b, `","data":[`...)
	b = strconv.AppendInt(b, int64(ev.seq), 10)
	b = append(b, `,"`...)
	b = append(b, bytes.Repeat([]byte{stressPadByte(ev.seq)}, ev.pad)...)
	return append(b, `"]}`...)
}

// The run.

type stressRun struct {
	t     testing.TB
	e     *testEnv
	p     stressParams
	start time.Time
	clock atomic.Int64
	httpc *http.Client

	keys   []stressKey
	users  []string
	tokens []string
	object []int // keys a client attaches at random
	busy   []int

	evMu sync.RWMutex
	evs  []stressEvent // evs[seq-1]
	pubs []stressPub

	connsMu sync.Mutex
	conns   []*stressConn
	dials   atomic.Int64

	failMu sync.Mutex
	fails  []string
	nfail  int

	pubDone      chan struct{} // the publisher has stopped
	slowAttached atomic.Int32
	slowBefore   float64  // airlay_slow_consumer_disconnects_total before the round
	slowEnds     []string // how each slow client ended; under failMu
	flushed      int      // events published after the deadline for the slow clients
	actions      [stressActions]atomic.Int64
}

const (
	actAttach = iota
	actDetach
	actNotify
	actImpostor
	actBarrier
	actReconnect
	actAbrupt
	actPipelined
	stressActions
)

var actNames = [stressActions]string{"attach", "detach", "notification", "impostor", "barrier", "reconnect", "abrupt close", "pipelined bursts"}

// fail records a broken invariant; the first ones are reported.
func (r *stressRun) fail(format string, args ...any) {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	r.nfail++
	if len(r.fails) < 40 {
		r.fails = append(r.fails, fmt.Sprintf(format, args...))
	}
}

func (r *stressRun) failed() bool {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	return r.nfail > 0
}

func (r *stressRun) tick() int64 { return r.clock.Add(1) }

func (r *stressRun) event(seq int) *stressEvent {
	r.evMu.RLock()
	defer r.evMu.RUnlock()
	if seq < 1 || seq > len(r.evs) {
		return nil
	}
	return &r.evs[seq-1]
}

func (r *stressRun) pubOf(ev *stressEvent) stressPub {
	r.evMu.RLock()
	defer r.evMu.RUnlock()
	return r.pubs[ev.pub]
}

func newStressRun(t testing.TB, e *testEnv, p stressParams) *stressRun {
	r := &stressRun{t: t, e: e, p: p, pubDone: make(chan struct{})}
	r.httpc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: 30 * time.Second}
	for u := range p.Users {
		id := fmt.Sprintf("5dad615eae019570fb46%04x", u)
		r.users = append(r.users, id)
		r.tokens = append(r.tokens, e.token(id, p.Duration+15*time.Minute))
	}
	add := func(k stressKey) int {
		r.keys = append(r.keys, k)
		return len(r.keys) - 1
	}
	types := []string{"issueUpdate", "issueUpdate", "datasetUpdate", "uploadFile", "downloadFile"}
	prefix := map[string]string{"issueUpdate": "6102", "datasetUpdate": "6202", "uploadFile": "6202", "downloadFile": "6302"}
	for i := range p.Objects {
		typ := types[i%len(types)]
		r.object = append(r.object, add(stressKey{typ: typ, id: fmt.Sprintf("%s17e481f6fc547362%04x", prefix[typ], i), user: -1}))
	}
	for i := range p.Busy {
		r.busy = append(r.busy, add(stressKey{typ: "issueUpdate", id: fmt.Sprintf("6102aaaa81f6fc547362%04x", i), user: -1, busy: true}))
	}
	for u := range p.Users {
		add(stressKey{typ: "notification", id: r.users[u], user: u})
	}
	return r
}

func (r *stressRun) notifKey(user int) int { return len(r.keys) - r.p.Users + user }

// Connections.

type stressTrans struct {
	on        bool
	sent, ans int64
}

type stressReq struct {
	frame string
	code  int
	sent  int64
	key   int // the transition it makes, -1: none
	trans int
}

type stressAnswer struct {
	code int
	at   int64
}

// stressConn is one WebSocket connection of a client. hist, held, lastSync
// and end belong to the client's goroutine; recv, lastSeq and readErr to
// the reader until done is closed.
type stressConn struct {
	r    *stressRun
	id   int
	user int
	slow bool
	ws   *websocket.Conn

	opened   int64
	hist     map[int][]stressTrans // per key: on, off, on, ... in request order
	held     map[int]bool
	claimed  bool
	pending  []stressReq
	lastSync int64 // sent stamp of the latest request whose answer was read
	end      int64 // stamp after the reader stopped
	endAt    time.Duration
	broken   bool        // closed by surprise: its "must" pairs are not judged
	closing  atomic.Bool // the client started closing: the reader expects the end

	answers chan stressAnswer
	done    chan struct{}
	recv    []int32 // sequence numbers, in arrival order
	lastSeq int
	readErr error
	lat     stressHist // healthy connections: publish sent to event read
	busyLat stressHist // the same, events of the busy keys
	scratch []byte
}

func (r *stressRun) dial(user int, slow bool) (*stressConn, error) {
	// A slow client has a receive buffer of the usual size. Shrinking it
	// (SetReadBuffer before the handshake) was tried: on loopback the
	// server's send buffer still autotunes to tcp_wmem's maximum (4 MiB),
	// so the backlog before the send queue fills hardly changes (3.6 MiB
	// against 3.5 MiB, measured), while reading that backlog at the end
	// trickled at about 40 KB/s through the clamped window (100 s for 118
	// events of 32 KiB). Large events on the busy keys fill the queue
	// instead.
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial(r.e.ws, nil)
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, err
	}
	c := &stressConn{
		r: r, id: int(r.dials.Add(1)), user: user, slow: slow, ws: ws,
		opened: r.tick(), hist: map[int][]stressTrans{}, held: map[int]bool{},
		answers: make(chan stressAnswer, 16), done: make(chan struct{}),
	}
	r.connsMu.Lock()
	r.conns = append(r.conns, c)
	r.connsMu.Unlock()
	return c, nil
}

func (c *stressConn) String() string {
	kind := "client"
	if c.slow {
		kind = "slow client"
	}
	return fmt.Sprintf("%s conn %d (user %d)", kind, c.id, c.user)
}

// handle takes one frame: an answer is returned, an event is checked and
// recorded.
func (c *stressConn) handle(msg []byte, at time.Time) (stressAnswer, bool) {
	r := c.r
	if bytes.HasPrefix(msg, []byte(`{"status":`)) {
		var a struct {
			Status  int    `json:"status"`
			Message string `json:"message"`
			Code    int    `json:"code"`
		}
		if err := json.Unmarshal(msg, &a); err != nil || a.Code < 0 || a.Code > 7 || a.Message != codeMessage(a.Code) || (a.Code == 0) != (a.Status == 200) || (a.Code != 0 && a.Status != 400) {
			r.fail("%v: malformed answer %.200s", c, msg)
			return stressAnswer{code: -1, at: r.tick()}, true
		}
		return stressAnswer{code: a.Code, at: r.tick()}, true
	}
	msg, pos, ok := cutPos(msg)
	if !ok {
		r.fail("%v: an event without a well-formed position: %.200s", c, msg)
		return stressAnswer{}, false
	}
	_ = pos
	i := bytes.Index(msg, []byte(`"data":[`))
	seq := 0
	if i >= 0 {
		for _, ch := range msg[i+len(`"data":[`):] {
			if ch < '0' || ch > '9' {
				break
			}
			seq = seq*10 + int(ch-'0')
		}
	}
	ev := r.event(seq)
	if ev == nil {
		r.fail("%v: a frame that is no answer nor a published event: %.200s", c, msg)
		return stressAnswer{}, false
	}
	c.scratch = r.frameHead(c.scratch[:0], ev)
	body := msg[min(len(c.scratch), len(msg)):]
	if !bytes.HasPrefix(msg, c.scratch) || len(body) != ev.pad+len(`"]}`) || !bytes.HasSuffix(body, []byte(`"]}`)) ||
		bytes.Count(body[:ev.pad], []byte{stressPadByte(seq)}) != ev.pad {
		r.fail("%v: event %d arrived altered: %.200s, want %.200s...", c, seq, msg, c.scratch)
	}
	if seq <= c.lastSeq {
		r.fail("%v: event %d after event %d (out of order or twice)", c, seq, c.lastSeq)
	} else {
		c.lastSeq = seq
	}
	c.recv = append(c.recv, int32(seq))
	if !c.slow {
		d := at.Sub(r.start) - r.pubOf(ev).sentAt
		c.lat.add(d)
		if r.keys[ev.key].busy {
			c.busyLat.add(d)
		}
	}
	return stressAnswer{}, false
}

// read runs the reader of a healthy connection until it fails or closes.
func (c *stressConn) read() {
	defer close(c.done)
	for {
		_, msg, err := c.ws.ReadMessage()
		at := time.Now()
		if err != nil {
			c.readErr = err
			if !c.closing.Load() {
				c.r.fail("%v: the server ended a healthy connection after %d events: %v", c, len(c.recv), err)
			}
			return
		}
		if a, ok := c.handle(msg, at); ok {
			c.answers <- a
		}
	}
}

// send writes a request; hold reports whether the request attaches
// (true), detaches (false) key, or none (key -1).
func (c *stressConn) send(frame string, code, key int, on bool) error {
	req := stressReq{frame: frame, code: code, key: -1}
	if key >= 0 && c.held[key] != on {
		c.held[key] = on
		req.key, req.trans = key, len(c.hist[key])
		c.hist[key] = append(c.hist[key], stressTrans{on: on})
	}
	req.sent = c.r.tick()
	if req.key >= 0 {
		c.hist[req.key][req.trans].sent = req.sent
	}
	c.pending = append(c.pending, req)
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return c.ws.WriteMessage(websocket.TextMessage, []byte(frame))
}

// await reads the answers of every pending request.
func (c *stressConn) await() error {
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	for len(c.pending) > 0 {
		req := c.pending[0]
		var a stressAnswer
		select {
		case a = <-c.answers:
		case <-c.done:
			return fmt.Errorf("connection lost awaiting an answer: %v", c.readErr)
		case <-timer.C:
			return fmt.Errorf("no answer within 20s to %.120s", req.frame)
		}
		c.settle(a)
	}
	return nil
}

// settle takes the answer of the oldest pending request.
func (c *stressConn) settle(a stressAnswer) {
	req := c.pending[0]
	c.pending = c.pending[1:]
	if a.code != req.code {
		c.r.fail("%v: answer code %d to %.150s, want %d", c, a.code, req.frame, req.code)
	}
	if req.key >= 0 {
		c.hist[req.key][req.trans].ans = a.at
	}
	c.lastSync = max(c.lastSync, req.sent)
}

// close ends the connection; graceful sends a barrier and a close frame
// and waits for the server's close, otherwise the socket just goes.
func (c *stressConn) close(graceful bool) error {
	var err error
	if graceful {
		if err = c.barrier(); err == nil {
			c.closing.Store(true)
			err = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(5*time.Second))
			if err == nil {
				select {
				case <-c.done:
				case <-time.After(10 * time.Second):
					err = errors.New("the server did not answer the close frame within 10s")
				}
			}
		}
	}
	c.closing.Store(true)
	_ = c.ws.Close()
	<-c.done
	c.end, c.endAt = c.r.tick(), time.Since(c.r.start)
	if err == nil && graceful {
		var ce *websocket.CloseError
		if !errors.As(c.readErr, &ce) || ce.Code != websocket.CloseNormalClosure {
			err = fmt.Errorf("graceful close ended with %v, want the close 1000 echoed", c.readErr)
		}
	}
	return err
}

// barrier sends a request that changes nothing and waits for its answer:
// every event accepted before it was sent has then been read.
func (c *stressConn) barrier() error {
	if err := c.send(`{"action":"sync"}`, 5, -1, false); err != nil {
		return err
	}
	return c.await()
}

// Clients.

func (r *stressRun) objectRequest(c *stressConn, rng *rand.Rand, action string, key int) string {
	k := &r.keys[key]
	if k.user >= 0 {
		id := ""
		if rng.IntN(2) == 0 {
			id = stressNID(rng.IntN(1 << 20))
		}
		return request(r.tokens[c.user], action, "notification", id)
	}
	return request(r.tokens[c.user], action, k.typ, k.id)
}

// client runs one healthy client until the deadline, then, once the
// publisher has stopped, syncs and closes.
func (r *stressRun) client(i int, deadline time.Time) {
	rng := rand.New(rand.NewPCG(r.p.Seed, uint64(i)+1))
	user := i % r.p.Users
	watcher := i < r.p.Watchers
	var c *stressConn
	connect := func(keys []int) error {
		var err error
		if c, err = r.dial(user, false); err != nil {
			return fmt.Errorf("client %d: dial: %w", i, err)
		}
		go c.read()
		for _, k := range keys {
			if err := c.send(r.objectRequest(c, rng, "attach", k), 0, k, true); err != nil {
				return err
			}
		}
		c.claimed = len(keys) > 0
		return c.await()
	}
	abort := func(err error) {
		r.fail("client %d: %v", i, err)
		if c != nil {
			c.broken = true
			c.closing.Store(true)
			_ = c.ws.Close()
			<-c.done
			c.end, c.endAt = r.tick(), time.Since(r.start)
		}
	}
	first := []int{}
	for _, k := range r.object {
		if rng.IntN(5) == 0 {
			first = append(first, k)
		}
	}
	if watcher {
		first = append(first, r.busy...)
	}
	if err := connect(first); err != nil {
		abort(err)
		return
	}
	// one action of a random kind: a request (its answer is awaited later),
	// a reconnect, or nothing
	act := func(canReconnect bool) error {
		switch n := rng.IntN(100); {
		case n < 35:
			k := r.object[rng.IntN(len(r.object))]
			r.actions[actAttach].Add(1)
			c.claimed = true
			return c.send(r.objectRequest(c, rng, "attach", k), 0, k, true)
		case n < 70:
			k := r.object[rng.IntN(len(r.object))]
			var held []int
			for _, o := range r.object {
				if c.held[o] {
					held = append(held, o)
				}
			}
			if len(held) > 0 && rng.IntN(4) > 0 {
				k = held[rng.IntN(len(held))]
			}
			r.actions[actDetach].Add(1)
			c.claimed = true
			return c.send(r.objectRequest(c, rng, "detach", k), 0, k, false)
		case n < 80:
			k := r.notifKey(user)
			action, on := "attach", true
			if c.held[k] && rng.IntN(3) > 0 {
				action, on = "detach", false
			}
			r.actions[actNotify].Add(1)
			c.claimed = true
			return c.send(r.objectRequest(c, rng, action, k), 0, k, on)
		case n < 84:
			if !c.claimed || r.p.Users < 2 {
				return nil
			}
			other := (user + 1 + rng.IntN(r.p.Users-1)) % r.p.Users
			r.actions[actImpostor].Add(1)
			return c.send(request(r.tokens[other], "attach", "notification", ""), 2, -1, false)
		case n < 88:
			r.actions[actBarrier].Add(1)
			return c.send(`{"auth":"x","action":"sync","event":{"type":"issueUpdate"}}`, 5, -1, false)
		case n < 92 && canReconnect:
			keys := []int{}
			for k, on := range c.held {
				if on {
					keys = append(keys, k)
				}
			}
			slices.Sort(keys)
			graceful := rng.IntN(3) > 0
			if graceful {
				r.actions[actReconnect].Add(1)
			} else {
				r.actions[actAbrupt].Add(1)
			}
			if err := c.close(graceful); err != nil {
				return err
			}
			return connect(keys)
		}
		return nil
	}
	for time.Now().Before(deadline) && !r.failed() {
		time.Sleep(time.Duration(10+rng.IntN(90)) * time.Millisecond)
		burst := 1
		if rng.IntN(5) == 0 {
			burst = 2 + rng.IntN(4)
			r.actions[actPipelined].Add(1)
		}
		for j := range burst {
			if err := act(j == 0 && burst == 1); err != nil {
				abort(err)
				return
			}
		}
		if err := c.await(); err != nil {
			abort(err)
			return
		}
	}
	<-r.pubDone
	if err := c.close(true); err != nil {
		c.broken = true
		r.fail("client %d: final close: %v", i, err)
	}
}

// slowClient attaches the busy keys, reads the answers, then stops reading until the publisher is done; then it must find
// the events it got in order, then a close 4008 or a cut connection.
func (r *stressRun) slowClient(i int, startIn time.Duration) {
	select {
	case <-time.After(startIn):
	case <-r.pubDone:
		if !r.failed() { // else the run ended early, which is reported
			r.fail("slow client %d: the publisher ended before it started", i)
		}
		return
	}
	user := (i * 3) % r.p.Users
	c, err := r.dial(user, true)
	if err != nil {
		r.fail("slow client %d: dial: %v", i, err)
		return
	}
	defer func() { _ = c.ws.Close() }()
	for _, k := range r.busy {
		if err := c.send(request(r.tokens[user], "attach", r.keys[k].typ, r.keys[k].id), 0, k, true); err != nil {
			r.fail("%v: %v", c, err)
			return
		}
	}
	read := func(timeout time.Duration) bool {
		_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			c.readErr = err
			return false
		}
		if a, ok := c.handle(msg, time.Now()); ok {
			if len(c.pending) == 0 {
				r.fail("%v: an answer to no request", c)
			} else {
				c.settle(a)
			}
		}
		return true
	}
	for len(c.pending) > 0 {
		if !read(10 * time.Second) {
			r.fail("%v: no answer to its attach: %v", c, c.readErr)
			return
		}
	}
	r.slowAttached.Add(1)
	<-r.pubDone
	for read(10 * time.Second) {
	}
	c.end, c.endAt = r.tick(), time.Since(r.start)
	var ce *websocket.CloseError
	outcome := "cut"
	switch {
	case errors.As(c.readErr, &ce) && ce.Code == events.SlowConsumer.Code:
		outcome = "close 4008"
	case errors.As(c.readErr, &ce) && ce.Code == websocket.CloseAbnormalClosure:
	case errors.Is(c.readErr, syscall.ECONNRESET), errors.Is(c.readErr, io.EOF):
	default:
		r.fail("%v: ended with %v, want close 4008 or a cut connection", c, c.readErr)
		return
	}
	r.failMu.Lock()
	r.slowEnds = append(r.slowEnds, fmt.Sprintf("%s after %d events", outcome, len(c.recv)))
	r.failMu.Unlock()
}

// The publisher.

func (r *stressRun) publisher(deadline time.Time) {
	defer close(r.pubDone)
	rng := rand.New(rand.NewPCG(r.p.Seed, 0))
	var body []byte
	nextNID := 0
	next := time.Now()
	var lastBusy time.Time
	for time.Now().Before(deadline) && !r.failed() {
		// At most Rate requests a second; time lost to a stall is not made
		// up with a burst.
		if r.p.Rate > 0 {
			if wait := time.Until(next); wait > 0 {
				time.Sleep(wait)
			} else {
				next = time.Now()
			}
			next = next.Add(time.Second / time.Duration(r.p.Rate))
		}
		count := 1
		if rng.IntN(10) < 3 {
			count = 2 + rng.IntN(7)
		}
		evs := make([]stressEvent, count)
		for j := range evs {
			ev := &evs[j]
			ev.nid = -1
			switch x := rng.IntN(100); {
			case x < 75:
				ev.key = r.object[rng.IntN(len(r.object))]
				ev.pad = rng.IntN(40)
			default:
				ev.key = r.notifKey(rng.IntN(r.p.Users))
				if rng.IntN(4) > 0 {
					ev.nid = nextNID
					nextNID++
				}
				ev.pad = rng.IntN(40)
			}
		}
		busy := rng.IntN(len(r.busy))
		wait := rng.IntN(25) == 0
		if len(r.busy) > 0 && time.Since(lastBusy) >= r.p.BusyEvery {
			// never in a ?wait request: the slow clients hold it up
			lastBusy = time.Now()
			evs = append(evs, stressEvent{key: r.busy[busy], nid: -1, pad: r.p.BusyPad})
			wait = false
		}
		if !r.publish(rng, evs, wait, &body) {
			return
		}
	}
	// The slow clients must be gone; if the run was too short for that,
	// the busy keys get more large events, for at most 30 s.
	flushStart := time.Now()
	for flushed := 0; int(r.slowAttached.Load()) == r.p.Slow && r.p.Slow > 0 && !r.failed(); flushed++ {
		if flushed%8 == 0 && r.metric("airlay_slow_consumer_disconnects_total") >= r.slowBefore+float64(r.p.Slow) {
			r.flushed = flushed
			break
		}
		if time.Since(flushStart) > 30*time.Second {
			r.fail("the slow clients were not all dropped as slow consumers after %d more events of %d bytes to the busy keys (30 s)", flushed, r.p.BusyPad)
			break
		}
		evs := []stressEvent{{key: r.busy[flushed%len(r.busy)], nid: -1, pad: r.p.BusyPad}}
		if !r.publish(rng, evs, false, &body) {
			return
		}
	}
}

// publish sends one publish request of evs, numbering them.
func (r *stressRun) publish(rng *rand.Rand, evs []stressEvent, wait bool, body *[]byte) bool {
	r.evMu.Lock()
	pi := len(r.pubs)
	first := len(r.evs) + 1
	for j := range evs {
		evs[j].seq = first + j
		evs[j].pub = pi
	}
	r.evs = append(r.evs, evs...)
	r.pubs = append(r.pubs, stressPub{first: first, n: len(evs), wait: wait})
	r.evMu.Unlock()

	b := (*body)[:0]
	array := len(evs) > 1 || rng.IntN(5) == 0
	if array {
		b = append(b, '[')
	}
	for j := range evs {
		if j > 0 {
			b = append(b, ',')
		}
		b = r.eventJSON(b, &evs[j])
	}
	if array {
		b = append(b, ']')
	}
	*body = b
	url := r.e.base + "/api/events"
	if wait {
		url += "?wait=10"
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		r.fail("publish: %v", err)
		return false
	}
	req.Header.Set("Authorization", "Bearer "+testPublishToken)
	sentAt := time.Since(r.start)
	r.evMu.Lock()
	r.pubs[pi].sentAt = sentAt
	r.pubs[pi].sent = r.tick()
	r.evMu.Unlock()
	resp, err := r.httpc.Do(req)
	var ans publishAnswer
	if err == nil {
		var raw []byte
		raw, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			err = json.Unmarshal(raw, &ans)
		}
		if err == nil && (resp.StatusCode != 200 || ans.Status != 200 || ans.Code != 0) {
			err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, raw)
		}
	}
	answered := r.tick()
	answerAt := time.Since(r.start)
	r.evMu.Lock()
	r.pubs[pi].answered = answered
	r.pubs[pi].answerAt = answerAt
	r.pubs[pi].delivered, r.pubs[pi].pending = ans.Delivered, ans.Pending
	r.evMu.Unlock()
	if err != nil {
		r.fail("publish of events %d..%d: %v", first, first+len(evs)-1, err)
		return false
	}
	return true
}

// metric reads one unlabelled series of /metrics.
func (r *stressRun) metric(name string) float64 {
	return stressMetrics(r.t, r.httpc, r.e)[name]
}

func stressMetrics(t testing.TB, c *http.Client, e *testEnv) map[string]float64 {
	t.Helper()
	resp, err := c.Get(e.base + "/metrics")
	if err != nil {
		t.Errorf("/metrics: %v", err)
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// Latency histogram: buckets of 1/8 octave from 1µs.

type stressHist struct {
	n   [240]uint32
	max time.Duration
}

func stressBucket(d time.Duration) int {
	if d < time.Microsecond {
		return 0
	}
	return min(239, int(8*math.Log2(float64(d)/float64(time.Microsecond)))+1)
}

func (h *stressHist) add(d time.Duration) {
	h.n[stressBucket(d)]++
	h.max = max(h.max, d)
}

func (h *stressHist) merge(o *stressHist) {
	for i := range h.n {
		h.n[i] += o.n[i]
	}
	h.max = max(h.max, o.max)
}

func (h *stressHist) count() int {
	n := 0
	for _, v := range h.n {
		n += int(v)
	}
	return n
}

// quantile returns the upper edge of the bucket holding quantile q.
func (h *stressHist) quantile(q float64) time.Duration {
	total := h.count()
	seen := 0
	for i, v := range h.n {
		seen += int(v)
		if total > 0 && float64(seen) >= q*float64(total) {
			return min(h.max, time.Duration(float64(time.Microsecond)*math.Exp2(float64(i)/8)))
		}
	}
	return h.max
}

// The round and its report.

type stressReport struct {
	p                      stressParams
	took                   time.Duration
	pubs, events           int
	conns, slowConns       int
	received               int
	must, mustNot, maybe   int
	maybeGot               int
	lat, busyLat, pubHist  stressHist
	slowEnds               []string
	flushed                int
	goroutinesAfter        int
	actions                [stressActions]int64
	goroutines, subsBefore int
	subsAfter              int
	slowDrops              float64
}

func (rep *stressReport) decidable() float64 {
	all := rep.must + rep.mustNot + rep.maybe
	if all == 0 {
		return 0
	}
	return float64(rep.must+rep.mustNot) / float64(all)
}

func (rep *stressReport) log(t testing.TB) {
	t.Logf("stress: %v of load (seed %d): %d publish requests, %d events, %d connections (%d slow), %d events received",
		rep.took.Round(time.Millisecond), rep.p.Seed, rep.pubs, rep.events, rep.conns, rep.slowConns, rep.received)
	var acts []string
	for i, n := range rep.actions {
		acts = append(acts, fmt.Sprintf("%s %d", actNames[i], n))
	}
	t.Logf("stress: client actions: %s", strings.Join(acts, ", "))
	t.Logf("stress: pairs judged: %d must (all received once), %d must not (none received), %d undecidable (%d of them received); decidable %.2f%%",
		rep.must, rep.mustNot, rep.maybe, rep.maybeGot, 100*rep.decidable())
	t.Logf("stress: healthy latency from publish sent to receipt: p50 %v, p99 %v, max %v over %d receipts; of the busy keys (shared with the slow clients): p99 %v, max %v over %d; publish requests: p99 %v, max %v",
		rep.lat.quantile(.5), rep.lat.quantile(.99), rep.lat.max, rep.lat.count(), rep.busyLat.quantile(.99), rep.busyLat.max, rep.busyLat.count(), rep.pubHist.quantile(.99), rep.pubHist.max)
	t.Logf("stress: slow clients: %d dropped by the server (%s); %d events published after the deadline to get there",
		int(rep.slowDrops), strings.Join(rep.slowEnds, ", "), rep.flushed)
	t.Logf("stress: goroutines %d before, %d after; subscriptions %d before, %d after", rep.goroutines, rep.goroutinesAfter, rep.subsBefore, rep.subsAfter)
}

// Bounds the run asserts.
const (
	stressMinDecidable = 0.90
	// Healthy latency from sending a publish request to reading its event.
	// A delivery that waited on a stuck connection would take write_timeout
	// (10s); these bounds leave room for a loaded machine under -race.
	stressMaxP99 = time.Second
	stressMaxLat = 3 * time.Second
	// Goroutines a finished run may leave (runtime and net/http helpers
	// that come and go).
	stressGoroutineSlack = 5
	// How long the server may take to notice that a client closed its
	// connection; until then it may still write events there (counted as
	// delivered by ?wait).
	stressNoticeClose = 5 * time.Second
)

// stressRound runs one round on e and checks everything; it returns the
// figures. The caller's goroutines and e's subscriptions are the baseline.
func stressRound(t testing.TB, e *testEnv, p stressParams) *stressReport {
	t.Helper()
	goroutines := runtime.NumGoroutine()
	subsBefore := e.srv.hub.Subscriptions()
	before := stressMetrics(t, http.DefaultClient, e)
	http.DefaultClient.CloseIdleConnections()

	r := newStressRun(t, e, p)
	r.slowBefore = before["airlay_slow_consumer_disconnects_total"]
	r.start = time.Now()
	deadline := r.start.Add(p.Duration)
	var wg sync.WaitGroup
	for i := range p.Clients {
		wg.Go(func() { r.client(i, deadline) })
	}
	slowRng := rand.New(rand.NewPCG(p.Seed, 1<<32))
	for i := range p.Slow {
		startIn := time.Duration(slowRng.Int64N(int64(p.Duration/4) + 1))
		wg.Go(func() { r.slowClient(i, startIn) })
	}
	r.publisher(deadline)
	wg.Wait()
	took := time.Since(r.start)

	after := stressMetrics(t, r.httpc, e)
	r.httpc.CloseIdleConnections()
	rep := &stressReport{p: p, took: took, pubs: len(r.pubs), events: len(r.evs), goroutines: goroutines, subsBefore: int(subsBefore)}
	for i := range r.actions {
		rep.actions[i] = r.actions[i].Load()
	}
	rep.slowDrops = after["airlay_slow_consumer_disconnects_total"] - before["airlay_slow_consumer_disconnects_total"]
	if rep.slowDrops != float64(p.Slow) {
		r.fail("airlay_slow_consumer_disconnects_total grew by %v, want %d (one per slow client, none for a healthy one)", rep.slowDrops, p.Slow)
	}
	reason := `airlay_connections_closed_total{reason="slow consumer"}`
	if d := after[reason] - before[reason]; d != float64(p.Slow) {
		r.fail("%s grew by %v, want %d", reason, d, p.Slow)
	}
	opened := after["airlay_connections_opened_total"] - before["airlay_connections_opened_total"]
	if opened != float64(r.dials.Load()) {
		r.fail("airlay_connections_opened_total grew by %v, the clients opened %d", opened, r.dials.Load())
	}
	r.judge(rep)

	// Everything is closed: the server must let go of it all.
	deadlineGone := time.Now().Add(15 * time.Second)
	for e.srv.hub.Subscriptions() != subsBefore && time.Now().Before(deadlineGone) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := e.srv.hub.Subscriptions(); n != subsBefore {
		r.fail("%d subscriptions left after every connection closed, want %d", n, subsBefore)
	}
	for time.Now().Before(deadlineGone) {
		r.httpc.CloseIdleConnections()
		http.DefaultClient.CloseIdleConnections()
		if runtime.NumGoroutine() <= goroutines+stressGoroutineSlack {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	rep.goroutinesAfter = runtime.NumGoroutine()
	rep.subsAfter = int(e.srv.hub.Subscriptions())
	rep.slowEnds, rep.flushed = r.slowEnds, r.flushed
	if n := rep.goroutinesAfter; n > goroutines+stressGoroutineSlack {
		buf := make([]byte, 1<<20)
		r.fail("%d goroutines after every connection closed, %d before the round (slack %d):\n%s", n, goroutines, stressGoroutineSlack, buf[:runtime.Stack(buf, true)])
	}

	if rep.decidable() < stressMinDecidable {
		r.fail("only %.2f%% of the pairs were decidable, want at least %.0f%%", 100*rep.decidable(), 100*stressMinDecidable)
	}
	if rep.must < 1000 {
		r.fail("only %d pairs had to be received: the run proved little", rep.must)
	}
	if q := rep.lat.quantile(.99); q > stressMaxP99 {
		r.fail("healthy clients' p99 latency %v, want at most %v", q, stressMaxP99)
	}
	if rep.lat.max > stressMaxLat {
		r.fail("healthy clients' max latency %v, want at most %v", rep.lat.max, stressMaxLat)
	}
	if q := rep.busyLat.quantile(.99); rep.busyLat.count() > 0 && q > stressMaxP99 {
		r.fail("healthy clients' p99 latency on the busy keys %v, want at most %v", q, stressMaxP99)
	}
	r.failMu.Lock()
	defer r.failMu.Unlock()
	if r.nfail > 0 {
		rep.log(t)
		for _, f := range r.fails {
			t.Error(f)
		}
		t.Fatalf("stress (seed %d): %d failures (the first %d above)", p.Seed, r.nfail, len(r.fails))
	}
	return rep
}

// judge classifies every (connection, event) pair and checks the answers of
// ?wait publishes against it.
func (r *stressRun) judge(rep *stressReport) {
	byKey := make([][]int32, len(r.keys))
	for i := range r.evs {
		byKey[r.evs[i].key] = append(byKey[r.evs[i].key], int32(i+1))
	}
	mustOf := make([]int32, len(r.evs)+1)
	// lingering: connections the client had closed shortly before the
	// event's publish while holding its key; the server may still write to
	// them until it notices the close.
	lingering := make([]int32, len(r.evs)+1)
	maybeOf := make([]int32, len(r.evs)+1)
	got := make([]bool, len(r.evs)+1)
	for _, c := range r.conns {
		rep.conns++
		if c.slow {
			rep.slowConns++
		} else {
			rep.lat.merge(&c.lat)
			rep.busyLat.merge(&c.busyLat)
		}
		rep.received += len(c.recv)
		for _, s := range c.recv {
			got[s] = true
			ev := &r.evs[s-1]
			if _, ok := c.hist[ev.key]; !ok {
				k := &r.keys[ev.key]
				if k.user >= 0 {
					r.fail("%v: received notification %d addressed to user %d", c, s, k.user)
				} else {
					r.fail("%v: received event %d of %s %s, which it never attached", c, s, k.typ, k.id)
				}
			}
		}
		for key, hist := range c.hist {
			evs := byKey[key]
			// only events whose publish overlaps the connection's life
			lo := sort.Search(len(evs), func(i int) bool { return r.pubs[r.evs[evs[i]-1].pub].answered > c.opened })
			for _, s := range evs[lo:] {
				ev := &r.evs[s-1]
				pub := &r.pubs[ev.pub]
				if pub.sent > c.end {
					break
				}
				if pub.answered == 0 {
					continue // its publish failed, which is reported
				}
				class := stressClassify(hist, pub.sent, pub.answered, c.lastSync, c.end)
				if class == stressMust && (c.slow || c.broken) {
					class = stressMaybe
				}
				switch class {
				case stressMust:
					rep.must++
					mustOf[s]++
					if !got[s] {
						r.fail("%v: missed event %d of %s %s: published in [%d, %d] while it held the key (%s), synced at %d",
							c, s, r.keys[key].typ, r.keys[key].id, pub.sent, pub.answered, stressHistString(hist), c.lastSync)
					}
				case stressMustNot:
					rep.mustNot++
					if got[s] {
						r.fail("%v: received event %d of %s %s, published in [%d, %d] while it did not hold the key (%s)",
							c, s, r.keys[key].typ, r.keys[key].id, pub.sent, pub.answered, stressHistString(hist))
					}
				default:
					rep.maybe++
					maybeOf[s]++
					if got[s] {
						rep.maybeGot++
					}
				}
			}
		}
		for _, s := range c.recv {
			got[s] = false
		}
		for key, on := range c.held {
			if !on || c.end == 0 {
				continue
			}
			evs := byKey[key]
			lo := sort.Search(len(evs), func(i int) bool { return r.pubs[r.evs[evs[i]-1].pub].sent > c.end })
			for _, s := range evs[lo:] {
				pub := &r.pubs[r.evs[s-1].pub]
				if pub.sentAt > c.endAt+stressNoticeClose {
					break
				}
				lingering[s]++
			}
		}
	}
	for i := range r.pubs {
		pub := &r.pubs[i]
		if pub.sent == 0 || pub.answered == 0 {
			continue
		}
		rep.pubHist.add(pub.answerAt - pub.sentAt)
		if !pub.wait {
			continue
		}
		var must, maybe, linger int64
		for s := pub.first; s < pub.first+pub.n; s++ {
			must += int64(mustOf[s])
			maybe += int64(maybeOf[s])
			linger += int64(lingering[s])
		}
		// Every pair that had to be received was written (pending never,
		// with 10 s to do it); nothing was written to a connection that
		// did not hold the key, or had closed more than
		// stressNoticeClose before.
		if pub.pending != 0 || pub.delivered < must || pub.delivered > must+maybe+linger {
			r.fail("publish of events %d..%d with ?wait=10: delivered %d pending %d, want pending 0 and delivered in [%d, %d] (%d must, %d undecidable, %d closed by the client just before)",
				pub.first, pub.first+pub.n-1, pub.delivered, pub.pending, must, must+maybe+linger, must, maybe, linger)
		}
	}
}

const (
	stressMust = iota
	stressMustNot
	stressMaybe
)

// stressClassify judges one event of a key against the connection's
// transitions of that key; see the top of this file.
func stressClassify(hist []stressTrans, sent, answered, lastSync, end int64) int {
	class := stressMustNot
	for i := 0; i < len(hist); i += 2 {
		on := hist[i]
		offSent, offAns := int64(math.MaxInt64), end
		if i+1 < len(hist) {
			offSent, offAns = hist[i+1].sent, hist[i+1].ans
			if offAns == 0 { // never answered: the connection's end bounds it
				offAns = end
			}
		}
		if on.ans != 0 && on.ans < sent && answered < offSent && answered < lastSync {
			return stressMust
		}
		if answered >= on.sent && sent <= offAns {
			class = stressMaybe
		}
	}
	return class
}

func stressHistString(hist []stressTrans) string {
	var b strings.Builder
	for i, tr := range hist {
		if i > 0 {
			b.WriteString(", ")
		}
		what := "detach"
		if tr.on {
			what = "attach"
		}
		fmt.Fprintf(&b, "%s [%d, %d]", what, tr.sent, tr.ans)
	}
	return b.String()
}

// TestStressClassify pins the judging rule on hand-made histories.
func TestStressClassify(t *testing.T) {
	t.Parallel()
	onOff := []stressTrans{{on: true, sent: 10, ans: 12}, {on: false, sent: 30, ans: 32}}
	onOnly := []stressTrans{{on: true, sent: 10, ans: 12}}
	unanswered := []stressTrans{{on: true, sent: 10, ans: 12}, {on: false, sent: 30}}
	twice := []stressTrans{{on: true, sent: 10, ans: 12}, {on: false, sent: 30, ans: 32}, {on: true, sent: 40, ans: 42}}
	for _, tc := range []struct {
		name           string
		hist           []stressTrans
		sent, answered int64
		lastSync, end  int64
		want           int
	}{
		{"inside", onOff, 13, 20, 40, 50, stressMust},
		{"attach answered after the publish was sent", onOff, 11, 20, 40, 50, stressMaybe},
		{"publish answered after the detach was sent", onOff, 13, 31, 40, 50, stressMaybe},
		{"before the attach was sent", onOff, 5, 9, 40, 50, stressMustNot},
		{"overlapping the attach", onOff, 5, 11, 40, 50, stressMaybe},
		{"after the detach was answered", onOff, 33, 35, 40, 50, stressMustNot},
		{"overlapping the detach's answer", onOff, 31, 35, 40, 50, stressMaybe},
		{"held to the end, synced after", onOnly, 13, 19, 20, 50, stressMust},
		{"held to the end, not synced after", onOnly, 13, 21, 20, 50, stressMaybe},
		{"after the connection ended", onOnly, 51, 52, 20, 50, stressMustNot},
		{"detach never answered: the end bounds it", unanswered, 33, 35, 40, 50, stressMaybe},
		{"between two holdings", twice, 33, 38, 50, 60, stressMustNot},
		{"in the second holding", twice, 43, 45, 50, 60, stressMust},
		{"never attached", nil, 13, 20, 40, 50, stressMustNot},
	} {
		if got := stressClassify(tc.hist, tc.sent, tc.answered, tc.lastSync, tc.end); got != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestStressQuietSlowConsumer: a client that stops reading on a key with few
// events is dropped by write_timeout before its send queue fills. It is a
// slow consumer all the same and must be counted as one: the metric and the
// close reason here, the warning in TestWriteTimeoutIsSlowConsumer. (Found by
// this suite; wsError filed it under "connection error" before.)
func TestStressQuietSlowConsumer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.WriteTimeout = 500 * time.Millisecond })
	tok := e.token(userA, time.Hour)
	stuck := e.dial()
	stuck.do(tok, "attach", "issueUpdate", issue1, 0) // and never reads again
	big := strings.Repeat("x", 64<<10)
	// 20 events a second: the socket fills after about 4 MiB, then the
	// writer waits; 500 ms later only ~10 frames (640 KiB) are queued, far
	// from send_queue and send_queue_bytes.
	for i := 0; e.srv.hub.Subscriptions() > 0; i++ {
		if i == 400 {
			t.Fatal("the stuck client was not dropped after 400 events of 64 KiB")
		}
		if status, _ := e.publish("", fmt.Sprintf(`{"type":"issueUpdate","id":"%s","data":[%d,"%s"]}`, issue1, i, big)); status != 200 {
			t.Fatalf("publish: %d", status)
		}
		time.Sleep(50 * time.Millisecond)
	}
	m := stressMetrics(t, http.DefaultClient, e)
	if m["airlay_slow_consumer_disconnects_total"] != 1 || m[`airlay_connections_closed_total{reason="slow consumer"}`] != 1 {
		t.Errorf("stuck client dropped by write_timeout: airlay_slow_consumer_disconnects_total %v, closed as slow consumer %v, as error %v; want 1, 1, 0",
			m["airlay_slow_consumer_disconnects_total"], m[`airlay_connections_closed_total{reason="slow consumer"}`], m[`airlay_connections_closed_total{reason="error"}`])
	}
}

// The recovery storm: clients follow a few objects each, are cut off at
// random (the socket closed under them, no close frame) while one
// publisher publishes numbered events without pause, and come back
// attaching with since the position of the last event they got of each
// subscription. Every event of a key has the same frame size, so the
// history (history_bytes only; the TTL is long) holds exactly the newest
// histCap events, which lets the test prove each recovered:false:
//
//   - recovered:true: the events of that key after since arrive next, each
//     once, in order, then the live ones (checked event by event against
//     the publisher's record: every event of a key is the next one after
//     the previous one that client got of it);
//   - recovered:false: allowed only when since was provably older than the
//     history: an event after since had been evicted before the attach was
//     sent (the publisher had had more than histCap events answered after
//     since). A false with since within the newest histCap events
//     published when its answer was read is a failure; in between it is
//     undecidable, and counted.
//
// At the end every client has every event of each key it follows up to
// the last one, and a restarted server (another epoch) answers every since
// recovered:false.
func TestRecoveryStorm(t *testing.T) {
	d := 3 * time.Second
	if testing.Short() {
		d = 2 * time.Second
	}
	if stressFlagSet("stress.duration") {
		d = min(*stressDuration, 20*time.Second)
	}
	seed := *stressSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("recovery storm: seed %d, %v (replay: go test -race -run TestRecoveryStorm ./server/ -stress.seed %d)", seed, d, seed)
	const (
		nKeys    = 6
		nClients = 40
		perConn  = 3
		histCap  = 80 // events the history holds
	)
	keyID := func(k int) string { return fmt.Sprintf("6102bbbb81f6fc547362%04x", k) }
	evOf := func(k, seq int) events.Event {
		return events.Event{Type: events.IssueUpdate, ID: keyID(k), Data: json.RawMessage(fmt.Sprintf(`["%08d"]`, seq))}
	}
	probe := evOf(0, 1)
	entry := int64(probe.FrameSize()) + events.EntryOverhead
	e := newEnv(t, func(c *Config) {
		c.LogLevel = slog.LevelWarn
		c.HistoryBytes = histCap*entry + entry/2
		c.HistoryTTL = time.Hour
		c.MaxReplay = 10 * histCap
	})
	tok := e.token(userA, time.Hour)
	rng := rand.New(rand.NewPCG(seed, 12))

	// The publisher's record: keyOf[seq-1] is the key of event seq.
	var recMu sync.RWMutex
	var keyOf []int
	var sent, answered atomic.Int64    // events whose publish was sent, answered
	nextOf := func(k, after int) int { // the first event of k after seq after; 0: none yet
		recMu.RLock()
		defer recMu.RUnlock()
		for s := after + 1; s <= len(keyOf); s++ {
			if keyOf[s-1] == k {
				return s
			}
		}
		return 0
	}
	stop := make(chan struct{})
	pubDone := make(chan struct{})
	httpc := &http.Client{Timeout: 10 * time.Second}
	prng := rand.New(rand.NewPCG(seed, 13))
	go func() {
		defer close(pubDone)
		for seq := 1; seq <= 200000; seq++ {
			select {
			case <-stop:
				return
			default:
			}
			k := prng.IntN(nKeys)
			recMu.Lock()
			keyOf = append(keyOf, k)
			recMu.Unlock()
			sent.Store(int64(seq))
			req, _ := http.NewRequest(http.MethodPost, e.base+"/api/events", strings.NewReader(fmt.Sprintf(`{"type":"issueUpdate","id":"%s","data":["%08d"]}`, keyID(k), seq)))
			req.Header.Set("Authorization", "Bearer "+testPublishToken)
			resp, err := httpc.Do(req)
			if err != nil {
				t.Errorf("publish %d: %v", seq, err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("publish %d: %d", seq, resp.StatusCode)
				return
			}
			answered.Store(int64(seq))
		}
	}()

	type follow struct {
		key  int
		last int    // seq of the last event got; 0: none (a plain attach)
		pos  string // its position
	}
	var (
		statMu                                       sync.Mutex
		recovered, justified, undecided, plain, cuts int
		replayedOrLive                               int
		failures                                     []string
	)
	fail := func(format string, args ...any) {
		statMu.Lock()
		defer statMu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	// session runs one connection of a client until cut (or, final, until
	// it has every event up to target); it returns false on a failure.
	session := func(fs []follow, r *rand.Rand, final bool, target int) bool {
		ws, _, err := websocket.DefaultDialer.Dial(e.ws, nil)
		if err != nil {
			fail("dial: %v", err)
			return false
		}
		defer ws.Close()
		type pending struct {
			f       int
			since   bool
			evicted int64 // events answered when the request was sent
		}
		var reqs []pending
		for i := range fs {
			ev := map[string]string{"type": "issueUpdate", "id": keyID(fs[i].key)}
			m := map[string]any{"auth": tok, "action": "attach", "event": ev}
			if fs[i].last > 0 {
				m["since"] = fs[i].pos
			}
			b, _ := json.Marshal(m)
			reqs = append(reqs, pending{f: i, since: fs[i].last > 0, evicted: answered.Load()})
			if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
				fail("write: %v", err)
				return false
			}
		}
		deadline := time.Now().Add(time.Duration(20+r.IntN(200)) * time.Millisecond)
		if final {
			deadline = time.Now().Add(10 * time.Second)
		}
		for {
			if final && len(reqs) == 0 {
				done := true
				for i := range fs {
					// A subscription without a position (a plain attach or
					// a reload) has nothing to catch up on.
					if fs[i].last > 0 && fs[i].last < nextLast(nextOf, fs[i].key, fs[i].last, target) {
						done = false
					}
				}
				if done {
					return true
				}
			}
			_ = ws.SetReadDeadline(deadline)
			_, msg, err := ws.ReadMessage()
			if err != nil {
				if final {
					fail("final read: %v", err)
					return false
				}
				statMu.Lock()
				cuts++
				statMu.Unlock()
				return true // cut: the socket closes under the server
			}
			if bytes.HasPrefix(msg, []byte(`{"status":`)) {
				if len(reqs) == 0 {
					fail("an answer with no request: %s", msg)
					return false
				}
				p := reqs[0]
				reqs = reqs[1:]
				var a struct {
					Code      int   `json:"code"`
					Recovered *bool `json:"recovered"`
				}
				if json.Unmarshal(msg, &a) != nil || a.Code != 0 || (a.Recovered != nil) != p.since {
					fail("attach answered %s (since given: %v)", msg, p.since)
					return false
				}
				f := &fs[p.f]
				switch {
				case !p.since:
					statMu.Lock()
					plain++
					statMu.Unlock()
				case *a.Recovered:
					statMu.Lock()
					recovered++
					statMu.Unlock()
				default:
					// Necessary only if an event after since was gone:
					// more than histCap events after f.last.
					sureGone := int(p.evicted) - histCap // events up to this were evicted before the request
					maybeGone := int(sent.Load()) - histCap
					statMu.Lock()
					switch {
					case f.last < sureGone:
						justified++
					case f.last < maybeGone:
						undecided++
					default:
						statMu.Unlock()
						fail("recovered:false for since event %d, within the newest %d events (at most %d published): not necessary", f.last, histCap, sent.Load())
						return false
					}
					statMu.Unlock()
					f.last, f.pos = 0, "" // the application reloads; follow from the next event
				}
				continue
			}
			rest, pos, ok := cutPos(msg)
			var ev struct {
				ID   string   `json:"id"`
				Data []string `json:"data"`
			}
			if !ok || json.Unmarshal(rest, &ev) != nil || len(ev.Data) != 1 {
				fail("bad event %s", msg)
				return false
			}
			seq, _ := strconv.Atoi(ev.Data[0])
			var f *follow
			for i := range fs {
				if keyID(fs[i].key) == ev.ID {
					f = &fs[i]
				}
			}
			if f == nil {
				fail("event %d of a key not followed", seq)
				return false
			}
			if f.last > 0 {
				if want := nextOf(f.key, f.last); seq != want {
					fail("key %d: got event %d after %d, want %d (lost, doubled or out of order)", f.key, seq, f.last, want)
					return false
				}
				if !posLess(t, f.pos, pos) {
					fail("pos %s after %s", pos, f.pos)
					return false
				}
			}
			f.last, f.pos = seq, pos
			statMu.Lock()
			replayedOrLive++
			statMu.Unlock()
		}
	}

	clients := make([][]follow, nClients)
	for c := range clients {
		for _, k := range rng.Perm(nKeys)[:perConn] {
			clients[c] = append(clients[c], follow{key: k})
		}
	}
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for c := range clients {
		wg.Add(1)
		r := rand.New(rand.NewPCG(seed, uint64(100+c)))
		go func() {
			defer wg.Done()
			for round := 0; round < 1000 && time.Now().Before(end); round++ {
				if !session(clients[c], r, false, 0) {
					return
				}
				away := time.Duration(r.IntN(30)) * time.Millisecond
				if r.IntN(8) == 0 {
					away = time.Duration(200+r.IntN(400)) * time.Millisecond // long enough for the history to move past it
				}
				time.Sleep(away)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-pubDone
	target := int(answered.Load())
	var held []follow // positions held at the end of the storm, for the epoch check below
	for c := range clients {
		for _, f := range clients[c] {
			if f.last > 0 {
				held = append(held, f)
			}
		}
	}
	// The last session of each client: reconnect and get everything up to
	// the last event published.
	for c := range clients {
		wg.Add(1)
		r := rand.New(rand.NewPCG(seed, uint64(5000+c)))
		go func() {
			defer wg.Done()
			session(clients[c], r, true, target)
		}()
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	if h := e.srv.hub.History(); target > histCap && h.Len() != histCap {
		t.Errorf("the history holds %d events, want exactly %d (history_bytes %d, %d bytes each)", h.Len(), histCap, e.cfg.HistoryBytes, entry)
	}
	t.Logf("recovery storm: %d events published, %d connections cut; attaches: %d recovered, %d recovered:false proven necessary, %d undecidable, %d plain; %d events received",
		target, cuts, recovered, justified, undecided, plain, replayedOrLive)
	if recovered < nClients || justified == 0 || target < 2*histCap {
		t.Errorf("the storm proved little: %d recovered, %d necessary false, %d events", recovered, justified, target)
	}

	// Another epoch: a new server answers every since recovered:false.
	e2 := newEnv(t, func(c *Config) { c.LogLevel = slog.LevelWarn })
	ws, _, err := websocket.DefaultDialer.Dial(e2.ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	tok2 := e2.token(userA, time.Hour)
	n := 0
	tried := map[int]bool{} // one attach per key: a second would be held
	for _, f := range held {
		if tried[f.key] {
			continue
		}
		tried[f.key] = true
		b, _ := json.Marshal(map[string]any{"auth": tok2, "action": "attach", "event": map[string]string{"type": "issueUpdate", "id": keyID(f.key)}, "since": f.pos})
		_ = ws.WriteMessage(websocket.TextMessage, b)
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, msg, err := ws.ReadMessage()
		if err != nil || string(msg) != `{"status":200,"message":"Ok","code":0,"recovered":false}` {
			t.Fatalf("since of the earlier server answered %s (%v), want recovered:false", msg, err)
		}
		n++
	}
	if n == 0 {
		t.Error("no client has a position to try on the new server")
	}
}

// nextLast returns the last event of key k at or before target (so that a
// client following k is done once it has it); after when there is none.
func nextLast(nextOf func(k, after int) int, k, after, target int) int {
	last := after
	for s := nextOf(k, last); s != 0 && s <= target; s = nextOf(k, last) {
		last = s
	}
	return last
}
