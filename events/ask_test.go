package events

import (
	"errors"
	"sync"
	"testing"
)

func TestParseReply(t *testing.T) {
	r, err := ParseRequest([]byte(`{"auth":"t","action":"reply","event":{"type":"request","id":"abc"},"data":[ 1, "x" ]}`))
	if err != nil || r.Action != Reply || r.Key != (Key{Type: RequestType, ID: "abc"}) || r.Data != `[1,"x"]` || r.Token != "t" {
		t.Fatalf("%+v %v", r, err)
	}
	if r, err := ParseRequest([]byte(`{"auth":"t","action":"reply","event":{"type":"request","id":"abc"}}`)); err != nil || r.Data != "[]" {
		t.Fatalf("no data: %+v %v", r, err)
	}
	for _, f := range []string{
		`{"auth":"t","action":"reply","event":{"type":"request"},"data":[]}`,
		`{"auth":"t","action":"reply","event":{"type":"issueUpdate","id":"abc"},"data":[]}`,
		`{"auth":"t","action":"reply","data":[]}`,
		`{"auth":"t","action":"reply","event":{"type":"request","id":"abc"},"data":{}}`,
		`{"auth":"t","action":"reply","event":{"type":"request","id":"abc"},"data":null}`,
		`{"auth":"t","action":"reply","event":{"type":"request","id":"abc"},"since":"x"}`,
	} {
		if _, err := ParseRequest([]byte(f)); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%s: %v, want code 5", f, err)
		}
	}
	// attach request: like notification, an id is ignored
	if r, err := ParseRequest([]byte(`{"auth":"t","action":"attach","event":{"type":"request"}}`)); err != nil || r.Key != (Key{Type: RequestType}) {
		t.Fatalf("attach request: %+v %v", r, err)
	}
}

func TestParseAsk(t *testing.T) {
	u, d, err := ParseAsk([]byte(` {"user":"5DAD615EAE019570FB4647ED","data":[ 1 ]} `))
	if err != nil || u != "5dad615eae019570fb4647ed" || string(d) != "[1]" {
		t.Fatalf("%q %s %v", u, d, err)
	}
	if _, d, err := ParseAsk([]byte(`{"user":"5dad615eae019570fb4647ed"}`)); err != nil || string(d) != "[]" {
		t.Fatalf("no data: %s %v", d, err)
	}
}

func TestAsksLimitsAndFirstReply(t *testing.T) {
	s := NewAsks(2, 3)
	a1, _ := s.Open("u")
	a2, _ := s.Open("u")
	if _, err := s.Open("u"); !errors.Is(err, ErrTooManyAsksUser) {
		t.Fatalf("third of u: %v", err)
	}
	a3, _ := s.Open("v")
	if _, err := s.Open("w"); !errors.Is(err, ErrTooManyAsks) {
		t.Fatalf("fourth: %v", err)
	}
	if s.Take("v", a1.ID, AskReply{}) {
		t.Fatal("another user's reply was taken")
	}
	// Take and Close race: exactly one wins.
	var wg sync.WaitGroup
	var took, closed bool
	wg.Add(2)
	go func() { defer wg.Done(); took = s.Take("u", a1.ID, AskReply{Conn: "1"}) }()
	go func() { defer wg.Done(); closed = s.Close(a1) }()
	wg.Wait()
	if took == closed {
		t.Fatalf("took %v closed %v: want exactly one", took, closed)
	}
	if took {
		<-a1.Done()
		if a1.Reply().Conn != "1" {
			t.Fatal("reply lost")
		}
	}
	if s.Take("u", a1.ID, AskReply{}) {
		t.Fatal("a second reply was taken")
	}
	if !s.Close(a2) || s.Close(a2) || !s.Close(a3) || s.Len() != 0 {
		t.Fatalf("close: %d open", s.Len())
	}
	if _, err := s.Open("u"); err != nil {
		t.Fatalf("room again: %v", err)
	}
}
