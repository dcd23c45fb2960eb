package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlay/airlay/client"
)

// OnRequest answers POST /api/ask: the handler's value is the reply the
// backend gets; requests do not reach OnEvent; an error sends no reply.
func TestOnRequestReplies(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	var calls atomic.Int32
	rec := newRecorder()
	o := rec.options(client.Options{URL: s.WSURL(), Token: provider(s, time.Hour, &counter{})})
	o.OnRequest = func(_ context.Context, r client.Request) (json.RawMessage, error) {
		calls.Add(1)
		var q []string
		if err := json.Unmarshal(r.Data, &q); err != nil || len(q) != 1 {
			return nil, errors.New("not a question")
		}
		if q[0] == "silent" {
			return nil, errors.New("no answer")
		}
		return json.RawMessage(`["answer to ` + q[0] + `"]`), nil
	}
	c := dial(t, o)
	if a, err := c.Attach(ctx(t), client.Sub{Type: "request"}); err != nil || !a.OK() {
		t.Fatalf("attach request: %v %v", a, err)
	}
	status, m := s.Ask("5", userA, `["open dataset?"]`)
	if status != 200 {
		t.Fatalf("ask: %d %v", status, m)
	}
	if got, _ := json.Marshal(m["reply"]); string(got) != `["answer to open dataset?"]` {
		t.Errorf("reply %s", got)
	}
	status, m = s.Ask("0.3", userA, `["silent"]`)
	if status != 504 || m["code"] != 9.0 {
		t.Errorf("silent handler: %d %v", status, m)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("handler called %d times", n)
	}
	if _, evs, errs := rec.snapshot(); len(evs) != 0 || len(errs) != 0 {
		t.Errorf("requests reached OnEvent %v / OnError %v", evs, errs)
	}
	// Reply by hand to a request already answered: code 5.
	a, err := c.Reply(ctx(t), "0123456789abcdef0123456789abcdef", nil)
	if err != nil || a.Code != 5 {
		t.Errorf("reply to an unknown request: %v %v", a, err)
	}
}

// Without OnRequest, a request is an event like any other, and the
// application replies with Client.Reply.
func TestReplyByHand(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	evs := make(chan client.Event, 4)
	c := dial(t, client.Options{URL: s.WSURL(), Token: provider(s, time.Hour, &counter{}), Events: evs})
	if a, err := c.Attach(ctx(t), client.Sub{Type: "request"}); err != nil || !a.OK() {
		t.Fatalf("attach request: %v %v", a, err)
	}
	done := make(chan int, 1)
	go func() { st, _ := s.Ask("5", userA, `[]`); done <- st }()
	var ev client.Event
	select {
	case ev = <-evs:
	case <-time.After(waitFor):
		t.Fatal("no request")
	}
	if ev.Type != "request" || ev.ID == "" || ev.Pos == "" {
		t.Fatalf("event %+v", ev)
	}
	if c.Pos(client.Sub{Type: "request"}) != "" {
		t.Errorf("the client keeps a request's position")
	}
	if a, err := c.Reply(ctx(t), ev.ID, json.RawMessage(`[true]`)); err != nil || !a.OK() {
		t.Fatalf("reply: %v %v", a, err)
	}
	if st := <-done; st != 200 {
		t.Errorf("ask %d", st)
	}
}
