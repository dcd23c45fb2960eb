package mongodb

// Continuity with MongoDB, over real sockets and one mongosim: positions
// from the change's cluster time, the same on every instance; a client
// moving to another instance recovers there; a starting instance rebuilds
// its history from the oplog (as far as the oplog reaches) and is ready
// only once caught up; a gap answers recovered:false.

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/airlay/airlay/events"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// readPos reads one event frame and returns it without its position, and
// the position.
func readPos(t *testing.T, ws *websocket.Conn) (frame, pos string) {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, msg, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	frame, pos = splitPos(string(msg))
	if pos == "" {
		t.Fatalf("%s: no pos", msg)
	}
	return frame, pos
}

// sinceAttach attaches issueUpdate id with since and returns recovered.
func sinceAttach(t *testing.T, ws *websocket.Conn, tok, id, since string) bool {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"auth": tok, "action": "attach", "event": map[string]string{"type": "issueUpdate", "id": id}, "since": since})
	if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatal(err)
	}
	switch got := wsRead(t, ws); got {
	case `{"status":200,"message":"Ok","code":0,"recovered":true}`:
		return true
	case `{"status":200,"message":"Ok","code":0,"recovered":false}`:
		return false
	default:
		t.Fatalf("attach with since answered %s", got)
	}
	return false
}

func TestContinuityInstances(t *testing.T) {
	p := startSim(t, "-oplog-entries", "600")
	client := p.client()
	seed(t, client, "airlay")
	co := func() *options.ClientOptions { return options.Client().ApplyURI(p.uri) }
	cfg := func(instance string) Config {
		c := testConfig()
		c.Instance = instance
		c.SaveInterval = time.Hour // token saves would fill the small oplog
		return c
	}
	a := startServerWith(t, co(), cfg("a"))
	b := startServerWith(t, co(), cfg("b"))
	for _, s := range []*serverEnv{a, b} {
		waitFor(t, "/readyz 200 (history rebuilt)", func() bool { st, _ := s.get("/readyz"); return st == 200 })
	}
	tok := a.token(userA.Hex())
	wa, wb := a.dial(), b.dial()
	for _, ws := range []*websocket.Conn{wa, wb} {
		wsDo(t, ws, wsRequest(tok, "attach", "issueUpdate", issue1.Hex()), 0)
	}

	// One publish of two events, and a change of the issues collection.
	if st, m := a.publish("?wait=5", `[{"type":"issueUpdate","id":"`+issue1.Hex()+`","data":["x"]},{"type":"issueUpdate","id":"`+issue1.Hex()+`","data":["y"]}]`); st != 200 {
		t.Fatalf("publish: %d %v", st, m)
	}
	if _, err := client.Database("airlay").Collection("issues").InsertOne(context.Background(), bson.D{{Key: "_id", Value: issue1}, {Key: "status", Value: "open"}}); err != nil {
		t.Fatal(err)
	}
	var posA []string
	for i := range 3 {
		fa, pa := readPos(t, wa)
		fb, pb := readPos(t, wb)
		if fa != fb || pa != pb {
			t.Fatalf("event %d: instance a sent %s at %s, b %s at %s: want the same event at the same pos", i, fa, pa, fb, pb)
		}
		epoch, stamped, _, ok := events.ParsePos(pa)
		if !ok || !stamped || epoch != epochOf("airlay") {
			t.Fatalf("pos %q: want epoch:T.I.N of the database's epoch", pa)
		}
		posA = append(posA, pa)
	}
	// The two events of one publish: one cluster time, indexes 0 and 1.
	if ta, tb := posA[0][:strings.LastIndex(posA[0], ".")], posA[1][:strings.LastIndex(posA[1], ".")]; ta != tb || !strings.HasSuffix(posA[0], ".0") || !strings.HasSuffix(posA[1], ".1") {
		t.Fatalf("positions of one publish %q, %q: want one cluster time, indexes 0 and 1", posA[0], posA[1])
	}

	// A client moves from a to b: it recovers there.
	wa.Close()
	if st, m := b.publish("?wait=5", `{"type":"issueUpdate","id":"`+issue1.Hex()+`","data":["z"]}`); st != 200 {
		t.Fatalf("publish: %d %v", st, m)
	}
	liveZ, livePos := readPos(t, wb)
	moved := b.dial()
	if !sinceAttach(t, moved, tok, issue1.Hex(), posA[0]) {
		t.Fatal("since a's position, on b: recovered false")
	}
	for _, want := range []string{posA[1], posA[2], livePos} {
		if f, p := readPos(t, moved); p != want {
			t.Fatalf("replayed %s at %s, want pos %s", f, p, want)
		} else if p == livePos && f != liveZ {
			t.Fatalf("replayed %s, want %s", f, liveZ)
		}
	}

	// Many changes, more than the oplog keeps, while b follows issue2.
	wsDo(t, wb, wsRequest(tok, "attach", "issueUpdate", issue2.Hex()), 0)
	if _, err := client.Database("airlay").Collection("issues").InsertOne(context.Background(), bson.D{{Key: "_id", Value: issue2}, {Key: "n", Value: 0}}); err != nil {
		t.Fatal(err)
	}
	var pos2 []string
	_, p0 := readPos(t, wb)
	pos2 = append(pos2, p0)
	const n = 700
	for i := 1; i <= n; i++ {
		if _, err := client.Database("airlay").Collection("issues").UpdateOne(context.Background(), bson.D{{Key: "_id", Value: issue2}}, bson.D{{Key: "$set", Value: bson.D{{Key: "n", Value: i}}}}); err != nil {
			t.Fatal(err)
		}
		_, p := readPos(t, wb)
		pos2 = append(pos2, p)
	}

	// A new instance rebuilds what the oplog still has, and is ready once
	// caught up: a since inside it recovers with the same positions, one
	// before it does not.
	// getMore slowed down: the rebuild takes long enough to be seen.
	p.fault(map[string]any{"kind": "slow", "commands": []string{"getMore"}, "ms": 300})
	c := startServerWith(t, co(), cfg("c"))
	waitFor(t, "the new instance rebuilding", func() bool { return errors.Is(c.mg.Ready(), ErrRebuilding) })
	if st, body := c.get("/readyz"); st != 503 {
		t.Fatalf("/readyz while rebuilding: %d %s, want 503", st, body)
	}
	p.clearFaults()
	waitFor(t, "/readyz 200 on the new instance", func() bool { st, _ := c.get("/readyz"); return st == 200 })
	if !strings.Contains(c.logs.String(), "history rebuilt") {
		t.Errorf("the new instance did not log its rebuild:\n%s", c.logs.String())
	}
	wc := c.dial()
	if !sinceAttach(t, wc, tok, issue2.Hex(), pos2[n-10]) {
		t.Fatal("since the 10th last change, on an instance started after it: recovered false")
	}
	for i := n - 9; i <= n; i++ {
		if _, p := readPos(t, wc); p != pos2[i] {
			t.Fatalf("rebuilt replay %d at %s, want %s (the pos b gave it)", i, p, pos2[i])
		}
	}
	if sinceAttach(t, c.dial(), tok, issue2.Hex(), pos2[5]) {
		t.Fatal("since a change the oplog no longer holds: recovered true, want false")
	}
	// and a since from a's first events (before the oplog's oldest entry)
	if sinceAttach(t, c.dial(), tok, issue1.Hex(), posA[0]) {
		t.Fatal("since a change older than the oplog: recovered true")
	}
	// Live events reach c's clients with the same pos as b's.
	if _, err := client.Database("airlay").Collection("issues").UpdateOne(context.Background(), bson.D{{Key: "_id", Value: issue2}}, bson.D{{Key: "$set", Value: bson.D{{Key: "n", Value: -1}}}}); err != nil {
		t.Fatal(err)
	}
	fb, pb := readPos(t, wb)
	if fc, pc := readPos(t, wc); fc != fb || pc != pb {
		t.Fatalf("live on c %s at %s, on b %s at %s", fc, pc, fb, pb)
	}
	t.Logf("the new instance's history holds %d events (%d bytes)", c.srv.Hub().History().Len(), c.srv.Hub().History().Bytes())
}

