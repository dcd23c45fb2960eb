package clientjs_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/airlay/airlay/internal/servertest"
	"github.com/airlay/airlay/server"
)

// askPage: two clients of one user (two tabs) answering requests, one at
// once with a plain value, one after a while through a Promise.
const askPage = `<!doctype html>
<title>airlay ask test page</title>
<script type="module">
import { connect } from "%[1]s/client/airlay.js";
window.log = { fast: [], slow: [], replies: [] };
const token = () => fetch("/token").then((r) => r.text());
window.fast = connect({ url: "%[1]s", token });
window.slow = connect({ url: "%[1]s", token });
fast.on("reply", (r) => log.replies.push(["fast", r.id, r.answer.code]));
slow.on("reply", (r) => log.replies.push(["slow", r.id, r.answer.code]));
window.fastMode = "value";
window.attached = Promise.all([
  fast.onRequest((data, req) => {
    log.fast.push([req.id, data]);
    if (fastMode === "silent") throw new Error("no answer from fast");
    return fastMode === "value" ? "fast:" + data[0] : new Promise(() => {});
  }),
  slow.onRequest(async (data, req) => {
    log.slow.push([req.id, data]);
    await new Promise((r) => setTimeout(r, 300));
    return [{ slow: data[0] }];
  }),
]);
window.ready = true;
</script>`

// The browser module answers requests: the callback's value (or its
// Promise's) is the reply; with two tabs the first reply wins and the
// other's reply is refused with code 5 (its "reply" listener says so).
func TestBrowserAsk(t *testing.T) {
	t.Parallel()
	ctx := newBrowser(t, 40*time.Second)
	var s *servertest.Server
	pageSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, askPage, s.URL())
		case "/token":
			fmt.Fprint(w, s.Token(userA, time.Hour))
		default:
			http.NotFound(w, r)
		}
	}))
	defer pageSrv.Close()
	s = startServer(t, func(cfg *server.Config, own string) { cfg.AllowedOrigins = []string{pageSrv.URL} })
	if err := chromedp.Do(ctx, chromedp.Navigate(pageSrv.URL)); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	waitJS(t, ctx, "the module to load", `window.ready === true`)
	codes := eval[[]int](t, ctx, `attached.then((as) => as.map((a) => a.code))`)
	if fmt.Sprint(codes) != "[0 0]" {
		t.Fatalf("onRequest attach answers %v", codes)
	}

	reply := func(status int, m map[string]any) string {
		b, _ := json.Marshal(m["reply"])
		return fmt.Sprintf("%d %s", status, b)
	}
	// The fast tab answers at once with a plain value: sent as [value].
	status, m := s.Ask("10", userA, `["q1"]`)
	if got := reply(status, m); got != `200 ["fast:q1"]` {
		t.Fatalf("ask 1: %s %v", got, m)
	}
	// Both tabs got it once; the slow one's reply came second: code 5.
	waitJS(t, ctx, "the slow tab's refused reply", `log.replies.length === 2`)
	reps := eval[[][]any](t, ctx, `log.replies`)
	if fmt.Sprintf("%v %v %v %v", reps[0][0], reps[0][2], reps[1][0], reps[1][2]) != "fast 0 slow 5" {
		t.Errorf("replies %v, want fast taken, slow refused", reps)
	}
	if n := eval[[]int](t, ctx, `[log.fast.length, log.slow.length]`); fmt.Sprint(n) != "[1 1]" {
		t.Errorf("each tab got the request %v times, want once each", n)
	}
	// The fast tab throws: the slow tab's Promise is the reply.
	eval[string](t, ctx, `fastMode = "silent"`)
	status, m = s.Ask("10", userA, `["q2"]`)
	if got := reply(status, m); got != `200 [{"slow":"q2"}]` {
		t.Fatalf("ask 2: %s %v", got, m)
	}
	// Neither answers within the timeout: 504.
	eval[string](t, ctx, `fastMode = "never"; slow.close(); "ok"`)
	status, m = s.Ask("0.5", userA, `["q3"]`)
	if status != 504 || m["code"] != 9.0 {
		t.Errorf("ask 3: %d %v", status, m)
	}
}

// The live page shows a request and lets a person answer it; the backend
// gets what was typed.
func TestBrowserLivePageAnswers(t *testing.T) {
	t.Parallel()
	ctx := newBrowser(t, 40*time.Second)
	s := startServer(t, func(cfg *server.Config, own string) { cfg.LivePage = true })
	tok := s.Token(userA, time.Hour)
	if err := chromedp.Do(ctx, chromedp.Navigate(s.URL()+server.LivePagePath)); err != nil {
		t.Fatalf("navigate /live: %v", err)
	}
	waitJS(t, ctx, "the event types", `[...document.querySelectorAll("#type option")].some((o) => o.value === "request")`)
	if err := chromedp.Do(ctx, chromedp.SetValue("#token", tok), chromedp.Click("#connect-btn")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the live page to connect", `document.getElementById("state").textContent === "open"`)
	if err := chromedp.Do(ctx, chromedp.SetValue("#type", "request"), chromedp.Click("#attach-btn")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the request subscription", `document.getElementById("subs").textContent.includes("request")`)
	type result struct {
		status int
		m      map[string]any
	}
	ch := make(chan result, 1)
	go func() {
		st, m := s.Ask("20", userA, `["is issue `+issue1+` still being edited?"]`)
		ch <- result{st, m}
	}()
	waitJS(t, ctx, "the request on the page", `document.querySelector("#requests li.request") !== null &&
		document.getElementById("requests").textContent.includes("still being edited?")`)
	if err := chromedp.Do(ctx,
		chromedp.SetValue("#requests li.request .reply-text", `{"editing": true, "by": "live page"}`),
		chromedp.Click("#requests li.request .reply-btn"),
	); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-ch:
	case <-time.After(20 * time.Second):
		t.Fatal("the ask was not answered")
	}
	b, _ := json.Marshal(r.m["reply"])
	if r.status != 200 || string(b) != `[{"by":"live page","editing":true}]` {
		t.Fatalf("ask answered %d %v", r.status, r.m)
	}
	waitJS(t, ctx, "the page saying the reply was taken", `document.getElementById("requests").textContent.includes("reply taken")`)
	// A second request that nobody answers: the typed reply after the
	// timeout is refused, and the page says so.
	go func() { st, m := s.Ask("0.5", userA, `["late?"]`); ch <- result{st, m} }()
	waitJS(t, ctx, "the second request", `document.querySelectorAll("#requests li.request").length === 2`)
	if r = <-ch; r.status != 504 {
		t.Fatalf("second ask %d %v", r.status, r.m)
	}
	if err := chromedp.Do(ctx,
		chromedp.SetValue("#requests li.request .reply-text", `too late`),
		chromedp.Click("#requests li.request .reply-btn"),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the refusal on the page", `document.querySelector("#requests li.request").textContent.includes("refused: Invalid request (code 5)")`)
	if html := eval[string](t, ctx, `document.documentElement.outerHTML`); strings.Contains(html, tok) {
		t.Error("the live page shows the token")
	}
}
