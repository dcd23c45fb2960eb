package server

// Graceful shutdown as PROTOCOL.md "Starting it" describes it: stop
// accepting, let in-flight publishes finish, close every connection with
// 1001; and no goroutine outlives its connection or the server.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// sdCloseResult is what a client read until its connection ended.
type sdCloseResult struct {
	events []map[string]any // frames read before the close
	code   int              // close code, -1 when the connection ended without one
	err    error
}

// sdReadUntilClose reads c from another goroutine (no t.Fatal there) until
// its connection ends.
func sdReadUntilClose(c *wsClient, timeout time.Duration) <-chan sdCloseResult {
	ch := make(chan sdCloseResult, 1)
	go func() {
		var r sdCloseResult
		deadline := time.Now().Add(timeout)
		for {
			m, err := c.tryRead(time.Until(deadline))
			if err == nil {
				r.events = append(r.events, m)
				continue
			}
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				r.code = ce.Code
			} else {
				r.code, r.err = -1, err
			}
			ch <- r
			return
		}
	}()
	return ch
}

// sdReady asks the server's own handler for /readyz: the listener is closed
// during a shutdown.
func sdReady(e *testEnv) int {
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	return rec.Code
}

func TestShutdownGraceful(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tokA, tokB := e.token(userA, time.Hour), e.token(userB, time.Hour)
	var clients []*wsClient
	for i := 0; i < 9; i++ {
		c := e.dial()
		switch i % 3 {
		case 0:
			c.do(tokA, "attach", "issueUpdate", issue1, 0)
		case 1:
			c.do(tokB, "attach", "notification", "", 0)
		default: // connected, never attached
		}
		clients = append(clients, c)
	}
	if got := sdReady(e); got != 200 {
		t.Fatalf("/readyz before shutdown: %d", got)
	}
	results := make([]<-chan sdCloseResult, len(clients))
	for i, c := range clients {
		results[i] = sdReadUntilClose(c, 10*time.Second)
	}

	start := time.Now()
	if err := e.shutdown(5 * time.Second); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// Clients that answer the close promptly let it finish well before its
	// deadline.
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Shutdown took %v", took)
	}
	for i, ch := range results {
		select {
		case r := <-ch:
			if r.code != websocket.CloseGoingAway || len(r.events) != 0 {
				t.Errorf("client %d: close %d (%v) after %d frames, want 1001", i, r.code, r.err, len(r.events))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("client %d: no close after Shutdown returned", i)
		}
	}
	if got := e.srv.hub.Subscriptions(); got != 0 {
		t.Errorf("%d subscriptions left", got)
	}
	if got := sdReady(e); got != 503 {
		t.Errorf("/readyz after shutdown: %d, want 503", got)
	}
	// Refused afterwards: no connection, no publish.
	if _, resp, err := e.dialHeader(nil); err == nil {
		t.Errorf("/ws accepted a connection after shutdown")
	} else if resp != nil && resp.StatusCode < 500 {
		t.Errorf("/ws after shutdown: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, e.base+"/api/events", strings.NewReader(eventJSON("issueUpdate", issue1)))
	req.Header.Set("Authorization", "Bearer "+testPublishToken)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("POST /api/events after shutdown: %d", resp.StatusCode)
	}
	// (That Shutdown returns only after these lines are written is
	// TestShutdownReturnsAfterDisconnects' concern.)
	waitFor(t, "a connection closed line per connection", 5*time.Second, func() bool {
		return strings.Count(e.logs.String(), `msg="connection closed"`) == len(clients)
	})
	if n := strings.Count(e.logs.String(), `reason="server shutting down"`); n != len(clients) {
		t.Errorf("%d close reasons server shutting down, want %d", n, len(clients))
	}
}

// sdSlowCloseLog is a log handler that takes a while to write "connection
// closed" lines, like a log sink that is briefly slow.
type sdSlowCloseLog struct{ slog.Handler }

func (h sdSlowCloseLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "connection closed" {
		time.Sleep(30 * time.Millisecond)
	}
	return h.Handler.Handle(ctx, r)
}

func (h sdSlowCloseLog) WithAttrs(as []slog.Attr) slog.Handler {
	return sdSlowCloseLog{h.Handler.WithAttrs(as)}
}

func (h sdSlowCloseLog) WithGroup(name string) slog.Handler {
	return sdSlowCloseLog{h.Handler.WithGroup(name)}
}

// When Shutdown returns, every connection is gone for good: its disconnect
// has run to the end (the "connection closed" line is written, the gauge is
// down). airlay-cli exits right after Shutdown, so whatever is still running
// then is lost.
func TestShutdownReturnsAfterDisconnects(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	cfg := pubTestConfig(t, nil)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("this server's log:\n%s", logs.String())
		}
	})
	e := startEnv(t, cfg, Options{Logger: slog.New(sdSlowCloseLog{slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})})})
	tok := e.token(userA, time.Hour)
	const n = 3
	var results []<-chan sdCloseResult
	for i := 0; i < n; i++ {
		c := e.dial()
		c.do(tok, "attach", "issueUpdate", issue1, 0)
		results = append(results, sdReadUntilClose(c, 10*time.Second))
	}
	if err := e.shutdown(5 * time.Second); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	atReturn := logs.String()
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	gauge := regexp.MustCompile(`(?m)^airlay_connections (\S+)$`).FindStringSubmatch(rec.Body.String())

	if got := strings.Count(atReturn, `msg="connection closed"`); got != n {
		t.Errorf("when Shutdown returned, the log had %d of %d connection closed lines", got, n)
	}
	if i, j := strings.LastIndex(atReturn, `msg="connection closed"`), strings.Index(atReturn, `msg="shut down"`); j >= 0 && i > j {
		t.Errorf("a connection closed line follows shut down")
	}
	if gauge == nil || gauge[1] != "0" {
		t.Errorf("when Shutdown returned, airlay_connections was %v, want 0", gauge)
	}
	for i, ch := range results {
		if r := <-ch; r.code != websocket.CloseGoingAway {
			t.Errorf("client %d: close %d (%v), want 1001", i, r.code, r.err)
		}
	}
}

