package clientjs_test

// The operator console of /live in headless Chromium, under an
// allowed_origins that does not list the server itself, against a known
// load made from Go: the numbers on the page are checked, the charts drawn,
// the publish form and "who is attached" used, a refusal explained, and a
// screenshot taken (AIRLAY_SCREENSHOT_DIR keeps it).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	clientjs "github.com/airlay/airlay/client/js"
	"github.com/airlay/airlay/internal/servertest"
	"github.com/airlay/airlay/server"
)

// loadConn is a WebSocket connection of the known load; it reads (and
// counts) every event unless it is slow.
type loadConn struct {
	ws     *websocket.Conn
	mu     sync.Mutex
	events int
}

func dialLoad(t *testing.T, s *servertest.Server, tok, typ, id string, read bool) *loadConn {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(s.WSURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	t.Cleanup(func() { ws.Close() })
	req := fmt.Sprintf(`{"auth":%q,"action":"attach","event":{"type":%q,"id":%q}}`, tok, typ, id)
	if err := ws.WriteMessage(websocket.TextMessage, []byte(req)); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, msg, err := ws.ReadMessage(); err != nil || !strings.Contains(string(msg), `"code":0`) {
		t.Fatalf("attach %s %s: %s %v", typ, id, msg, err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	c := &loadConn{ws: ws}
	if read {
		go func() {
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
				c.mu.Lock()
				c.events++
				c.mu.Unlock()
			}
		}()
	}
	return c
}

// consoleSnapshot asks /api/console from Go.
func consoleSnapshot(t *testing.T, s *servertest.Server) map[string]any {
	t.Helper()
	resp, body := s.Get(server.ConsolePath, http.Header{"Authorization": {"Bearer " + pubTok}})
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", server.ConsolePath, resp.StatusCode, body)
	}
	return m
}

func text(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	return eval[string](t, ctx, `document.getElementById("`+id+`").textContent`)
}

func TestBrowserConsole(t *testing.T) {
	t.Parallel()
	ctx := newBrowser(t, 90*time.Second)
	s := startServer(t, func(cfg *server.Config, _ string) {
		cfg.AllowedOrigins = []string{"https://app.example"} // not the server itself
		cfg.LivePage = true
		cfg.SendQueue = 8
		cfg.SendQueueBytes = 64 << 10
	})
	tok := s.Token(userA, time.Hour)

	// The load: four connections that read, on issue1; one that never
	// reads, on issue2 (the slow consumer to be).
	var readers []*loadConn
	for i := 0; i < 4; i++ {
		readers = append(readers, dialLoad(t, s, tok, "issueUpdate", issue1, true))
	}
	dialLoad(t, s, tok, "issueUpdate", issue2, false)

	if err := chromedp.Do(ctx, chromedp.Navigate(s.URL()+server.LivePagePath)); err != nil {
		t.Fatal(err)
	}
	// The page's own requests (module, /api/config) pass under the
	// restricted allowed_origins: it is same-origin.
	waitJS(t, ctx, "the event types", `document.querySelectorAll("#type option").length === 6 && document.querySelectorAll("#who-type option").length === 6`)

	// The quantile estimate of the console, as histogram_quantile: linear
	// within a bucket; +Inf counts at the last bound; nothing is NaN.
	if q := eval[string](t, ctx, `import("/client/console.js").then((m) => {
		const b = [0.001, 0.01, 0.1, 1], prev = { count: 0, counts: [0, 0, 0, 0] }, cur = { count: 100, counts: [50, 90, 99, 100] };
		return JSON.stringify([m.quantile(0.5, b, prev, cur), m.quantile(0.99, b, prev, cur), m.quantile(0.75, b, prev, cur).toFixed(6),
			m.quantile(1, b, null, { count: 10, counts: [0, 0, 0, 9] }), m.quantile(0.5, b, cur, cur)]);
	})`); q != `[0.001,0.1,"0.006625",1,null]` {
		t.Errorf("quantile: %s", q)
	}

	// Placeholders fit their fields.
	cut := eval[[]string](t, ctx, `(() => {
		const g = document.createElement("canvas").getContext("2d");
		return [...document.querySelectorAll("input[placeholder]")].filter((el) => {
			const cs = getComputedStyle(el);
			g.font = cs.font;
			const room = el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
			return g.measureText(el.placeholder).width > room;
		}).map((el) => el.id + ": " + el.placeholder);
	})()`)
	if len(cut) > 0 {
		t.Errorf("placeholders cut off: %q", cut)
	}

	// A wrong publish token: the page says why it is refused.
	if err := chromedp.Do(ctx, chromedp.SetValue("#pubtoken", "wrong"), chromedp.Click("#console-btn")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the refusal", `document.getElementById("console-status").textContent.includes("refuses the publish token")`)
	if got := text(t, ctx, "console-status"); !strings.Contains(got, "the bearer token is not this server's publish_token (HTTP 401)") {
		t.Errorf("refusal text %q", got)
	}

	// The right one: the numbers of the load.
	if err := chromedp.Do(ctx, chromedp.SetValue("#pubtoken", pubTok), chromedp.Click("#console-btn")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the console", `document.getElementById("stat-connections").textContent === "5" && document.getElementById("stat-subscriptions").textContent === "5"`)
	if v := eval[string](t, ctx, `document.getElementById("pubtoken").value`); v != "" {
		t.Error("the publish token stays in its field")
	}

	// 20 publishes a second for 4 s to issue1: 20 events in and 80
	// deliveries out per second.
	const rate, seconds = 20, 4
	start := time.Now()
	var ins, outs []float64
	for i := 0; i < rate*seconds; i++ {
		if n := s.Publish(`{"type":"issueUpdate","id":"` + issue1 + `","data":[` + strconv.Itoa(i) + `]}`); n != 4 {
			t.Fatalf("event %d delivered %d times, want 4", i, n)
		}
		if i > 0 && i%rate == 0 && i >= 2*rate {
			ins = append(ins, eval[float64](t, ctx, `parseFloat(document.getElementById("stat-in").textContent)`))
			outs = append(outs, eval[float64](t, ctx, `parseFloat(document.getElementById("stat-out").textContent)`))
		}
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * time.Second / rate)))
	}
	t.Logf("during the load the page showed events in %v /s, deliveries out %v /s", ins, outs)
	for i := range ins {
		// A second's rate on a shared machine: a stall of the publisher
		// shows as a dip and the catch-up as a peak, hence the margin; the
		// totals below are exact.
		if ins[i] < rate*0.5 || ins[i] > rate*1.5 || outs[i] < 4*rate*0.5 || outs[i] > 4*rate*1.5 {
			t.Errorf("rates on the page: in %v, out %v; want about %d and %d", ins[i], outs[i], rate, 4*rate)
		}
	}
	waitJS(t, ctx, "the totals", fmt.Sprintf(`document.getElementById("stat-in-total").textContent === "%d in all" && document.getElementById("stat-out-total").textContent === "%d in all"`, rate*seconds, 4*rate*seconds))
	for _, c := range readers {
		c.mu.Lock()
		if c.events != rate*seconds {
			t.Errorf("a reader got %d events, want %d", c.events, rate*seconds)
		}
		c.mu.Unlock()
	}
	lat := text(t, ctx, "stat-latency")
	if !strings.Contains(lat, "s") || strings.HasPrefix(lat, "–") {
		t.Errorf("latency %q, want p50 / p99 of the load", lat)
	}
	snap := consoleSnapshot(t, s)
	if snap["events_in_total"] != float64(rate*seconds) || snap["events_out_total"] != float64(4*rate*seconds) {
		t.Errorf("/api/console: in %v, out %v", snap["events_in_total"], snap["events_out_total"])
	}

	// The slow consumer: large events to issue2, whose only connection
	// never reads, until the server closes it (bounded).
	big := strings.Repeat("x", 30<<10)
	slowUntil := time.Now().Add(30 * time.Second)
	for i := 0; i < 400 && time.Now().Before(slowUntil) && consoleSnapshot(t, s)["slow_consumer_closes_total"] == 0.0; i++ {
		s.Publish(`{"type":"issueUpdate","id":"` + issue2 + `","data":["` + big + `"]}`)
	}
	waitJS(t, ctx, "the slow-consumer close", `document.getElementById("stat-slow").textContent === "1" && document.getElementById("stat-connections").textContent === "4"`)

	// The charts are drawn: lines in the series' colours.
	for _, id := range []string{"chart-conns", "chart-events", "chart-latency", "chart-slow"} {
		n := eval[int](t, ctx, `(() => {
			const c = document.getElementById("`+id+`");
			const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
			let n = 0;
			for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && Math.abs(d[i] - d[i + 1]) + Math.abs(d[i + 1] - d[i + 2]) > 60) n++;
			return n;
		})()`)
		if n < 100 {
			t.Errorf("%s: %d coloured pixels, want a drawn line", id, n)
		}
	}

	// Who is attached to issue1: the four readers.
	if err := chromedp.Do(ctx, chromedp.SetValue("#who-type", "issueUpdate"), chromedp.SetValue("#who-id", issue1), chromedp.Click("#who-btn")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "who is attached", `document.querySelectorAll("#who-list tbody tr").length === 4`)
	if got := text(t, ctx, "who-summary"); got != "4 connections of this instance hold issueUpdate "+issue1 {
		t.Errorf("who summary %q", got)
	}

	// The publish form: delivered to the four readers; a typo'd field is
	// refused with its detail.
	if err := chromedp.Do(ctx, chromedp.Click("#pub-btn")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the publish answer", `document.getElementById("pub-answer").textContent.includes('"delivered":4')`)
	if err := chromedp.Do(ctx, chromedp.SetValue("#pub-body", `{"type":"issueUpdate","idd":"`+issue1+`"}`), chromedp.Click("#pub-btn")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the refused publish", `document.getElementById("pub-answer").textContent.startsWith('refused (HTTP 400): unknown field "idd"')`)

	// The debugger connects too (its /ws is same-origin).
	if err := chromedp.Do(ctx, chromedp.SetValue("#token", tok), chromedp.Click("#connect-btn")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the debugger to connect", `document.getElementById("state").textContent === "open"`)
	waitJS(t, ctx, "its connection in the console", `document.getElementById("stat-connections").textContent === "5"`)
	if html := eval[string](t, ctx, `document.documentElement.outerHTML + document.body.innerText`); strings.Contains(html, tok) || strings.Contains(html, pubTok) {
		t.Error("the live page shows a secret")
	}

	if strings.Contains(eval[string](t, ctx, `document.body.innerText`), "did not start") {
		t.Error("the page says its scripts did not start")
	}
	consoleShot(t, ctx, "console.png")

	// The MongoDB fields (the Go tests check that the server fills them:
	// mongodb/console_test.go): drawn from the server's snapshot, extended
	// in the page with a stream that goes down and a lag p99 of 50 ms.
	eval[bool](t, ctx, `(() => {
		const real = window.fetch;
		let n = 0;
		window.fetch = async (url, init) => {
			const r = await real(url, init);
			if (!String(url).endsWith("/api/console")) return r;
			const body = await r.json();
			n++;
			body.mongodb = { stream_up: n < 4, change_events_total: 10 * n, stream_resumes_total: 1, history_lost_total: 0,
				lag_seconds: { bounds: [0.01, 0.05, 0.1], counts: [0, 10 * n, 10 * n], count: 10 * n, sum: 0.3 * n } };
			return new Response(JSON.stringify(body), { status: r.status, headers: r.headers });
		};
		return true;
	})()`)
	if err := chromedp.Do(ctx, chromedp.SetValue("#pubtoken", pubTok), chromedp.Click("#console-btn")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the stream up with its lag", `document.getElementById("stat-stream").textContent === "up" && document.getElementById("stat-lag").textContent === "lag p99 50 ms, 1 resumes, 0 history lost"`)
	waitJS(t, ctx, "the stream down", `document.getElementById("stat-stream").textContent === "DOWN" && document.getElementById("stat-stream").className.includes("bad")`)
	// The live instances (mongodb/instances_test.go checks that the server
	// fills them): their number beside the lag, each in the tooltip.
	eval[bool](t, ctx, `(() => {
		const real = window.fetch;
		window.fetch = async (url, init) => {
			const r = await real(url, init);
			if (!String(url).endsWith("/api/console")) return r;
			const body = await r.json();
			body.instances = [{ name: "a", self: true, connections: 3, subscriptions: 5 }, { name: "b", connections: 1, subscriptions: 2 }];
			return new Response(JSON.stringify(body), { status: r.status, headers: r.headers });
		};
		return true;
	})()`)
	waitJS(t, ctx, "the live instances", `document.getElementById("stat-lag").textContent.endsWith("; 2 live instances") && document.getElementById("stat-lag").title === "a (this one): 3 connections, 5 subscriptions\nb: 1 connections, 2 subscriptions"`)

	consoleShot(t, ctx, "console-mongodb.png")
}

// consoleShot takes a full-page screenshot, keeps it in
// AIRLAY_SCREENSHOT_DIR when set, and checks it is not blank.
func consoleShot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv("AIRLAY_SCREENSHOT_DIR"); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, name), shot, 0o644)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	mean, std, colors := pixelStats(img)
	t.Logf("%s: %v, mean %.1f, std dev %.1f, %d colours", name, img.Bounds().Size(), mean, std, colors)
	if std < 10 || colors < 32 {
		t.Errorf("%s looks blank: std dev %.1f, %d colours", name, std, colors)
	}
}

// causePage loads airlay.js from its own origin (the server refuses that
// origin) and opens three clients that cannot connect, for three reasons.
const causePage = `<!doctype html>
<title>airlay causes</title>
<script type="module">
import { connect } from "/airlay.js";
window.causes = {};
const watch = (name, url) => connect({ url, token: () => "x", minBackoff: 5000, maxBackoff: 5000,
  onState: (s) => { if (s.state === "fail" && !causes[name]) causes[name] = s; } });
watch("origin", "%[1]s");
watch("originWS", "%[2]s");
watch("down", "%[3]s");
</script>`

// airlay.js names the real cause of a failed open: the origin refused
// (through discovery, or a ws:// URL straight away), or the server down.
func TestBrowserFailCause(t *testing.T) {
	t.Parallel()
	ctx := newBrowser(t, 40*time.Second)
	s := startServer(t, func(cfg *server.Config, _ string) { cfg.AllowedOrigins = []string{"https://app.example"} })
	down := "http://" + deadAddr(t)
	mod, _ := clientjs.Get("airlay.js")
	pageSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, causePage, s.URL(), s.WSURL(), down)
		case "/airlay.js":
			w.Header().Set("Content-Type", "text/javascript")
			_, _ = w.Write(mod.Data)
		default:
			http.NotFound(w, r)
		}
	}))
	defer pageSrv.Close()
	page := pageSrv.URL
	if err := chromedp.Do(ctx, chromedp.Navigate(page)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "three failures", `Object.keys(window.causes || {}).length === 3`)
	got := eval[map[string]map[string]any](t, ctx, `window.causes`)
	for name, want := range map[string]string{"origin": "origin", "originWS": "origin", "down": "unreachable"} {
		if got[name]["cause"] != want {
			t.Errorf("%s: %v, want cause %q", name, got[name], want)
		}
	}
	if e, _ := got["origin"]["error"].(string); !strings.Contains(e, "refuses the origin "+page) || !strings.Contains(e, "allowed_origins") {
		t.Errorf("origin error %q", e)
	}
	if e, _ := got["down"]["error"].(string); !strings.Contains(e, "cannot be reached") {
		t.Errorf("down error %q", e)
	}
}

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Behind a proxy that does not pass the Host header, the server takes the
// live page for another origin and refuses its module import: the page
// says so instead of staying dead.
func TestBrowserLivePageRefusedBehindProxy(t *testing.T) {
	t.Parallel()
	ctx := newBrowser(t, 30*time.Second)
	s := startServer(t, func(cfg *server.Config, _ string) {
		cfg.LivePage = true
		cfg.AllowedOrigins = []string{"https://app.example"}
	})
	target, _ := url.Parse(s.URL())
	proxy := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target) // and Host becomes the server's: what a proxy without "proxy_set_header Host" does
	}})
	defer proxy.Close()
	if err := chromedp.Do(ctx, chromedp.Navigate(proxy.URL+server.LivePagePath)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the page to say it did not start", `document.getElementById("hint").textContent.includes("did not start")`)
	got := text(t, ctx, "console-status")
	t.Logf("the page says: %s", got)
	for _, want := range []string{"This page's scripts did not start.", `The server refuses it: origin "` + proxy.URL + `" is not in allowed_origins (HTTP 403).`, "(" + proxy.URL + ")", "pass the Host header"} {
		if !strings.Contains(got, want) {
			t.Errorf("the page says %q, want it to contain %q", got, want)
		}
	}
}
