package mongodb

// End to end through the real server: server.New and Serve on a loopback
// port with this package's Store, Broker, readiness and metrics, the Source
// feeding the server's hub, all on the fake MongoDB; a gorilla/websocket
// client speaks the /ws protocol.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/airlay/airlay/auth"
	"github.com/airlay/airlay/internal/testkit"
	"github.com/airlay/airlay/server"
	"github.com/gorilla/websocket"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo/options"
)

const e2ePublishToken = "e2e-secret"

type serverEnv struct {
	t    *testing.T
	f    *fakeMongo
	mg   *Mongo
	srv  *server.Server
	base string
	ws   string
	logs *testkit.Buffer
}

// startServer runs a server on f: what cmd/airlay-cli does with uri set.
func startServer(t *testing.T, f *fakeMongo, mcfg Config) *serverEnv {
	t.Helper()
	e := startServerWith(t, f.clientOptions(), mcfg)
	e.f = f
	return e
}

// startServerWith runs a server on the MongoDB that co reaches.
func startServerWith(t *testing.T, co *options.ClientOptions, mcfg Config) *serverEnv {
	t.Helper()
	keyPath := testkit.WritePublicKey(t, t.TempDir())
	cfg := server.Defaults()
	cfg.File, cfg.Address, cfg.Port = "e2e.ini", "127.0.0.1", 0
	cfg.JWTPublicKey, cfg.PublishToken = keyPath, e2ePublishToken
	mg, logs := connectWith(t, co, mcfg)
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := server.New(&cfg, server.Options{Logger: log, Store: mg.Store, Broker: mg.Broker})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }() // the server runs the broker (its change stream) until Shutdown
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
		<-served
	})
	return &serverEnv{t: t, mg: mg, srv: srv, base: "http://" + ln.Addr().String(), ws: "ws://" + ln.Addr().String() + "/ws", logs: logs}
}

func (e *serverEnv) token(user string) string {
	e.t.Helper()
	return testkit.Mint(e.t, auth.MintOptions{UserID: user, Name: "e2e", TTL: time.Hour})
}

func (e *serverEnv) dial() *websocket.Conn {
	e.t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(e.ws, nil)
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	resp.Body.Close()
	e.t.Cleanup(func() { ws.Close() })
	return ws
}

func (e *serverEnv) get(path string) (int, string) {
	e.t.Helper()
	resp, err := http.Get(e.base + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *serverEnv) publish(query, body string) (int, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.base+"/api/events"+query, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e2ePublishToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		e.t.Fatalf("answer %q: %v", b, err)
	}
	return resp.StatusCode, m
}

func wsRequest(tok, action, typ, id string) string {
	ev := map[string]string{"type": typ}
	if id != "" {
		ev["id"] = id
	}
	b, _ := json.Marshal(map[string]any{"auth": tok, "action": action, "event": ev})
	return string(b)
}

func wsRead(t *testing.T, ws *websocket.Conn) string {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return stripPos(string(msg))
}

func answer(code int) string {
	msgs := []string{"Ok", "Token not set", "Invalid token", "User not exists", "Not access for dataset", "Invalid request", "Too many subscriptions", "Service unavailable"}
	status := "400"
	if code == 0 {
		status = "200"
	}
	return `{"status":` + status + `,"message":"` + msgs[code] + `","code":` + string(rune('0'+code)) + `}`
}

// wsDo sends one request and checks the code of its answer.
func wsDo(t *testing.T, ws *websocket.Conn, req string, code int) {
	t.Helper()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(req)); err != nil {
		t.Fatal(err)
	}
	if got := wsRead(t, ws); got != answer(code) {
		t.Fatalf("request %.80s... answered %s, want %s", req, got, answer(code))
	}
}

