package server

// POST /api/events as PROTOCOL.md "Publishing: POST /api/events" describes
// it, over real sockets: refusals, delivery, ?wait counts, metrics.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// pubExpectAnswer checks an /api/* answer: HTTP status, the shape
// {"status","message","code"} with nothing else, status equal to the HTTP
// status, and the code and message.
func pubExpectAnswer(t *testing.T, what string, status int, m map[string]any, wantStatus, wantCode int, wantMsg string) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("%s: HTTP %d, want %d (answer %v)", what, status, wantStatus, m)
		return
	}
	// An error answer says what was wrong in "detail" (PROTOCOL.md).
	want := 3
	if status != 200 {
		want = 4
		if d, _ := m["detail"].(string); d == "" {
			t.Errorf("%s: answer %v has no detail", what, m)
		}
	}
	if len(m) != want {
		t.Errorf("%s: answer %v, want exactly status, message, code (and detail on an error)", what, m)
	}
	if m["status"] != float64(status) || m["code"] != float64(wantCode) || m["message"] != wantMsg {
		t.Errorf("%s: answer %v, want status %d code %d message %q", what, m, status, wantCode, wantMsg)
	}
}

// plainExpectAnswer checks an answer outside /api/* (/readyz, /files/):
// exactly status, message, code.
func plainExpectAnswer(t *testing.T, what string, status int, m map[string]any, wantStatus, wantCode int, wantMsg string) {
	t.Helper()
	if len(m) != 3 || status != wantStatus || m["status"] != float64(status) || m["code"] != float64(wantCode) || m["message"] != wantMsg {
		t.Errorf("%s: HTTP %d %v, want %d with exactly status, message %q, code %d", what, status, m, wantStatus, wantMsg, wantCode)
	}
}

// pubRequest sends method path with an Authorization header (none when
// authz is "") and returns the status and decoded answer.
func pubRequest(e *testEnv, method, path, authz, body string) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	return e.do(req)
}

// pubWaitCounts checks a ?wait answer: 200 code 0 with delivered and pending.
func pubWaitCounts(t *testing.T, what string, status int, m map[string]any, delivered, pending int) {
	t.Helper()
	if status != 200 || m["status"] != 200.0 || m["code"] != 0.0 || m["message"] != "Ok" {
		t.Fatalf("%s: %d %v, want 200 Ok", what, status, m)
	}
	if m["delivered"] != float64(delivered) || m["pending"] != float64(pending) {
		t.Fatalf("%s: delivered %v pending %v, want %d and %d", what, m["delivered"], m["pending"], delivered, pending)
	}
}

