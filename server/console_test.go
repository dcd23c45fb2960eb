package server

// The operator console's data, GET /api/console and /api/console/attached,
// against a known load over real sockets.

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// consoleGet GETs path with the bearer (none when "") and an Origin (none
// when "") and decodes the answer into v.
func consoleGet(t *testing.T, e *testEnv, path, bearer, origin string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.base+path, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %d %q is not JSON", path, resp.StatusCode, b)
	}
	return resp.StatusCode
}

func TestConsoleData(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.AllowedOrigins = []string{"https://app.example"} })
	off := newEnv(t, func(c *Config) { c.PublishToken = "" })

	// Refusals say why, and never show the token.
	for _, tc := range []struct {
		env            *testEnv
		path, bearer   string
		status, code   int
		detailContains string
	}{
		{e, ConsolePath, "", 401, 1, "no Authorization header"},
		{e, ConsolePath, "wrong", 401, 2, "not this server's publish_token"},
		{e, ConsoleAttachedPath + "?type=issueUpdate&id=" + issue1, "wrong", 401, 2, "not this server's publish_token"},
		{off, ConsolePath, testPublishToken, 404, 5, "publish_token is empty"},
		{e, ConsoleAttachedPath + "?type=nope&id=" + issue1, testPublishToken, 400, 5, "type must be one of"},
		{e, ConsoleAttachedPath + "?type=issueUpdate&id=42", testPublishToken, 400, 5, "id must be an ObjectId"},
	} {
		var m map[string]any
		status := consoleGet(t, tc.env, tc.path, tc.bearer, "", &m)
		d, _ := m["detail"].(string)
		if status != tc.status || m["code"] != float64(tc.code) || !strings.Contains(d, tc.detailContains) {
			t.Errorf("GET %s (bearer %q): %d %v, want %d code %d with a detail containing %q", tc.path, tc.bearer, status, m, tc.status, tc.code, tc.detailContains)
		}
	}

	// A known load: three connections, four subscriptions; five events to
	// issue1, which two connections hold.
	tokA, tokB := e.token(userA, time.Hour), e.token(userB, time.Hour)
	c1, c2, c3 := e.dial(), e.dial(), e.dial()
	c1.do(tokA, "attach", "issueUpdate", issue1, 0)
	c2.do(tokB, "attach", "issueUpdate", issue1, 0)
	c2.do(tokB, "attach", "notification", "", 0)
	c3.do(tokA, "attach", "issueUpdate", issue2, 0)
	for i := 0; i < 5; i++ {
		status, m := e.publish("?wait=5", eventJSON("issueUpdate", issue1))
		pubWaitCounts(t, "publish", status, m, 2, 0)
	}
	var a consoleAnswer
	if status := consoleGet(t, e, ConsolePath, testPublishToken, "", &a); status != 200 || a.Code != 0 {
		t.Fatalf("GET %s: %d %+v", ConsolePath, status, a)
	}
	if a.Connections != 3 || a.Subscriptions != 4 || a.ConnectionsOpened != 3 || a.EventsIn != 5 || a.EventsOut != 10 || a.SlowConsumerCloses != 0 {
		t.Errorf("snapshot %+v, want 3 connections, 4 subscriptions, 3 opened, 5 in, 10 out, 0 slow", a)
	}
	if a.Latency.Count != 10 || len(a.Latency.Bounds) == 0 || len(a.Latency.Bounds) != len(a.Latency.Counts) || a.Latency.Counts[len(a.Latency.Counts)-1] > 10 {
		t.Errorf("latency histogram %+v, want 10 observations", a.Latency)
	}
	if a.Mongo != nil {
		t.Errorf("mongodb %+v without MongoDB, want null", a.Mongo)
	}
	if a.Version != Version || a.MaxConnections != e.cfg.MaxConnections || a.Time < a.Started {
		t.Errorf("version %q, max_connections %d, time %d, started %d", a.Version, a.MaxConnections, a.Time, a.Started)
	}

	// Who is attached: oldest first, with each connection's user and count;
	// the id in any case; for notification the id is the user.
	var who attachedAnswer
	if status := consoleGet(t, e, ConsoleAttachedPath+"?type=issueUpdate&id="+strings.ToUpper(issue1), testPublishToken, "", &who); status != 200 {
		t.Fatalf("attached: %d %+v", status, who)
	}
	if who.Total != 2 || len(who.Connections) != 2 || who.ID != issue1 ||
		who.Connections[0].User != userA || who.Connections[0].Subscriptions != 1 ||
		who.Connections[1].User != userB || who.Connections[1].Subscriptions != 2 {
		t.Errorf("attached issue1: %+v", who)
	}
	for _, tc := range []struct {
		query string
		total int
	}{
		{"?type=notification&id=" + userB, 1},
		{"?type=notification&id=" + userA, 0},
		{"?type=issueUpdate&id=" + issue2, 1},
		{"?type=datasetUpdate&id=" + issue1, 0},
	} {
		var w attachedAnswer
		if status := consoleGet(t, e, ConsoleAttachedPath+tc.query, testPublishToken, "", &w); status != 200 || w.Total != tc.total || len(w.Connections) != tc.total {
			t.Errorf("attached %s: %d %+v, want %d", tc.query, status, w, tc.total)
		}
	}

	// A closed connection leaves both.
	_ = c1.ws.Close()
	waitFor(t, "the close in the console", 5*time.Second, func() bool {
		var a consoleAnswer
		consoleGet(t, e, ConsolePath, testPublishToken, "", &a)
		return a.Connections == 2 && a.Subscriptions == 3
	})
	var w attachedAnswer
	consoleGet(t, e, ConsoleAttachedPath+"?type=issueUpdate&id="+issue1, testPublishToken, "", &w)
	if w.Total != 1 || w.Connections[0].User != userB {
		t.Errorf("attached issue1 after a close: %+v", w)
	}

	// The live page's own origin is same-origin whatever allowed_origins
	// says; another is refused with a detail.
	if status := consoleGet(t, e, ConsolePath, testPublishToken, e.base, &a); status != 200 {
		t.Errorf("from the server's own origin: %d", status)
	}
	var m map[string]any
	if status := consoleGet(t, e, ConsolePath, testPublishToken, "https://evil.example", &m); status != 403 || !strings.Contains(m["detail"].(string), "allowed_origins") {
		t.Errorf("from another origin: %d %v", status, m)
	}
	_ = c2
	_ = c3
}