// A publish in flight with ?wait when shutdown begins completes, and its
// subscriber gets the event before its 1001.
func TestShutdownWaitsForInflightPublish(t *testing.T) {
	t.Parallel()
	e, gl := pubStartGatedEnv(t, nil)
	tok := e.token(userA, time.Hour)
	sub := e.dial()
	sub.do(tok, "attach", "issueUpdate", issue1, 0)
	others := []*wsClient{e.dial(), e.dial(), e.dial()}
	others[0].do(tok, "attach", "issueUpdate", issue2, 0)
	others[1].do(e.token(userB, time.Hour), "attach", "notification", "", 0)
	var otherResults []<-chan sdCloseResult
	for _, c := range others {
		otherResults = append(otherResults, sdReadUntilClose(c, 15*time.Second))
	}

	// The subscriber's socket takes nothing for now, so the publish waits.
	gl.of(sub).hold()
	published := pubAsync(e, "?wait=5", `{"type":"issueUpdate","id":"`+issue1+`","data":["last"]}`)
	waitFor(t, "the publish to be accepted", 5*time.Second, func() bool {
		return pubScrapeMetrics(e)[`airlay_events_published_total{type="issueUpdate"}`] == 1
	})

	type shutdownResult struct {
		err  error
		took time.Duration
	}
	stopped := make(chan shutdownResult, 1)
	start := time.Now()
	go func() {
		err := e.shutdown(10 * time.Second)
		stopped <- shutdownResult{err, time.Since(start)}
	}()
	waitFor(t, "shutdown to begin", 5*time.Second, func() bool { return sdReady(e) == 503 })
	// No new connection, no new publish, while the publish is in flight.
	if _, resp, err := e.dialHeader(nil); err == nil {
		t.Errorf("/ws accepted a connection during shutdown")
	} else if resp != nil && resp.StatusCode < 500 {
		t.Errorf("/ws during shutdown: %d", resp.StatusCode)
	}
	time.Sleep(50 * time.Millisecond)
	select {
	case r := <-published:
		t.Fatalf("the publish answered (%v) before its subscriber took the event", r)
	case r := <-stopped:
		t.Fatalf("Shutdown returned (%v) while a publish was in flight", r.err)
	default:
	}

	// Now the subscriber's socket takes the event: the publish completes,
	// then the connections close with 1001.
	gl.of(sub).release()
	select {
	case r := <-published:
		if r.err != nil {
			t.Fatalf("the in-flight publish failed: %v", r.err)
		}
		pubWaitCounts(t, "in-flight publish", r.status, r.answer, 1, 0)
	case <-time.After(5 * time.Second):
		t.Fatal("the in-flight publish did not answer")
	}
	ev := sub.expectEvent("issueUpdate", issue1)
	if fmt.Sprint(ev["data"]) != "[last]" {
		t.Errorf("data %v", ev["data"])
	}
	sub.expectClose(websocket.CloseGoingAway, 5*time.Second)
	for i, ch := range otherResults {
		select {
		case r := <-ch:
			if r.code != websocket.CloseGoingAway || len(r.events) != 0 {
				t.Errorf("client %d: close %d (%v) after %d frames, want 1001", i, r.code, r.err, len(r.events))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("client %d: no close", i)
		}
	}
	select {
	case r := <-stopped:
		if r.err != nil {
			t.Errorf("Shutdown: %v", r.err)
		}
		if r.took > 5*time.Second {
			t.Errorf("Shutdown took %v", r.took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if _, _, err := e.dialHeader(nil); err == nil {
		t.Errorf("/ws accepted a connection after shutdown")
	}
}

// No goroutine outlives its connection, nor the server.
func TestShutdownNoGoroutineLeak(t *testing.T) {
	// Not parallel: it counts every goroutine of the process.
	http.DefaultClient.CloseIdleConnections()
	before := runtime.NumGoroutine()
	const slack = 3

	e := newEnv(t, nil)
	tok := e.token(userA, time.Hour)
	keep := e.dial() // one connection stays open until shutdown
	keep.do(tok, "attach", "notification", "", 0)
	running := runtime.NumGoroutine()

	for i := 0; i < 40; i++ {
		c := e.dial()
		c.do(tok, "attach", "issueUpdate", issue1, 0)
		c.do(tok, "attach", "notification", "", 0)
		switch i % 4 {
		case 0: // a clean close
			_ = c.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			_, _, _ = c.ws.ReadMessage()
			_ = c.ws.Close()
		case 1: // the socket just goes away
			_ = c.ws.Close()
		case 2: // an event in flight, then away
			if status, _ := e.publish("", eventJSON("issueUpdate", issue1)); status != 200 {
				t.Fatalf("publish: %d", status)
			}
			_ = c.ws.Close()
		case 3: // detach, a bad frame, then a clean close
			c.do(tok, "detach", "issueUpdate", issue1, 0)
			c.sendText("{")
			c.expectCode(5)
			_ = c.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			_ = c.ws.Close()
		}
	}
	waitFor(t, "the server to drop the closed connections", 5*time.Second, func() bool {
		return e.srv.hub.Subscriptions() == 1
	})
	sdWaitGoroutines(t, "goroutines of closed connections to end", running+slack)

	// The connection that stayed is still served.
	status, m := e.publish("?wait=5", `{"type":"notification","user":"`+userA+`"}`)
	pubWaitCounts(t, "notification", status, m, 1, 0)
	keep.expectEvent("notification", "")

	if err := e.shutdown(5 * time.Second); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	keep.expectClose(websocket.CloseGoingAway, 5*time.Second)
	_ = keep.ws.Close()
	sdWaitGoroutines(t, "goroutines to return to their count before the server", before+slack)
}

// sdWaitGoroutines waits until at most limit goroutines run, and otherwise
// fails with every goroutine's stack.
func sdWaitGoroutines(t *testing.T, what string, limit int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		http.DefaultClient.CloseIdleConnections()
		n := runtime.NumGoroutine()
		if n <= limit {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%s: %d goroutines, want at most %d:\n%s", what, n, limit, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