func TestPublishRefused(t *testing.T) {
	t.Parallel()
	const maxBytes, maxEvents = 1024, 3
	e := newEnv(t, func(c *Config) {
		c.MaxPublishBytes = maxBytes
		c.MaxPublishEvents = maxEvents
	})
	disabled := newEnv(t, func(c *Config) { c.PublishToken = "" })

	good := eventJSON("issueUpdate", issue1)
	four := "[" + strings.Repeat(good+",", maxEvents) + good + "]"
	bearer := "Bearer " + testPublishToken
	cases := []struct {
		name     string
		env      *testEnv
		method   string
		query    string
		authz    string
		body     string
		status   int
		code     int
		message  string
		noAnswer bool // only the status is checked
	}{
		{name: "no authorization", authz: "", body: good, status: 401, code: 1, message: "Token not set"},
		{name: "empty bearer", authz: "Bearer ", body: good, status: 401, code: 1, message: "Token not set"},
		{name: "blank bearer", authz: "Bearer    ", body: good, status: 401, code: 1, message: "Token not set"},
		{name: "basic scheme", authz: "Basic dXNlcjpwYXNz", body: good, status: 401, code: 1, message: "Token not set"},
		{name: "wrong bearer", authz: "Bearer wrong-" + testPublishToken, body: good, status: 401, code: 2, message: "Invalid token"},
		{name: "bearer prefix of token", authz: "Bearer " + testPublishToken[:5], body: good, status: 401, code: 2, message: "Invalid token"},
		{name: "disabled", env: disabled, authz: bearer, body: good, status: 404, code: 5, message: "Not found"},
		{name: "disabled without bearer", env: disabled, authz: "", body: good, status: 404, code: 5, message: "Not found"},
		{name: "GET", method: http.MethodGet, authz: bearer, status: 405, code: 5, noAnswer: true},
		{name: "PUT", method: http.MethodPut, authz: bearer, body: good, status: 405, code: 5, noAnswer: true},
		{name: "over max_publish_bytes", authz: bearer, body: `{"type":"issueUpdate","id":"` + issue1 + `","data":["` + strings.Repeat("x", maxBytes) + `"]}`, status: 413, code: 5, message: "Request too large"},
		{name: "one byte over max_publish_bytes", authz: bearer, body: good + strings.Repeat(" ", maxBytes+1-len(good)), status: 413, code: 5, message: "Request too large"},
		{name: "not JSON", authz: bearer, body: `{"type":`, status: 400, code: 5, message: "Invalid request"},
		{name: "not JSON text", authz: bearer, body: `hello`, status: 400, code: 5, message: "Invalid request"},
		{name: "empty body", authz: bearer, body: ``, status: 400, code: 5, message: "Invalid request"},
		{name: "JSON null", authz: bearer, body: `null`, status: 400, code: 5, message: "Invalid request"},
		{name: "JSON string", authz: bearer, body: `"issueUpdate"`, status: 400, code: 5, message: "Invalid request"},
		{name: "two objects", authz: bearer, body: good + good, status: 400, code: 5, message: "Invalid request"},
		{name: "empty array", authz: bearer, body: `[]`, status: 400, code: 5, message: "Invalid request"},
		{name: "empty array with space", authz: bearer, body: ` [ ] `, status: 400, code: 5, message: "Invalid request"},
		{name: "more than max_publish_events", authz: bearer, body: four, status: 400, code: 5, message: "Invalid request"},
		{name: "array of non-objects", authz: bearer, body: `[1]`, status: 400, code: 5, message: "Invalid request"},
		{name: "unknown type", authz: bearer, body: eventJSON("issueUpdated", issue1), status: 400, code: 5, message: "Invalid request"},
		{name: "type in other case", authz: bearer, body: eventJSON("IssueUpdate", issue1), status: 400, code: 5, message: "Invalid request"},
		{name: "missing type", authz: bearer, body: `{"id":"` + issue1 + `"}`, status: 400, code: 5, message: "Invalid request"},
		{name: "missing id", authz: bearer, body: `{"type":"issueUpdate"}`, status: 400, code: 5, message: "Invalid request"},
		{name: "missing id downloadFile", authz: bearer, body: `{"type":"downloadFile","data":[]}`, status: 400, code: 5, message: "Invalid request"},
		{name: "id not an ObjectId", authz: bearer, body: eventJSON("issueUpdate", "xyz"), status: 400, code: 5, message: "Invalid request"},
		{name: "id 23 hex digits", authz: bearer, body: eventJSON("issueUpdate", issue1[1:]), status: 400, code: 5, message: "Invalid request"},
		{name: "id 25 hex digits", authz: bearer, body: eventJSON("issueUpdate", issue1+"0"), status: 400, code: 5, message: "Invalid request"},
		{name: "id not hex", authz: bearer, body: eventJSON("datasetUpdate", "zz0217e481f6fc54736209e0"), status: 400, code: 5, message: "Invalid request"},
		{name: "id a number", authz: bearer, body: `{"type":"issueUpdate","id":610217}`, status: 400, code: 5, message: "Invalid request"},
		{name: "empty id", authz: bearer, body: eventJSON("uploadFile", ""), status: 400, code: 5, message: "Invalid request"},
		{name: "notification without user", authz: bearer, body: `{"type":"notification","id":"6a0000000000000000000001"}`, status: 400, code: 5, message: "Invalid request"},
		{name: "notification user not an ObjectId", authz: bearer, body: `{"type":"notification","user":"bob"}`, status: 400, code: 5, message: "Invalid request"},
		{name: "user on issueUpdate", authz: bearer, body: `{"type":"issueUpdate","id":"` + issue1 + `","user":"` + userA + `"}`, status: 400, code: 5, message: "Invalid request"},
		{name: "user on downloadFile", authz: bearer, body: `{"type":"downloadFile","id":"` + export1 + `","user":"` + userA + `"}`, status: 400, code: 5, message: "Invalid request"},
		{name: "data a string", authz: bearer, body: `{"type":"issueUpdate","id":"` + issue1 + `","data":"status"}`, status: 400, code: 5, message: "Invalid request"},
		{name: "data an object", authz: bearer, body: `{"type":"issueUpdate","id":"` + issue1 + `","data":{"a":1}}`, status: 400, code: 5, message: "Invalid request"},
		{name: "data a number", authz: bearer, body: `{"type":"issueUpdate","id":"` + issue1 + `","data":1}`, status: 400, code: 5, message: "Invalid request"},
		{name: "data null", authz: bearer, body: `{"type":"issueUpdate","id":"` + issue1 + `","data":null}`, status: 400, code: 5, message: "Invalid request"},
		{name: "unknown field", authz: bearer, body: `{"type":"issueUpdate","id":"` + issue1 + `","extra":1}`, status: 400, code: 5, message: "Invalid request"},
		{name: "one bad event in an array", authz: bearer, body: "[" + good + "," + eventJSON("nope", issue2) + "]", status: 400, code: 5, message: "Invalid request"},
	}
	for _, tc := range cases {
		env := tc.env
		if env == nil {
			env = e
		}
		method := tc.method
		if method == "" {
			method = http.MethodPost
		}
		status, m := pubRequest(env, method, "/api/events"+tc.query, tc.authz, tc.body)
		if tc.noAnswer {
			if status != tc.status || m["status"] != float64(tc.status) || m["code"] != float64(tc.code) {
				t.Errorf("%s: %d %v, want %d code %d", tc.name, status, m, tc.status, tc.code)
			}
			continue
		}
		pubExpectAnswer(t, tc.name, status, m, tc.status, tc.code, tc.message)
	}
}

