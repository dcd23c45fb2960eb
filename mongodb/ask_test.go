package mongodb

import (
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/airlay/airlay/events"
	"github.com/gorilla/websocket"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo/options"
)

type askResult struct {
	status int
	m      map[string]any
	took   time.Duration
}

func (e *serverEnv) askAsync(timeout, user, data string) <-chan askResult {
	ch := make(chan askResult, 1)
	go func() {
		start := time.Now()
		req, _ := http.NewRequest(http.MethodPost, e.base+"/api/ask?timeout="+timeout, strings.NewReader(`{"user":"`+user+`","data":`+data+`}`))
		req.Header.Set("Authorization", "Bearer "+e2ePublishToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			ch <- askResult{}
			return
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		ch <- askResult{resp.StatusCode, m, time.Since(start)}
	}()
	return ch
}

func awaitAsk(t *testing.T, ch <-chan askResult) askResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("POST /api/ask did not answer")
	}
	return askResult{}
}

// readRequest reads a request frame and returns its id.
func readRequest(t *testing.T, ws *websocket.Conn) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(wsRead(t, ws)), &m); err != nil || m["type"] != "request" {
		t.Fatalf("want a request, got %v (%v)", m, err)
	}
	return m["id"].(string)
}

func replyTo(tok, id, data string) string {
	return `{"auth":"` + tok + `","action":"reply","event":{"type":"request","id":"` + id + `"},"data":` + data + `}`
}

// Two instances sharing one mongosim: a request asked on a reaches the
// user's tabs on both, a reply on b travels back to a, the first reply
// wins everywhere, another user's reply and a late one are refused, 409
// when no instance has a request subscriber, and an instance that dies
// holding the request leaves the backend a 504 at its timeout.
func TestAskAcrossInstances(t *testing.T) {
	p := startSim(t)
	client := p.client()
	seed(t, client, "airlay")
	co := func() *options.ClientOptions { return options.Client().ApplyURI(p.uri) }
	cfg := func(instance string) Config {
		c := testConfig()
		c.Instance = instance
		return c
	}
	a := startServerWith(t, co(), cfg("a"))
	b := startServerWith(t, co(), cfg("b"))
	for _, s := range []*serverEnv{a, b} {
		waitFor(t, "/readyz 200", func() bool { st, _ := s.get("/readyz"); return st == 200 })
	}
	tok, tokB := a.token(userA.Hex()), a.token(userB.Hex())
	onA, onB, otherB := a.dial(), b.dial(), b.dial()
	wsDo(t, onA, wsRequest(tok, "attach", "request", ""), 0)
	wsDo(t, onB, wsRequest(tok, "attach", "request", ""), 0)
	wsDo(t, otherB, wsRequest(tokB, "attach", "request", ""), 0)

	// Asked on a: both tabs get it once; b's reply wins, a's is refused.
	ch := a.askAsync("10", userA.Hex(), `["q1"]`)
	idA, idB := readRequest(t, onA), readRequest(t, onB)
	if idA != idB {
		t.Fatalf("ids %s %s", idA, idB)
	}
	wsDo(t, otherB, replyTo(tokB, idA, `["forged"]`), 5)
	wsDo(t, onB, replyTo(tok, idA, `["from b"]`), 0)
	wsDo(t, onA, replyTo(tok, idA, `["from a"]`), 5)
	r := awaitAsk(t, ch)
	if got, _ := json.Marshal(r.m["reply"]); r.status != 200 || string(got) != `["from b"]` || r.m["conn"] == "" {
		t.Fatalf("ask 1: %d %v", r.status, r.m)
	}
	wsDo(t, onA, wsRequest(tok, "detach", "issueUpdate", issue1.Hex()), 0) // nothing else was queued: each got it once
	wsDo(t, onB, wsRequest(tok, "detach", "issueUpdate", issue1.Hex()), 0)
	wsDo(t, otherB, wsRequest(tokB, "detach", "issueUpdate", issue1.Hex()), 0)

	// Only a's tab holds request: asked on b, answered on a.
	wsDo(t, onB, wsRequest(tok, "detach", "request", ""), 0)
	ch = b.askAsync("10", userA.Hex(), `["q2"]`)
	id := readRequest(t, onA)
	wsDo(t, onA, replyTo(tok, id, `["from a"]`), 0)
	if r := awaitAsk(t, ch); r.status != 200 {
		t.Fatalf("ask 2: %d %v", r.status, r.m)
	}

	// Nobody answers: 504 at the timeout; a reply afterwards is refused.
	ch = b.askAsync("1", userA.Hex(), `["q3"]`)
	id = readRequest(t, onA)
	if r := awaitAsk(t, ch); r.status != 504 || r.m["code"] != 9.0 || r.took > 3*time.Second {
		t.Fatalf("ask 3: %d %v after %v", r.status, r.m, r.took)
	}
	wsDo(t, onA, replyTo(tok, id, `["late"]`), 5)

	// No request subscriber on any instance: 409 code 8.
	wsDo(t, onA, wsRequest(tok, "detach", "request", ""), 0)
	if r := awaitAsk(t, a.askAsync("10", userA.Hex(), `[]`)); r.status != 409 || r.m["code"] != 8.0 || r.took > 5*time.Second {
		t.Fatalf("ask 4: %d %v after %v", r.status, r.m, r.took)
	}

	// b holds the request and dies: a answers 504 at the timeout.
	wsDo(t, onB, wsRequest(tok, "attach", "request", ""), 0)
	ch = a.askAsync("2", userA.Hex(), `["q5"]`)
	readRequest(t, onB)
	// b reports its delivery in the background: let the report reach
	// MongoDB before b dies (a report lost with its instance leaves a with
	// no delivery, and a then answers 409 at askReachWindow; see README).
	time.Sleep(300 * time.Millisecond)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = b.srv.Shutdown(sctx)
	if r := awaitAsk(t, ch); r.status != 504 || r.took > 4*time.Second {
		t.Fatalf("ask 5: %d %v after %v", r.status, r.m, r.took)
	}
}

