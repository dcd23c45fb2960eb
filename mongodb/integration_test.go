package mongodb

// Integration tests against a real replica set. They run only when
// AIRLAY_TEST_MONGODB_URI is set, for example with the docker-compose.yml
// of the repository:
//
//	docker compose up -d mongo
//	AIRLAY_TEST_MONGODB_URI='mongodb://localhost:27017/?directConnection=true' go test -race -run Integration -v ./mongodb/
//
// The server must run with enableTestCommands=1 for the fail point test
// (the compose file sets it). Each test works in a database of its own,
// dropped at the end.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

const integrationEnv = "AIRLAY_TEST_MONGODB_URI"

// integration returns a client of the real MongoDB and a fresh database
// name, or skips the test.
func integration(t *testing.T) (*mongo.Client, string, string) {
	t.Helper()
	uri := os.Getenv(integrationEnv)
	if uri == "" {
		t.Skipf("%s is not set: the integration tests need a MongoDB replica set (docker compose up -d mongo; %s='mongodb://localhost:27017/?directConnection=true' go test -run Integration ./mongodb/)", integrationEnv, integrationEnv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := mongo.Connect(ctx, options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Ping(ctx, nil); err != nil {
		t.Fatalf("%s=%s: %v", integrationEnv, uri, err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	db := "airlay_test_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = client.Database(db).Drop(ctx)
		_ = client.Disconnect(ctx)
	})
	return client, uri, db
}

func integrationConfig(db, instance string) Config {
	cfg := testConfig()
	cfg.Database, cfg.Instance = db, instance
	cfg.MaxAwait = 200 * time.Millisecond
	cfg.RetryMin, cfg.RetryMax = 50*time.Millisecond, time.Second
	return cfg
}

// seed writes users and a dataset.
func seed(t *testing.T, client *mongo.Client, db string) {
	t.Helper()
	ctx := context.Background()
	if _, err := client.Database(db).Collection("users").InsertMany(ctx, []any{bson.D{{Key: "_id", Value: userA}}, bson.D{{Key: "_id", Value: userB}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Database(db).Collection("datasets").InsertOne(ctx, bson.D{{Key: "_id", Value: dataset1}, {Key: "owner", Value: userA}, {Key: "members", Value: bson.A{}}}); err != nil {
		t.Fatal(err)
	}
	// Collections exist before the streams open, so that the first writes
	// are not racing their creation.
	for _, c := range []string{"issues", "airlay_events", "airlay_resume_tokens"} {
		_ = client.Database(db).CreateCollection(ctx, c)
	}
}

func integrationServer(t *testing.T, uri, db, instance string) *serverEnv {
	e := startServerWith(t, options.Client().ApplyURI(uri), integrationConfig(db, instance))
	deadline := time.Now().Add(15 * time.Second)
	for {
		if s, _ := e.get("/readyz"); s == 200 {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not 200 within 15s; log:\n%s", e.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestIntegrationChangeToWebSocket: a write to a watched collection reaches
// a WebSocket client; codes 3 and 4 come from the real collections.
func TestIntegrationChangeToWebSocket(t *testing.T) {
	client, uri, db := integration(t)
	seed(t, client, db)
	e := integrationServer(t, uri, db, "it-1")
	tok := e.token(userA.Hex())
	ws := e.dial()
	wsDo(t, ws, wsRequest(tok, "attach", "issueUpdate", issue1.Hex()), 0)
	wsDo(t, ws, wsRequest(tok, "attach", "datasetUpdate", dataset1.Hex()), 0)
	wsDo(t, ws, wsRequest(tok, "attach", "uploadFile", dataset2.Hex()), 4)
	wsDo(t, e.dial(), wsRequest(e.token(issue2.Hex()), "attach", "issueUpdate", issue1.Hex()), 3)

	issues := client.Database(db).Collection("issues")
	ctx := context.Background()
	if _, err := issues.InsertOne(ctx, bson.D{{Key: "_id", Value: issue1}, {Key: "status", Value: "open"}, {Key: "x", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	if got, want := wsRead(t, ws), frame("issueUpdate", issue1, `[]`); got != want {
		t.Fatalf("insert: %s, want %s", got, want)
	}
	if _, err := issues.UpdateByID(ctx, issue1, bson.D{{Key: "$set", Value: bson.D{{Key: "status", Value: "done"}}}, {Key: "$unset", Value: bson.D{{Key: "x", Value: ""}}}}); err != nil {
		t.Fatal(err)
	}
	if got, want := wsRead(t, ws), frame("issueUpdate", issue1, `["status","x"]`); got != want {
		t.Fatalf("update: %s, want %s", got, want)
	}
	// An upload that finishes, by update (the dataset comes from the
	// looked-up document).
	uploads := client.Database(db).Collection("uploads")
	if _, err := uploads.InsertOne(ctx, bson.D{{Key: "_id", Value: upload1}, {Key: "dataset", Value: dataset1}, {Key: "status", Value: "running"}, {Key: "name", Value: "a.csv"}}); err != nil {
		t.Fatal(err)
	}
	wsDo(t, ws, wsRequest(tok, "attach", "uploadFile", dataset1.Hex()), 0)
	if _, err := uploads.UpdateByID(ctx, upload1, bson.D{{Key: "$set", Value: bson.D{{Key: "status", Value: "finished"}}}}); err != nil {
		t.Fatal(err)
	}
	if got, want := wsRead(t, ws), frame("uploadFile", dataset1, `[{"_id":"`+upload1.Hex()+`","name":"a.csv"}]`); got != want {
		t.Fatalf("upload: %s, want %s", got, want)
	}
}

// TestIntegrationTwoInstances: two instances share the database; a publish
// to one reaches the subscribers of both, and ?wait counts this instance's
// writes.
func TestIntegrationTwoInstances(t *testing.T) {
	client, uri, db := integration(t)
	seed(t, client, db)
	a := integrationServer(t, uri, db, "it-a")
	b := integrationServer(t, uri, db, "it-b")
	wa, wb := a.dial(), b.dial()
	wsDo(t, wa, wsRequest(a.token(userA.Hex()), "attach", "issueUpdate", issue2.Hex()), 0)
	wsDo(t, wb, wsRequest(b.token(userB.Hex()), "attach", "issueUpdate", issue2.Hex()), 0)
	status, ans := a.publish("?wait=10", `{"type":"issueUpdate","id":"`+issue2.Hex()+`","data":["status"]}`)
	if status != 200 || ans["delivered"] != 1.0 {
		t.Fatalf("publish answered %d %v, want 200 with delivered 1 (this instance's one subscriber)", status, ans)
	}
	want := frame("issueUpdate", issue2, `["status"]`)
	if got := wsRead(t, wa); got != want {
		t.Fatalf("instance A: %s", got)
	}
	if got := wsRead(t, wb); got != want {
		t.Fatalf("instance B: %s", got)
	}
	n, err := client.Database(db).Collection("airlay_events").CountDocuments(context.Background(), bson.D{})
	if err != nil || n != 1 {
		t.Errorf("events collection holds %d documents (%v), want 1", n, err)
	}
}

// TestIntegrationFailPoint: errors injected into the stream (a resumable
// one, a closed connection) are survived with no change lost or doubled.
func TestIntegrationFailPoint(t *testing.T) {
	client, uri, db := integration(t)
	seed(t, client, db)
	e := integrationServer(t, uri, db, "it-fp")
	ws := e.dial()
	wsDo(t, ws, wsRequest(e.token(userA.Hex()), "attach", "issueUpdate", issue1.Hex()), 0)
	issues := client.Database(db).Collection("issues")
	ctx := context.Background()
	if _, err := issues.InsertOne(ctx, bson.D{{Key: "_id", Value: issue1}}); err != nil {
		t.Fatal(err)
	}
	expect := []string{frame("issueUpdate", issue1, `[]`)}
	admin := client.Database("admin")
	for round, data := range []bson.D{
		{{Key: "failCommands", Value: bson.A{"getMore"}}, {Key: "errorCode", Value: 10107}, {Key: "errorLabels", Value: bson.A{"ResumableChangeStreamError"}}},
		{{Key: "failCommands", Value: bson.A{"getMore"}}, {Key: "closeConnection", Value: true}},
		{{Key: "failCommands", Value: bson.A{"getMore", "aggregate"}}, {Key: "errorCode", Value: 10107}, {Key: "errorLabels", Value: bson.A{"ResumableChangeStreamError"}}},
	} {
		times := 1
		if round == 2 {
			times = 3 // the driver's resume fails too: the source's own retry
		}
		for i := 0; i < 3; i++ {
			f := fmt.Sprintf("r%d_%d", round, i)
			if _, err := issues.UpdateByID(ctx, issue1, bson.D{{Key: "$set", Value: bson.D{{Key: f, Value: 1}}}}); err != nil {
				t.Fatal(err)
			}
			expect = append(expect, frame("issueUpdate", issue1, `["`+f+`"]`))
		}
		err := admin.RunCommand(ctx, bson.D{{Key: "configureFailPoint", Value: "failCommand"}, {Key: "mode", Value: bson.D{{Key: "times", Value: times}}}, {Key: "data", Value: data}}).Err()
		if err != nil {
			t.Fatalf("configureFailPoint (the server needs --setParameter enableTestCommands=1): %v", err)
		}
		for i := 3; i < 6; i++ {
			f := fmt.Sprintf("r%d_%d", round, i)
			if _, err := issues.UpdateByID(ctx, issue1, bson.D{{Key: "$set", Value: bson.D{{Key: f, Value: 1}}}}); err != nil {
				t.Fatal(err)
			}
			expect = append(expect, frame("issueUpdate", issue1, `["`+f+`"]`))
		}
	}
	var got []string
	for len(got) < len(expect) {
		got = append(got, wsRead(t, ws))
	}
	_ = ws.SetReadDeadline(time.Now().Add(time.Second))
	if _, extra, err := ws.ReadMessage(); err == nil {
		got = append(got, string(extra))
	} else if ne, ok := err.(interface{ Timeout() bool }); !ok || !ne.Timeout() {
		if !websocket.IsCloseError(err) {
			t.Logf("read after the last frame: %v", err)
		}
	}
	if strings.Join(got, "\n") != strings.Join(expect, "\n") {
		t.Fatalf("frames (lost or doubled):\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(expect, "\n     "))
	}
	_ = admin.RunCommand(ctx, bson.D{{Key: "configureFailPoint", Value: "failCommand"}, {Key: "mode", Value: "off"}}).Err()
}

// TestIntegrationIdempotencyKey: the majority write concern of a keyed
// publish fails after the primary applied the insert (a fail point with
// writeConcernError): 503 code 7. The backend retries with the same key
// through the other instance: 200 duplicate, and each instance's subscriber
// gets the event exactly once.
func TestIntegrationIdempotencyKey(t *testing.T) {
	client, uri, db := integration(t)
	seed(t, client, db)
	app := "airlay-it-" + db // the fail point hits only instance A's client
	a := startServerWith(t, options.Client().ApplyURI(uri).SetAppName(app), integrationConfig(db, "it-key-a"))
	b := integrationServer(t, uri, db, "it-key-b")
	waitFor(t, "instance A ready", func() bool { s, _ := a.get("/readyz"); return s == 200 })
	wa, wb := a.dial(), b.dial()
	for _, ws := range []*websocket.Conn{wa, wb} {
		wsDo(t, ws, wsRequest(a.token(userA.Hex()), "attach", "issueUpdate", issue1.Hex()), 0)
		wsDo(t, ws, wsRequest(a.token(userA.Hex()), "attach", "issueUpdate", issue2.Hex()), 0)
	}
	ctx := context.Background()
	admin := client.Database("admin")
	err := admin.RunCommand(ctx, bson.D{{Key: "configureFailPoint", Value: "failCommand"}, {Key: "mode", Value: bson.D{{Key: "times", Value: 1}}},
		{Key: "data", Value: bson.D{{Key: "failCommands", Value: bson.A{"insert"}}, {Key: "appName", Value: app},
			{Key: "writeConcernError", Value: bson.D{{Key: "code", Value: 64}, {Key: "codeName", Value: "WriteConcernFailed"}, {Key: "errmsg", Value: "waiting for replication timed out"}, {Key: "errInfo", Value: bson.D{{Key: "wtimeout", Value: true}}}}}}}}).Err()
	if err != nil {
		t.Fatalf("configureFailPoint (the server needs --setParameter enableTestCommands=1): %v", err)
	}
	defer admin.RunCommand(ctx, bson.D{{Key: "configureFailPoint", Value: "failCommand"}, {Key: "mode", Value: "off"}})
	body := `{"type":"issueUpdate","id":"` + issue1.Hex() + `","data":["status"]}`
	status, m := a.publishKeyed("", body, "it-job-1")
	if status != 503 || m["code"] != 7.0 {
		t.Fatalf("first try: %d %v, want 503 code 7 (the write-concern error)", status, m)
	}
	status, m = b.publishKeyed("?wait=2", body, "it-job-1")
	if status != 200 || m["duplicate"] != true {
		t.Fatalf("retry on B: %d %v, want 200 duplicate", status, m)
	}
	if status, m = b.publish("", `{"type":"issueUpdate","id":"`+issue2.Hex()+`"}`); status != 200 {
		t.Fatalf("marker: %d %v", status, m)
	}
	for name, ws := range map[string]*websocket.Conn{"A": wa, "B": wb} {
		if got, want := wsRead(t, ws), frame("issueUpdate", issue1, `["status"]`); got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
		if got, want := wsRead(t, ws), frame("issueUpdate", issue2, `[]`); got != want {
			t.Errorf("%s: %s, want the marker %s", name, got, want)
		}
	}
	n, err := client.Database(db).Collection("airlay_events").CountDocuments(ctx, bson.D{})
	if err != nil || n != 2 {
		t.Errorf("events collection holds %d documents (%v), want 2", n, err)
	}
}

// TestIntegrationTTLIndex: the TTL index follows events_ttl (collMod, no
// manual drop) and is created again after the database is dropped.
func TestIntegrationTTLIndex(t *testing.T) {
	client, uri, db := integration(t)
	seed(t, client, db)
	ctx := context.Background()
	ttl := func() int64 {
		cur, err := client.Database(db).Collection("airlay_events").Indexes().List(ctx)
		if err != nil {
			return -1
		}
		var specs []bson.M
		_ = cur.All(ctx, &specs)
		for _, s := range specs {
			if k, ok := s["key"].(bson.M); ok && len(k) == 1 && k["createdAt"] != nil {
				switch v := s["expireAfterSeconds"].(type) {
				case int32:
					return int64(v)
				case int64:
					return v
				case float64:
					return int64(v)
				}
			}
		}
		return -1
	}
	e := integrationServer(t, uri, db, "it-ttl-1")
	waitFor(t, "the TTL index at 3600s", func() bool { return ttl() == 3600 })
	// Another instance with another events_ttl changes it in place.
	cfg := integrationConfig(db, "it-ttl-2")
	cfg.EventsTTL = 20 * time.Minute
	startServerWith(t, options.Client().ApplyURI(uri), cfg)
	waitFor(t, "the TTL index at 1200s", func() bool { return ttl() == 1200 })
	// dropDatabase: the first instance's stream is invalidated; it creates
	// its index again.
	if err := client.Database(db).Drop(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for ttl() != 3600 && ttl() != 1200 {
		if time.Now().After(deadline) {
			t.Fatalf("no TTL index after dropDatabase; log:\n%s", e.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mongosimControl returns the HTTP control endpoint of mongosim
// (AIRLAY_TEST_MONGOSIM_CONTROL, set by .ci/run), or skips:
// a real replica set has no fault that applies a write and loses its reply.
func mongosimControl(t *testing.T) string {
	t.Helper()
	c := os.Getenv("AIRLAY_TEST_MONGOSIM_CONTROL")
	if c == "" {
		t.Skip("AIRLAY_TEST_MONGOSIM_CONTROL is not set: this test needs mongosim's close_after fault (.ci/run sets it)")
	}
	return c
}

func mongosimFault(t *testing.T, control string, fault map[string]any) {
	t.Helper()
	b, _ := json.Marshal(fault)
	resp, err := http.Post(control+"/fault", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /fault %s: %d %s", b, resp.StatusCode, body)
	}
}

// TestIntegrationIdempotencyReplyLost: the insert of a keyed publish is
// applied and the connection closes before the reply (close_after). Once:
// the driver's retryable write gets the first result, 200. Twice (the
// driver's retry too): 503, and the backend's retry with the same key is a
// duplicate. Either way every subscriber gets each event once.
func TestIntegrationIdempotencyReplyLost(t *testing.T) {
	control := mongosimControl(t)
	client, uri, db := integration(t)
	seed(t, client, db)
	app := "airlay-it-lost-" + db
	a := startServerWith(t, options.Client().ApplyURI(uri).SetAppName(app), integrationConfig(db, "it-lost-a"))
	b := integrationServer(t, uri, db, "it-lost-b")
	waitFor(t, "instance A ready", func() bool { s, _ := a.get("/readyz"); return s == 200 })
	wa, wb := a.dial(), b.dial()
	for _, ws := range []*websocket.Conn{wa, wb} {
		wsDo(t, ws, wsRequest(a.token(userA.Hex()), "attach", "issueUpdate", issue1.Hex()), 0)
		wsDo(t, ws, wsRequest(a.token(userA.Hex()), "attach", "issueUpdate", issue2.Hex()), 0)
	}
	body := func(field string) string {
		return `{"type":"issueUpdate","id":"` + issue1.Hex() + `","data":["` + field + `"]}`
	}
	ns := db + ".airlay_events"

	mongosimFault(t, control, map[string]any{"kind": "close_after", "commands": []string{"insert"}, "ns": ns, "app": app, "times": 1})
	if status, m := a.publishKeyed("", body("once"), "lost-1"); status != 200 || m["duplicate"] != nil {
		t.Fatalf("reply lost once: %d %v, want 200 (the driver's retry gets the first result)", status, m)
	}
	mongosimFault(t, control, map[string]any{"kind": "close_after", "commands": []string{"insert"}, "ns": ns, "app": app, "times": 2})
	if status, m := a.publishKeyed("", body("twice"), "lost-2"); status != 503 {
		t.Fatalf("reply lost twice: %d %v, want 503", status, m)
	}
	if status, m := b.publishKeyed("", body("twice"), "lost-2"); status != 200 || m["duplicate"] != true {
		t.Fatalf("retry on B: %d %v, want 200 duplicate", status, m)
	}
	if status, m := a.publishKeyed("", body("twice"), "lost-2"); status != 200 || m["duplicate"] != true {
		t.Fatalf("retry on A: %d %v, want 200 duplicate", status, m)
	}
	if status, m := b.publish("", `{"type":"issueUpdate","id":"`+issue2.Hex()+`"}`); status != 200 {
		t.Fatalf("marker: %d %v", status, m)
	}
	for name, ws := range map[string]*websocket.Conn{"A": wa, "B": wb} {
		for _, want := range []string{frame("issueUpdate", issue1, `["once"]`), frame("issueUpdate", issue1, `["twice"]`), frame("issueUpdate", issue2, `[]`)} {
			if got := wsRead(t, ws); got != want {
				t.Errorf("%s: %s, want %s", name, got, want)
			}
		}
	}
}