// A refused publish says in "detail" what exactly was wrong: which field of
// which event, which limit; never the bearer it was sent.
func TestPublishErrorDetails(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.MaxPublishBytes = 200; c.MaxPublishEvents = 2 })
	disabled := newEnv(t, func(c *Config) { c.PublishToken = "" })
	good := eventJSON("issueUpdate", issue1)
	bearer := "Bearer " + testPublishToken
	for _, tc := range []struct {
		name, authz, query, body, detail string
		env                              *testEnv
	}{
		{"typo'd field", bearer, "", `{"type":"issueUpdate","idd":"` + issue1 + `"}`, `unknown field "idd"`, nil},
		{"missing id", bearer, "", `{"type":"issueUpdate"}`, `id is required for issueUpdate`, nil},
		{"bad id", bearer, "", eventJSON("datasetUpdate", "42"), `id "42" of datasetUpdate is not an ObjectId (24 hex digits)`, nil},
		{"unknown type in an array", bearer, "", "[" + good + "," + eventJSON("issueUpdated", issue2) + "]", `event 1 (counting from 0): unknown event type "issueUpdated"`, nil},
		{"missing type", bearer, "", `{"id":"` + issue1 + `"}`, `type is missing`, nil},
		{"notification without user", bearer, "", `{"type":"notification"}`, `notification needs user`, nil},
		{"user on issueUpdate", bearer, "", `{"type":"issueUpdate","id":"` + issue1 + `","user":"` + userA + `"}`, `user is only allowed for notification, not for issueUpdate`, nil},
		{"data an object", bearer, "", `{"type":"issueUpdate","id":"` + issue1 + `","data":{}}`, `data must be a JSON array`, nil},
		{"cut JSON", bearer, "", `{"type":`, `the JSON ends too early`, nil},
		{"broken JSON", bearer, "", `{"type":"issueUpdate","id":"` + issue1 + `","data":[1,]}`, `invalid JSON at byte 65: invalid character ']' looking for beginning of value`, nil},
		{"id a number", bearer, "", `{"type":"issueUpdate","id":610217}`, `id must be a string, not a JSON number`, nil},
		{"array of numbers", bearer, "", `[1]`, `a JSON number where an event object belongs`, nil},
		{"too many events", bearer, "", "[" + good + "," + good + "," + good + "]", `more than 2 events`, nil},
		{"too large", bearer, "", good + strings.Repeat(" ", 200), `the body is over max_publish_bytes (200 bytes)`, nil},
		{"bad wait", bearer, "?wait=61", good, `wait must be a number of seconds from 0 to 60`, nil},
		{"no Authorization", "", "", good, `no Authorization header: send Authorization: Bearer <publish_token>`, nil},
		{"Basic", "Basic eDp5", "", good, `the Authorization header is not of the form Bearer <publish_token>`, nil},
		{"wrong bearer", "Bearer " + testPublishToken + "x", "", good, `the bearer token is not this server's publish_token`, nil},
		{"off", bearer, "", good, `publish_token is empty in the server's configuration: this endpoint is off`, disabled},
	} {
		env := tc.env
		if env == nil {
			env = e
		}
		status, m := pubRequest(env, http.MethodPost, "/api/events"+tc.query, tc.authz, tc.body)
		if status == 200 || m["detail"] != tc.detail {
			t.Errorf("%s: %d %v, want the detail %q", tc.name, status, m, tc.detail)
		}
		if d, _ := m["detail"].(string); strings.Contains(d, testPublishToken) {
			t.Errorf("%s: the detail shows the publish token: %q", tc.name, d)
		}
	}
}

