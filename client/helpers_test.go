package client_test

// The harness: the real server (server.New + Serve) on a loopback port, in
// this process, stopped and started again on the same port when a test
// needs a restart.

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlay/airlay/auth"
	"github.com/airlay/airlay/client"
	"github.com/airlay/airlay/server"
)

const (
	userA   = "5dad615eae019570fb4647ed"
	issue1  = "610217e481f6fc54736209e0"
	issue2  = "610217e481f6fc54736209e1"
	issue3  = "610217e481f6fc54736209e2"
	pubTok  = "test-publish-token"
	waitFor = 5 * time.Second
)

var (
	keysOnce sync.Once
	keysDir  string
	keysErr  error
)

// TestMain removes the key pair that the tests share.
func TestMain(m *testing.M) {
	code := m.Run()
	if keysDir != "" {
		os.RemoveAll(keysDir)
	}
	os.Exit(code)
}

// testKeys returns the public key file and the private key of a pair made
// by auth.GenerateKeyPair once per test binary (an RSA key takes a while
// under the race detector).
func testKeys(t *testing.T) (string, *rsa.PrivateKey) {
	t.Helper()
	keysOnce.Do(func() {
		keysDir, keysErr = os.MkdirTemp("", "airlay-client-test-")
		if keysErr == nil {
			_, _, keysErr = auth.GenerateKeyPair(keysDir)
		}
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
	pub := filepath.Join(t.TempDir(), "jwt.pem")
	data, err := os.ReadFile(filepath.Join(keysDir, "jwt.pem"))
	if err == nil {
		err = os.WriteFile(pub, data, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
	key, err := auth.LoadPrivateKey(filepath.Join(keysDir, "jwt-private.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return pub, key
}

type testServer struct {
	t    *testing.T
	cfg  *server.Config
	key  *rsa.PrivateKey
	addr string // 127.0.0.1:PORT, the same across restarts

	mu     sync.Mutex
	srv    *server.Server
	served chan error
}

// startServer starts a server with the test settings (changed by mutate) and
// stops it when the test ends.
func startServer(t *testing.T, mutate func(*server.Config)) *testServer {
	t.Helper()
	pub, key := testKeys(t)
	cfg := server.Defaults()
	cfg.File = "test.ini"
	cfg.Address = "127.0.0.1"
	cfg.Port = 0
	cfg.JWTPublicKey = pub
	cfg.PublishToken = pubTok
	cfg.ShutdownTimeout = 2 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	s := &testServer{t: t, cfg: &cfg, key: key}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	s.serve(ln)
	t.Cleanup(s.stop)
	return s
}

func (s *testServer) serve(ln net.Listener) {
	s.t.Helper()
	srv, err := server.New(s.cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		s.t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	s.mu.Lock()
	s.srv, s.served = srv, served
	s.mu.Unlock()
}

// stop shuts the server down (each connection gets 1001).
func (s *testServer) stop() {
	s.mu.Lock()
	srv, served := s.srv, s.served
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	if err := <-served; err != nil {
		s.t.Errorf("Serve: %v", err)
	}
}

// restart starts a new server on the same port.
func (s *testServer) restart() {
	s.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		ln, err := net.Listen("tcp", s.addr)
		if err == nil {
			s.serve(ln)
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("listen again on %s: %v", s.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *testServer) wsURL() string { return "ws://" + s.addr + "/ws" }

// token mints a token for user, valid for ttl.
func (s *testServer) token(user string, ttl time.Duration) string {
	tok, err := auth.Mint(s.key, auth.MintOptions{UserID: user, Name: "test", TTL: ttl})
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

// provider returns a token provider that mints tokens valid for ttl and
// counts its calls.
func (s *testServer) provider(ttl time.Duration, calls *counter) client.TokenProvider {
	return func(context.Context) (string, error) {
		calls.add()
		return s.token(userA, ttl), nil
	}
}

// publish POSTs body with ?wait=2 and returns the number of deliveries.
func (s *testServer) publish(body string) int {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.addr+"/api/events?wait=2", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+pubTok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("publish: %v", err)
	}
	defer resp.Body.Close()
	var a struct {
		Status    int `json:"status"`
		Delivered int `json:"delivered"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || a.Status != 200 {
		s.t.Fatalf("publish %s: status %d (%v)", body, a.Status, err)
	}
	return a.Delivered
}

func event(typ, id, data string) string {
	return `{"type":"` + typ + `","id":"` + id + `","data":[` + data + `]}`
}

type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) add() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *counter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// recorder collects what a client reports.
type recorder struct {
	mu     sync.Mutex
	states []client.State
	events []client.Event
	errs   []error
	wake   chan struct{}
}

func newRecorder() *recorder { return &recorder{wake: make(chan struct{}, 1)} }

func (r *recorder) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *recorder) options(o client.Options) client.Options {
	o.OnState = func(s client.State) { r.mu.Lock(); r.states = append(r.states, s); r.mu.Unlock(); r.poke() }
	o.OnEvent = func(e client.Event) { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock(); r.poke() }
	o.OnError = func(err error) { r.mu.Lock(); r.errs = append(r.errs, err); r.mu.Unlock(); r.poke() }
	return o
}

func (r *recorder) snapshot() ([]client.State, []client.Event, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]client.State(nil), r.states...), append([]client.Event(nil), r.events...), append([]error(nil), r.errs...)
}

// waitUntil waits until cond holds over what was recorded.
func (r *recorder) waitUntil(t *testing.T, what string, cond func(states []client.State, evs []client.Event) bool) {
	t.Helper()
	deadline := time.NewTimer(waitFor)
	defer deadline.Stop()
	for {
		st, evs, _ := r.snapshot()
		if cond(st, evs) {
			return
		}
		select {
		case <-r.wake:
		case <-time.After(20 * time.Millisecond):
		case <-deadline.C:
			st, evs, errs := r.snapshot()
			t.Fatalf("timed out waiting for %s\nstates: %v\nevents: %d\nerrors: %v", what, st, len(evs), errs)
		}
	}
}

func count(states []client.State, state, reason string) int {
	n := 0
	for _, s := range states {
		if s.State == state && (reason == "" || s.Reason == reason) {
			n++
		}
	}
	return n
}

func dial(t *testing.T, o client.Options) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, err := client.Dial(ctx, o)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return c
}
