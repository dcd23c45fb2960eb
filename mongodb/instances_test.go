package mongodb

// Many instances over one database (mongosim, or a real replica set with
// AIRLAY_TEST_MONGODB_URI): heartbeats and the live set, ?wait counting
// every live instance's writes, presence across instances, revocation of
// dataset access and of a deleted user on every instance, and an instance
// that is killed (SIGKILL, a real process of the built binary) mid-wait.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlay/airlay/events"
	"github.com/airlay/airlay/internal/testkit"
	"github.com/gorilla/websocket"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// clusterConfig is a test configuration with fast heartbeats.
func clusterConfig(db, instance string) Config {
	c := integrationConfig(db, instance)
	c.InstanceTTL, c.HeartbeatInterval = 2*time.Second, 200*time.Millisecond
	return c
}

func (e *serverEnv) presence(user string, bearer bool) (int, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.base+"/api/presence?user="+user, nil)
	if bearer {
		req.Header.Set("Authorization", "Bearer "+e2ePublishToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, m
}

// liveNames is what the instance's broker counts as live.
func liveNames(e *serverEnv) []string {
	var out []string
	for _, in := range e.mg.Broker.Instances() {
		out = append(out, in.Name)
	}
	sort.Strings(out)
	return out
}

func waitLive(t *testing.T, want string, envs ...*serverEnv) {
	t.Helper()
	for _, e := range envs {
		waitFor(t, "live instances "+want, func() bool { return strings.Join(liveNames(e), ",") == want })
	}
}

// readDetached reads frames until a detached one (skipping events of the
// change itself) and returns it with its pos.
func readFrame(t *testing.T, ws *websocket.Conn) map[string]any {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(msg, &m); err != nil {
		t.Fatalf("frame %s: %v", msg, err)
	}
	return m
}

// clusterScenario runs the contract's lines of "Many instances" on three
// instances of one database.
func clusterScenario(t *testing.T, client *mongo.Client, uri, db string) {
	ctx := context.Background()
	co := func() *options.ClientOptions { return options.Client().ApplyURI(uri) }
	_ = client.Database(db).CreateCollection(ctx, "airlay_messages")
	_ = client.Database(db).CreateCollection(ctx, "airlay_instances")
	a := startServerWith(t, co(), clusterConfig(db, "a"))
	b := startServerWith(t, co(), clusterConfig(db, "b"))
	c := startServerWith(t, co(), clusterConfig(db, "c"))
	for _, e := range []*serverEnv{a, b, c} {
		waitFor(t, "/readyz 200", func() bool { st, _ := e.get("/readyz"); return st == 200 })
	}
	// Instances know each other.
	waitLive(t, "a,b,c", a, b, c)

	// ?wait counts every live instance's writes: user A on b (one
	// connection) and c (two), user B on a; a notification to A published
	// through a reaches three connections, none of them on a.
	tokA, tokB := a.token(userA.Hex()), a.token(userB.Hex())
	wb, wc1, wc2 := b.dial(), c.dial(), c.dial()
	for _, ws := range []*websocket.Conn{wb, wc1, wc2} {
		wsDo(t, ws, wsRequest(tokA, "attach", "notification", ""), 0)
		wsDo(t, ws, wsRequest(tokA, "attach", "issueUpdate", issue1.Hex()), 0)
	}
	wa := a.dial()
	wsDo(t, wa, wsRequest(tokB, "attach", "issueUpdate", issue1.Hex()), 0)
	st, m := a.publish("?wait=10", `{"type":"notification","user":"`+userA.Hex()+`","id":"`+notif1.Hex()+`","data":[{"text":"hi"}]}`)
	if st != 200 || m["delivered"] != 3.0 || m["pending"] != 0.0 {
		t.Fatalf("notification through a to a user on b and c: %d %v, want delivered 3 pending 0", st, m)
	}
	// One event to four connections on three instances.
	start := time.Now()
	st, m = b.publish("?wait=10", `{"type":"issueUpdate","id":"`+issue1.Hex()+`","data":["x"]}`)
	if st != 200 || m["delivered"] != 4.0 || m["pending"] != 0.0 {
		t.Fatalf("issueUpdate through b: %d %v, want delivered 4", st, m)
	}
	t.Logf("?wait over three instances answered in %v", time.Since(start).Round(time.Millisecond))
	for _, ws := range []*websocket.Conn{wb, wc1, wc2} {
		if f := readFrame(t, ws); f["type"] != "notification" {
			t.Fatalf("got %v, want the notification", f)
		}
		if f := readFrame(t, ws); f["type"] != "issueUpdate" {
			t.Fatalf("got %v, want the issueUpdate", f)
		}
	}
	if f := readFrame(t, wa); f["type"] != "issueUpdate" {
		t.Fatalf("got %v, want the issueUpdate", f)
	}
	// Nobody: 0.
	if st, m = c.publish("?wait=10", `{"type":"issueUpdate","id":"`+issue2.Hex()+`"}`); st != 200 || m["delivered"] != 0.0 {
		t.Fatalf("nobody subscribed: %d %v", st, m)
	}

	// Presence: every connection of A on every instance, asked anywhere.
	for _, e := range []*serverEnv{a, b} {
		st, m = e.presence(userA.Hex(), true)
		conns, _ := m["connections"].([]any)
		if st != 200 || m["code"] != 0.0 || len(conns) != 3 {
			t.Fatalf("presence of A through %s: %d %v, want 3 connections", e.base, st, m)
		}
		per := map[string]int{}
		for _, x := range conns {
			p := x.(map[string]any)
			per[p["instance"].(string)]++
			if _, err := time.Parse(time.RFC3339, p["opened"].(string)); err != nil || p["conn"] == "" || p["subscriptions"] != 2.0 {
				t.Fatalf("presence entry %v: want instance, conn, opened (RFC 3339), subscriptions 2", p)
			}
		}
		if per["b"] != 1 || per["c"] != 2 {
			t.Fatalf("presence by instance %v, want b:1 c:2", per)
		}
	}
	if st, m = a.presence("nope", true); st != 400 || m["code"] != 5.0 {
		t.Fatalf("presence of a bad id: %d %v, want 400 code 5", st, m)
	}
	if st, m = a.presence(userA.Hex(), false); st != 401 || m["code"] != 1.0 {
		t.Fatalf("presence without the bearer: %d %v, want 401", st, m)
	}
	wc2.Close()
	waitFor(t, "presence after a close", func() bool {
		_, m := a.presence(userA.Hex(), true)
		conns, _ := m["connections"].([]any)
		return len(conns) == 2
	})

	// The console shows every instance.
	req, _ := http.NewRequest(http.MethodGet, a.base+"/api/console", nil)
	req.Header.Set("Authorization", "Bearer "+e2ePublishToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var con struct {
		Instances []struct {
			Name string `json:"name"`
			Self bool   `json:"self"`
		} `json:"instances"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&con)
	resp.Body.Close()
	if len(con.Instances) != 3 || con.Instances[0].Name != "a" || !con.Instances[0].Self {
		t.Fatalf("console instances %+v, want a (self), b, c", con.Instances)
	}

	// Revocation. B becomes a member of dataset1 and attaches on b and
	// c; A (the owner) on a.
	ds := client.Database(db).Collection("datasets")
	if _, err := ds.UpdateOne(ctx, bson.D{{Key: "_id", Value: dataset1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "members", Value: bson.A{userB}}}}}); err != nil {
		t.Fatal(err)
	}
	rb, rc := b.dial(), c.dial()
	waitFor(t, "B may attach dataset1 (the access cache invalidated by the change)", func() bool {
		if err := rb.WriteMessage(websocket.TextMessage, []byte(wsRequest(tokB, "attach", "datasetUpdate", dataset1.Hex()))); err != nil {
			t.Fatal(err)
		}
		return wsRead(t, rb) == answer(0)
	})
	wsDo(t, rb, wsRequest(tokB, "attach", "uploadFile", dataset1.Hex()), 0)
	wsDo(t, rb, wsRequest(tokB, "attach", "issueUpdate", issue2.Hex()), 0)
	wsDo(t, rc, wsRequest(tokB, "attach", "datasetUpdate", dataset1.Hex()), 0)
	ra := a.dial()
	wsDo(t, ra, wsRequest(tokA, "attach", "datasetUpdate", dataset1.Hex()), 0)
	start = time.Now()
	if _, err := ds.UpdateOne(ctx, bson.D{{Key: "_id", Value: dataset1}}, bson.D{{Key: "$pull", Value: bson.D{{Key: "members", Value: userB}}}}); err != nil {
		t.Fatal(err)
	}
	detached := func(ws *websocket.Conn, want map[string]bool) {
		t.Helper()
		var last events.Pos // of the dataset's change event
		for len(want) > 0 {
			f := readFrame(t, ws)
			_, _, p, ok := events.ParsePos(fmt.Sprint(f["pos"]))
			if !ok {
				t.Fatalf("frame %v: no position", f)
			}
			if f["detached"] == nil {
				if f["type"] != "datasetUpdate" {
					t.Fatalf("got %v, want the dataset's change or a detached message", f)
				}
				last = p
				continue
			}
			if f["type"] == "datasetUpdate" && p.Less(last) {
				t.Fatalf("detached at %v, before the change event at %v: positions of a key only grow", f["pos"], last)
			}
			d := f["detached"].(map[string]any)
			if d["code"] != 4.0 || d["message"] != "Not access for dataset" || f["id"] != dataset1.Hex() || fmt.Sprint(f["data"]) != "[]" || f["pos"] == "" {
				t.Fatalf("detached message %v, want the contract's", f)
			}
			typ := f["type"].(string)
			if !want[typ] {
				t.Fatalf("detached %s twice or unexpected: %v", typ, f)
			}
			delete(want, typ)
		}
	}
	detached(rb, map[string]bool{"datasetUpdate": true, "uploadFile": true})
	detached(rc, map[string]bool{"datasetUpdate": true})
	t.Logf("revoking write to the detached messages on two instances: %v", time.Since(start).Round(time.Millisecond))
	// The owner keeps it; B is refused again at once (the cache was
	// invalidated), and receives nothing more of dataset1.
	if f := readFrame(t, ra); f["type"] != "datasetUpdate" || f["detached"] != nil {
		t.Fatalf("owner got %v, want the change", f)
	}
	wsDo(t, rb, wsRequest(tokB, "attach", "datasetUpdate", dataset1.Hex()), 4)
	if _, err := ds.UpdateOne(ctx, bson.D{{Key: "_id", Value: dataset1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "name", Value: "x"}}}}); err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, ra); f["type"] != "datasetUpdate" {
		t.Fatalf("owner got %v", f)
	}
	// B's other subscription still works (the marker comes next on rb).
	if st, _ := a.publish("", `{"type":"issueUpdate","id":"`+issue2.Hex()+`"}`); st != 200 {
		t.Fatal(st)
	}
	if f := readFrame(t, rb); f["type"] != "issueUpdate" {
		t.Fatalf("B on b got %v, want only the issueUpdate marker (nothing more of dataset1)", f)
	}

	// A deleted user: every connection of B, on every instance, closes
	// with 4004.
	if _, err := client.Database(db).Collection("users").DeleteOne(ctx, bson.D{{Key: "_id", Value: userB}}); err != nil {
		t.Fatal(err)
	}
	for name, ws := range map[string]*websocket.Conn{"a": wa, "b": rb, "c": rc} {
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			_, _, err := ws.ReadMessage()
			if err == nil {
				continue
			}
			var ce *websocket.CloseError
			if !errorsAs(err, &ce) || ce.Code != 4004 || ce.Text != "user not exists" {
				t.Fatalf("B's connection on %s: %v, want close 4004 user not exists", name, err)
			}
			break
		}
	}
	// A's connections stay.
	if st, m = a.publish("?wait=10", `{"type":"notification","user":"`+userA.Hex()+`","id":"`+notif1.Hex()+`"}`); m["delivered"] != 2.0 {
		t.Fatalf("after B's deletion: %d %v, want A's two connections", st, m)
	}

	// A deleted dataset: its holders lose it, without a query.
	if _, err := ds.DeleteOne(ctx, bson.D{{Key: "_id", Value: dataset1}}); err != nil {
		t.Fatal(err)
	}
	detached(ra, map[string]bool{"datasetUpdate": true})

	// A stopping instance drops out at once (it removes its heartbeat).
	c.srv.Shutdown(context.Background()) //nolint:errcheck
	waitLive(t, "a,b", a, b)
}

func errorsAs(err error, target **websocket.CloseError) bool {
	ce, ok := err.(*websocket.CloseError)
	if ok {
		*target = ce
	}
	return ok
}

func TestInstances(t *testing.T) {
	p := startSim(t)
	client := p.client()
	seed(t, client, "airlay")
	clusterScenario(t, client, p.uri, "airlay")
}

func TestIntegrationInstances(t *testing.T) {
	client, uri, db := integration(t)
	seed(t, client, db)
	clusterScenario(t, client, uri, db)
}

// TestInstanceKilledMidWait: an instance of the built binary holds a
// subscriber; it is frozen (SIGSTOP: no heartbeat, no report, still in the
// live set), a publish through another instance waits, and the frozen one
// is killed with SIGKILL during the wait. The wait ends when it drops out
// of the live set (within instance_ttl), not at the end of ?wait, with
// the writes of the live instances: the dead one's count in neither
// delivered nor pending.
func TestInstanceKilledMidWait(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	p := startSim(t)
	client := p.client()
	seed(t, client, "airlay")
	_ = client.Database("airlay").CreateCollection(context.Background(), "airlay_messages")
	dir := t.TempDir()
	bin := filepath.Join(dir, "airlay-cli")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(gobin, "build", "-o", bin, "github.com/airlay/airlay/cmd/airlay-cli").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	testkit.WritePublicKey(t, dir)
	config := fmt.Sprintf("[webSocketEvents]\naddress = 127.0.0.1\nport = 0\njwt_public_key = jwt.pem\npublish_token = %s\nhistory_ttl = 0\n\n[mongodb]\nuri = %s\ninstance = doomed\ninstance_ttl = 2s\nheartbeat_interval = 200ms\n", e2ePublishToken, p.uri)
	if err := os.WriteFile(filepath.Join(dir, "config.ini"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "web_socket", "server", "--config", filepath.Join(dir, "config.ini"))
	logs := &testkit.Buffer{}
	cmd.Stderr, cmd.Stdout = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("doomed instance's log:\n%s", logs.String())
		}
	})
	listen := regexp.MustCompile(`msg=listening addr=(\S+)`)
	var addr string
	waitFor(t, "the listening line", func() bool {
		if m := listen.FindStringSubmatch(logs.String()); m != nil {
			addr = m[1]
			return true
		}
		return false
	})
	doomed := &serverEnv{t: t, base: "http://" + addr, ws: "ws://" + addr + "/ws"}
	waitFor(t, "/readyz 200", func() bool { s, _ := doomed.get("/readyz"); return s == 200 })

	a := startServerWith(t, options.Client().ApplyURI(p.uri), clusterConfig("airlay", "a"))
	b := startServerWith(t, options.Client().ApplyURI(p.uri), clusterConfig("airlay", "b"))
	waitLive(t, "a,b,doomed", a, b)
	tok := a.token(userA.Hex())
	for _, e := range []*serverEnv{doomed, b} {
		wsDo(t, e.dial(), wsRequest(tok, "attach", "issueUpdate", issue1.Hex()), 0)
	}
	body := `{"type":"issueUpdate","id":"` + issue1.Hex() + `"}`
	if st, m := a.publish("?wait=10", body); st != 200 || m["delivered"] != 2.0 {
		t.Fatalf("before: %d %v, want delivered 2 (b and doomed)", st, m)
	}

	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// kill(2) returns before every thread has stopped: wait for the
	// process's state to say so (T, stopped), so that it cannot read the
	// publish below.
	waitFor(t, "the doomed instance stopped", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		if err != nil {
			return true // no /proc: the signal has to do
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		return len(f) > 0 && f[0] == "T"
	})
	// And its reports under way, if any, are in.
	time.Sleep(100 * time.Millisecond)
	type result struct {
		st int
		m  map[string]any
		d  time.Duration
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		st, m := a.publish("?wait=30", body)
		done <- result{st, m, time.Since(start)}
	}()
	time.Sleep(300 * time.Millisecond) // the publish is waiting
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	var r result
	select {
	case r = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the wait hangs after an instance was killed")
	}
	if r.st != 200 || r.m["delivered"] != 1.0 || r.m["pending"] != 0.0 {
		t.Fatalf("wait with a killed instance: %d %v, want delivered 1 (b's), pending 0 (doomed's unreported writes count in neither)", r.st, r.m)
	}
	if r.d > 5*time.Second {
		t.Fatalf("the wait took %v: want the end within instance_ttl (2s) of the freeze, not the 30 s of ?wait", r.d)
	}
	t.Logf("?wait=30 with an instance killed mid-wait answered after %v", r.d.Round(time.Millisecond))
	waitLive(t, "a,b", a, b)
}