// Bodies at the limits are accepted.
func TestPublishAtLimits(t *testing.T) {
	t.Parallel()
	const maxBytes, maxEvents = 1024, 3
	e := newEnv(t, func(c *Config) {
		c.MaxPublishBytes = maxBytes
		c.MaxPublishEvents = maxEvents
	})
	good := eventJSON("issueUpdate", issue1)
	for name, body := range map[string]string{
		"exactly max_publish_bytes":  good + strings.Repeat(" ", maxBytes-len(good)),
		"exactly max_publish_events": "[" + good + "," + good + "," + good + "]",
		"one event in an array":      "[" + good + "]",
	} {
		status, m := e.publish("", body)
		pubExpectAnswer(t, name, status, m, 200, 0, "Ok")
	}
}

// An array with a bad event publishes none of it. (A gorilla connection is
// unusable after a read timeout, so expectNothing runs on an observer that
// reads nothing else; the reader proves it with order: the next good event
// is the first frame it gets.)
func TestPublishBadArrayPublishesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok := e.token(userA, time.Hour)
	reader, observer := e.dial(), e.dial()
	for _, c := range []*wsClient{reader, observer} {
		c.do(tok, "attach", "issueUpdate", issue1, 0)
		c.do(tok, "attach", "notification", "", 0)
	}
	reader.do(tok, "attach", "issueUpdate", issue2, 0)

	bad := []string{
		"[" + eventJSON("issueUpdate", issue1) + "," + eventJSON("issueUpdate", "nope") + "]",
		"[" + eventJSON("issueUpdate", issue1) + `,{"type":"notification","user":"` + userA + `"},{"type":"issueUpdate","id":"` + issue2 + `","data":null}]`,
		"[" + eventJSON("issueUpdate", issue1) + "," + eventJSON("issueUpdate", issue2) + `,{"type":"notification"}]`,
		"[" + eventJSON("issueUpdate", issue2) + `,{"type":"issueUpdate","id":"` + issue1 + `","extra":true}]`,
	}
	for i, body := range bad {
		status, m := e.publish("", body)
		pubExpectAnswer(t, fmt.Sprintf("bad array %d", i), status, m, 400, 5, "Invalid request")
		// With ?wait too: nothing was accepted, so nothing is counted.
		status, m = e.publish("?wait=1", body)
		pubExpectAnswer(t, fmt.Sprintf("bad array %d with wait", i), status, m, 400, 5, "Invalid request")
	}
	observer.expectNothing(150 * time.Millisecond)

	status, m := e.publish("", eventJSON("issueUpdate", issue2))
	pubExpectAnswer(t, "good publish", status, m, 200, 0, "Ok")
	reader.expectEvent("issueUpdate", issue2)
	reader.expectNothing(50 * time.Millisecond)
}

func TestPublishDelivers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	c := e.dial()
	tok := e.token(userA, time.Hour)
	c.do(tok, "attach", "issueUpdate", issue1, 0)
	c.do(tok, "attach", "issueUpdate", issue2, 0)
	c.do(tok, "attach", "downloadFile", export1, 0)
	c.do(tok, "attach", "datasetUpdate", dataset1, 0)
	c.do(tok, "attach", "notification", "", 0)

	// One event, data absent: delivered as [].
	status, m := e.publish("", eventJSON("issueUpdate", issue1))
	pubExpectAnswer(t, "one event", status, m, 200, 0, "Ok")
	ev := c.expectEvent("issueUpdate", issue1)
	if d := ev["data"].([]any); len(d) != 0 {
		t.Fatalf("absent data delivered as %v, want []", ev["data"])
	}
	if _, ok := ev["pos"].(string); len(ev) != 4 || !ok {
		t.Fatalf("event %v: want exactly type, id, data, pos", ev)
	}

	// An array: every event, in order, with its data.
	body := `[{"type":"issueUpdate","id":"` + issue2 + `","data":["status","title"]},` +
		`{"type":"downloadFile","id":"` + export1 + `","data":[{"url":"/files/k/r.xlsx"}]},` +
		`{"type":"datasetUpdate","id":"` + dataset1 + `","data":[]},` +
		`{"type":"notification","user":"` + userA + `","id":"6a0000000000000000000001","data":[{"text":"hi"}]},` +
		`{"type":"issueUpdate","id":"` + issue1 + `","data":[1,null,true,"x"]}]`
	status, m = e.publish("", body)
	pubExpectAnswer(t, "array", status, m, 200, 0, "Ok")
	ev = c.expectEvent("issueUpdate", issue2)
	if fmt.Sprint(ev["data"]) != "[status title]" {
		t.Errorf("data %v", ev["data"])
	}
	ev = c.expectEvent("downloadFile", export1)
	if fmt.Sprint(ev["data"]) != "[map[url:/files/k/r.xlsx]]" {
		t.Errorf("data %v", ev["data"])
	}
	ev = c.expectEvent("datasetUpdate", dataset1)
	if len(ev["data"].([]any)) != 0 {
		t.Errorf("data %v", ev["data"])
	}
	ev = c.expectEvent("notification", "6a0000000000000000000001")
	if fmt.Sprint(ev["data"]) != "[map[text:hi]]" {
		t.Errorf("data %v", ev["data"])
	}
	ev = c.expectEvent("issueUpdate", issue1)
	if fmt.Sprint(ev["data"]) != "[1 <nil> true x]" {
		t.Errorf("data %v", ev["data"])
	}
	c.expectNothing(50 * time.Millisecond)
}

