package mongodb

// Idempotency-Key over HTTP with MongoDB: two server instances on one
// database; a publish answered 503 after its insert was applied is retried
// with the same key on the other instance: 200 duplicate, and every
// subscriber on both instances gets the event once.

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

func (e *serverEnv) publishKeyed(query, body, key string) (int, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.base+"/api/events"+query, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e2ePublishToken)
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		e.t.Fatalf("answer %q: %v", b, err)
	}
	return resp.StatusCode, m
}

func TestEndToEndIdempotencyKey(t *testing.T) {
	f := storeFake(t)
	cfgA, cfgB := testConfig(), testConfig()
	cfgA.Instance, cfgB.Instance = "a", "b"
	a, b := startServer(t, f, cfgA), startServer(t, f, cfgB)
	for _, e := range []*serverEnv{a, b} {
		waitFor(t, "/readyz 200", func() bool { s, _ := e.get("/readyz"); return s == 200 })
	}
	wsA, wsB := a.dial(), b.dial()
	tok := a.token(userA.Hex())
	for _, ws := range []*websocket.Conn{wsA, wsB} {
		wsDo(t, ws, wsRequest(tok, "attach", "issueUpdate", issue1.Hex()), 0)
		wsDo(t, ws, wsRequest(tok, "attach", "issueUpdate", issue2.Hex()), 0)
	}
	body := `{"type":"issueUpdate","id":"` + issue1.Hex() + `","data":["status"]}`

	// The majority did not acknowledge in time, but the primary applied the
	// insert: 503 code 7, "may or may not have been written".
	f.fail(wcError("insert"))
	status, m := a.publishKeyed("", body, "job-42")
	if status != 503 || m["code"] != 7.0 {
		t.Fatalf("first try: %d %v, want 503 code 7", status, m)
	}
	// The backend retries with the same key, here through the other
	// instance, and with ?wait: a duplicate, nothing published again.
	status, m = b.publishKeyed("?wait=1", body, "job-42")
	if status != 200 || m["code"] != 0.0 || m["duplicate"] != true {
		t.Fatalf("retry: %d %v, want 200 duplicate", status, m)
	}
	status, m = a.publishKeyed("", body, "job-42")
	if status != 200 || m["duplicate"] != true {
		t.Fatalf("second retry: %d %v, want 200 duplicate", status, m)
	}
	// A marker: what came before it on each connection is the event, once.
	status, m = b.publish("", `{"type":"issueUpdate","id":"`+issue2.Hex()+`"}`)
	if status != 200 {
		t.Fatalf("marker: %d %v", status, m)
	}
	for name, ws := range map[string]*websocket.Conn{"a": wsA, "b": wsB} {
		if got, want := wsRead(t, ws), frame("issueUpdate", issue1, `["status"]`); got != want {
			t.Errorf("%s: got %s, want %s", name, got, want)
		}
		if got, want := wsRead(t, ws), frame("issueUpdate", issue2, `[]`); got != want {
			t.Errorf("%s: got %s, want the marker %s (the event came twice?)", name, got, want)
		}
	}
	// A new key with ?wait: the stand-in answers the heartbeat's $gt
	// filter with nothing, so each instance here sees no other live one and
	// counts its own writes (instances_test.go counts across instances
	// over mongosim).
	status, m = a.publishKeyed("?wait=5", body, "job-43")
	if status != 200 || m["delivered"] != 1.0 || m["pending"] != 0.0 || m["duplicate"] != nil {
		t.Errorf("new key with ?wait: %d %v, want delivered 1", status, m)
	}
	// A malformed key: 400 code 5.
	status, m = a.publishKeyed("", body, strings.Repeat("x", 129))
	if status != 400 || m["code"] != 5.0 {
		t.Errorf("a 129-character key: %d %v, want 400 code 5", status, m)
	}
}
