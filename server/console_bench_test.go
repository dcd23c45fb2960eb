package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkConsoleSnapshot measures one GET /api/console (the registry
// gathered, the JSON written), what each open console costs the server
// once a second.
func BenchmarkConsoleSnapshot(b *testing.B) {
	e := newEnv(b, nil)
	h := e.srv.Handler()
	req := httptest.NewRequest(http.MethodGet, ConsolePath, nil)
	req.Header.Set("Authorization", "Bearer "+testPublishToken)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkConsoleAttached measures "who is attached" with 1000 open
// connections, one of which holds the key (it walks them all).
func BenchmarkConsoleAttached(b *testing.B) {
	e := newEnv(b, func(c *Config) { c.MaxConnections = 2000 })
	tok := e.token(userA, time.Hour)
	for i := 0; i < 1000; i++ {
		c := e.dial()
		if i == 0 {
			c.do(tok, "attach", "issueUpdate", issue1, 0)
		} else {
			c.do(tok, "attach", "issueUpdate", issue2, 0)
		}
	}
	h := e.srv.Handler()
	req := httptest.NewRequest(http.MethodGet, ConsoleAttachedPath+"?type=issueUpdate&id="+issue1, nil)
	req.Header.Set("Authorization", "Bearer "+testPublishToken)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}
