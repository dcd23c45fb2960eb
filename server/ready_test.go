package server

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestReadyHook: Options.Ready decides /readyz (503 with the contract's
// answer while it returns an error); the log says why once per reason.
func TestReadyHook(t *testing.T) {
	var reason atomic.Pointer[error]
	down := errors.New("change stream down: connection refused")
	reason.Store(&down)
	cfg := Defaults()
	cfg.File, cfg.Address, cfg.Port = "test.ini", "127.0.0.1", 0
	cfg.JWTPublicKey = writePublicKey(t, t.TempDir())
	e := startEnv(t, &cfg, Options{Ready: func() error {
		if p := reason.Load(); p != nil {
			return *p
		}
		return nil
	}})
	get := func() (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodGet, e.base+"/readyz", nil)
		return e.do(req)
	}
	for i := 0; i < 3; i++ {
		status, m := get()
		if status != 503 || m["code"] != 7.0 || m["status"] != 503.0 || m["message"] != "Service unavailable" {
			t.Fatalf("/readyz %d %v, want 503 code 7", status, m)
		}
	}
	if n := strings.Count(e.logs.String(), "not ready"); n != 1 {
		t.Errorf("%d \"not ready\" log lines for one reason, want 1:\n%s", n, e.logs.String())
	}
	if !strings.Contains(e.logs.String(), "connection refused") {
		t.Error("the log does not give the reason")
	}
	reason.Store(nil)
	if status, _ := get(); status != 200 {
		t.Errorf("/readyz %d after the dependency came back, want 200", status)
	}
	if !strings.Contains(e.logs.String(), "ready again") {
		t.Error("the log does not say it is ready again")
	}
	if status, _ := e.do(mustGet(t, e.base+"/healthz")); status != 200 {
		t.Errorf("/healthz %d, want 200 whatever the dependencies", status)
	}
}

func mustGet(t *testing.T, url string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestExtraCollectors: Options.Collectors are served on /metrics.
func TestExtraCollectors(t *testing.T) {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "airlay_test_extra_total", Help: "x"})
	c.Add(3)
	cfg := Defaults()
	cfg.File, cfg.Address, cfg.Port = "test.ini", "127.0.0.1", 0
	cfg.JWTPublicKey = writePublicKey(t, t.TempDir())
	e := startEnv(t, &cfg, Options{Collectors: []prometheus.Collector{c}})
	resp, err := http.Get(e.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), "airlay_test_extra_total 3") || !strings.Contains(string(b), "airlay_connections ") {
		t.Error("/metrics lacks the extra collector or the server's own")
	}
}
