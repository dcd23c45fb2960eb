package server

// PROTOCOL.md "Continuity: positions, resume, "reload"" over real sockets,
// line by line: pos on every event, the same for every connection and
// growing per key; attach with since answering recovered true (and the
// replay, in order, once, before newer events) or false; a subscription
// already held; a malformed since (5); another epoch (a restart); history
// off; eviction at history_bytes and at history_ttl; a replay longer than
// send_queue; max_replay.

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlay/airlay/events"
)

// sinceRequest is an attach request with since.
func sinceRequest(token, typ, id, since string) string {
	ev := map[string]string{"type": typ}
	if id != "" {
		ev["id"] = id
	}
	b, _ := json.Marshal(map[string]any{"auth": token, "action": "attach", "event": ev, "since": since})
	return string(b)
}

// attachSince sends an attach with since and returns the answer's
// "recovered"; the answer must be code 0 with exactly that one member more.
func (c *wsClient) attachSince(token, typ, id, since string) bool {
	c.t.Helper()
	c.sendText(sinceRequest(token, typ, id, since))
	m := c.read(5 * time.Second)
	rec, ok := m["recovered"].(bool)
	if m["code"] != 0.0 || m["status"] != 200.0 || m["message"] != "Ok" || !ok || len(m) != 4 {
		c.t.Fatalf("attach with since answered %v, want code 0 with recovered", m)
	}
	return rec
}

// contEvent is one event as a client reads it.
type contEvent struct {
	typ, id, data, pos string
}

