package client_test

import (
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/airlay/airlay/client"
)

// cutProxy forwards TCP connections to a server; cut closes every
// connection and refuses new ones until resume.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	paused bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			paused := p.paused
			p.mu.Unlock()
			if paused {
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) url() string { return "ws://" + p.ln.Addr().String() + "/ws" }

// cut drops every connection (no close frame: a network drop) and
// refuses new ones.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *cutProxy) resume() {
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
}

// A drop: the client re-attaches with since the position of the last
// event of each subscription and gets what it missed (recovered:true),
// through OnEvent, in order, once; after a server restart (another
// epoch) each subscription is reported to OnReload instead.
func TestResumeAfterDrop(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	p := newCutProxy(t, s.Addr)
	rec := newRecorder()
	var reloadMu sync.Mutex
	var reloads []client.Sub
	o := rec.options(client.Options{URL: p.url(), Token: provider(s, time.Hour, new(counter)), BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
	o.OnReload = func(sub client.Sub) { reloadMu.Lock(); reloads = append(reloads, sub); reloadMu.Unlock(); rec.poke() }
	c := dial(t, o)
	issue, notif := client.Sub{Type: "issueUpdate", ID: issue1}, client.Sub{Type: "notification"}
	quiet := client.Sub{Type: "issueUpdate", ID: issue2} // no event before the drop
	for _, sub := range []client.Sub{issue, notif, quiet} {
		if a, err := c.Attach(ctx(t), sub); err != nil || !a.OK() {
			t.Fatalf("attach %v: %+v %v", sub, a, err)
		}
	}
	s.Publish(event("issueUpdate", issue1, `"1"`))
	s.Publish(`{"type":"notification","user":"` + userA + `","data":["n1"]}`)
	rec.waitUntil(t, "two events", func(_ []client.State, evs []client.Event) bool { return len(evs) == 2 })
	_, evs, _ := rec.snapshot()
	if evs[0].Pos == "" || c.Pos(issue) != evs[0].Pos || c.Pos(notif) != evs[1].Pos {
		t.Fatalf("positions: events %q %q, kept %q %q", evs[0].Pos, evs[1].Pos, c.Pos(issue), c.Pos(notif))
	}

	p.cut()
	rec.waitUntil(t, "the drop", func(st []client.State, _ []client.Event) bool {
		return slices.ContainsFunc(st, func(s client.State) bool { return s.State == client.StateClose })
	})
	s.Publish(event("issueUpdate", issue1, `"2"`)) // while away
	s.Publish(event("issueUpdate", issue1, `"3"`))
	s.Publish(`{"type":"notification","user":"` + userA + `","data":["n2"]}`)
	s.Publish(event("issueUpdate", issue2, `"q"`)) // the quiet one resumes after the latest position of any
	p.resume()
	rec.waitUntil(t, "the missed events", func(_ []client.State, evs []client.Event) bool { return len(evs) == 6 })
	s.Publish(event("issueUpdate", issue1, `"4"`))
	rec.waitUntil(t, "the live event", func(_ []client.State, evs []client.Event) bool { return len(evs) == 7 })
	time.Sleep(100 * time.Millisecond) // room for a duplicate
	_, evs, _ = rec.snapshot()
	var got []string
	for _, e := range evs {
		got = append(got, string(e.Data))
	}
	if want := []string{`["1"]`, `["n1"]`, `["2"]`, `["3"]`, `["n2"]`, `["q"]`, `["4"]`}; !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v (the missed ones once, in order, before the live one)", got, want)
	}
	reloadMu.Lock()
	n := len(reloads)
	reloadMu.Unlock()
	if n != 0 {
		t.Fatalf("OnReload called %d times after a recovered drop", n)
	}

	// A restart: a new epoch; every subscription must be reloaded.
	s.Stop()
	s.Restart()
	rec.waitUntil(t, "a reload of each subscription", func([]client.State, []client.Event) bool {
		reloadMu.Lock()
		defer reloadMu.Unlock()
		return len(reloads) == 3
	})
	reloadMu.Lock()
	defer reloadMu.Unlock()
	if !slices.Contains(reloads, issue) || !slices.Contains(reloads, notif) || !slices.Contains(reloads, quiet) {
		t.Fatalf("reloads %v, want %v, %v and %v", reloads, issue, notif, quiet)
	}
}
