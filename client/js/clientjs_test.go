package clientjs_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	clientjs "github.com/airlay/airlay/client/js"
	"github.com/airlay/airlay/server"
)

// The module is served at a fixed path, always, with CORS like /api/*.
func TestModuleServed(t *testing.T) {
	t.Parallel()
	s := startServer(t, func(cfg *server.Config, _ string) { cfg.AllowedOrigins = []string{"https://app.example"} })
	want, _ := clientjs.Get("airlay.js")

	resp, body := s.Get(server.ClientJSPath, nil)
	if resp.StatusCode != 200 || string(body) != string(want.Data) {
		t.Fatalf("GET %s: %d, %d bytes", server.ClientJSPath, resp.StatusCode, len(body))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/javascript; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	etag := resp.Header.Get("ETag")
	if etag == "" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("headers %v", resp.Header)
	}
	if resp, _ := s.Get(server.ClientJSPath, http.Header{"If-None-Match": {etag}}); resp.StatusCode != http.StatusNotModified {
		t.Errorf("revalidation: %d, want 304", resp.StatusCode)
	}
	resp, _ = s.Get(server.ClientJSPath, http.Header{"Origin": {"https://app.example"}})
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Errorf("allowed origin: %d, ACAO %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	resp, _ = s.Get(server.ClientJSPath, http.Header{"Origin": {"https://evil.example"}})
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("refused origin: %d, ACAO %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	for _, w := range []string{"export function connect", "export class AirlayClient", "/api/config"} {
		if !strings.Contains(string(body), w) {
			t.Errorf("the module lacks %q", w)
		}
	}
}

// The live page is off by default; on, it is a locked-down page that shows
// no secret.
func TestLivePage(t *testing.T) {
	t.Parallel()
	off := startServer(t, nil)
	for _, p := range []string{server.LivePagePath, "/client/live.js", "/client/live.css", "/client/console.js", "/client/live-boot.js"} {
		if resp, body := off.Get(p, nil); resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `"code":5`) {
			t.Errorf("live_page off: GET %s answered %d %s, want 404", p, resp.StatusCode, body)
		}
	}

	on := startServer(t, func(cfg *server.Config, _ string) { cfg.LivePage = true })
	resp, body := on.Get(server.LivePagePath, nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /live: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, w := range []string{"script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, w) {
			t.Errorf("CSP %q lacks %q", csp, w)
		}
	}
	if resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("headers %v", resp.Header)
	}
	if !strings.Contains(string(body), `type="password"`) {
		t.Error("the token field is not a password field")
	}
	for _, p := range []string{server.LivePagePath, "/client/live.js", "/client/live.css", "/client/console.js", "/client/live-boot.js", server.ClientJSPath, "/api/config"} {
		resp, body := on.Get(p, nil)
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", p, resp.StatusCode)
		}
		if strings.Contains(string(body), pubTok) {
			t.Errorf("GET %s shows the publish token", p)
		}
	}
}

// Every export of airlay.js is declared in airlay.d.ts (tsc in CI checks
// the declarations themselves), and the server serves them.
func TestTypesDeclareEveryExport(t *testing.T) {
	t.Parallel()
	js, _ := clientjs.Get("airlay.js")
	dts, ok := clientjs.Get("airlay.d.ts")
	if !ok {
		t.Fatal("no airlay.d.ts embedded")
	}
	exports := regexp.MustCompile(`(?m)^export (?:async )?(?:function|class|const) (\w+)`).FindAllStringSubmatch(string(js.Data), -1)
	if len(exports) < 5 {
		t.Fatalf("found %d exports in airlay.js", len(exports))
	}
	for _, m := range exports {
		if !regexp.MustCompile(`(?m)^export declare (?:function|class|const) ` + m[1] + `\b`).Match(dts.Data) {
			t.Errorf("airlay.d.ts does not declare %s", m[1])
		}
	}
	s := startServer(t, nil)
	resp, body := s.Get(server.ClientTypesPath, nil)
	if resp.StatusCode != 200 || string(body) != string(dts.Data) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/typescript") {
		t.Errorf("GET %s: %d %q", server.ClientTypesPath, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if resp, _ := s.Get(server.ClientJSPath, nil); resp.Header.Get("X-TypeScript-Types") != server.ClientTypesPath {
		t.Errorf("X-TypeScript-Types %q", resp.Header.Get("X-TypeScript-Types"))
	}
}