// Expire settles a timed-out request with every instance: a reply taken
// elsewhere just before stands; after it, every reply is refused.
func TestAskExpire(t *testing.T) {
	p := startSim(t)
	client := p.client()
	seed(t, client, "airlay")
	c := testConfig()
	c.Instance = "a"
	a := startServerWith(t, options.Client().ApplyURI(p.uri), c)
	waitFor(t, "/readyz 200", func() bool { st, _ := a.get("/readyz"); return st == 200 })
	br := a.mg.Broker
	ctx := context.Background()
	asks := events.NewAsks(4, 4)
	open := func() *events.Ask {
		ask, err := asks.Open(userA.Hex())
		if err != nil {
			t.Fatal(err)
		}
		// asked on another instance "z": a reply here is not taken at once
		if _, err := br.asksColl().InsertOne(ctx, bson.D{{Key: "_id", Value: ask.ID}, {Key: "user", Value: userA.Hex()}, {Key: "instance", Value: "z"}, {Key: "expires", Value: time.Now().Add(time.Minute)}}); err != nil {
			t.Fatal(err)
		}
		return ask
	}
	// A reply taken (on "another" instance) before the timeout stands.
	ask := open()
	if ok, err := br.Reply(ctx, asks, userA.Hex(), ask.ID, events.AskReply{Data: []byte(`["just in time"]`), Conn: "9"}); !ok || err != nil {
		t.Fatalf("reply: %v %v", ok, err)
	}
	if ok, _ := br.Reply(ctx, asks, userB.Hex(), ask.ID, events.AskReply{Data: []byte(`[]`)}); ok {
		t.Fatal("another user's reply taken")
	}
	if err := br.Expire(ctx, asks, ask); err != nil {
		t.Fatal(err)
	}
	if asks.Close(ask) {
		t.Fatal("the reply taken before the timeout was dropped")
	}
	<-ask.Done()
	if r := ask.Reply(); string(r.Data) != `["just in time"]` || r.Conn != "9" {
		t.Fatalf("reply %+v", r)
	}
	// Expired first: a reply afterwards is refused everywhere.
	ask = open()
	if err := br.Expire(ctx, asks, ask); err != nil {
		t.Fatal(err)
	}
	if !asks.Close(ask) {
		t.Fatal("expired request still answered")
	}
	if ok, err := br.Reply(ctx, asks, userA.Hex(), ask.ID, events.AskReply{Data: []byte(`["late"]`)}); ok || err != nil {
		t.Fatalf("late reply taken: %v %v", ok, err)
	}
}

var askFigures = flag.Int("ask.figures", 0, "TestAskFiguresAcrossInstances: this many asks (0: skip the figures)")

// The round trip of POST /api/ask across two instances over mongosim: asked
// on a, answered by a tab on b (the request through the events collection
// and b's change stream, the reply through the replies collection back to
// a). go test -run TestAskFiguresAcrossInstances -v ./mongodb/ -ask.figures 300
func TestAskFiguresAcrossInstances(t *testing.T) {
	if *askFigures == 0 {
		t.Skip("figures: run with -ask.figures N")
	}
	p := startSim(t)
	client := p.client()
	seed(t, client, "airlay")
	cfg := func(instance string) Config { c := testConfig(); c.Instance = instance; return c }
	a := startServerWith(t, options.Client().ApplyURI(p.uri), cfg("a"))
	b := startServerWith(t, options.Client().ApplyURI(p.uri), cfg("b"))
	for _, s := range []*serverEnv{a, b} {
		waitFor(t, "/readyz 200", func() bool { st, _ := s.get("/readyz"); return st == 200 })
	}
	tok := a.token(userA.Hex())
	for _, c := range []struct {
		name string
		ask  *serverEnv
	}{{"asked on a, tab on b", a}, {"asked on b, tab on b", b}} {
		tab := b.dial()
		wsDo(t, tab, wsRequest(tok, "attach", "request", ""), 0)
		var lat []time.Duration
		for i := 0; i < *askFigures; i++ {
			ch := c.ask.askAsync("10", userA.Hex(), `["q"]`)
			id := readRequest(t, tab)
			wsDo(t, tab, replyTo(tok, id, `["a"]`), 0)
			r := awaitAsk(t, ch)
			if r.status != 200 {
				t.Fatalf("%s: ask %d answered %d %v", c.name, i, r.status, r.m)
			}
			lat = append(lat, r.took)
		}
		slices.Sort(lat)
		t.Logf("%s: %d asks, p50 %v, p99 %v, max %v", c.name, len(lat), lat[len(lat)/2].Round(10*time.Microsecond),
			lat[min(len(lat)-1, len(lat)*99/100)].Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
		wsDo(t, tab, wsRequest(tok, "detach", "request", ""), 0)
	}
}
