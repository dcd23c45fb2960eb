package server

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

const (
	askUser  = "5dad615eae019570fb4647ed"
	askOther = "5dad615eae019570fb4647ee"
)

// askResult is the answer of one POST /api/ask.
type askResult struct {
	status int
	m      map[string]any
	took   time.Duration
}

// askAsync POSTs /api/ask in the background.
func askAsync(e *testEnv, query, body string) <-chan askResult {
	ch := make(chan askResult, 1)
	go func() {
		start := time.Now()
		status, m := e.post("/api/ask"+query, "Bearer "+testPublishToken, body)
		ch <- askResult{status, m, time.Since(start)}
	}()
	return ch
}

func askBody(user string, data string) string {
	return `{"user":"` + user + `","data":` + data + `}`
}

// replyFrame is a reply to the request id.
func replyFrame(token, id, data string) string {
	return `{"auth":"` + token + `","action":"reply","event":{"type":"request","id":"` + id + `"},"data":` + data + `}`
}

// attachRequests opens a connection of user holding a request subscription.
func attachRequests(e *testEnv, user string) (*wsClient, string) {
	e.t.Helper()
	tok := e.token(user, time.Hour)
	c := e.dial()
	c.do(tok, "attach", "request", "", 0)
	return c, tok
}

// expectRequest reads the request frame and returns its id.
func expectRequest(t *testing.T, c *wsClient, data string) string {
	t.Helper()
	m := c.read(5 * time.Second)
	id, _ := m["id"].(string)
	d, _ := json.Marshal(m["data"])
	if m["type"] != "request" || len(id) != 32 || string(d) != data {
		t.Fatalf("got %v, want a request with data %s", m, data)
	}
	if p, _ := m["pos"].(string); p == "" {
		t.Fatalf("request %v has no pos", m)
	}
	if len(m) != 4 {
		t.Fatalf("request %v: want exactly type, id, data, pos", m)
	}
	return id
}

// expectNoFrame checks that nothing was queued for c before an answer to a
// request sent now (a detach of something c does not hold answers 0); a
// read timeout would break the gorilla connection for later reads.
func expectNoFrame(c *wsClient, tok string) {
	c.t.Helper()
	c.do(tok, "detach", "issueUpdate", "6a0000000000000000000009", 0)
}

func expectAnswer(t *testing.T, r askResult, status, code int, message string) {
	t.Helper()
	if r.status != status || r.m["status"] != float64(status) || r.m["code"] != float64(code) || r.m["message"] != message {
		t.Fatalf("ask answered %d %v, want %d code %d %q", r.status, r.m, status, code, message)
	}
}

func awaitAsk(t *testing.T, ch <-chan askResult) askResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("POST /api/ask did not answer")
	}
	return askResult{}
}

// Two tabs of one user: each gets the request once, the first reply wins
// (its connection named in the answer), the second gets code 5; a
// connection of the user without a request subscription, and another
// user's, get nothing.
func TestAskTwoTabsFirstReplyWins(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tab1, tok := attachRequests(e, askUser)
	tab2, _ := attachRequests(e, askUser)
	tab2.do(tok, "attach", "request", "", 0) // attached twice: still one subscription
	plain := e.dial()
	plain.do(tok, "attach", "notification", "", 0)
	other, otherTok := attachRequests(e, askOther)

	conns := map[string]bool{}
	for round, first := range []*wsClient{tab1, tab2} {
		second := tab2
		if first == tab2 {
			second = tab1
		}
		data := fmt.Sprintf(`[{"q":"still editing?","round":%d}]`, round)
		ch := askAsync(e, "?timeout=5", askBody(askUser, data))
		id1 := expectRequest(t, tab1, data)
		id2 := expectRequest(t, tab2, data)
		if id1 != id2 {
			t.Fatalf("the tabs got different ids %s %s", id1, id2)
		}
		time.Sleep(50 * time.Millisecond) // room for a second copy to arrive
		expectNoFrame(tab1, tok)
		expectNoFrame(tab2, tok)
		expectNoFrame(plain, tok)
		expectNoFrame(other, otherTok)

		first.sendText(replyFrame(tok, id1, fmt.Sprintf(`[ "yes", %d ]`, round)))
		first.expectCode(0)
		second.sendText(replyFrame(tok, id1, `["too late"]`))
		second.expectCode(5)
		other.sendText(replyFrame(otherTok, id1, `["not mine"]`))
		other.expectCode(5)

		r := awaitAsk(t, ch)
		expectAnswer(t, r, 200, 0, "Ok")
		if got, _ := json.Marshal(r.m["reply"]); string(got) != fmt.Sprintf(`["yes",%d]`, round) {
			t.Errorf("reply %s", got)
		}
		conn, _ := r.m["conn"].(string)
		if conn == "" || len(r.m) != 5 {
			t.Fatalf("answer %v: want status, message, code, reply, conn", r.m)
		}
		conns[conn] = true
		// answered: forgotten at once, a reply again is code 5
		first.sendText(replyFrame(tok, id1, `[]`))
		first.expectCode(5)
	}
	if len(conns) != 2 {
		t.Errorf("the winning connections of the two rounds are named %v, want two names", conns)
	}
	if n := e.srv.asks.Len(); n != 0 {
		t.Errorf("%d requests still open", n)
	}
	if got := metricValue(t, e, `airlay_ask_replies_total{result="taken"}`); got != "2" {
		t.Errorf("replies taken %s", got)
	}
	if got := metricValue(t, e, `airlay_ask_replies_total{result="refused"}`); got != "6" {
		t.Errorf("replies refused %s", got)
	}
	if got := metricValue(t, e, "airlay_asks_total"); got != "2" {
		t.Errorf("asks %s", got)
	}
}

