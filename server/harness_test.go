package server

// The test harness: a real server on a loopback port, driven with
// gorilla/websocket (not melody) and net/http.

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlay/airlay/auth"
	"github.com/airlay/airlay/events"
	"github.com/airlay/airlay/internal/testkit"
	"github.com/gorilla/websocket"
	"go.mongodb.org/mongo-driver/mongo"
)

// Users and objects of the tests.
const (
	userA    = "5dad615eae019570fb4647ed"
	userB    = "5dad615eae019570fb4647ee"
	issue1   = "610217e481f6fc54736209e0"
	issue2   = "610217e481f6fc54736209e1"
	dataset1 = "620217e481f6fc54736209e0"
	export1  = "630217e481f6fc54736209e0"

	testPublishToken = "test-publish-token"
)

func privateKey(t testing.TB) *rsa.PrivateKey { return testkit.Key(t) }

// writePublicKey writes the test key's public half into dir and returns its path.
func writePublicKey(t testing.TB, dir string) string { return testkit.WritePublicKey(t, dir) }

// syncBuffer collects log output safely.
type syncBuffer = testkit.Buffer

type testEnv struct {
	t    testing.TB
	srv  *Server
	cfg  *Config
	base string // http://127.0.0.1:PORT
	ws   string // ws://127.0.0.1:PORT/ws
	logs *syncBuffer
	// gridDB is the database of the GridFS store (fileEnv "gridfs"), nil
	// for the disk store.
	gridDB *mongo.Database

	shutdownOnce sync.Once
	served       chan error
}

// newEnv starts a server with the test defaults, changed by mutate, and stops
// it when the test ends.
func newEnv(t testing.TB, mutate func(*Config)) *testEnv {
	t.Helper()
	cfg := Defaults()
	cfg.File = "test.ini"
	cfg.Address = "127.0.0.1"
	cfg.Port = 0
	cfg.JWTPublicKey = writePublicKey(t, t.TempDir())
	cfg.PublishToken = testPublishToken
	cfg.LogLevel = slog.LevelDebug
	if mutate != nil {
		mutate(&cfg)
	}
	return startEnv(t, &cfg, Options{})
}

func startEnv(t testing.TB, cfg *Config, opts Options) *testEnv {
	t.Helper()
	logs := &syncBuffer{}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: cfg.LogLevel}))
	}
	srv, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, srv: srv, cfg: cfg, logs: logs, served: make(chan error, 1)}
	e.base = "http://" + ln.Addr().String()
	e.ws = "ws://" + ln.Addr().String() + "/ws"
	go func() { e.served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		e.shutdown(5 * time.Second)
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return e
}

// shutdown stops the server gracefully and returns Shutdown's error.
func (e *testEnv) shutdown(timeout time.Duration) (err error) {
	e.shutdownOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		err = e.srv.Shutdown(ctx)
		if serr := <-e.served; serr != nil {
			e.t.Errorf("Serve: %v", serr)
		}
	})
	return err
}

