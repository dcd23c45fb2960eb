package clientjs_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/airlay/airlay/server"
)

// resumePage connects through a proxy that the test can cut: a network
// drop without a server restart (the same epoch).
const resumePage = `<!doctype html>
<title>airlay resume test</title>
<script type="module">
import { connect } from "%[1]s/client/airlay.js";
window.log = { states: [], events: [], reloads: [] };
window.client = connect({
  url: "%[2]s",
  token: () => fetch("/token").then((r) => r.text()),
  minBackoff: 50, maxBackoff: 200,
  onState: (s) => log.states.push(s),
  onReload: (r) => log.reloads.push(r),
});
window.ready = Promise.all([
  client.attach("issueUpdate", "%[3]s", (e) => log.events.push(e)),
  client.attach("issueUpdate", "%[4]s", (e) => log.events.push(e)),
]).then((a) => a.map((x) => x.code).join(","));
</script>`

// TestBrowserResume: after a network drop the page's client re-attaches
// with since and gets the events published while it was away, in order,
// once, with the positions they had, and no reload; a subscription that
// had no event yet resumes after the latest position of the other.
func TestBrowserResume(t *testing.T) {
	t.Parallel()
	ctx := newBrowser(t, 40*time.Second)
	var s interface {
		Token(string, time.Duration) string
	}
	pageSrv := httptest.NewServer(nil)
	defer pageSrv.Close()
	srv := startServer(t, func(cfg *server.Config, own string) { cfg.AllowedOrigins = []string{pageSrv.URL, own} })
	s = srv
	proxy := newDropProxy(t, srv.Addr)
	pageSrv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, resumePage, srv.URL(), "http://"+proxy.ln.Addr().String(), issue1, issue2)
		case "/token":
			fmt.Fprint(w, s.Token(userA, time.Hour))
		default:
			http.NotFound(w, r)
		}
	})
	if err := chromedp.Do(ctx, chromedp.Navigate(pageSrv.URL)); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	if got := eval[string](t, ctx, `window.ready`); got != "0,0" {
		t.Fatalf("attach answers %s", got)
	}
	srv.Publish(`{"type":"issueUpdate","id":"` + issue1 + `","data":["before"]}`)
	waitJS(t, ctx, "the first event", `log.events.length === 1`)
	proxy.cut()
	waitJS(t, ctx, "the drop", `log.states.some((s) => s.state === "close" && s.reason === "drop")`)
	for _, b := range []string{
		`{"type":"issueUpdate","id":"` + issue1 + `","data":["away 1"]}`,
		`{"type":"issueUpdate","id":"` + issue2 + `","data":["away 2"]}`,
		`{"type":"issueUpdate","id":"` + issue1 + `","data":["away 3"]}`,
	} {
		srv.Publish(b)
	}
	proxy.resume()
	waitJS(t, ctx, "open again", `log.states.filter((s) => s.state === "open").length === 2`)
	waitJS(t, ctx, "the missed events", `log.events.length >= 4`)
	srv.Publish(`{"type":"issueUpdate","id":"` + issue1 + `","data":["live"]}`)
	waitJS(t, ctx, "the live event", `log.events.length >= 5`)
	time.Sleep(150 * time.Millisecond) // room for a duplicate
	// In order per subscription (a replay is per subscription, so across
	// them the order is the re-attaches').
	for id, want := range map[string]string{issue1: "before,away 1,away 3,live", issue2: "away 2"} {
		if got := eval[string](t, ctx, `log.events.filter((e) => e.id === "`+id+`").map((e) => e.data[0]).join(",")`); got != want {
			t.Fatalf("events of %s %q, want each once, in order: %s", id, got, want)
		}
	}
	if n := eval[int](t, ctx, `log.events.length`); n != 5 {
		t.Fatalf("%d events, want 5", n)
	}
	if got := eval[string](t, ctx, `JSON.stringify(log.reloads)`); got != "[]" {
		t.Fatalf("reloads %s after a drop the server could recover", got)
	}
	if ok := eval[bool](t, ctx, `new Set(log.events.map((e) => e.pos)).size === 5 && client.pos("issueUpdate", "`+issue1+`") === log.events[4].pos`); !ok {
		t.Fatalf("positions %s", eval[string](t, ctx, `JSON.stringify(log.events.map((e) => e.pos))`))
	}
}

// dropProxy forwards TCP to the server; cut closes every connection and
// refuses new ones until resume.
type dropProxy struct {
	ln     net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	paused bool
}

func newDropProxy(t *testing.T, target string) *dropProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{ln: ln}
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
			up, err := net.Dial("tcp", target)
			if paused || err != nil {
				c.Close()
				if up != nil {
					up.Close()
				}
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

func (p *dropProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *dropProxy) resume() {
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
}
