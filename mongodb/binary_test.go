package mongodb

// The airlay-cli binary with [mongodb] uri set, against the fake MongoDB
// over TCP: the wiring of cmd/airlay-cli (connect, Store, Broker, Ready,
// metrics, the source feeding the hub, the token saved on shutdown) and the
// core end-to-end flow of the contract with the MongoDB configuration.

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlay/airlay/internal/testkit"
	"github.com/gorilla/websocket"
	"go.mongodb.org/mongo-driver/bson"
)

func TestBinaryWithMongoDB(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	f := storeFake(t)
	uri := f.listenTCP(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "airlay-cli")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(gobin, "build", "-o", bin, "github.com/airlay/airlay/cmd/airlay-cli").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	testkit.WritePublicKey(t, dir)
	config := fmt.Sprintf("[webSocketEvents]\naddress = 127.0.0.1\nport = 0\njwt_public_key = jwt.pem\npublish_token = %s\nshutdown_timeout = 5s\n\n[mongodb]\nuri = %s\ninstance = bin-1\n", e2ePublishToken, uri)
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
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	listen := regexp.MustCompile(`msg=listening addr=(\S+)`)
	var base string
	waitFor(t, "the listening line", func() bool {
		if m := listen.FindStringSubmatch(logs.String()); m != nil {
			base = m[1]
			return true
		}
		return false
	})
	e := &serverEnv{t: t, f: f, base: "http://" + base, ws: "ws://" + base + "/ws"}
	waitFor(t, "/readyz 200", func() bool { s, _ := e.get("/readyz"); return s == 200 })
	if !strings.Contains(logs.String(), "mode: with MongoDB") || !strings.Contains(logs.String(), "instance=bin-1") {
		t.Errorf("the start-up log does not say the mode")
	}

	// The core flow of the contract (cmd's TestServerEndToEnd) with MongoDB.
	tok := e.token(userA.Hex())
	ws := e.dial()
	wsDo(t, ws, wsRequest(tok, "attach", "issueUpdate", issue1.Hex()), 0)
	wsDo(t, ws, wsRequest(tok, "attach", "notification", ""), 0)
	wsDo(t, ws, `{"auth":"x","action":"attach"}`, 5)
	wsDo(t, e.dial(), wsRequest(e.token(issue2.Hex()), "attach", "issueUpdate", issue1.Hex()), 3)
	status, ans := e.publish("", `{"type": "issueUpdate", "id": "610217e481f6fc54736209e0", "data": ["status"]}`)
	if status != 200 || ans["code"] != 0.0 {
		t.Fatalf("publish answered %d %v", status, ans)
	}
	if got, want := wsRead(t, ws), `{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":["status"]}`; got != want {
		t.Fatalf("event %s, want %s", got, want)
	}
	status, ans = e.publish("?wait=5", `{"type": "notification", "user": "5dad615eae019570fb4647ed", "id": "6a0000000000000000000001", "data": [{"text": "hi"}]}`)
	if status != 200 || ans["delivered"] != 1.0 || ans["pending"] != 0.0 {
		t.Fatalf("publish ?wait=5 answered %d %v, want delivered 1", status, ans)
	}
	if got, want := wsRead(t, ws), `{"type":"notification","id":"6a0000000000000000000001","data":[{"text":"hi"}]}`; got != want {
		t.Fatalf("event %s, want %s", got, want)
	}
	f.addChanges(chUpdate("issues", issue1, bson.D{{Key: "title", Value: "x"}}, nil, nil))
	if got, want := wsRead(t, ws), frame("issueUpdate", issue1, `["title"]`); got != want {
		t.Fatalf("change %s, want %s", got, want)
	}
	_, metrics := e.get("/metrics")
	if !strings.Contains(metrics, `airlay_mongodb_change_events_total{collection="airlay_events"} 2`) {
		t.Error("/metrics lacks the MongoDB metrics")
	}

	// Graceful shutdown: 1001, exit 0, the token saved under the instance.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := ws.ReadMessage()
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != websocket.CloseGoingAway {
		t.Errorf("after SIGTERM: %v, want close 1001", err)
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Fatalf("exit: %v", exitErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10s after SIGTERM")
	}
	docs := f.docs("airlay_resume_tokens")
	if len(docs) != 1 {
		t.Fatalf("%d token documents", len(docs))
	}
	if id, _ := docs[0].Lookup("_id").StringValueOK(); id != "bin-1" {
		t.Errorf("token saved under %q", id)
	}
	if pos, _ := tokenPos(docs[0].Lookup("token").Document()); pos != 3 {
		t.Errorf("saved token at %d, want 3 (the last change delivered)", pos)
	}
	if strings.Contains(logs.String(), uri) {
		t.Error("the log shows the uri")
	}
	_ = http.StatusOK
}