// A notification reaches only its user's connections, with its id as given.
func TestPublishNotificationOnlyToItsUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tokA, tokB := e.token(userA, time.Hour), e.token(userB, time.Hour)
	a1 := e.dial() // userA, notification without id
	a1.do(tokA, "attach", "notification", "", 0)
	a2 := e.dial() // userA, notification with an id: covers all of A's notifications
	a2.do(tokA, "attach", "notification", "6b0000000000000000000009", 0)
	a3 := e.dial() // userA, but no notification subscription
	a3.do(tokA, "attach", "issueUpdate", issue1, 0)
	b := e.dial() // userB
	b.do(tokB, "attach", "notification", "", 0)

	status, m := e.publish("?wait=5", `{"type":"notification","user":"`+userA+`","id":"6a0000000000000000000001","data":[{"text":"hi"}]}`)
	pubWaitCounts(t, "notification to A", status, m, 2, 0)
	for _, c := range []*wsClient{a1, a2} {
		ev := c.expectEvent("notification", "6a0000000000000000000001")
		if fmt.Sprint(ev["data"]) != "[map[text:hi]]" {
			t.Errorf("data %v", ev["data"])
		}
	}

	// No id: delivered as "".
	status, m = e.publish("?wait=5", `{"type":"notification","user":"`+userB+`"}`)
	pubWaitCounts(t, "notification to B", status, m, 1, 0)
	ev := b.expectEvent("notification", "")
	if len(ev["data"].([]any)) != 0 {
		t.Errorf("data %v", ev["data"])
	}

	// An id that is not an ObjectId names the notification and is delivered as given.
	status, m = e.publish("?wait=5", `{"type":"notification","user":"`+userB+`","id":"N-42 \"x\""}`)
	pubWaitCounts(t, "notification with a free id", status, m, 1, 0)
	b.expectEvent("notification", `N-42 "x"`)

	// Nobody else saw anything; the user of a3 holds no notification subscription.
	for _, c := range []*wsClient{a1, a2, a3, b} {
		c.expectNothing(50 * time.Millisecond)
	}
}

func TestPublishWaitCounts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok := e.token(userA, time.Hour)
	subs := []*wsClient{e.dial(), e.dial(), e.dial()}
	for _, c := range subs {
		c.do(tok, "attach", "issueUpdate", issue1, 0)
	}

	status, m := e.publish("?wait=5", eventJSON("issueUpdate", issue1))
	pubWaitCounts(t, "three subscribers", status, m, 3, 0)
	for _, c := range subs {
		c.expectEvent("issueUpdate", issue1)
	}

	// Pairs: two events to three subscribers.
	status, m = e.publish("?wait=5", "["+eventJSON("issueUpdate", issue1)+","+eventJSON("issueUpdate", issue1)+"]")
	pubWaitCounts(t, "two events", status, m, 6, 0)
	for _, c := range subs {
		c.expectEvent("issueUpdate", issue1)
		c.expectEvent("issueUpdate", issue1)
	}

	status, m = e.publish("?wait=5", eventJSON("issueUpdate", issue2))
	pubWaitCounts(t, "no subscriber", status, m, 0, 0)

	// Fractions and the bounds are numbers from 0 to 60.
	for _, w := range []string{"60", "0.5"} {
		status, m = e.publish("?wait="+w, eventJSON("issueUpdate", issue2))
		pubWaitCounts(t, "wait="+w, status, m, 0, 0)
	}

	// wait=0 answers at once, with the counts.
	start := time.Now()
	status, m = e.publish("?wait=0", eventJSON("issueUpdate", issue1))
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("wait=0 took %v", took)
	}
	d, okD := m["delivered"].(float64)
	p, okP := m["pending"].(float64)
	if status != 200 || m["code"] != 0.0 || !okD || !okP || d+p != 3 {
		t.Fatalf("wait=0: %d %v, want 200 with delivered+pending = 3", status, m)
	}
	for _, c := range subs {
		c.expectEvent("issueUpdate", issue1)
	}

	// Without ?wait there are no counts.
	status, m = e.publish("", eventJSON("issueUpdate", issue1))
	pubExpectAnswer(t, "no wait", status, m, 200, 0, "Ok")
	for _, c := range subs {
		c.expectEvent("issueUpdate", issue1)
	}

	for _, w := range []string{"abc", "-1", "61", "60.5", "", "NaN", "Inf", "-Inf", "1s", "0x10"} {
		status, m = e.publish("?wait="+w, eventJSON("issueUpdate", issue1))
		pubExpectAnswer(t, "wait="+w, status, m, 400, 5, "Invalid request")
	}
	for _, c := range subs {
		c.expectNothing(50 * time.Millisecond)
	}
}

