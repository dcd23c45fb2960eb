package server

// Discovery, health, unknown paths, CORS and what the log may say, as
// PROTOCOL.md "HTTP endpoints" and "Discovery: GET /api/config" describe.

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// apiCall sends method path with the given headers and returns the response
// and its body.
func apiCall(e *testEnv, method, path string, h http.Header, body string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, b
}

// apiDecode decodes an answer, failing when it is not JSON.
func apiDecode(t *testing.T, what string, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: answer %q is not JSON: %v", what, b, err)
	}
	return m
}

func apiKeys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func TestAPIConfigDiscovery(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) {
		c.MaxSubscriptions = 7
		c.MaxMessageBytes = 2048
		c.JWTIssuer = "issuer.example"
	})
	disabled := newEnv(t, func(c *Config) { c.PublishToken = "" })

	for _, tc := range []struct {
		name           string
		env            *testEnv
		publishEnabled bool
		maxSubs        float64
		maxMsg         float64
	}{
		{"publish enabled", e, true, 7, 2048},
		{"publish disabled", disabled, false, 100, 4096},
	} {
		resp, b := apiCall(tc.env, http.MethodGet, "/api/config", nil, "")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", tc.name, resp.StatusCode, b)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("%s: Content-Type %q", tc.name, ct)
		}
		m := apiDecode(t, tc.name, b)
		if got, want := apiKeys(m), []string{"event_types", "files_enabled", "history", "limits", "publish_enabled", "version", "websocket"}; !reflect.DeepEqual(got, want) {
			t.Errorf("%s: keys %v, want %v", tc.name, got, want)
		}
		if h, _ := m["history"].(map[string]any); len(h) != 1 || h["ttl_seconds"] != 300.0 {
			t.Errorf("%s: history %v, want {ttl_seconds: 300} (the default 5m)", tc.name, m["history"])
		}
		if m["version"] != Version || Version == "" {
			t.Errorf("%s: version %v, want %q", tc.name, m["version"], Version)
		}
		if m["websocket"] != "/ws" {
			t.Errorf("%s: websocket %v", tc.name, m["websocket"])
		}
		if m["publish_enabled"] != tc.publishEnabled {
			t.Errorf("%s: publish_enabled %v, want %v", tc.name, m["publish_enabled"], tc.publishEnabled)
		}
		wantTypes := []any{"issueUpdate", "notification", "datasetUpdate", "uploadFile", "downloadFile", "request"}
		if !reflect.DeepEqual(m["event_types"], wantTypes) {
			t.Errorf("%s: event_types %v, want %v", tc.name, m["event_types"], wantTypes)
		}
		limits, _ := m["limits"].(map[string]any)
		if !reflect.DeepEqual(limits, map[string]any{"max_subscriptions": tc.maxSubs, "max_message_bytes": tc.maxMsg}) {
			t.Errorf("%s: limits %v, want max_subscriptions %v, max_message_bytes %v", tc.name, m["limits"], tc.maxSubs, tc.maxMsg)
		}
		// files_enabled tells the truth about POST /api/files.
		filesEnabled, ok := m["files_enabled"].(bool)
		if !ok {
			t.Fatalf("%s: files_enabled %v is not a bool", tc.name, m["files_enabled"])
		}
		fresp, fb := apiCall(tc.env, http.MethodPost, "/api/files?name=probe.txt", http.Header{"Authorization": {"Bearer " + testPublishToken}}, "probe")
		if served := fresp.StatusCode != http.StatusNotFound; served != filesEnabled {
			t.Errorf("%s: files_enabled %v, but POST /api/files answers %d %s", tc.name, filesEnabled, fresp.StatusCode, fb)
		}
		// No secret, no path.
		for _, secret := range []string{testPublishToken, tc.env.cfg.JWTPublicKey, filepath.Base(tc.env.cfg.JWTPublicKey), filepath.Dir(tc.env.cfg.JWTPublicKey), "issuer.example", "PUBLIC KEY"} {
			if strings.Contains(string(b), secret) {
				t.Errorf("%s: /api/config shows %q: %s", tc.name, secret, b)
			}
		}
	}
}