func TestEndToEnd(t *testing.T) {
	f := storeFake(t)
	e := startServer(t, f, testConfig())
	waitFor(t, "/readyz 200", func() bool { s, _ := e.get("/readyz"); return s == 200 })

	tokA := e.token(userA.Hex())
	a := e.dial()
	wsDo(t, a, wsRequest(tokA, "attach", "issueUpdate", issue1.Hex()), 0)
	wsDo(t, a, wsRequest(tokA, "attach", "notification", ""), 0)
	wsDo(t, a, wsRequest(tokA, "attach", "datasetUpdate", dataset1.Hex()), 0)                // owner
	wsDo(t, a, wsRequest(tokA, "attach", "uploadFile", dataset2.Hex()), 4)                   // not owner nor member
	wsDo(t, a, wsRequest(tokA, "attach", "datasetUpdate", strings.ToUpper(issue1.Hex())), 4) // no such dataset

	// An unknown user: 3 (and the connection stays unclaimed).
	c := e.dial()
	wsDo(t, c, wsRequest(e.token(issue2.Hex()), "attach", "issueUpdate", issue1.Hex()), 3)
	wsDo(t, c, wsRequest(e.token(userB.Hex()), "attach", "datasetUpdate", dataset1.Hex()), 0) // member

	// A change in MongoDB reaches the subscribers.
	f.addChanges(chUpdate("issues", issue1, bson.D{{Key: "status", Value: "done"}}, nil, nil))
	if got, want := wsRead(t, a), frame("issueUpdate", issue1, `["status"]`); got != want {
		t.Fatalf("A got %s, want %s", got, want)
	}
	f.addChanges(chUpdate("datasets", dataset1, bson.D{{Key: "name", Value: "n"}}, nil, nil))
	want := frame("datasetUpdate", dataset1, `["name"]`)
	if got := wsRead(t, a); got != want {
		t.Fatalf("A got %s, want %s", got, want)
	}
	if got := wsRead(t, c); got != want {
		t.Fatalf("C got %s, want %s", got, want)
	}
	f.addChanges(chInsert("notifications", bson.D{{Key: "_id", Value: notif1}, {Key: "user", Value: userA}, {Key: "text", Value: "hi"}}))
	if got, want := wsRead(t, a), frame("notification", notif1, `[{"_id":"`+notif1.Hex()+`","user":"`+userA.Hex()+`","text":"hi"}]`); got != want {
		t.Fatalf("A got %s, want %s", got, want)
	}

	// A publish is written to the events collection, and comes back through
	// the stream; ?wait counts the write.
	status, ans := e.publish("?wait=5", `{"type":"issueUpdate","id":"`+issue1.Hex()+`","data":["title"]}`)
	if status != 200 || ans["code"] != 0.0 || ans["delivered"] != 1.0 || ans["pending"] != 0.0 {
		t.Fatalf("publish answered %d %v, want 200 delivered 1", status, ans)
	}
	if got, want := wsRead(t, a), frame("issueUpdate", issue1, `["title"]`); got != want {
		t.Fatalf("A got %s, want %s", got, want)
	}
	docs := f.docs("airlay_events")
	if len(docs) != 1 {
		t.Fatalf("%d documents in the events collection, want 1", len(docs))
	}
	if typ, _ := docs[0].Lookup("events", "0", "type").StringValueOK(); typ != "issueUpdate" {
		t.Errorf("written event %v", docs[0])
	}

	// Metrics of the package are served.
	_, metrics := e.get("/metrics")
	for _, m := range []string{`airlay_mongodb_change_events_total{collection="issues"} 1`, `airlay_mongodb_change_events_total{collection="airlay_events"} 1`,
		`airlay_mongodb_stream_up 1`, `airlay_mongodb_cache_requests_total{cache="user",result="miss"}`, "airlay_mongodb_change_lag_seconds_count 4"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}

	// Outage: a check that is not cached answers 7; publishing answers 503
	// code 7 and writes nothing; /readyz 503 with the reason in the log.
	f.setDown(true)
	d := e.dial()
	wsDo(t, d, wsRequest(e.token(userB.Hex()), "attach", "datasetUpdate", dataset2.Hex()), 7)
	status, ans = e.publish("", `{"type":"issueUpdate","id":"`+issue1.Hex()+`"}`)
	if status != 503 || ans["code"] != 7.0 || ans["status"] != 503.0 || ans["message"] != "Service unavailable" {
		t.Errorf("publish during the outage answered %d %v, want 503 code 7", status, ans)
	}
	waitFor(t, "/readyz 503", func() bool { s, _ := e.get("/readyz"); return s == 503 })
	if !strings.Contains(e.logs.String(), "not ready") {
		t.Error("the log does not say why /readyz is 503")
	}
	f.setDown(false)
	waitFor(t, "/readyz 200 again", func() bool { s, _ := e.get("/readyz"); return s == 200 })
	if len(f.docs("airlay_events")) != 1 {
		t.Error("the failed publish wrote a document")
	}
	wsDo(t, d, wsRequest(e.token(userB.Hex()), "attach", "datasetUpdate", dataset2.Hex()), 0)
	f.addChanges(chUpdate("issues", issue1, bson.D{{Key: "x", Value: 1}}, nil, nil))
	if got, want := wsRead(t, a), frame("issueUpdate", issue1, `["x"]`); got != want {
		t.Fatalf("after the outage A got %s, want %s", got, want)
	}
}

// TestEndToEndTCP: the same flow with the driver connected over TCP by a
// connection string (handshake, pool, monitoring, broken connections).
func TestEndToEndTCP(t *testing.T) {
	f := storeFake(t)
	uri := f.listenTCP(t)
	e := startServerWith(t, options.Client().ApplyURI(uri), testConfig())
	e.f = f
	waitFor(t, "/readyz 200", func() bool { s, _ := e.get("/readyz"); return s == 200 })
	tokA := e.token(userA.Hex())
	a := e.dial()
	wsDo(t, a, wsRequest(tokA, "attach", "issueUpdate", issue1.Hex()), 0)
	wsDo(t, a, wsRequest(tokA, "attach", "uploadFile", dataset2.Hex()), 4)
	wsDo(t, e.dial(), wsRequest(e.token(issue2.Hex()), "attach", "issueUpdate", issue1.Hex()), 3)
	f.addChanges(chUpdate("issues", issue1, bson.D{{Key: "status", Value: "done"}}, nil, nil))
	if got, want := wsRead(t, a), frame("issueUpdate", issue1, `["status"]`); got != want {
		t.Fatalf("A got %s, want %s", got, want)
	}
	status, ans := e.publish("?wait=5", `{"type":"issueUpdate","id":"`+issue1.Hex()+`","data":["title"]}`)
	if status != 200 || ans["delivered"] != 1.0 {
		t.Fatalf("publish answered %d %v", status, ans)
	}
	if got, want := wsRead(t, a), frame("issueUpdate", issue1, `["title"]`); got != want {
		t.Fatalf("A got %s, want %s", got, want)
	}
	// Broken connections: the getMore's connection is cut; the stream
	// resumes after its token over a new one.
	f.fail(fakeFail{cmd: "getMore", err: errors.New("cut")})
	waitFor(t, "the cut", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.fails) == 0 })
	f.addChanges(chUpdate("issues", issue1, bson.D{{Key: "after", Value: 1}}, nil, nil))
	if got, want := wsRead(t, a), frame("issueUpdate", issue1, `["after"]`); got != want {
		t.Fatalf("after the cut A got %s, want %s", got, want)
	}
	pts := resumePoints(t, f)
	if len(pts) < 2 || pts[len(pts)-1] != "resumeAfter 2" {
		t.Errorf("aggregates with %q, want the last to resume after change 2", pts)
	}
}