// A reply after the timeout gets code 5; the backend got 504 code 9 at
// its timeout, not later.
func TestAskTimeoutThenReply(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tab, tok := attachRequests(e, askUser)
	ch := askAsync(e, "?timeout=0.3", askBody(askUser, `["q"]`))
	id := expectRequest(t, tab, `["q"]`)
	r := awaitAsk(t, ch)
	expectAnswer(t, r, 504, 9, "No reply")
	if r.took < 300*time.Millisecond || r.took > 2*time.Second {
		t.Errorf("504 after %v, want at the 0.3 s timeout", r.took)
	}
	if d, _ := r.m["detail"].(string); d == "" {
		t.Errorf("504 without detail: %v", r.m)
	}
	if n := e.srv.asks.Len(); n != 0 {
		t.Errorf("%d requests open after the timeout", n)
	}
	tab.sendText(replyFrame(tok, id, `["late"]`))
	tab.expectCode(5)
	if got := metricValue(t, e, "airlay_ask_timeouts_total"); got != "1" {
		t.Errorf("timeouts %s", got)
	}
	// the default timeout is 10 s: a request without ?timeout is still open after 1 s
	ch = askAsync(e, "", askBody(askUser, `[]`))
	id = expectRequest(t, tab, `[]`)
	time.Sleep(time.Second)
	select {
	case r := <-ch:
		t.Fatalf("answered before the default timeout: %v", r)
	default:
	}
	tab.sendText(replyFrame(tok, id, `[1]`))
	tab.expectCode(0)
	expectAnswer(t, awaitAsk(t, ch), 200, 0, "Ok")
}

// A reply from another user's connection is never taken, not even with the
// request's id; the user's own reply still is.
func TestAskReplyFromAnotherUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tab, tok := attachRequests(e, askUser)
	other, otherTok := attachRequests(e, askOther)
	ch := askAsync(e, "?timeout=5", askBody(askUser, `[]`))
	id := expectRequest(t, tab, `[]`)
	other.sendText(replyFrame(otherTok, id, `["forged"]`))
	other.expectCode(5)
	// the user's token on the other user's connection: code 2, not taken
	other.sendText(replyFrame(tok, id, `["forged"]`))
	other.expectCode(2)
	// an unclaimed connection with the other user's token: 5, and it stays unclaimed
	fresh := e.dial()
	fresh.sendText(replyFrame(otherTok, id, `["forged"]`))
	fresh.expectCode(5)
	fresh.do(tok, "attach", "notification", "", 0) // still free for the user
	tab.sendText(replyFrame(tok, id, `["mine"]`))
	tab.expectCode(0)
	r := awaitAsk(t, ch)
	expectAnswer(t, r, 200, 0, "Ok")
	if got, _ := json.Marshal(r.m["reply"]); string(got) != `["mine"]` {
		t.Errorf("reply %s", got)
	}
}

// No connection of the user holds a request subscription: 409 code 8 at
// once (connected with other subscriptions, detached, another user's).
func TestAskUserNotConnected(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	expect409 := func(what string) {
		t.Helper()
		r := awaitAsk(t, askAsync(e, "?timeout=5", askBody(askUser, `[]`)))
		expectAnswer(t, r, 409, 8, "User not connected")
		if r.took > 2*time.Second {
			t.Errorf("%s: 409 after %v", what, r.took)
		}
	}
	expect409("nobody connected")
	tok := e.token(askUser, time.Hour)
	c := e.dial()
	c.do(tok, "attach", "notification", "", 0)
	c.do(tok, "attach", "issueUpdate", "610217e481f6fc54736209e0", 0)
	attachRequests(e, askOther)
	expect409("other subscriptions only")
	c.do(tok, "attach", "request", "", 0)
	c.do(tok, "detach", "request", "", 0)
	expect409("detached")
	expectNoFrame(c, tok)
	if got := metricValue(t, e, "airlay_ask_not_connected_total"); got != "3" {
		t.Errorf("not connected %s", got)
	}
	if n := e.srv.asks.Len(); n != 0 {
		t.Errorf("%d requests open", n)
	}
}

