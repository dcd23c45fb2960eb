package clientjs_test

// The README's "Try it by hand" runs as written: its browser snippet on the
// live page (the server's own page: a browser console elsewhere, such as
// about:blank, may not reach a local server), its curl publishes as the
// HTTP requests they make, and the answers and events it promises.

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/airlay/airlay/server"
)

// readmeSection returns the README's text from the heading to the next one.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README has no %q", heading)
	}
	s = s[i+len(heading)+2:]
	if j := strings.Index(s, "\n## "); j >= 0 {
		s = s[:j]
	}
	return s
}

// fenced returns the fenced blocks of lang in text.
func fenced(text, lang string) []string {
	re := regexp.MustCompile("(?s)```" + lang + "\n(.*?)```")
	var out []string
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		out = append(out, m[1])
	}
	return out
}

func TestReadmeTryItByHand(t *testing.T) {
	t.Parallel()
	ctx := newBrowser(t, 40*time.Second)
	s := startServer(t, func(cfg *server.Config, _ string) {
		cfg.LivePage = true
		cfg.AllowedOrigins = []string{"https://app.example"} // the snippet needs no allowed_origins
	})
	section := readmeSection(t, "## Try it by hand")
	js, sh := fenced(section, "js"), fenced(section, "sh")
	if len(js) != 1 || len(sh) != 1 {
		t.Fatalf("Try it by hand: %d js and %d sh blocks, want 1 and 1", len(js), len(sh))
	}
	const readmeBase = "127.0.0.1:8081"
	snippet := strings.ReplaceAll(js[0], readmeBase, s.Addr)
	tokenLine := regexp.MustCompile(`const TOKEN = "[^"]*";`)
	if !tokenLine.MatchString(snippet) {
		t.Fatal(`the snippet has no line const TOKEN = "...";`)
	}
	snippet = tokenLine.ReplaceAllLiteralString(snippet, `const TOKEN = "`+s.Token(userA, time.Hour)+`";`)

	if err := chromedp.Do(ctx, chromedp.Navigate(s.URL()+server.LivePagePath)); err != nil {
		t.Fatal(err)
	}
	// What the snippet logs, as the console would show it.
	eval[bool](t, ctx, `window.logged = []; console.log = (...a) => logged.push(JSON.stringify(a)); true`)
	eval[bool](t, ctx, `(() => {`+snippet+`; return true; })()`)
	waitJS(t, ctx, "the two answers", `logged.filter((l) => l === '[{"status":200,"message":"Ok","code":0}]').length === 2`)

	// The curl lines: each -d body to its URL with the publish token; the
	// answer must be the one the README writes under it.
	block := strings.ReplaceAll(sh[0], "\\\n", " ")
	cmd := regexp.MustCompile(`curl -s -H "Authorization: Bearer \$PUB" '?http://` + regexp.QuoteMeta(readmeBase) + `([^' ]+)'?\s+-d '([^']*)'\s*\n# (\{.*\})`)
	calls := cmd.FindAllStringSubmatch(block, -1)
	if len(calls) != 3 {
		t.Fatalf("found %d curl publishes with their answers in Try it by hand, want 3:\n%s", len(calls), block)
	}
	for _, c := range calls {
		req, _ := http.NewRequest(http.MethodPost, s.URL()+c[1], strings.NewReader(c[2]))
		req.Header.Set("Authorization", "Bearer "+pubTok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var got, want any
		if json.Unmarshal(body, &got) != nil || json.Unmarshal([]byte(c[3]), &want) != nil || !jsonEqual(got, want) {
			t.Errorf("POST %s %s: %s, the README says %s", c[1], c[2], body, c[3])
		}
	}
	waitJS(t, ctx, "the events the README promises", `logged.some((l) => /^\[{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":\["status"\],"pos":"[0-9a-f]{16}:[0-9]+"}\]$/.test(l)) &&
		logged.some((l) => /^\[{"type":"notification","id":"6a0000000000000000000001","data":\[{"text":"hi"}\],"pos":"[0-9a-f]{16}:[0-9]+"}\]$/.test(l))`)
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
