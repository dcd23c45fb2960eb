package server

// GET /api/presence without MongoDB: this instance's connections of the
// user, from the per-user index.

import (
	"net/http"
	"testing"
	"time"
)

func (e *testEnv) presence(user, authz string) (int, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.base+"/api/presence?user="+user, nil)
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	return e.do(req)
}

func TestPresenceWithoutMongoDB(t *testing.T) {
	e := newEnv(t, nil)
	const userA, userB = "5dad615eae019570fb4647ed", "5dad615eae019570fb4647ee"
	tokA, tokB := e.token(userA, time.Hour), e.token(userB, time.Hour)
	a1, a2, b1 := e.dial(), e.dial(), e.dial()
	a1.do(tokA, "attach", "notification", "", 0)
	a1.do(tokA, "attach", "issueUpdate", "610217e481f6fc54736209e0", 0)
	a2.do(tokA, "attach", "notification", "", 0)
	b1.do(tokB, "attach", "notification", "", 0)
	_ = e.dial() // never authenticated: nobody's

	st, m := e.presence(userA, "Bearer "+testPublishToken)
	conns, _ := m["connections"].([]any)
	if st != 200 || m["code"] != 0.0 || m["message"] != "Ok" || len(conns) != 2 {
		t.Fatalf("presence of A: %d %v, want two connections", st, m)
	}
	subs := map[float64]int{}
	for _, x := range conns {
		p := x.(map[string]any)
		if p["instance"] == "" || p["conn"] == "" {
			t.Fatalf("entry %v: want instance and conn", p)
		}
		opened, err := time.Parse(time.RFC3339, p["opened"].(string))
		if err != nil || time.Since(opened) > time.Minute {
			t.Fatalf("opened %v: want RFC 3339, just now", p["opened"])
		}
		subs[p["subscriptions"].(float64)]++
	}
	if subs[1] != 1 || subs[2] != 1 {
		t.Fatalf("subscriptions %v, want one connection with 2 and one with 1", subs)
	}
	// A connection that closes leaves the list.
	a1.ws.Close()
	waitFor(t, "presence after a close", 5*time.Second, func() bool {
		_, m := e.presence(userA, "Bearer "+testPublishToken)
		conns, _ := m["connections"].([]any)
		return len(conns) == 1
	})
	// A user with nobody connected: an empty list, not null.
	st, m = e.presence("6a0000000000000000000001", "Bearer "+testPublishToken)
	if conns, ok := m["connections"].([]any); st != 200 || !ok || len(conns) != 0 {
		t.Fatalf("presence of nobody: %d %v, want connections []", st, m)
	}
	for _, tc := range []struct {
		user, authz  string
		status, code int
	}{
		{"nope", "Bearer " + testPublishToken, 400, 5},
		{"", "Bearer " + testPublishToken, 400, 5},
		{userA, "", 401, 1},
		{userA, "Bearer wrong", 401, 2},
	} {
		if st, m := e.presence(tc.user, tc.authz); st != tc.status || m["code"] != float64(tc.code) || m["status"] != float64(tc.status) {
			t.Errorf("presence %q with %q: %d %v, want %d code %d", tc.user, tc.authz, st, m, tc.status, tc.code)
		}
	}
	// Disabled with publish_token empty: 404.
	off := newEnv(t, func(c *Config) { c.PublishToken = "" })
	if st, m := off.presence(userA, "Bearer x"); st != 404 || m["code"] != 5.0 {
		t.Errorf("presence with publish_token empty: %d %v, want 404 code 5", st, m)
	}
}