// Bad input: 400 code 5 with a detail; the bearer token; no request event
// through /api/events; malformed reply frames get code 5.
func TestAskBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tab, tok := attachRequests(e, askUser)
	for _, q := range []string{"?timeout=abc", "?timeout=0", "?timeout=-1", "?timeout=61", "?timeout=NaN", "?timeout="} {
		status, m := e.post("/api/ask"+q, "Bearer "+testPublishToken, askBody(askUser, `[]`))
		if status != 400 || m["code"] != 5.0 || !strings.Contains(fmt.Sprint(m["detail"]), "timeout") {
			t.Errorf("%s: %d %v", q, status, m)
		}
	}
	for body, detail := range map[string]string{
		``:                                    "empty body",
		`[]`:                                  "one object",
		`{"data":[]}`:                         "user is required",
		`{"user":"nope","data":[]}`:           `user "nope" is not an ObjectId`,
		askBody(askUser, `{"a":1}`):           "data must be a JSON array",
		askBody(askUser, `null`):              "data must be a JSON array",
		`{"user":"` + askUser + `","x":1}`:    `unknown field "x"`,
		askBody(askUser, `[]`) + ` {}`:        "goes on after",
		`{"user":"` + askUser + `","data":[}`: "invalid JSON",
	} {
		status, m := e.post("/api/ask", "Bearer "+testPublishToken, body)
		if status != 400 || m["code"] != 5.0 || !strings.Contains(fmt.Sprint(m["detail"]), detail) {
			t.Errorf("body %q: %d %v, want a detail with %q", body, status, m, detail)
		}
	}
	if status, m := e.post("/api/ask", "", askBody(askUser, `[]`)); status != 401 || m["code"] != 1.0 {
		t.Errorf("no bearer: %d %v", status, m)
	}
	if status, m := e.post("/api/ask", "Bearer nope", askBody(askUser, `[]`)); status != 401 || m["code"] != 2.0 {
		t.Errorf("wrong bearer: %d %v", status, m)
	}
	if status, m := e.publish("", `{"type":"request","user":"`+askUser+`","id":"x","data":[]}`); status != 400 || !strings.Contains(fmt.Sprint(m["detail"]), "POST /api/ask") {
		t.Errorf("publishing a request: %d %v", status, m)
	}
	expectNoFrame(tab, tok) // none of it reached the frontend
	for _, f := range []string{
		`{"auth":"` + tok + `","action":"reply","event":{"type":"request"},"data":[]}`,
		`{"auth":"` + tok + `","action":"reply","event":{"type":"notification","id":"x"},"data":[]}`,
		`{"auth":"` + tok + `","action":"reply","data":[]}`,
		replyFrame(tok, "0123", `{"a":1}`),
		replyFrame(tok, strings.Repeat("a", 65), `[]`),
		replyFrame(tok, "0123456789abcdef0123456789abcdef", `[]`), // well-formed, unknown
	} {
		tab.sendText(f)
		tab.expectCode(5)
	}
	tab.sendText(replyFrame("", "0123456789abcdef0123456789abcdef", `[]`))
	tab.expectCode(1)
	// after all that the subscription still works
	ch := askAsync(e, "?timeout=5", askBody(askUser, ` [ 1 , 2 ] `))
	id := expectRequest(t, tab, `[1,2]`)
	tab.sendText(`{"auth":"` + tok + `","action":"reply","event":{"type":"request","id":"` + id + `"}}`) // no data: []
	tab.expectCode(0)
	r := awaitAsk(t, ch)
	expectAnswer(t, r, 200, 0, "Ok")
	if got, _ := json.Marshal(r.m["reply"]); string(got) != `[]` {
		t.Errorf("reply %s", got)
	}
}

