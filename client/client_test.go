package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlay/airlay/client"
	"github.com/airlay/airlay/events"
	"github.com/airlay/airlay/internal/servertest"
	"github.com/airlay/airlay/server"
)

// Attach and Detach return the server's answer to their own request, also
// when many run at once on one connection (answers come in request order).
func TestAttachDetachAnswers(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *server.Config) { c.MaxSubscriptions = 3 })
	var calls counter
	c := dial(t, client.Options{URL: s.WSURL(), Token: provider(s, time.Hour, &calls)})

	tests := []struct {
		action string
		sub    client.Sub
		code   events.Code
		msg    string
	}{
		{"attach", client.Sub{Type: "issueUpdate", ID: issue1}, events.OK, "Ok"},
		{"attach", client.Sub{Type: "issueUpdate", ID: strings.ToUpper(issue1)}, events.OK, "Ok"}, // the same subscription
		{"attach", client.Sub{Type: "issueUpdate", ID: "nope"}, events.InvalidRequest, "Invalid request"},
		{"attach", client.Sub{Type: "bogusType", ID: issue1}, events.InvalidRequest, "Invalid request"},
		{"attach", client.Sub{Type: "notification"}, events.OK, "Ok"},
		{"attach", client.Sub{Type: "downloadFile", ID: issue2}, events.OK, "Ok"},
		{"attach", client.Sub{Type: "issueUpdate", ID: issue3}, events.TooManySubscription, "Too many subscriptions"},
		{"detach", client.Sub{Type: "downloadFile", ID: issue2}, events.OK, "Ok"},
		{"detach", client.Sub{Type: "downloadFile", ID: issue2}, events.OK, "Ok"}, // idempotent
	}
	for _, tt := range tests {
		var a client.Answer
		var err error
		if tt.action == "attach" {
			a, err = c.Attach(ctx(t), tt.sub)
		} else {
			a, err = c.Detach(ctx(t), tt.sub)
		}
		if err != nil {
			t.Fatalf("%s %v: %v", tt.action, tt.sub, err)
		}
		wantStatus := 400
		if tt.code == 0 {
			wantStatus = 200
		}
		if a.Code != tt.code || a.Message != tt.msg || a.Status != wantStatus || a.OK() != (tt.code == 0) {
			t.Errorf("%s %v: got %+v, want code %d %q", tt.action, tt.sub, a, tt.code, tt.msg)
		}
	}
	want := []client.Sub{{Type: "issueUpdate", ID: issue1}, {Type: "notification"}}
	if got := c.Subs(); !slices.Equal(got, want) {
		t.Errorf("Subs() = %v, want %v", got, want)
	}
	if n := calls.get(); n != 1 {
		t.Errorf("the token provider was called %d times for one token valid 1h, want 1", n)
	}

	// A token the server refuses: code 2, and the next request asks the
	// provider again.
	bad := dial(t, client.Options{URL: s.WSURL(), Token: func(context.Context) (string, error) { calls.add(); return "not.a.token", nil }})
	before := calls.get()
	for i := 0; i < 2; i++ {
		a, err := bad.Attach(ctx(t), client.Sub{Type: "issueUpdate", ID: issue1})
		if err != nil || a.Code != events.InvalidToken || a.Message != "Invalid token" {
			t.Fatalf("attach with a bad token: %+v, %v; want code 2", a, err)
		}
	}
	if n := calls.get() - before; n != 2 {
		t.Errorf("after code 2 the provider was called %d times for 2 requests, want 2", n)
	}
	if len(bad.Subs()) != 0 {
		t.Errorf("a refused attach is in the set: %v", bad.Subs())
	}
}