// A subscriber that attached and then closed counts in neither delivered nor
// pending.
func TestPublishWaitClosedSubscriber(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok := e.token(userA, time.Hour)
	live1, live2, gone := e.dial(), e.dial(), e.dial()
	for _, c := range []*wsClient{live1, live2, gone} {
		c.do(tok, "attach", "issueUpdate", issue1, 0)
	}
	if err := gone.ws.Close(); err != nil { // abrupt: no close frame
		t.Fatal(err)
	}
	waitFor(t, "the server to drop the closed subscriber", 5*time.Second, func() bool { return e.srv.hub.Subscriptions() == 2 })
	status, m := e.publish("?wait=5", eventJSON("issueUpdate", issue1))
	pubWaitCounts(t, "after a close", status, m, 2, 0)
	live1.expectEvent("issueUpdate", issue1)
	live2.expectEvent("issueUpdate", issue1)

	// A close racing with the publish: whatever the race, once the wait is
	// over nothing is pending, and the closed one counts at most once.
	racer := e.dial()
	racer.do(tok, "attach", "issueUpdate", issue1, 0)
	_ = racer.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	_ = racer.ws.Close()
	status, m = e.publish("?wait=5", eventJSON("issueUpdate", issue1))
	if status != 200 || m["pending"] != 0.0 || (m["delivered"] != 2.0 && m["delivered"] != 3.0) {
		t.Fatalf("racing close: %d %v, want delivered 2 or 3, pending 0", status, m)
	}
	live1.expectEvent("issueUpdate", issue1)
	live2.expectEvent("issueUpdate", issue1)
}

// pubScrapeMetrics returns every sample of GET /metrics by its series name
// as printed ("name{label=\"v\"}").
func pubScrapeMetrics(e *testEnv) map[string]float64 {
	e.t.Helper()
	resp, err := http.Get(e.base + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		e.t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		e.t.Errorf("/metrics Content-Type %q, want Prometheus text format", ct)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			e.t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

func TestPublishMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	tok := e.token(userA, time.Hour)
	c1, c2 := e.dial(), e.dial()
	c1.do(tok, "attach", "issueUpdate", issue1, 0)
	c2.do(tok, "attach", "issueUpdate", issue1, 0)
	c2.do(tok, "attach", "notification", "", 0)
	c1.sendText(`{"action":"attach"}`)
	c1.expectCode(5)
	c1.do("", "attach", "issueUpdate", issue2, 1)

	status, m := e.publish("?wait=5", eventJSON("issueUpdate", issue1))
	pubWaitCounts(t, "one", status, m, 2, 0)
	status, m = e.publish("?wait=5", "["+eventJSON("issueUpdate", issue1)+","+eventJSON("issueUpdate", issue1)+`,{"type":"notification","user":"`+userA+`"}]`)
	pubWaitCounts(t, "array", status, m, 5, 0)
	status, m = e.publish("", eventJSON("downloadFile", export1)) // no subscriber
	pubExpectAnswer(t, "downloadFile", status, m, 200, 0, "Ok")
	status, _ = e.post("/api/events", "Bearer nope", eventJSON("issueUpdate", issue1))
	if status != 401 {
		t.Fatalf("wrong bearer: %d", status)
	}
	status, _ = e.publish("", "[]")
	if status != 400 {
		t.Fatalf("empty array: %d", status)
	}

	want := map[string]float64{
		`airlay_events_published_total{type="issueUpdate"}`:                                  3,
		`airlay_events_published_total{type="notification"}`:                                 1,
		`airlay_events_published_total{type="downloadFile"}`:                                 1,
		`airlay_events_published_total{type="uploadFile"}`:                                   0,
		`airlay_events_delivered_total`:                                                      7,
		`airlay_delivery_latency_seconds_count`:                                              7,
		`airlay_requests_total{code="0"}`:                                                    3,
		`airlay_requests_total{code="1"}`:                                                    1,
		`airlay_requests_total{code="5"}`:                                                    1,
		`airlay_requests_total{code="2"}`:                                                    0,
		`airlay_connections`:                                                                 2,
		`airlay_subscriptions`:                                                               3,
		`airlay_publish_requests_total{status="200"}`:                                        3,
		`airlay_publish_requests_total{status="401"}`:                                        1,
		`airlay_publish_requests_total{status="400"}`:                                        1,
		`airlay_build_info{goversion="` + runtime.Version() + `",version="` + Version + `"}`: 1,
	}
	got := pubScrapeMetrics(e)
	for series, v := range want {
		if g, ok := got[series]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", series, g, ok, v)
		}
	}
	for i := 0; i < 3; i++ {
		c1.expectEvent("issueUpdate", issue1)
	}
	for i := 0; i < 3; i++ {
		c2.expectEvent("issueUpdate", issue1)
	}
	c2.expectEvent("notification", "")

	// The gauges follow a close.
	_ = c2.ws.Close()
	waitFor(t, "airlay_connections 1 and airlay_subscriptions 1", 5*time.Second, func() bool {
		got := pubScrapeMetrics(e)
		return got["airlay_connections"] == 1 && got["airlay_subscriptions"] == 1
	})
}