func TestAPIHealthAndUnknownPaths(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, b := apiCall(e, http.MethodGet, path, nil, "")
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d %s", path, resp.StatusCode, b)
		}
	}
	for _, path := range []string{"/api/x", "/api/", "/api/events/x", "/api/config/x", "/api/Events"} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			resp, b := apiCall(e, method, path, http.Header{"Authorization": {"Bearer " + testPublishToken}}, "{}")
			m := apiDecode(t, method+" "+path, b)
			pubExpectAnswer(t, method+" "+path, resp.StatusCode, m, 404, 5, "Not found")
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("%s %s: Content-Type %q", method, path, ct)
			}
		}
	}
	for _, path := range []string{"/x", "/ws/x", "/healthz/x", "/files"} {
		resp, b := apiCall(e, http.MethodGet, path, nil, "")
		if resp.StatusCode != 404 {
			t.Errorf("GET %s: %d %s, want 404", path, resp.StatusCode, b)
		}
	}
	resp, b := apiCall(e, http.MethodGet, "/metrics", nil, "")
	if resp.StatusCode != 200 || !strings.Contains(string(b), "airlay_connections") {
		t.Errorf("GET /metrics: %d", resp.StatusCode)
	}

	// Once shutdown began the server is not ready. The listener is closed
	// then, so ask the server's own handler.
	if err := e.shutdown(5 * time.Second); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	m := apiDecode(t, "readyz after shutdown", rec.Body.Bytes())
	plainExpectAnswer(t, "readyz after shutdown", rec.Code, m, 503, 7, "Service unavailable")
}