// readEvent reads one event frame; its pos must be well-formed and last.
func (c *wsClient) readEvent() contEvent {
	c.t.Helper()
	typ, msg := wsReadRaw(c.t, c, 5*time.Second)
	rest, pos, ok := cutPos(msg)
	if typ != 1 || !ok {
		c.t.Fatalf("want an event ending with its pos, got %s", msg)
	}
	var e struct {
		Type string          `json:"type"`
		ID   string          `json:"id"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(rest, &e); err != nil || e.Type == "" {
		c.t.Fatalf("event %s: %v", msg, err)
	}
	if len(pos) > 64 || pos == "" {
		c.t.Fatalf("pos %q: want 1 to 64 characters", pos)
	}
	return contEvent{e.Type, e.ID, string(e.Data), pos}
}

// publishN publishes data [i] for i in from..to to issue id, waiting for
// the writes.
func publishSeq(t testing.TB, e *testEnv, id string, from, to int) {
	t.Helper()
	var evs []string
	for i := from; i <= to; i++ {
		evs = append(evs, fmt.Sprintf(`{"type":"issueUpdate","id":"%s","data":[%d]}`, id, i))
	}
	if status, a := e.publish("?wait=5", "["+strings.Join(evs, ",")+"]"); status != 200 {
		t.Fatalf("publish: %d %v", status, a)
	}
}

// posLess compares two positions of one epoch.
func posLess(t testing.TB, a, b string) bool {
	t.Helper()
	ea, _, pa, oka := events.ParsePos(a)
	eb, _, pb, okb := events.ParsePos(b)
	if !oka || !okb || ea != eb {
		t.Fatalf("positions %q, %q: not of one epoch", a, b)
	}
	return pa.Less(pb)
}

func TestContinuityPosOnEveryEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok := e.token(userA, time.Hour)
	a, b := e.dial(), e.dial()
	for _, c := range []*wsClient{a, b} {
		c.do(tok, "attach", "issueUpdate", issue1, 0)
		c.do(tok, "attach", "notification", "", 0)
	}
	publishSeq(t, e, issue1, 1, 3)
	if status, m := e.publish("?wait=5", `{"type":"notification","user":"`+userA+`","data":["n"]}`); status != 200 {
		t.Fatalf("publish: %d %v", status, m)
	}
	var got [2][]contEvent
	for i, c := range []*wsClient{a, b} {
		for range 4 {
			got[i] = append(got[i], c.readEvent())
		}
	}
	for i := range got[0] {
		if got[0][i] != got[1][i] {
			t.Fatalf("event %d: %v on one connection, %v on the other: the same event must carry the same pos", i, got[0][i], got[1][i])
		}
		if i > 0 && !posLess(t, got[0][i-1].pos, got[0][i].pos) {
			t.Fatalf("positions %q then %q: they must grow in delivery order", got[0][i-1].pos, got[0][i].pos)
		}
	}
}

func TestContinuityResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok := e.token(userA, time.Hour)
	live := e.dial() // stays, to compare positions
	live.do(tok, "attach", "issueUpdate", issue1, 0)
	c := e.dial()
	c.do(tok, "attach", "issueUpdate", issue1, 0)
	publishSeq(t, e, issue1, 1, 1)
	first := c.readEvent()
	c.ws.Close() // the drop

	publishSeq(t, e, issue1, 2, 4)
	publishSeq(t, e, issue2, 100, 100) // another key: not replayed
	var want []contEvent
	want = append(want, live.readEvent())
	for range 3 {
		want = append(want, live.readEvent())
	}

	c = e.dial()
	if !c.attachSince(tok, "issueUpdate", issue1, first.pos) {
		t.Fatal("recovered false, want true: every event after since is in the history")
	}
	for i := 1; i < 4; i++ {
		if got := c.readEvent(); got != want[i] {
			t.Fatalf("replayed %v, want %v (with the pos it had)", got, want[i])
		}
	}
	publishSeq(t, e, issue1, 5, 5)
	if got := c.readEvent(); got.data != "[5]" {
		t.Fatalf("after the replay %v, want the live event 5", got)
	}

	// Nothing happened since: recovered, nothing replayed.
	last := live.readEvent()
	d := e.dial()
	if !d.attachSince(tok, "issueUpdate", issue1, last.pos) {
		t.Fatal("since the latest event: recovered false, want true")
	}
	wsExpectQuiet(t, d)

	// Held already: recovered, nothing replayed.
	if !c.attachSince(tok, "issueUpdate", issue1, first.pos) {
		t.Fatal("a held subscription with since: recovered false, want true")
	}
	wsExpectQuiet(t, c)

	// notification: since the last notification.
	n := e.dial()
	n.do(tok, "attach", "notification", "", 0)
	notify := func(text string) {
		if status, m := e.publish("?wait=5", `{"type":"notification","user":"`+userA+`","data":["`+text+`"]}`); status != 200 {
			t.Fatalf("publish: %d %v", status, m)
		}
	}
	notify("a")
	na := n.readEvent()
	n.ws.Close()
	notify("b")
	n = e.dial()
	if !n.attachSince(tok, "notification", "", na.pos) {
		t.Fatal("notification since: recovered false")
	}
	if got := n.readEvent(); got.data != `["b"]` {
		t.Fatalf("replayed %v, want notification b", got)
	}
}

func TestContinuityMalformedSince(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok := e.token(userA, time.Hour)
	c := e.dial()
	ev := `"event":{"type":"issueUpdate","id":"` + issue1 + `"}`
	for _, since := range []string{`""`, `"abc"`, `"0123456789abcdef"`, `"0123456789abcdef:"`, `"0123456789abcdef:01"`, `"0123456789ABCDEF:1"`,
		`"0123456789abcdef:1.2"`, `"0123456789abcdef:1.2.3.4"`, `"0123456789abcdef:-1"`, `"0123456789abcdef:99999999999999999999999"`,
		`"0123456789abcdef:1.4294967296.0"`, `"` + strings.Repeat("a", 70) + `"`, `5`, `true`, `{}`, `["x"]`} {
		c.sendText(`{"auth":"` + tok + `","action":"attach",` + ev + `,"since":` + since + `}`)
		m := c.read(5 * time.Second)
		if m["code"] != 5.0 {
			t.Fatalf("since %s answered %v, want code 5", since, m)
		}
	}
	// Nothing was attached.
	publishSeq(t, e, issue1, 1, 1)
	wsExpectQuiet(t, c)
	// JSON null is an absent since: a plain attach.
	c.sendText(`{"auth":"` + tok + `","action":"attach",` + ev + `,"since":null}`)
	if m := c.read(5 * time.Second); m["code"] != 0.0 || len(m) != 3 {
		t.Fatalf("since null answered %v, want a plain code 0", m)
	}
}

func TestContinuityOtherEpoch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok := e.token(userA, time.Hour)
	c := e.dial()
	c.do(tok, "attach", "issueUpdate", issue1, 0)
	publishSeq(t, e, issue1, 1, 1)
	p := c.readEvent().pos

	// A restart: a new server on the same settings is a new epoch.
	e2 := newEnv(t, nil)
	d := e2.dial()
	if d.attachSince(e2.token(userA, time.Hour), "issueUpdate", issue1, p) {
		t.Fatal("a position of the earlier process: recovered true, want false")
	}
	publishSeq(t, e2, issue1, 2, 2) // the subscription is made all the same
	if got := d.readEvent(); got.data != "[2]" {
		t.Fatalf("got %v, want the live event", got)
	}
	// A well-formed position of a made-up epoch, and the other form.
	other := e.dial()
	for _, since := range []string{"ffffffffffffffff:1", strings.Split(p, ":")[0] + ":1.2.3"} {
		if other.attachSince(tok, "issueUpdate", issue2, since) {
			t.Fatalf("since %q: recovered true, want false", since)
		}
		other.do(tok, "detach", "issueUpdate", issue2, 0)
	}
}

func TestContinuityHistoryOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.HistoryTTL = 0 })
	tok := e.token(userA, time.Hour)
	c := e.dial()
	c.do(tok, "attach", "issueUpdate", issue1, 0)
	publishSeq(t, e, issue1, 1, 1)
	p := c.readEvent().pos
	d := e.dial()
	if d.attachSince(tok, "issueUpdate", issue1, p) {
		t.Fatal("history_ttl = 0: recovered true, want false")
	}
	resp, body := apiCall(e, "GET", "/api/config", nil, "")
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"history":{"ttl_seconds":0}`) {
		t.Fatalf("/api/config %s, want history ttl_seconds 0", body)
	}
}