// token mints a token for user valid for ttl.
func (e *testEnv) token(user string, ttl time.Duration) string {
	e.t.Helper()
	tok, err := auth.Mint(privateKey(e.t), auth.MintOptions{UserID: user, Name: "test", Issuer: e.cfg.JWTIssuer, TTL: ttl})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// wsClient is one test connection.
type wsClient struct {
	t  testing.TB
	ws *websocket.Conn
}

// dial opens a connection with no Origin header.
func (e *testEnv) dial() *wsClient {
	e.t.Helper()
	c, resp, err := e.dialHeader(nil)
	if err != nil {
		e.t.Fatalf("dial: %v (response %v)", err, resp)
	}
	return c
}

func (e *testEnv) dialHeader(h http.Header) (*wsClient, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial(e.ws, h)
	if err != nil {
		return nil, resp, err
	}
	c := &wsClient{t: e.t, ws: ws}
	e.t.Cleanup(func() { ws.Close() })
	return c, resp, nil
}

// request is a /ws request frame.
func request(token, action, typ, id string) string {
	ev := map[string]string{"type": typ}
	if id != "" {
		ev["id"] = id
	}
	b, _ := json.Marshal(map[string]any{"auth": token, "action": action, "event": ev})
	return string(b)
}

func (c *wsClient) sendText(s string) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next frame as a map, failing after timeout.
func (c *wsClient) read(timeout time.Duration) map[string]any {
	c.t.Helper()
	m, err := c.tryRead(timeout)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return m
}

func (c *wsClient) tryRead(timeout time.Duration) (map[string]any, error) {
	_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
	typ, msg, err := c.ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	if typ != websocket.TextMessage {
		return nil, errors.New("not a text frame")
	}
	var m map[string]any
	if err := json.Unmarshal(msg, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// expectCode reads one response and checks its code, status and message.
func (c *wsClient) expectCode(code int) {
	c.t.Helper()
	m := c.read(5 * time.Second)
	wantStatus := 400.0
	if code == 0 {
		wantStatus = 200
	}
	if m["code"] != float64(code) || m["status"] != wantStatus || m["message"] != codeMessage(code) {
		c.t.Fatalf("got %v, want code %d", m, code)
	}
}

// do sends one request and checks the answer.
func (c *wsClient) do(token, action, typ, id string, code int) {
	c.t.Helper()
	c.sendText(request(token, action, typ, id))
	c.expectCode(code)
}

// expectEvent reads one frame and checks it is the event (type, id).
func (c *wsClient) expectEvent(typ, id string) map[string]any {
	c.t.Helper()
	m := c.read(5 * time.Second)
	if m["type"] != typ || m["id"] != id {
		c.t.Fatalf("got %v, want event %s %s", m, typ, id)
	}
	if _, ok := m["data"].([]any); !ok {
		c.t.Fatalf("event %v: data is not an array", m)
	}
	return m
}

// expectNothing checks that no frame arrives within d.
func (c *wsClient) expectNothing(d time.Duration) {
	c.t.Helper()
	if m, err := c.tryRead(d); err == nil {
		c.t.Fatalf("unexpected frame %v", m)
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		c.t.Fatalf("unexpected error %v", err)
	}
}

// expectClose reads until the connection closes and checks the close code.
func (c *wsClient) expectClose(code int, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_ = c.ws.SetReadDeadline(deadline)
		_, _, err := c.ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("want close %d, got %v", code, err)
		}
		if ce.Code != code {
			c.t.Fatalf("want close %d, got %d %q", code, ce.Code, ce.Text)
		}
		return
	}
}

func codeMessage(code int) string {
	return []string{"Ok", "Token not set", "Invalid token", "User not exists", "Not access for dataset", "Invalid request", "Too many subscriptions", "Service unavailable"}[code]
}

// publish POSTs body to /api/events with the publish token.
func (e *testEnv) publish(query, body string) (int, map[string]any) {
	e.t.Helper()
	return e.post("/api/events"+query, "Bearer "+testPublishToken, body)
}

func (e *testEnv) post(path, authz, body string) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.base+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	return e.do(req)
}

func (e *testEnv) do(req *http.Request) (int, map[string]any) {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			e.t.Fatalf("%s %s: answer %q is not JSON", req.Method, req.URL.Path, b)
		}
	}
	return resp.StatusCode, m
}

// eventJSON is one publish event.
func eventJSON(typ, id string) string {
	return `{"type":"` + typ + `","id":"` + id + `"}`
}

// waitFor polls cond until it holds or the timeout ends.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cutPos splits an event frame into the frame without its last member,
// "pos", and that position; ok is false when the frame does not end with
// a well-formed position.
func cutPos(msg []byte) (rest []byte, pos string, ok bool) {
	i := bytes.LastIndex(msg, []byte(`,"pos":"`))
	if i < 0 || !bytes.HasSuffix(msg, []byte(`"}`)) {
		return msg, "", false
	}
	pos = string(msg[i+len(`,"pos":"`) : len(msg)-2])
	if _, _, _, good := events.ParsePos(pos); !good {
		return msg, pos, false
	}
	return append(append([]byte(nil), msg[:i]...), '}'), pos, true
}