func TestAPICORS(t *testing.T) {
	t.Parallel()
	const app = "https://app.example.com"
	e := newEnv(t, func(c *Config) { c.AllowedOrigins = []string{app} })
	anyEnv := newEnv(t, nil) // default allowed_origins = *
	if !anyEnv.cfg.AnyOrigin() {
		t.Fatalf("default allowed_origins %v, want *", anyEnv.cfg.AllowedOrigins)
	}
	tok := e.token(userA, time.Hour)
	sub := e.dial()
	sub.do(tok, "attach", "issueUpdate", issue1, 0)
	bearer := "Bearer " + testPublishToken

	preflight := func(env *testEnv, path, origin string) *http.Response {
		resp, _ := apiCall(env, http.MethodOptions, path, http.Header{
			"Origin":                         {origin},
			"Access-Control-Request-Method":  {"POST"},
			"Access-Control-Request-Headers": {"authorization,content-type"},
		}, "")
		return resp
	}
	checkPreflight := func(what string, resp *http.Response, origin string) {
		t.Helper()
		if resp.StatusCode != 204 {
			t.Errorf("%s: preflight %d, want 204", what, resp.StatusCode)
		}
		h := resp.Header
		if got := h.Get("Access-Control-Allow-Origin"); got != origin && !(got == "*" && origin != app) {
			t.Errorf("%s: Access-Control-Allow-Origin %q, want %q", what, got, origin)
		}
		if got := h.Get("Access-Control-Allow-Methods"); got != "GET, POST" {
			t.Errorf("%s: Access-Control-Allow-Methods %q", what, got)
		}
		if got := h.Get("Access-Control-Allow-Headers"); got != "Authorization, Content-Type" {
			t.Errorf("%s: Access-Control-Allow-Headers %q", what, got)
		}
	}

	// The allowed origin: preflights answered, calls get the header, even
	// an error answer (so that the page can read it).
	checkPreflight("allowed /api/events", preflight(e, "/api/events", app), app)
	checkPreflight("allowed /api/config", preflight(e, "/api/config", app), app)
	resp, b := apiCall(e, http.MethodPost, "/api/events", http.Header{"Origin": {app}, "Authorization": {bearer}, "Content-Type": {"application/json"}}, eventJSON("issueUpdate", issue1))
	pubExpectAnswer(t, "allowed POST", resp.StatusCode, apiDecode(t, "allowed POST", b), 200, 0, "Ok")
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != app {
		t.Errorf("allowed POST: Access-Control-Allow-Origin %q", got)
	}
	if !strings.Contains(strings.Join(resp.Header.Values("Vary"), ","), "Origin") {
		t.Errorf("allowed POST: Vary %q, want Origin", resp.Header.Values("Vary"))
	}
	sub.expectEvent("issueUpdate", issue1)
	resp, _ = apiCall(e, http.MethodGet, "/api/config", http.Header{"Origin": {app}}, "")
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != app {
		t.Errorf("allowed GET /api/config: %d, Access-Control-Allow-Origin %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	resp, b = apiCall(e, http.MethodPost, "/api/events", http.Header{"Origin": {app}, "Authorization": {"Bearer wrong"}}, eventJSON("issueUpdate", issue1))
	pubExpectAnswer(t, "allowed POST wrong bearer", resp.StatusCode, apiDecode(t, "allowed POST wrong bearer", b), 401, 2, "Invalid token")
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != app {
		t.Errorf("allowed POST wrong bearer: Access-Control-Allow-Origin %q", got)
	}

	// Other origins (compared exactly: scheme, host and port) get 403, and
	// their publish is not delivered.
	for _, origin := range []string{"https://evil.example.com", "http://app.example.com", "https://app.example.com:8443", "https://app.example.com.evil.com", "null"} {
		resp = preflight(e, "/api/events", origin)
		if resp.StatusCode != 403 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s: preflight %d, Access-Control-Allow-Origin %q; want 403 without it", origin, resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
		}
		resp, b = apiCall(e, http.MethodPost, "/api/events", http.Header{"Origin": {origin}, "Authorization": {bearer}}, eventJSON("issueUpdate", issue1))
		if resp.StatusCode != 403 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s: POST %d %s, want 403", origin, resp.StatusCode, b)
		} else if m := apiDecode(t, origin, b); m["status"] != 403.0 || len(m) != 4 || m["detail"] != "origin "+strconv.Quote(origin)+" is not in allowed_origins" {
			t.Errorf("%s: answer %v, want the shape with status 403 and a detail naming the origin", origin, m)
		}
		resp, _ = apiCall(e, http.MethodGet, "/api/config", http.Header{"Origin": {origin}}, "")
		if resp.StatusCode != 403 {
			t.Errorf("%s: GET /api/config %d, want 403", origin, resp.StatusCode)
		}
		// /ws follows allowed_origins too.
		if _, wresp, err := e.dialHeader(http.Header{"Origin": {origin}}); err == nil {
			t.Errorf("%s: /ws upgraded", origin)
		} else if wresp == nil || wresp.StatusCode != 403 {
			t.Errorf("%s: /ws: %v %v, want 403", origin, err, wresp)
		}
	}
	if _, _, err := e.dialHeader(http.Header{"Origin": {app}}); err != nil {
		t.Errorf("/ws from %s: %v", app, err)
	}

	// The server's own origin is same-origin, not cross-origin: a page it
	// served (/live) may use /ws and /api/* whatever allowed_origins says.
	// The same host under another scheme is another origin.
	own := e.base // http://127.0.0.1:PORT
	resp, b = apiCall(e, http.MethodGet, "/api/config", http.Header{"Origin": {own}}, "")
	if resp.StatusCode != 200 {
		t.Errorf("GET /api/config from the server's own origin %s: %d %s", own, resp.StatusCode, b)
	}
	if _, _, err := e.dialHeader(http.Header{"Origin": {own}}); err != nil {
		t.Errorf("/ws from the server's own origin %s: %v", own, err)
	}
	other := "https://" + strings.TrimPrefix(own, "http://")
	if resp, _ = apiCall(e, http.MethodGet, "/api/config", http.Header{"Origin": {other}}, ""); resp.StatusCode != 403 {
		t.Errorf("GET /api/config from %s: %d, want 403", other, resp.StatusCode)
	}
	if _, _, err := e.dialHeader(http.Header{"Origin": {other}}); err == nil {
		t.Errorf("/ws from %s upgraded", other)
	}
	// Behind a TLS proxy that says so, https://HOST is the own origin.
	if resp, _ = apiCall(e, http.MethodGet, "/api/config", http.Header{"Origin": {other}, "X-Forwarded-Proto": {"https"}}, ""); resp.StatusCode != 200 {
		t.Errorf("GET /api/config from %s with X-Forwarded-Proto https: %d, want 200", other, resp.StatusCode)
	}

	// No Origin: not a browser, allowed, no CORS headers.
	resp, b = apiCall(e, http.MethodPost, "/api/events", http.Header{"Authorization": {bearer}}, eventJSON("issueUpdate", issue1))
	pubExpectAnswer(t, "no Origin", resp.StatusCode, apiDecode(t, "no Origin", b), 200, 0, "Ok")
	for k := range resp.Header {
		if strings.HasPrefix(strings.ToLower(k), "access-control-") {
			t.Errorf("no Origin: header %s: %q", k, resp.Header.Get(k))
		}
	}
	// Only the two publishes that were allowed reached the subscriber: the
	// next event is this one, and no other follows.
	sub.expectEvent("issueUpdate", issue1)
	sub.expectNothing(50 * time.Millisecond)

	// "*" allows any origin.
	for _, origin := range []string{"https://evil.example.com", "http://localhost:3000"} {
		checkPreflight("* "+origin, preflight(anyEnv, "/api/events", origin), origin)
		resp, b = apiCall(anyEnv, http.MethodPost, "/api/events", http.Header{"Origin": {origin}, "Authorization": {bearer}}, eventJSON("issueUpdate", issue1))
		pubExpectAnswer(t, "* "+origin, resp.StatusCode, apiDecode(t, origin, b), 200, 0, "Ok")
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != origin && got != "*" {
			t.Errorf("* %s: Access-Control-Allow-Origin %q", origin, got)
		}
		if _, _, err := anyEnv.dialHeader(http.Header{"Origin": {origin}}); err != nil {
			t.Errorf("* %s: /ws: %v", origin, err)
		}
	}
}

