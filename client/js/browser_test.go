package clientjs_test

// The browser client in a real browser: headless Chromium driven over the
// DevTools protocol (chromedp) against the real server. A page on another
// origin imports the module the server serves, attaches, receives an event
// published through the API, survives a server restart on the same port and
// receives again. Then the live page is used as an operator would, and
// screenshotted once.

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/airlay/airlay/internal/servertest"
	"github.com/airlay/airlay/server"
)

// chromiumPath returns the Chromium binary, "" when there is none.
func chromiumPath() string {
	if p := os.Getenv("AIRLAY_CHROMIUM"); p != "" {
		return p // a wrong path fails the test: it names a browser that must be used
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// newBrowser starts headless Chromium with a fresh profile; the whole
// browser stops at the deadline.
func newBrowser(t *testing.T, deadline time.Duration) context.Context {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		const why = "NO CHROMIUM: the browser client and the live page were NOT tested in a browser. " +
			"Install it with `apt-get install -y chromium` (.ci/run does) or set AIRLAY_CHROMIUM."
		if os.Getenv("AIRLAY_REQUIRE_CHROMIUM") != "" {
			t.Fatal("AIRLAY_REQUIRE_CHROMIUM is set (CI sets it): " + why)
		}
		warnLoudly(why)
		t.Skip("SKIPPED: " + why)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 800),
	)
	root, cancelRoot := context.WithTimeout(context.Background(), deadline)
	actx, cancelAlloc := chromedp.NewExecAllocator(root, opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc(); cancelRoot() })
	return ctx
}

var warnOnce sync.Once

// warnLoudly tells the developer about a skip where go test cannot hide it:
// go test ./... shows a passing package's output only with -v, so the
// warning goes to the terminal (/dev/tty) when there is one, once.
func warnLoudly(msg string) {
	warnOnce.Do(func() {
		line := "\n*** airlay client/js: " + msg + " ***\n\n"
		if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
			_, _ = tty.WriteString(line)
			tty.Close()
		}
		fmt.Fprint(os.Stderr, line)
	})
}

