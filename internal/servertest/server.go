// Package servertest runs the real server (server.New and Serve) on a
// loopback port in the test's own process, for the tests of several
// packages; the key, tokens and buffer it uses are internal/testkit's.
//
// The tests of package server itself cannot use it (it imports server);
// server/harness_test.go has its own server start.
package servertest

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlay/airlay/auth"
	"github.com/airlay/airlay/internal/testkit"
	"github.com/airlay/airlay/server"
)

// PublishToken is the publish_token of a Server unless mutate sets another.
const PublishToken = "test-publish-token"

// Server is the real server (server.New and Serve) in this process on a
// loopback port. Stop and Restart keep the port, so that clients reconnect
// to the same URL.
type Server struct {
	Config *server.Config // what the server runs with; read it, do not change it
	Addr   string         // 127.0.0.1:PORT, the same across restarts

	t      testing.TB
	mu     sync.Mutex
	srv    *server.Server
	served chan error
}

// Start starts a server with the test settings (a public key file of testkit.Key,
// PublishToken, a 2 s shutdown timeout, the log discarded) changed by
// mutate, and stops it when the test ends. mutate also gets the server's
// base URL, http://127.0.0.1:PORT, for settings that name its own origin.
func Start(t testing.TB, mutate func(cfg *server.Config, base string)) *Server {
	t.Helper()
	cfg := server.Defaults()
	cfg.File = "test.ini"
	cfg.Address = "127.0.0.1"
	cfg.Port = 0
	cfg.JWTPublicKey = testkit.WritePublicKey(t, t.TempDir())
	cfg.PublishToken = PublishToken
	cfg.ShutdownTimeout = 2 * time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, Config: &cfg, Addr: ln.Addr().String()}
	if mutate != nil {
		mutate(&cfg, s.URL())
	}
	s.serve(ln)
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) serve(ln net.Listener) {
	s.t.Helper()
	srv, err := server.New(s.Config, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		s.t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	s.mu.Lock()
	s.srv, s.served = srv, served
	s.mu.Unlock()
}

// Stop shuts the server down (each connection gets 1001) and checks that
// Serve returned nil. Stopping a stopped server does nothing.
func (s *Server) Stop() {
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

// Restart starts a new server on the same port, waiting up to 3 s for the
// port to be free again.
func (s *Server) Restart() {
	s.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		ln, err := net.Listen("tcp", s.Addr)
		if err == nil {
			s.serve(ln)
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("listen again on %s: %v", s.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URL is the server's base URL, http://127.0.0.1:PORT.
func (s *Server) URL() string { return "http://" + s.Addr }

// WSURL is the URL of the /ws endpoint.
func (s *Server) WSURL() string { return "ws://" + s.Addr + "/ws" }

// Token mints a token for user, named "test", valid for ttl.
func (s *Server) Token(user string, ttl time.Duration) string {
	s.t.Helper()
	return testkit.Mint(s.t, auth.MintOptions{UserID: user, Name: "test", TTL: ttl})
}

// Publish POSTs body to /api/events?wait=2 with the configured publish
// token and returns how many connections got it; an answer other than 200
// fails the test.
func (s *Server) Publish(body string) int {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL()+"/api/events?wait=2", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.Config.PublishToken)
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

// Ask POSTs {"user", "data"} to /api/ask?timeout=SECONDS with the
// configured publish token and returns the HTTP status and the answer.
func (s *Server) Ask(timeout, user, data string) (int, map[string]any) {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL()+"/api/ask?timeout="+timeout, strings.NewReader(`{"user":"`+user+`","data":`+data+`}`))
	req.Header.Set("Authorization", "Bearer "+s.Config.PublishToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Errorf("ask: %v", err)
		return 0, nil
	}
	defer resp.Body.Close()
	var a map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		s.t.Errorf("ask: the answer is not JSON: %v", err)
	}
	return resp.StatusCode, a
}

// Get fetches path with the given headers and returns the response and its
// body.
func (s *Server) Get(path string, header http.Header) (*http.Response, []byte) {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL()+path, nil)
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

// ListenSilent accepts TCP connections on a loopback port and never answers
// them, for connect timeouts; it returns the address. The listener and what
// it accepted are closed when the test ends.
func ListenSilent(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	return ln.Addr().String()
}