// The log never shows a token, and has one open and one closed line per
// connection.
func TestAPILogsHoldNoSecrets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tokA, tokA2, tokB := e.token(userA, time.Hour), e.token(userA, 2*time.Hour), e.token(userB, time.Hour)
	expired := e.token(userA, -time.Hour)
	tampered := tokA[:len(tokA)-6] + "AAAAAA"
	if tampered == tokA {
		tampered = tokA[:len(tokA)-6] + "BBBBBB"
	}
	const garbage = "garbage-token-S3CR3T-value"
	const wrongBearer = "wrong-bearer-S3CR3T-value"

	a, b, c := e.dial(), e.dial(), e.dial()
	a.do(tokA, "attach", "issueUpdate", issue1, 0)
	a.do(tokA2, "attach", "notification", "", 0)   // a fresh token extends
	a.do(tokB, "attach", "issueUpdate", issue2, 2) // another user's token
	b.do(tokB, "attach", "notification", "", 0)
	b.do(tokA, "detach", "notification", "", 2)
	c.do(garbage, "attach", "issueUpdate", issue1, 2)
	c.do(tampered, "attach", "issueUpdate", issue1, 2)
	c.do(expired, "attach", "issueUpdate", issue1, 2)
	c.sendText(`{"auth":"` + tokA + `","action":"attach","event":{"type":"nope","id":"` + issue1 + `"}}`)
	c.expectCode(5)

	status, _ := e.publish("?wait=5", eventJSON("issueUpdate", issue1))
	if status != 200 {
		t.Fatalf("publish: %d", status)
	}
	a.expectEvent("issueUpdate", issue1)
	e.post("/api/events", "Bearer "+wrongBearer, eventJSON("issueUpdate", issue1))
	e.post("/api/events", "Bearer "+testPublishToken+"x", eventJSON("issueUpdate", issue1))
	e.post("/api/events", "", eventJSON("issueUpdate", issue1))
	e.publish("", `{"type":"issueUpdate","id":"nope"}`)

	// Close them: a with a close frame, b abruptly, c stays until shutdown.
	_ = a.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	_ = b.ws.Close()
	waitFor(t, "two connection closed lines", 5*time.Second, func() bool {
		return strings.Count(e.logs.String(), `msg="connection closed"`) == 2
	})
	if err := e.shutdown(5 * time.Second); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	// (That Shutdown returns only after the closed lines are written is
	// TestShutdownReturnsAfterDisconnects' concern.)
	waitFor(t, "three connection closed lines", 5*time.Second, func() bool {
		return strings.Count(e.logs.String(), `msg="connection closed"`) == 3
	})
	logs := e.logs.String()

	secrets := map[string]string{"tokA": tokA, "tokA2": tokA2, "tokB": tokB, "expired": expired, "tampered": tampered, "garbage": garbage, "publish token": testPublishToken, "wrong bearer": wrongBearer}
	for name, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the log contains the %s", name)
		}
	}
	for _, tok := range []string{tokA, tokA2, tokB, expired} {
		parts := strings.Split(tok, ".")
		for _, p := range parts[1:] {
			if strings.Contains(logs, p) {
				t.Errorf("the log contains a part of a token: %.20s...", p)
			}
		}
	}

	open := regexp.MustCompile(`msg="connection open" .*conn\.id=(\d+)`)
	closed := regexp.MustCompile(`msg="connection closed" .*conn\.id=(\d+)`)
	opens, closes := map[string]int{}, map[string]string{}
	for _, line := range strings.Split(logs, "\n") {
		if m := open.FindStringSubmatch(line); m != nil {
			opens[m[1]]++
			if !strings.Contains(line, "user=") {
				t.Errorf("open line without user=: %s", line)
			}
		}
		if m := closed.FindStringSubmatch(line); m != nil {
			if _, dup := closes[m[1]]; dup {
				t.Errorf("connection %s closed twice in the log", m[1])
			}
			closes[m[1]] = line
			if !strings.Contains(line, "user=") || !strings.Contains(line, "reason=") {
				t.Errorf("closed line without user= or reason=: %s", line)
			}
		}
	}
	if len(opens) != 3 || len(closes) != 3 {
		t.Fatalf("%d connections opened and %d closed in the log, want 3 and 3:\n%s", len(opens), len(closes), logs)
	}
	for id, n := range opens {
		if n != 1 {
			t.Errorf("connection %s opened %d times in the log", id, n)
		}
		if _, ok := closes[id]; !ok {
			t.Errorf("connection %s never closed in the log", id)
		}
	}
	users := map[string]bool{}
	for _, line := range closes {
		for _, u := range []string{userA, userB} {
			if strings.Contains(line, "user="+u) {
				users[u] = true
			}
		}
	}
	if !users[userA] || !users[userB] {
		t.Errorf("closed lines do not name the users of a and b:\n%v", closes)
	}
}