// pubGateListener hands out connections whose writes can be held: a held
// connection's server side blocks in Write, as if its client had stopped
// reading and every socket buffer were full, whatever the kernel's buffer
// sizes. A held Write ends at the write deadline or on Close, as on a real
// socket.
type pubGateListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*pubGateConn
}

type pubGateConn struct {
	net.Conn
	mu        sync.Mutex
	open      chan struct{} // closed while writes may go
	deadline  time.Time     // write deadline, honoured while held
	changed   chan struct{} // closed and replaced when the deadline changes
	closed    chan struct{}
	closeOnce sync.Once
}

func (l *pubGateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	g := &pubGateConn{Conn: c, open: make(chan struct{}), changed: make(chan struct{}), closed: make(chan struct{})}
	close(g.open)
	l.mu.Lock()
	l.conns = append(l.conns, g)
	l.mu.Unlock()
	return g, nil
}

// of returns the server side of client c.
func (l *pubGateListener) of(c *wsClient) *pubGateConn {
	c.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, g := range l.conns {
		if g.RemoteAddr().String() == c.ws.LocalAddr().String() {
			return g
		}
	}
	c.t.Fatalf("no server connection for %s", c.ws.LocalAddr())
	return nil
}

func (l *pubGateListener) releaseAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, g := range l.conns {
		g.release()
	}
}

func (g *pubGateConn) Write(b []byte) (int, error) {
	for {
		g.mu.Lock()
		open, changed, deadline := g.open, g.changed, g.deadline
		g.mu.Unlock()
		var expired <-chan time.Time
		var timer *time.Timer
		if !deadline.IsZero() {
			d := time.Until(deadline)
			if d <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(d)
			expired = timer.C
		}
		var err error
		select {
		case <-open:
		case <-g.closed:
			err = net.ErrClosed
		case <-expired:
			err = os.ErrDeadlineExceeded
		case <-changed:
			if timer != nil {
				timer.Stop()
			}
			continue
		}
		if timer != nil {
			timer.Stop()
		}
		if err != nil {
			return 0, err
		}
		return g.Conn.Write(b)
	}
}

func (g *pubGateConn) setWriteDeadline(t time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.deadline = t
	close(g.changed)
	g.changed = make(chan struct{})
}

func (g *pubGateConn) SetWriteDeadline(t time.Time) error {
	g.setWriteDeadline(t)
	return g.Conn.SetWriteDeadline(t)
}

func (g *pubGateConn) SetDeadline(t time.Time) error {
	g.setWriteDeadline(t)
	return g.Conn.SetDeadline(t)
}

func (g *pubGateConn) Close() error {
	g.closeOnce.Do(func() { close(g.closed) })
	return g.Conn.Close()
}

// hold makes the next writes block until release or Close.
func (g *pubGateConn) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
}