// Limits: max_asks_per_user and max_asks answer 429 with a detail naming
// the key; a slot is free again as soon as a request is answered.
func TestAskLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.MaxAsksPerUser, c.MaxAsks = 2, 3 })
	tab, tok := attachRequests(e, askUser)
	otherTab, _ := attachRequests(e, askOther)
	a1 := askAsync(e, "?timeout=5", askBody(askUser, `[1]`))
	id1 := expectRequest(t, tab, `[1]`)
	a2 := askAsync(e, "?timeout=1", askBody(askUser, `[2]`))
	expectRequest(t, tab, `[2]`)
	status, m := e.post("/api/ask?timeout=5", "Bearer "+testPublishToken, askBody(askUser, `[3]`))
	if status != 429 || m["code"] != 5.0 || !strings.Contains(fmt.Sprint(m["detail"]), "max_asks_per_user = 2") {
		t.Errorf("third of one user: %d %v", status, m)
	}
	b1 := askAsync(e, "?timeout=1", askBody(askOther, `[4]`))
	expectRequest(t, otherTab, `[4]`)
	status, m = e.post("/api/ask?timeout=5", "Bearer "+testPublishToken, askBody(askOther, `[5]`))
	if status != 429 || !strings.Contains(fmt.Sprint(m["detail"]), "max_asks = 3") {
		t.Errorf("fourth on the instance: %d %v", status, m)
	}
	expectNoFrame(tab, tok)
	tab.sendText(replyFrame(tok, id1, `["one"]`))
	tab.expectCode(0)
	expectAnswer(t, awaitAsk(t, a1), 200, 0, "Ok")
	// a slot is free again at once
	a3 := askAsync(e, "?timeout=0.2", askBody(askUser, `[6]`))
	expectRequest(t, tab, `[6]`)
	expectAnswer(t, awaitAsk(t, a3), 504, 9, "No reply")
	if got := metricValue(t, e, `airlay_ask_refused_total{limit="max_asks"}`); got != "1" {
		t.Errorf("refused max_asks %s", got)
	}
	expectAnswer(t, awaitAsk(t, a2), 504, 9, "No reply")
	expectAnswer(t, awaitAsk(t, b1), 504, 9, "No reply")
	if n := e.srv.asks.Len(); n != 0 {
		t.Errorf("%d requests open", n)
	}
}

// A request is kept in no history: a resume of request answers
// recovered:false and replays nothing, and the history does not grow.
func TestAskNotInHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tab, tok := attachRequests(e, askUser)
	before := e.srv.hub.History().Len()
	ch := askAsync(e, "?timeout=0.2", askBody(askUser, `["q"]`))
	m := tab.read(5 * time.Second)
	pos, _ := m["pos"].(string)
	expectAnswer(t, awaitAsk(t, ch), 504, 9, "No reply")
	if after := e.srv.hub.History().Len(); after != before {
		t.Errorf("history %d -> %d events", before, after)
	}
	c := e.dial()
	c.sendText(`{"auth":"` + tok + `","action":"attach","event":{"type":"request"},"since":"` + pos + `"}`)
	a := c.read(5 * time.Second)
	if a["code"] != 0.0 || a["recovered"] != false {
		t.Fatalf("resume of request: %v", a)
	}
	time.Sleep(50 * time.Millisecond)
	expectNoFrame(c, tok)
	// held already: recovered true, still nothing
	c.sendText(`{"auth":"` + tok + `","action":"attach","event":{"type":"request"},"since":"` + pos + `"}`)
	if a := c.read(5 * time.Second); a["code"] != 0.0 || a["recovered"] != true {
		t.Fatalf("resume held: %v", a)
	}
	// and it receives the next request
	ch = askAsync(e, "?timeout=0.2", askBody(askUser, `[]`))
	expectRequest(t, c, `[]`)
	awaitAsk(t, ch)
}

// A shutdown ends open requests at once with 503 code 7 (their connections
// are being closed, no reply can come), not at their timeout.
func TestAskShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tab, _ := attachRequests(e, askUser)
	ch := askAsync(e, "?timeout=30", askBody(askUser, `[]`))
	expectRequest(t, tab, `[]`)
	go e.shutdown(10 * time.Second)
	r := awaitAsk(t, ch)
	expectAnswer(t, r, 503, 7, "Service unavailable")
	if r.took > 5*time.Second {
		t.Errorf("answered after %v", r.took)
	}
}

// The connection holding the request goes away (its socket cut, no close
// frame): the backend gets 504 at its timeout, not later and not a hang;
// the request is forgotten.
func TestAskHolderDrops(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tab, _ := attachRequests(e, askUser)
	ch := askAsync(e, "?timeout=0.5", askBody(askUser, `[]`))
	expectRequest(t, tab, `[]`)
	_ = tab.ws.UnderlyingConn().Close()
	r := awaitAsk(t, ch)
	expectAnswer(t, r, 504, 9, "No reply")
	if r.took > 2*time.Second {
		t.Errorf("504 after %v, want at the 0.5 s timeout", r.took)
	}
	waitFor(t, "the connection to go", 5*time.Second, func() bool { return e.srv.hub.Subscriptions() == 0 })
	expectAnswer(t, awaitAsk(t, askAsync(e, "?timeout=0.5", askBody(askUser, `[]`))), 409, 8, "User not connected")
	if n := e.srv.asks.Len(); n != 0 {
		t.Errorf("%d requests open", n)
	}
}