// eval evaluates js in the page (awaiting a promise) into a T.
func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitJS polls js until it is true.
func waitJS(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			dump, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify([window.log || null, window.others || null])`))
			t.Fatalf("timed out waiting for %s (%s): %v\npage log: %s", what, js, err, dump)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// testPage is a page of another origin that uses the module from the server.
const testPage = `<!doctype html>
<title>airlay test page</title>
<script type="module">
import { connect, backoffDelay, tokenExpiry } from "%[1]s/client/airlay.js";
window.log = { states: [], events: [], errors: [], answers: [], reloads: [], subReloads: [] };
window.lib = { backoffDelay, tokenExpiry };
window.client = connect({
  url: "%[1]s",
  token: () => fetch("/token").then((r) => r.text()),
  minBackoff: 50, maxBackoff: 400,
  onState: (s) => log.states.push(s),
  onError: (e) => log.errors.push(e),
  onReload: (r) => log.reloads.push(r),
});
// More clients without subscriptions: their waits after a drop must differ.
window.others = [1, 2, 3, 4].map(() => {
  const states = [];
  connect({ url: "%[1]s", minBackoff: 50, maxBackoff: 400, onState: (s) => states.push(s) });
  return states;
});
window.attach = async (type, id) => {
  const a = await client.attach(type, id, (e) => log.events.push(e), (r) => log.subReloads.push(r));
  log.answers.push(a);
  return a;
};
window.ready = true;
</script>`

func TestBrowserClient(t *testing.T) {
	t.Parallel()
	ctx := newBrowser(t, 50*time.Second)
	start := time.Now()

	var tokens atomic.Int32
	var s *servertest.Server
	pageSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, testPage, s.URL())
		case "/token":
			tokens.Add(1)
			fmt.Fprint(w, s.Token(userA, time.Hour))
		default:
			http.NotFound(w, r)
		}
	}))
	defer pageSrv.Close()
	s = startServer(t, func(cfg *server.Config, own string) {
		// The test page's origin and the server's own (for /live): any
		// other origin is refused.
		cfg.AllowedOrigins = []string{pageSrv.URL, own}
		cfg.LivePage = true
	})

	if err := chromedp.Do(ctx, chromedp.Navigate(pageSrv.URL)); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	waitJS(t, ctx, "the module to load", `window.ready === true`)
	waitJS(t, ctx, "open", `log.states.filter((s) => s.state === "open").length === 1 && others.every((st) => st.some((s) => s.state === "open"))`)

	// Attach: the server's answers, matched to the requests.
	type answer struct {
		Status  int    `json:"status"`
		Message string `json:"message"`
		Code    int    `json:"code"`
	}
	answers := eval[[]answer](t, ctx, `Promise.all([
		attach("issueUpdate", "`+strings.ToUpper(issue1)+`"),
		attach("issueUpdate", "not-an-id"),
		attach("notification"),
	])`)
	if want := []answer{{200, "Ok", 0}, {400, "Invalid request", 5}, {200, "Ok", 0}}; fmt.Sprint(answers) != fmt.Sprint(want) {
		t.Fatalf("answers %v, want %v", answers, want)
	}
	if n := eval[int](t, ctx, `client.subscriptions().length`); n != 2 {
		t.Fatalf("%d subscriptions, want 2", n)
	}

	// An event published through the API reaches the callback.
	if n := s.Publish(`{"type":"issueUpdate","id":"` + issue1 + `","data":["first"]}`); n != 1 {
		t.Fatalf("first event delivered %d times, want 1", n)
	}
	waitJS(t, ctx, "the first event", `log.events.length === 1 && log.events[0].data[0] === "first"`)
	if pos := eval[string](t, ctx, `client.pos("issueUpdate", "`+issue1+`")`); pos == "" || pos != eval[string](t, ctx, `log.events[0].pos`) {
		t.Fatalf("client.pos %q, want the first event's pos", pos)
	}

	// Restart on the same port: a drop, failed attempts, open again with the
	// subscriptions re-attached. The drop is normally 1001; it can be 1006:
	// the server sends 1001 only once http.Server.Shutdown returns, which
	// waits up to 5 s for a socket Chromium opened ahead and never used, and
	// the harness cuts the shutdown at 5 s.
	s.Stop()
	waitJS(t, ctx, "the drop", `log.states.some((s) => s.state === "close" && s.reason === "drop")`)
	if code := eval[int](t, ctx, `log.states.find((s) => s.reason === "drop").code`); code != 1001 {
		t.Logf("the drop came with close code %d, not 1001 (see the comment above)", code)
	}
	waitJS(t, ctx, "a failed attempt", `log.states.some((s) => s.state === "fail")`)
	// The server is gone: the failure says so (not "origin refused").
	waitJS(t, ctx, "a failure with cause unreachable", `log.states.some((s) => s.state === "fail" && s.cause === "unreachable" && s.error.includes("cannot be reached"))`)
	s.Restart()
	waitJS(t, ctx, "open again", `log.states.filter((s) => s.state === "open").length === 2`)
	// A restarted server is another epoch: the re-attaches cannot recover
	// and say so, to the listener and to each subscription: the issue's
	// with its own position, the notification's (no event yet) with the
	// latest position of any subscription.
	waitJS(t, ctx, "the reloads", `log.reloads.length === 2 && log.subReloads.length === 2`)
	if got := eval[string](t, ctx, `JSON.stringify([log.reloads, log.subReloads])`); got != `[[{"type":"issueUpdate","id":"`+strings.ToUpper(issue1)+`"},{"type":"notification"}],[{"type":"issueUpdate","id":"`+strings.ToUpper(issue1)+`"},{"type":"notification"}]]` {
		t.Errorf("reloads %s", got)
	}
	for i, body := range []string{
		`{"type":"issueUpdate","id":"` + issue1 + `","data":["second"]}`,
		`{"type":"notification","user":"` + userA + `","id":"n1","data":["third"]}`,
	} {
		if n := s.Publish(body); n != 1 {
			t.Fatalf("event %d after the restart delivered %d times, want 1", i+2, n)
		}
	}
	waitJS(t, ctx, "the events after the restart", `log.events.length >= 3`)
	time.Sleep(200 * time.Millisecond) // room for a duplicate
	if got := eval[string](t, ctx, `log.events.map((e) => e.data[0]).join(" ")`); got != "first second third" {
		t.Errorf("events %q, want each once: first second third", got)
	}
	if n := eval[int](t, ctx, `log.errors.length`); n != 0 {
		t.Errorf("%d errors: %s", n, eval[string](t, ctx, `JSON.stringify(log.errors)`))
	}
	if n := tokens.Load(); n != 1 {
		t.Errorf("the token provider was called %d times, want 1 (a 1h token is reused)", n)
	}

	// Backoff: every wait within [min, max]; the clients dropped together
	// chose different first waits.
	retries := eval[[]float64](t, ctx, `log.states.filter((s) => s.retry !== undefined).map((s) => s.retry)`)
	for _, r := range retries {
		if r < 50 || r > 400 {
			t.Errorf("wait %vms outside [50, 400]", r)
		}
	}
	waitJS(t, ctx, "the other clients to come back", `others.every((st) => st.filter((s) => s.state === "open").length === 2)`)
	firsts := eval[[]float64](t, ctx, `[log.states, ...others].map((st) => st.find((s) => s.state === "close").retry)`)
	seen := map[float64]bool{}
	for _, r := range firsts {
		if r < 50 || r > 100 {
			t.Errorf("first wait %vms outside [50, 100]", r)
		}
		seen[r] = true
	}
	if len(seen) != len(firsts) {
		t.Errorf("first waits %v: clients dropped together chose equal waits", firsts)
	}
	if d := eval[[]float64](t, ctx, `[0, 3, 10].map((n) => lib.backoffDelay(n, 100, 1000, () => 0.5))`); fmt.Sprint(d) != "[150 550 550]" {
		t.Errorf("backoffDelay %v, want [150 550 550]", d)
	}
	if exp := eval[[]float64](t, ctx, `["a.eyJleHAiOjEwMH0.b", "a.eyJleHAiOjEwMH0=.b", "junk"].map(lib.tokenExpiry)`); fmt.Sprint(exp) != "[100000 100000 0]" {
		t.Errorf("tokenExpiry %v, want [100000 100000 0]", exp)
	}

	// close is a normal close, and the client stays closed.
	eval[bool](t, ctx, `client.close(), true`)
	waitJS(t, ctx, "the normal close", `log.states.at(-1).state === "close" && log.states.at(-1).reason === "normal" && client.state === "closed"`)
	if got := eval[string](t, ctx, `client.attach("notification").then(() => "attached", (e) => String(e))`); !strings.Contains(got, "closed") {
		t.Errorf("attach after close: %s", got)
	}

	livePage(t, ctx, s)
	t.Logf("browser test took %v", time.Since(start).Round(time.Millisecond))
}

// refreshPage has two clients with short first tokens: one replaces its
// token ahead of expiry, the other waits for the server's 4001 close.
const refreshPage = `<!doctype html>
<title>airlay token test</title>
<script type="module">
import { connect } from "%[1]s/client/airlay.js";
const provider = (log) => () => {
  log.tokens++; log.times.push(["tok", log.tokens, Date.now()]);
  return fetch("/token?ttl=" + (log.tokens === 1 ? 12 : 3600)).then((r) => r.text());
};
const make = (refreshBefore) => {
  const log = { states: [], events: [], errors: [], tokens: 0, times: [] };
  const client = connect({
    url: "%[1]s", token: provider(log), refreshBefore, minBackoff: 50, maxBackoff: 400,
    onState: (s) => { log.states.push(s); log.times.push([s.state, s.code, Date.now()]); }, onError: (e) => log.errors.push(e),
  });
  return { log, client };
};
window.ahead = make(30000);
window.on4001 = make(-1);
window.ready = Promise.all([
  ahead.client.attach("issueUpdate", "%[2]s", (e) => ahead.log.events.push(e)),
  on4001.client.attach("issueUpdate", "%[3]s", (e) => on4001.log.events.push(e)),
]).then((a) => a.map((x) => x.code).join(","));
</script>`

// A token that expires while the page is open: refreshed ahead of time, or
// replaced after the server's 4001 close; events arrive after the first
// token's exp either way.
func TestBrowserTokenRefresh(t *testing.T) {
	t.Parallel()
	ctx := newBrowser(t, 50*time.Second)
	var s *servertest.Server
	pageSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, refreshPage, s.URL(), issue1, issue2)
		case "/token":
			secs, _ := strconv.Atoi(r.URL.Query().Get("ttl"))
			fmt.Fprint(w, s.Token(userA, time.Duration(secs)*time.Second))
		default:
			http.NotFound(w, r)
		}
	}))
	defer pageSrv.Close()
	s = startServer(t, func(cfg *server.Config, _ string) { cfg.TokenLeeway = 0 })
	if err := chromedp.Do(ctx, chromedp.Navigate(pageSrv.URL)); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	waitJS(t, ctx, "the module to load", `window.ready !== undefined`)
	if got := eval[string](t, ctx, `window.ready`); got != "0,0" {
		t.Fatalf("attach answers %s, want 0,0", got)
	}
	waitJS(t, ctx, "the 4001 close and the reconnect", `on4001.log.states.some((s) => s.code === 4001 && s.reason === "drop") &&
		on4001.log.states.filter((s) => s.state === "open").length === 2`)
	waitJS(t, ctx, "the first token to have expired", `ahead.log.tokens >= 2`)
	// The first token lives 12 s (whole seconds of exp: 11 to 12 s here): the
	// client refreshing ahead does so at 3/4 of that, leaving about 3 s for
	// the refresh to reach the server before exp, also on a loaded machine.
	time.Sleep(1500 * time.Millisecond) // past the first token's exp (at most 12 s after it was minted)
	if n := s.Publish(`{"type":"issueUpdate","id":"` + issue1 + `","data":["ahead"]}`); n != 1 {
		t.Errorf("the client that refreshes ahead: delivered %d, want 1", n)
	}
	if n := s.Publish(`{"type":"issueUpdate","id":"` + issue2 + `","data":["after 4001"]}`); n != 1 {
		t.Errorf("the client that waited for 4001: delivered %d, want 1", n)
	}
	waitJS(t, ctx, "both events", `ahead.log.events.length === 1 && on4001.log.events.length === 1`)
	if st := eval[string](t, ctx, `JSON.stringify(ahead.log.states)`); st != `[{"state":"open"}]` {
		t.Errorf("the client that refreshes ahead: states %s, want only open; times %s", st, eval[string](t, ctx, `JSON.stringify(ahead.log.times)`))
	}
	if n := eval[int](t, ctx, `on4001.log.tokens`); n != 2 {
		t.Errorf("the 4001 client asked for %d tokens, want 2", n)
	}
	if e := eval[string](t, ctx, `JSON.stringify([ahead.log.errors, on4001.log.errors])`); e != "[[],[]]" {
		t.Errorf("errors %s", e)
	}
}

// livePage drives /live as an operator: paste a token, connect, attach,
// watch an event arrive; one screenshot, which must not be blank.
func livePage(t *testing.T, ctx context.Context, s *servertest.Server) {
	tok := s.Token(userA, time.Hour)
	if err := chromedp.Do(ctx, chromedp.Navigate(s.URL()+server.LivePagePath)); err != nil {
		t.Fatalf("navigate /live: %v", err)
	}
	waitJS(t, ctx, "the event types", `document.querySelectorAll("#type option").length === 6`)
	err := chromedp.Do(ctx,
		chromedp.SetValue("#token", tok),
		chromedp.Click("#connect-btn"),
	)
	if err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the live page to connect", `document.getElementById("state").textContent === "open"`)
	err = chromedp.Do(ctx,
		chromedp.SetValue("#type", "issueUpdate"),
		chromedp.SetValue("#id", issue1),
		chromedp.Click("#attach-btn"),
	)
	if err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the attach", `document.getElementById("subs").textContent.includes("`+issue1+`")`)
	if n := s.Publish(`{"type":"issueUpdate","id":"` + issue1 + `","data":[{"status":"done","by":"live page test"}]}`); n != 1 {
		t.Fatalf("delivered %d times to the live page, want 1", n)
	}
	waitJS(t, ctx, "the event on the live page", `document.getElementById("count").textContent === "1" && document.getElementById("events").textContent.includes("live page test")`)
	// Positions: on the event, and as the subscription's since.
	waitJS(t, ctx, "the event's position and the subscription's since", `/[0-9a-f]{16}:[0-9]+/.test(document.querySelector("#events .pos").textContent) &&
		document.getElementById("subs").textContent.includes("since " + document.querySelector("#events .pos").textContent)`)
	// A restart (another epoch): the page says the object must be reloaded.
	s.Stop()
	s.Restart()
	waitJS(t, ctx, "the reload on the live page", `document.body.textContent.includes("reload issueUpdate `+issue1+`")`)
	if html := eval[string](t, ctx, `document.documentElement.outerHTML + document.body.innerText`); strings.Contains(html, tok) || strings.Contains(html, pubTok) {
		t.Error("the live page shows a secret")
	}

	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv("AIRLAY_SCREENSHOT_DIR"); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, "live.png"), shot, 0o644)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	mean, std, colors := pixelStats(img)
	t.Logf("live page screenshot: %v, mean %.1f, std dev %.1f, %d colours", img.Bounds().Size(), mean, std, colors)
	if std < 10 || colors < 16 {
		t.Errorf("the screenshot looks blank: std dev %.1f, %d colours", std, colors)
	}
}

// pixelStats returns the mean and standard deviation of the luminance and
// the number of distinct colours (up to 1000).
func pixelStats(img image.Image) (mean, std float64, colors int) {
	b := img.Bounds()
	var sum, sq float64
	seen := map[uint32]bool{}
	n := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			l := (0.299*float64(r) + 0.587*float64(g) + 0.114*float64(bl)) / 257
			sum += l
			sq += l * l
			n++
			if len(seen) < 1000 {
				seen[(r>>8)<<16|(g>>8)<<8|bl>>8] = true
			}
		}
	}
	mean = sum / float64(n)
	return mean, math.Sqrt(math.Max(0, sq/float64(n)-mean*mean)), len(seen)
}

// A uniform image is blank to pixelStats.
func TestPixelStatsBlank(t *testing.T) {
	t.Parallel()
	img := image.NewGray(image.Rect(0, 0, 64, 64))
	for i := range img.Pix {
		img.Pix[i] = 240
	}
	if _, std, colors := pixelStats(img); std > 0.01 || colors != 1 {
		t.Errorf("a blank image: std dev %v, %d colours", std, colors)
	}
}
