package clientjs_test

// The real server, in this process, on a loopback port that stays the same
// across a restart.

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlay/airlay/auth"
	"github.com/airlay/airlay/server"
)

const (
	userA  = "5dad615eae019570fb4647ed"
	issue1 = "610217e481f6fc54736209e0"
	issue2 = "610217e481f6fc54736209e1"
	pubTok = "test-publish-secret-do-not-show"
)

var (
	keysOnce sync.Once
	keysDir  string
	keysErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if keysDir != "" {
		os.RemoveAll(keysDir)
	}
	os.Exit(code)
}

type testServer struct {
	t    *testing.T
	cfg  *server.Config
	key  *rsa.PrivateKey
	addr string // 127.0.0.1:PORT

	mu     sync.Mutex
	srv    *server.Server
	served chan error
}

// listenServer reserves a port, then lets mutate see its origin before the
// server starts.
func startServer(t *testing.T, mutate func(cfg *server.Config, origin string)) *testServer {
	t.Helper()
	keysOnce.Do(func() {
		keysDir, keysErr = os.MkdirTemp("", "airlay-clientjs-test-")
		if keysErr == nil {
			_, _, keysErr = auth.GenerateKeyPair(keysDir)
		}
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
	key, err := auth.LoadPrivateKey(keysDir + "/jwt-private.pem")
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Defaults()
	cfg.File = "test.ini"
	cfg.Address = "127.0.0.1"
	cfg.JWTPublicKey = keysDir + "/jwt.pem"
	cfg.PublishToken = pubTok
	cfg.ShutdownTimeout = 2 * time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{t: t, cfg: &cfg, key: key, addr: ln.Addr().String()}
	if mutate != nil {
		mutate(&cfg, s.base())
	}
	s.serve(ln)
	t.Cleanup(s.stop)
	return s
}

func (s *testServer) base() string { return "http://" + s.addr }

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
	<-served
}

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

func (s *testServer) token(ttl time.Duration) string {
	tok, err := auth.Mint(s.key, auth.MintOptions{UserID: userA, Name: "test", TTL: ttl})
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

// publish POSTs one event with ?wait=2 and returns how many connections got it.
func (s *testServer) publish(body string) int {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.base()+"/api/events?wait=2", strings.NewReader(body))
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
		s.t.Fatalf("publish %s: %d %v", body, a.Status, err)
	}
	return a.Delivered
}

// get fetches path with the given headers.
func (s *testServer) get(path string, header http.Header) (*http.Response, []byte) {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.base()+path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}