func (g *pubGateConn) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

// pubTestConfig is the configuration newEnv uses, changed by mutate.
func pubTestConfig(t *testing.T, mutate func(*Config)) *Config {
	t.Helper()
	cfg := Defaults()
	cfg.File = "test.ini"
	cfg.Address = "127.0.0.1"
	cfg.Port = 0
	cfg.JWTPublicKey = writePublicKey(t, t.TempDir())
	cfg.PublishToken = testPublishToken
	cfg.LogLevel = slog.LevelDebug
	if mutate != nil {
		mutate(&cfg)
	}
	return &cfg
}

// pubStartGatedEnv is newEnv with a pubGateListener.
func pubStartGatedEnv(t *testing.T, mutate func(*Config)) (*testEnv, *pubGateListener) {
	t.Helper()
	cfg := pubTestConfig(t, mutate)
	logs := &syncBuffer{}
	srv, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: cfg.LogLevel}))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gl := &pubGateListener{Listener: ln}
	e := &testEnv{t: t, srv: srv, cfg: cfg, logs: logs, served: make(chan error, 1)}
	e.base = "http://" + ln.Addr().String()
	e.ws = "ws://" + ln.Addr().String() + "/ws"
	go func() { e.served <- srv.Serve(gl) }()
	t.Cleanup(func() {
		gl.releaseAll()
		e.shutdown(5 * time.Second)
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return e, gl
}

type pubResult struct {
	status int
	answer map[string]any
	err    error
}

// pubAsync publishes from another goroutine (no t.Fatal there).
func pubAsync(e *testEnv, query, body string) <-chan pubResult {
	ch := make(chan pubResult, 1)
	go func() {
		req, err := http.NewRequest(http.MethodPost, e.base+"/api/events"+query, strings.NewReader(body))
		if err != nil {
			ch <- pubResult{err: err}
			return
		}
		req.Header.Set("Authorization", "Bearer "+testPublishToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			ch <- pubResult{err: err}
			return
		}
		defer resp.Body.Close()
		var m map[string]any
		err = json.NewDecoder(resp.Body).Decode(&m)
		ch <- pubResult{status: resp.StatusCode, answer: m, err: err}
	}()
	return ch
}

// A subscriber that does not read, whose send queue fills, is dropped as a
// slow consumer; a ?wait publish counts its pairs in neither delivered nor
// pending, and a reading subscriber of the same key as delivered.
func TestPublishWaitSlowConsumer(t *testing.T) {
	t.Parallel()
	// Two frames: a frame counts against the queue until melody's writer
	// reports it written, which may be a moment after the client has read
	// it; with a queue of one, the fast client's next event could find its
	// queue still "full" of the frame it had just read (seen once in 20
	// runs under load).
	e, gl := pubStartGatedEnv(t, func(c *Config) { c.SendQueue = 2 })
	tok := e.token(userA, time.Hour)
	slow := e.dial()
	slow.do(tok, "attach", "issueUpdate", issue1, 0)
	fast := e.dial()
	fast.do(tok, "attach", "issueUpdate", issue1, 0)
	gl.of(slow).hold()

	// The first event blocks the slow connection's writer, the second waits
	// in its queue of 2; the third overflows it.
	first := pubAsync(e, "?wait=10", eventJSON("issueUpdate", issue1))
	fast.expectEvent("issueUpdate", issue1)
	for i := 0; i < 2; i++ {
		status, m := e.publish("", eventJSON("issueUpdate", issue1))
		pubExpectAnswer(t, "more", status, m, 200, 0, "Ok")
		fast.expectEvent("issueUpdate", issue1)
	}
	select {
	case r := <-first:
		if r.err != nil {
			t.Fatal(r.err)
		}
		pubWaitCounts(t, "first event", r.status, r.answer, 1, 0)
	case <-time.After(8 * time.Second):
		t.Fatal("the ?wait publish did not answer after its slow subscriber was dropped")
	}
	waitFor(t, "the slow consumer to be dropped", 5*time.Second, func() bool {
		got := pubScrapeMetrics(e)
		return got["airlay_slow_consumer_disconnects_total"] == 1 && got["airlay_connections"] == 1 && got["airlay_subscriptions"] == 1
	})
	if !strings.Contains(e.logs.String(), "slow consumer") {
		t.Errorf("no slow consumer line in the log")
	}
	// The fast one is unaffected.
	status, m := e.publish("?wait=5", eventJSON("issueUpdate", issue1))
	pubWaitCounts(t, "after the drop", status, m, 1, 0)
	fast.expectEvent("issueUpdate", issue1)
}
