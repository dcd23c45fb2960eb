package server

// Idempotency-Key on POST /api/events without MongoDB: remembered in
// memory for idempotency_window, at most idempotency_keys at once.

import (
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// keyedPublish POSTs body with an Idempotency-Key (keys: each a header
// value; none: no header).
func (e *testEnv) keyedPublish(query, body string, keys ...string) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.base+"/api/events"+query, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testPublishToken)
	for _, k := range keys {
		req.Header.Add("Idempotency-Key", k)
	}
	return e.do(req)
}

// expectOnlyMarker publishes a marker event (no key) and checks that it is
// the next frame: nothing else was delivered before it. (A read that times
// out breaks a gorilla connection, so expectNothing only ends a test.)
func (e *testEnv) expectOnlyMarker(c *wsClient) {
	e.t.Helper()
	status, m := e.publish("", `{"type":"issueUpdate","id":"`+issue2+`","data":["marker"]}`)
	if status != 200 {
		e.t.Fatalf("marker: %d %v", status, m)
	}
	if ev := c.expectEvent("issueUpdate", issue2); len(ev["data"].([]any)) != 1 {
		e.t.Fatalf("next event %v, want the marker", ev)
	}
}

func expectDuplicate(t *testing.T, what string, status int, m map[string]any) {
	t.Helper()
	if status != 200 || m["status"] != 200.0 || m["code"] != 0.0 || m["message"] != "Ok" || m["duplicate"] != true {
		t.Errorf("%s: %d %v, want 200 Ok with duplicate: true", what, status, m)
	}
}

func TestPublishIdempotencyKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.IdempotencyWindow = 300 * time.Millisecond })
	c := e.dial()
	tok := e.token(userA, time.Hour)
	c.do(tok, "attach", "issueUpdate", issue1, 0)
	c.do(tok, "attach", "issueUpdate", issue2, 0)

	// The first publish with a key delivers; a second with the same key,
	// whatever its body, is 200 and delivers nothing.
	status, m := e.keyedPublish("", eventJSON("issueUpdate", issue1), "order-17/shipped")
	pubExpectAnswer(t, "first", status, m, 200, 0, "Ok")
	c.expectEvent("issueUpdate", issue1)
	status, m = e.keyedPublish("", eventJSON("issueUpdate", issue1), "order-17/shipped")
	expectDuplicate(t, "the same again", status, m)
	status, m = e.keyedPublish("", eventJSON("issueUpdate", issue2), "order-17/shipped")
	expectDuplicate(t, "another body, the same key", status, m)
	status, m = e.keyedPublish("?wait=1", eventJSON("issueUpdate", issue2), "order-17/shipped")
	expectDuplicate(t, "with ?wait", status, m)
	if m["delivered"] != 0.0 || m["pending"] != 0.0 {
		t.Errorf("a duplicate with ?wait: %v, want delivered 0 pending 0", m)
	}
	e.expectOnlyMarker(c)
	if got := pubScrapeMetrics(e)["airlay_publish_duplicates_total"]; got != 3 {
		t.Errorf("airlay_publish_duplicates_total %v, want 3", got)
	}

	// Another key, and no key, publish as usual; ?wait counts a new key.
	status, m = e.keyedPublish("?wait=2", eventJSON("issueUpdate", issue2), "order-18")
	pubWaitCounts(t, "a new key with ?wait", status, m, 1, 0)
	c.expectEvent("issueUpdate", issue2)
	status, m = e.publish("", eventJSON("issueUpdate", issue2))
	pubExpectAnswer(t, "no key", status, m, 200, 0, "Ok")
	c.expectEvent("issueUpdate", issue2)

	// After the window the key is free again.
	time.Sleep(350 * time.Millisecond)
	status, m = e.keyedPublish("", eventJSON("issueUpdate", issue1), "order-17/shipped")
	pubExpectAnswer(t, "after the window", status, m, 200, 0, "Ok")
	c.expectEvent("issueUpdate", issue1)

	// A malformed key is 400 code 5 and publishes nothing, nor remembers.
	for _, tc := range []struct {
		what string
		keys []string
	}{
		{"empty", []string{""}},
		{"129 characters", []string{strings.Repeat("k", 129)}},
		{"a control character (tab)", []string{"a\tb"}},
		{"not ASCII", []string{"clé"}},
		{"two headers", []string{"a", "b"}},
	} {
		status, m = e.keyedPublish("", eventJSON("issueUpdate", issue1), tc.keys...)
		pubExpectAnswer(t, tc.what, status, m, 400, 5, "Invalid request")
	}
	status, m = e.keyedPublish("", eventJSON("issueUpdate", issue1), strings.Repeat("~", 128))
	pubExpectAnswer(t, "128 printable characters", status, m, 200, 0, "Ok")
	c.expectEvent("issueUpdate", issue1)
	// A malformed body with a key is 400 and does not use the key up.
	status, m = e.keyedPublish("", `{"type":"issueUpdate"}`, "k-bad-body")
	pubExpectAnswer(t, "bad body", status, m, 400, 5, "Invalid request")
	status, m = e.keyedPublish("", eventJSON("issueUpdate", issue1), "k-bad-body")
	pubExpectAnswer(t, "the key after a bad body", status, m, 200, 0, "Ok")
	c.expectEvent("issueUpdate", issue1)
	c.expectNothing(50 * time.Millisecond)
}