// Many concurrent requests on one connection each get their own answer.
func TestConcurrentRequestsMatchAnswers(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	c := dial(t, client.Options{URL: s.WSURL(), Token: provider(s, time.Hour, new(counter))})
	var wg sync.WaitGroup
	errs := make(chan error, 60)
	for i := 0; i < 60; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("6102%020x", i)
			want := events.OK
			if i%3 == 0 {
				id = fmt.Sprintf("bad-%d", i) // code 5
				want = events.InvalidRequest
			}
			a, err := c.Attach(ctx(t), client.Sub{Type: "issueUpdate", ID: id})
			if err != nil || a.Code != want {
				errs <- fmt.Errorf("attach %s: %+v %v, want code %d", id, a, err, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(c.Subs()); n != 40 {
		t.Errorf("%d subscriptions held, want 40", n)
	}
}

// Raw requests (what `listen` reads from stdin) get the token when they
// carry none, and keep the set up to date.
func TestRequestRaw(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	c := dial(t, client.Options{URL: s.WSURL(), Token: provider(s, time.Hour, new(counter))})
	tests := []struct {
		frame string
		code  events.Code
	}{
		{`{"action":"attach","event":{"type":"issueUpdate","id":"` + issue1 + `"}}`, events.OK},
		{`{"auth":"","action":"attach","event":{"type":"issueUpdate","id":"` + issue1 + `"}}`, events.TokenNotSet},
		{`not json`, events.InvalidRequest},
		{`[1,2]`, events.InvalidRequest},
		{`{"action":"watch","event":{"type":"issueUpdate","id":"` + issue1 + `"}}`, events.InvalidRequest},
		{`{"action":"attach","event":{"type":"issueUpdate","id":"` + issue2 + `"}}`, events.OK},
		{`{"action":"detach","event":{"type":"issueUpdate","id":"` + issue2 + `"}}`, events.OK},
	}
	for _, tt := range tests {
		a, err := c.Request(ctx(t), []byte(tt.frame))
		if err != nil || a.Code != tt.code {
			t.Errorf("%s: %+v %v, want code %d", tt.frame, a, err, tt.code)
		}
	}
	if got, want := c.Subs(), []client.Sub{{Type: "issueUpdate", ID: issue1}}; !slices.Equal(got, want) {
		t.Errorf("Subs() = %v, want %v", got, want)
	}
}

// Events arrive in order through the handler and the channel.
func TestEvents(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	ch := make(chan client.Event, 16)
	rec := newRecorder()
	c := dial(t, rec.options(client.Options{URL: s.WSURL(), Token: provider(s, time.Hour, new(counter)), Events: ch}))
	for _, id := range []string{issue1, issue2} {
		if a, err := c.Attach(ctx(t), client.Sub{Type: "issueUpdate", ID: id}); err != nil || !a.OK() {
			t.Fatalf("attach: %+v %v", a, err)
		}
	}
	if a, err := c.Attach(ctx(t), client.Sub{Type: "notification"}); err != nil || !a.OK() {
		t.Fatalf("attach: %+v %v", a, err)
	}
	s.Publish(`[` + event("issueUpdate", issue1, `1`) + `,` + event("issueUpdate", issue3, `2`) + `,` + event("issueUpdate", issue2, `3`) +
		`,{"type":"notification","user":"` + userA + `","id":"n1","data":[4]}]`)
	want := []string{"issueUpdate " + issue1 + " [1]", "issueUpdate " + issue2 + " [3]", "notification n1 [4]"}
	for i, w := range want {
		select {
		case e := <-ch:
			if got := e.Type + " " + e.ID + " " + string(e.Data); got != w {
				t.Errorf("channel event %d: %s, want %s", i, got, w)
			}
			if !strings.Contains(string(e.Raw), `"data":`) {
				t.Errorf("Raw %q is not the frame", e.Raw)
			}
		case <-time.After(waitFor):
			t.Fatalf("no event %d on the channel", i)
		}
	}
	_, evs, _ := rec.snapshot()
	if len(evs) != len(want) {
		t.Fatalf("handler got %d events, want %d", len(evs), len(want))
	}
	for i, e := range evs {
		if got := e.Type + " " + e.ID + " " + string(e.Data); got != want[i] {
			t.Errorf("handler event %d: %s, want %s", i, got, want[i])
		}
	}
}

// The server stops and starts again on the same port: the client reports the
// drop and the failed attempts, reconnects, re-attaches, and the events
// published after the restart arrive, each once.
func TestReconnectAfterRestart(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	rec := newRecorder()
	c := dial(t, rec.options(client.Options{URL: s.WSURL(), Token: provider(s, time.Hour, new(counter)), BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}))
	for _, sub := range []client.Sub{{Type: "issueUpdate", ID: issue1}, {Type: "notification"}} {
		if a, err := c.Attach(ctx(t), sub); err != nil || !a.OK() {
			t.Fatalf("attach %v: %+v %v", sub, a, err)
		}
	}
	if n := s.Publish(event("issueUpdate", issue1, `"before"`)); n != 1 {
		t.Fatalf("delivered %d, want 1", n)
	}

	s.Stop()
	rec.waitUntil(t, "close drop 1001", func(st []client.State, _ []client.Event) bool {
		return slices.ContainsFunc(st, func(s client.State) bool {
			return s.State == client.StateClose && s.Reason == client.ReasonDrop && s.Code == 1001
		})
	})
	rec.waitUntil(t, "a failed attempt while the server is down", func(st []client.State, _ []client.Event) bool {
		return count(st, client.StateFail, "") >= 1
	})
	// An Attach while disconnected waits for the next connection.
	attached := make(chan error, 1)
	go func() {
		a, err := c.Attach(ctx(t), client.Sub{Type: "issueUpdate", ID: issue2})
		if err == nil && !a.OK() {
			err = fmt.Errorf("answer %+v", a)
		}
		attached <- err
	}()
	s.Restart()
	rec.waitUntil(t, "open again", func(st []client.State, _ []client.Event) bool { return count(st, client.StateOpen, "") == 2 })
	if err := <-attached; err != nil {
		t.Fatalf("attach while disconnected: %v", err)
	}
	for _, body := range []string{
		event("issueUpdate", issue1, `"after1"`),
		event("issueUpdate", issue2, `"after2"`),
		`{"type":"notification","user":"` + userA + `","id":"n","data":["after3"]}`,
	} {
		if n := s.Publish(body); n != 1 {
			t.Fatalf("after the restart %s was delivered %d times, want 1", body, n)
		}
	}
	time.Sleep(200 * time.Millisecond) // room for a duplicate to show up
	_, evs, errs := rec.snapshot()
	var got []string
	for _, e := range evs {
		got = append(got, string(e.Data))
	}
	if want := []string{`["before"]`, `["after1"]`, `["after2"]`, `["after3"]`}; !slices.Equal(got, want) {
		t.Errorf("events %v, want %v (each once)", got, want)
	}
	if len(errs) != 0 {
		t.Errorf("errors: %v", errs)
	}
	st, _, _ := rec.snapshot()
	for _, s := range st {
		if s.State == client.StateFail && s.Err == nil {
			t.Errorf("fail state without an error: %+v", s)
		}
	}
}

// A token that expires: with refresh ahead of time the connection is kept;
// without it the server closes with 4001 and the client comes back with a
// fresh token and its subscriptions.
func TestTokenRefresh(t *testing.T) {
	t.Parallel()
	for _, ahead := range []bool{true, false} {
		t.Run(fmt.Sprintf("ahead=%v", ahead), func(t *testing.T) {
			t.Parallel()
			s := startServer(t, func(c *server.Config) { c.TokenLeeway = 0 })
			rec := newRecorder()
			var calls counter
			o := client.Options{URL: s.WSURL(), Token: provider(s, 3*time.Second, &calls), BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
			if !ahead {
				o.RefreshBefore = -1
				// The first token is short; the one after the 4001 lasts,
				// so that a slow run does not see a second expiry.
				o.Token = func(context.Context) (string, error) {
					calls.add()
					if calls.get() == 1 {
						return s.Token(userA, 3*time.Second), nil
					}
					return s.Token(userA, time.Hour), nil
				}
			}
			c := dial(t, rec.options(o))
			if a, err := c.Attach(ctx(t), client.Sub{Type: "issueUpdate", ID: issue1}); err != nil || !a.OK() {
				t.Fatalf("attach: %+v %v", a, err)
			}
			if ahead {
				time.Sleep(4 * time.Second) // past the first token's exp
				st, _, errs := rec.snapshot()
				if count(st, client.StateClose, "") != 0 || len(errs) != 0 {
					t.Fatalf("the connection did not survive the first token: %v %v", st, errs)
				}
				if n := calls.get(); n < 2 {
					t.Fatalf("provider called %d times in 4s for 3s tokens, want >= 2", n)
				}
			} else {
				rec.waitUntil(t, "close 4001, then open", func(st []client.State, _ []client.Event) bool {
					return slices.ContainsFunc(st, func(s client.State) bool { return s.Code == client.CloseTokenExpired && s.Reason == client.ReasonDrop }) &&
						count(st, client.StateOpen, "") == 2
				})
				if n := calls.get(); n != 2 {
					t.Errorf("provider called %d times, want 2 (first attach, re-attach after 4001)", n)
				}
			}
			if n := s.Publish(event("issueUpdate", issue1, `"later"`)); n != 1 {
				t.Fatalf("after the first token expired: delivered %d, want 1", n)
			}
		})
	}
}

// Clients dropped together wait different, bounded times before they try
// again.
func TestJitteredBackoff(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	const n = 6
	min, max := 100*time.Millisecond, 400*time.Millisecond
	recs := make([]*recorder, n)
	for i := range recs {
		recs[i] = newRecorder()
		dial(t, recs[i].options(client.Options{URL: s.WSURL(), BackoffMin: min, BackoffMax: max}))
	}
	s.Stop()
	for _, r := range recs {
		r.waitUntil(t, "three failed attempts", func(st []client.State, _ []client.Event) bool { return count(st, client.StateFail, "") >= 3 })
	}
	s.Restart()
	first := map[time.Duration]bool{}
	for i, r := range recs {
		r.waitUntil(t, "open again", func(st []client.State, _ []client.Event) bool { return count(st, client.StateOpen, "") == 2 })
		st, _, _ := r.snapshot()
		attempt := 0
		for _, s := range st {
			switch {
			case s.State == client.StateClose:
				if attempt != 0 {
					t.Errorf("client %d: a close after attempts", i)
				}
				first[s.Retry] = true
				fallthrough
			case s.State == client.StateFail:
				ceil := min << (attempt + 1)
				if ceil > max {
					ceil = max
				}
				if s.Retry < min || s.Retry > ceil {
					t.Errorf("client %d attempt %d: wait %v outside [%v, %v]", i, attempt, s.Retry, min, ceil)
				}
				attempt++
			}
		}
	}
	if len(first) != n {
		t.Errorf("the %d clients chose %d different first waits, want all different", n, len(first))
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	var r float64
	b := client.Backoff{Min: 100 * time.Millisecond, Max: time.Second, Rand: func() float64 { return r }}
	for _, tt := range []struct {
		r    float64
		want time.Duration
	}{
		{0, 100 * time.Millisecond},           // attempt 0: [100ms, 200ms]
		{0.999999999, 400 * time.Millisecond}, // attempt 1: [100ms, 400ms]
		{0.5, 450 * time.Millisecond},         // attempt 2: [100ms, 800ms]
		{0.999999999, time.Second},            // attempt 3: capped at Max
		{0, 100 * time.Millisecond},           // attempt 4: never below Min
	} {
		r = tt.r
		if got := b.Next(); got < tt.want-time.Millisecond || got > tt.want {
			t.Errorf("rand %v: %v, want %v", tt.r, got, tt.want)
		}
	}
	b.Reset()
	r = 0.999999999
	if got := b.Next(); got > 200*time.Millisecond || got < 199*time.Millisecond {
		t.Errorf("after Reset: %v, want 200ms", got)
	}
	// Defaults.
	var d client.Backoff
	for i := 0; i < 20; i++ {
		if w := d.Next(); w < client.DefaultBackoffMin || w > client.DefaultBackoffMax {
			t.Fatalf("default wait %v out of bounds", w)
		}
	}
}

// A server that accepts TCP but never answers the handshake: Dial gives up
// after ConnectTimeout and reports a failure.
func TestConnectTimeout(t *testing.T) {
	t.Parallel()
	addr := servertest.ListenSilent(t)
	rec := newRecorder()
	start := time.Now()
	_, err := client.Dial(context.Background(), rec.options(client.Options{URL: "ws://" + addr + "/ws", ConnectTimeout: 200 * time.Millisecond}))
	if err == nil {
		t.Fatal("Dial succeeded against a silent server")
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Dial took %v with ConnectTimeout 200ms", el)
	}
	if !strings.Contains(err.Error(), "timed out") || !strings.Contains(err.Error(), "200ms") {
		t.Errorf("error %q does not say it timed out", err)
	}
	st, _, _ := rec.snapshot()
	if len(st) != 1 || st[0].State != client.StateFail {
		t.Errorf("states %v, want one fail", st)
	}
}

// A refused handshake carries the server's status and message.
func TestConnectRefused(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(c *server.Config) { c.AllowedOrigins = []string{"https://good.example"} })
	_, err := client.Dial(ctx(t), client.Options{URL: s.WSURL(), Header: http.Header{"Origin": {"https://evil.example"}}})
	var ce *client.ConnectError
	if !errors.As(err, &ce) || ce.Status != http.StatusForbidden {
		t.Fatalf("Dial from a refused origin: %v, want a ConnectError with 403", err)
	}
	c := dial(t, client.Options{URL: "http://" + s.Addr + "/ws", Header: http.Header{"Origin": {"https://good.example"}}})
	c.Close()

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	if _, err := client.Dial(ctx(t), client.Options{URL: "ws://" + addr + "/ws"}); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("Dial to a closed port: %v", err)
	}
}

// Close is a normal close; NoReconnect stops at a drop with a DropError.
func TestCloseAndNoReconnect(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	rec := newRecorder()
	c := dial(t, rec.options(client.Options{URL: s.WSURL(), Token: provider(s, time.Hour, new(counter))}))
	if a, err := c.Attach(ctx(t), client.Sub{Type: "issueUpdate", ID: issue1}); err != nil || !a.OK() {
		t.Fatalf("attach: %+v %v", a, err)
	}
	c.Close()
	<-c.Done()
	if c.Err() != nil {
		t.Errorf("Err after Close: %v", c.Err())
	}
	st, _, _ := rec.snapshot()
	if len(st) != 2 || st[0].State != client.StateOpen || st[1].State != client.StateClose || st[1].Reason != client.ReasonNormal || st[1].Code != 1000 {
		t.Errorf("states %+v, want open then close normal 1000", st)
	}
	if _, err := c.Attach(ctx(t), client.Sub{Type: "issueUpdate", ID: issue1}); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Attach after Close: %v, want ErrClosed", err)
	}

	rec = newRecorder()
	c = dial(t, rec.options(client.Options{URL: s.WSURL(), NoReconnect: true}))
	s.Stop()
	select {
	case <-c.Done():
	case <-time.After(waitFor):
		t.Fatal("a NoReconnect client did not stop at a drop")
	}
	var de *client.DropError
	if !errors.As(c.Err(), &de) || de.Code != 1001 {
		t.Errorf("Err %v, want a DropError with 1001", c.Err())
	}
	st, _, _ = rec.snapshot()
	if last := st[len(st)-1]; last.State != client.StateClose || last.Reason != client.ReasonDrop || last.Retry != 0 {
		t.Errorf("last state %+v, want close drop without retry", last)
	}
}

// Close leaves no goroutine behind, also after reconnects.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	s := startServer(t, nil)
	time.Sleep(50 * time.Millisecond)
	before := runtime.NumGoroutine()
	var clients []*client.Client
	for i := 0; i < 3; i++ {
		rec := newRecorder()
		c := dial(t, rec.options(client.Options{URL: s.WSURL(), Token: provider(s, time.Hour, new(counter)), BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond}))
		if a, err := c.Attach(ctx(t), client.Sub{Type: "issueUpdate", ID: issue1}); err != nil || !a.OK() {
			t.Fatalf("attach: %+v %v", a, err)
		}
		clients = append(clients, c)
		if i == 2 {
			s.Stop()
			s.Restart()
			rec.waitUntil(t, "open again", func(st []client.State, _ []client.Event) bool { return count(st, client.StateOpen, "") == 2 })
		}
	}
	for _, c := range clients {
		c.Close()
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