func TestContinuityEvictionBytes(t *testing.T) {
	t.Parallel()
	// Room for about 10 events of issue2 and none more.
	e := newEnv(t, func(c *Config) { c.HistoryBytes = 10 * (events.EntryOverhead + 100) })
	tok := e.token(userA, time.Hour)
	c := e.dial()
	c.do(tok, "attach", "issueUpdate", issue1, 0)
	publishSeq(t, e, issue1, 1, 1)
	old := c.readEvent().pos
	publishSeq(t, e, issue1, 2, 2)
	c.ws.Close()
	d := e.dial()
	if !d.attachSince(tok, "issueUpdate", issue1, old) {
		t.Fatal("within history_bytes: recovered false")
	}
	if got := d.readEvent(); got.data != "[2]" {
		t.Fatalf("replayed %v, want event 2", got)
	}
	d.ws.Close()
	publishSeq(t, e, issue2, 1, 30) // pushes issue1's events out
	if h := e.srv.hub.History(); h.Bytes() > e.cfg.HistoryBytes || h.Evicted() == 0 {
		t.Fatalf("history holds %d bytes (limit %d), %d evicted", h.Bytes(), e.cfg.HistoryBytes, h.Evicted())
	}
	f := e.dial()
	if f.attachSince(tok, "issueUpdate", issue1, old) {
		t.Fatal("event 2 was evicted at history_bytes: recovered true, want false")
	}
	wsExpectQuiet(t, f) // and nothing replayed
}

func TestContinuityEvictionTime(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.HistoryTTL = 300 * time.Millisecond })
	tok := e.token(userA, time.Hour)
	c := e.dial()
	c.do(tok, "attach", "issueUpdate", issue1, 0)
	publishSeq(t, e, issue1, 1, 2)
	p1, p2 := c.readEvent().pos, c.readEvent().pos
	time.Sleep(400 * time.Millisecond)
	d := e.dial()
	if d.attachSince(tok, "issueUpdate", issue1, p1) {
		t.Fatal("event 2 is older than history_ttl: recovered true, want false")
	}
	d.do(tok, "detach", "issueUpdate", issue1, 0)
	// Since the newest event: nothing after it was lost, though the event
	// itself expired.
	if !d.attachSince(tok, "issueUpdate", issue1, p2) {
		t.Fatal("since the latest event, expired: recovered false, want true")
	}
	wsExpectQuiet(t, d)
	if n := e.srv.hub.History().Len(); n != 0 {
		t.Fatalf("history holds %d events after history_ttl", n)
	}
}

