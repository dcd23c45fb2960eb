package clientjs_test

import (
	"net/http"
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
	for _, p := range []string{server.LivePagePath, "/client/live.js", "/client/live.css", "/client/console.js"} {
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
	for _, p := range []string{server.LivePagePath, "/client/live.js", "/client/live.css", "/client/console.js", server.ClientJSPath, "/api/config"} {
		resp, body := on.Get(p, nil)
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", p, resp.StatusCode)
		}
		if strings.Contains(string(body), pubTok) {
			t.Errorf("GET %s shows the publish token", p)
		}
	}
}