// TestContinuityGap: a change stream that loses its history records a
// gap: every since before it answers recovered:false, one after it true.
func TestContinuityGap(t *testing.T) {
	f := newFakeMongo(t)
	mg, _ := connect(t, f, testConfig())
	hub := events.NewHubWith(events.HubOptions{Epoch: mg.Broker.Epoch(), Stamped: true, History: events.NewHistory(time.Minute, 1<<20)})
	rec := newRecorder()
	rec.subscribe(hub)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mg.Broker.Run(ctx, hub) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "ready (the rebuild caught up)", func() bool { return mg.Ready() == nil })
	f.addChanges(issueChange(1), issueChange(2))
	rec.waitFrames(t, 2)
	p1, p2 := rec.pos[0], rec.pos[1]
	key := events.Key{Type: events.IssueUpdate, ID: issue1.Hex()}
	resume := func(since string) (bool, int) {
		r := newRecorder()
		var ok bool
		hub.Resume(key, r, since, 100, func(_, recovered bool) { ok = recovered })
		hub.Unsubscribe(key, r)
		return ok, len(r.got())
	}
	if ok, n := resume(p1); !ok || n != 1 {
		t.Fatalf("since change 1: recovered %v with %d events, want true with 1", ok, n)
	}
	f.fail(fakeFail{cmd: "getMore", reply: serverError(codeChangeStreamHistoryLost, "ChangeStreamHistoryLost")})
	waitFor(t, "the history loss", func() bool { return testutil.ToFloat64(mg.metrics.historyLost) == 1 })
	waitFor(t, "ready again", func() bool { return mg.Ready() == nil })
	for _, since := range []string{p1, p2} {
		if ok, n := resume(since); ok || n != 0 {
			t.Fatalf("since %s, before the gap: recovered %v with %d events, want false", since, ok, n)
		}
	}
	time.Sleep(1100 * time.Millisecond) // the gap is at this machine's second
	f.addChanges(issueChange(3), issueChange(4))
	rec.waitFrames(t, 4)
	if ok, n := resume(rec.pos[2]); !ok || n != 1 {
		t.Fatalf("since change 3, after the gap: recovered %v with %d events, want true with 1", ok, n)
	}
}