// A replay longer than send_queue is admitted as one batch: the
// connection is not closed for it.
func TestContinuityLongReplay(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.SendQueue = 4; c.MaxReplay = 200 })
	tok := e.token(userA, time.Hour)
	c := e.dial()
	c.do(tok, "attach", "issueUpdate", issue1, 0)
	publishSeq(t, e, issue1, 0, 0)
	p := c.readEvent().pos
	c.ws.Close()
	publishSeq(t, e, issue1, 1, 150)
	d := e.dial()
	if !d.attachSince(tok, "issueUpdate", issue1, p) {
		t.Fatal("recovered false")
	}
	for i := 1; i <= 150; i++ {
		if got := d.readEvent(); got.data != fmt.Sprintf("[%d]", i) {
			t.Fatalf("replay %d: got %v", i, got)
		}
	}
	wsExpectQuiet(t, d)
	// Past max_replay: recovered false, nothing replayed.
	publishSeq(t, e, issue2, 1, 201)
	f := e.dial()
	f.do(tok, "attach", "issueUpdate", issue2, 0)
	f.do(tok, "detach", "issueUpdate", issue2, 0)
	if f.attachSince(tok, "issueUpdate", issue2, p) {
		t.Fatal("201 events to replay, max_replay 200: recovered true, want false")
	}
	wsExpectQuiet(t, f)
	if got := wsMetric(t, e, "airlay_slow_consumer_disconnects_total"); got != 0 {
		t.Fatalf("%v slow-consumer closes", got)
	}
}

// Replay and subscription are one step: while events are published without
// pause, a resumed connection gets every event after since exactly once,
// in order.
func TestContinuityResumeWhilePublishing(t *testing.T) {
	t.Parallel()
	// max_replay high enough for whatever the publisher gets through before
	// the attach on a fast machine (the point here is atomicity).
	e := newEnv(t, func(c *Config) { c.MaxReplay = 1 << 20 })
	tok := e.token(userA, time.Hour)
	c := e.dial()
	c.do(tok, "attach", "issueUpdate", issue1, 0)
	publishSeq(t, e, issue1, 0, 0)
	since := c.readEvent()
	c.ws.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	published := 0
	go func() {
		defer wg.Done()
		for i := 1; i <= 2000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if status, _ := e.publish("", fmt.Sprintf(`{"type":"issueUpdate","id":"%s","data":[%d]}`, issue1, i)); status != 200 {
				return
			}
			published = i
			// Paced (about 5,000/s at most): a reader that falls behind
			// the live stream by send_queue frames is a slow consumer,
			// replay or not; the point here is the seam between the two.
			time.Sleep(200 * time.Microsecond)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	d := e.dial()
	if !d.attachSince(tok, "issueUpdate", issue1, since.pos) {
		t.Fatal("recovered false")
	}
	// A prompt reader: it reads while the publisher goes on (a client that
	// stops reading while events flow is a slow consumer, replay or not).
	var mu sync.Mutex
	var frames [][]byte
	readDone := make(chan error, 1)
	go func() {
		_ = d.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			_, msg, err := d.ws.ReadMessage()
			if err != nil {
				readDone <- err
				return
			}
			mu.Lock()
			frames = append(frames, msg)
			mu.Unlock()
		}
	}()
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	waitFor(t, "every event", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		select {
		case err := <-readDone:
			t.Fatalf("after %d events: %v", len(frames), err)
		default:
		}
		return len(frames) >= published
	})
	time.Sleep(100 * time.Millisecond) // anything doubled would arrive now
	mu.Lock()
	got := frames
	mu.Unlock()
	if len(got) != published {
		t.Fatalf("%d events for %d published (doubled)", len(got), published)
	}
	prev := since.pos
	for i, msg := range got {
		rest, pos, ok := cutPos(msg)
		if !ok || !strings.Contains(string(rest), fmt.Sprintf(`"data":[%d]`, i+1)) {
			t.Fatalf("event %d of %d: got %s (lost or doubled between replay and live)", i+1, published, msg)
		}
		if !posLess(t, prev, pos) {
			t.Fatalf("pos %q after %q", pos, prev)
		}
		prev = pos
	}
	_ = d.ws.Close()
	if published < 10 {
		t.Fatalf("only %d events published meanwhile: the test proved little", published)
	}
}