// Concurrent publishes with one key: exactly one delivers.
func TestPublishIdempotencyKeyConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	c := e.dial()
	c.do(e.token(userA, time.Hour), "attach", "issueUpdate", issue1, 0)
	const n = 20
	dups := make(chan bool, n)
	for range n {
		go func() {
			status, m := e.keyedPublish("", eventJSON("issueUpdate", issue1), "same")
			dups <- status == 200 && m["duplicate"] == true
		}()
	}
	got := 0
	for range n {
		if <-dups {
			got++
		}
	}
	if got != n-1 {
		t.Errorf("%d duplicates among %d publishes, want %d", got, n, n-1)
	}
	c.expectEvent("issueUpdate", issue1)
	c.expectNothing(100 * time.Millisecond)
}

// The bound: past idempotency_keys a new key is refused with 503 code 7 and
// nothing is published; known keys are still duplicates and publishes
// without a key go through; expired keys make room.
func TestPublishIdempotencyKeysBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.IdempotencyKeys, c.IdempotencyWindow = 2, 300*time.Millisecond })
	c := e.dial()
	c.do(e.token(userA, time.Hour), "attach", "issueUpdate", issue1, 0)
	c.do(e.token(userA, time.Hour), "attach", "issueUpdate", issue2, 0)
	for _, k := range []string{"a", "b"} {
		status, m := e.keyedPublish("", eventJSON("issueUpdate", issue1), k)
		pubExpectAnswer(t, k, status, m, 200, 0, "Ok")
		c.expectEvent("issueUpdate", issue1)
	}
	status, m := e.keyedPublish("", eventJSON("issueUpdate", issue1), "c")
	pubExpectAnswer(t, "a third key", status, m, 503, 7, "Service unavailable")
	status, m = e.keyedPublish("", eventJSON("issueUpdate", issue1), "a")
	expectDuplicate(t, "a known key while full", status, m)
	status, m = e.publish("", eventJSON("issueUpdate", issue1))
	pubExpectAnswer(t, "no key while full", status, m, 200, 0, "Ok")
	c.expectEvent("issueUpdate", issue1)
	e.expectOnlyMarker(c)
	if n := e.srv.keys.len(); n != 2 {
		t.Errorf("%d keys remembered, want 2", n)
	}
	time.Sleep(350 * time.Millisecond)
	status, m = e.keyedPublish("", eventJSON("issueUpdate", issue1), "c")
	pubExpectAnswer(t, "after the window", status, m, 200, 0, "Ok")
	c.expectEvent("issueUpdate", issue1)
}

// The key set keeps its queue bounded while keys are released (failed
// publishes) and reserved again.
func TestKeySetBounded(t *testing.T) {
	t.Parallel()
	k := newKeySet(time.Hour, 10)
	for i := range 10000 {
		key := string(rune('a' + i%26))
		if k.reserve(key) == keyNew {
			k.release(key)
		}
	}
	if n := len(k.queue) - k.head; n > 2*10+1 {
		t.Errorf("queue holds %d entries for at most 10 keys", n)
	}
	if n := k.len(); n != 0 {
		t.Errorf("%d keys after releasing all", n)
	}
}

// BenchmarkKeySet: the cost of remembering a key (128 characters, the
// largest), and the heap it holds (bytes/key, for the README's bound).
func BenchmarkKeySet(b *testing.B) {
	const n = 100000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%0128d", i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	k := newKeySet(time.Hour, n)
	for _, key := range keys {
		k.reserve(strings.Clone(key)) // as from a request: its own copy
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perKey := float64(after.HeapAlloc-before.HeapAlloc) / n
	runtime.KeepAlive(k)
	b.ResetTimer()
	k2 := newKeySet(time.Hour, n)
	for i := 0; i < b.N; i++ {
		if i%n == 0 && i > 0 {
			k2 = newKeySet(time.Hour, n)
		}
		k2.reserve(keys[i%n])
	}
	b.ReportMetric(perKey, "heap-bytes/key")
}
