package server

import (
	"bytes"
	"net/http"
	"time"

	clientjs "github.com/airlay/airlay/client/js"
)

// Paths of the browser client and the live page.
const (
	ClientJSPath    = "/client/airlay.js"
	ClientTypesPath = "/client/airlay.d.ts" // its TypeScript declarations
	LivePagePath    = "/live"
)

// clientRoutes adds the browser client (always) and the live page (when
// live_page is on). Pages on other origins load the module in CORS mode, so
// it answers like /api/*: an origin outside allowed_origins gets 403.
func (s *Server) clientRoutes(mux *http.ServeMux) {
	mux.Handle("GET "+ClientJSPath, s.cors(serveEmbedded("airlay.js", func(h http.Header) { h.Set("X-TypeScript-Types", ClientTypesPath) })))
	mux.Handle("GET "+ClientTypesPath, s.cors(serveEmbedded("airlay.d.ts", nil)))
	if !s.cfg.LivePage {
		return // /live and its files answer 404
	}
	// The live page runs only scripts and styles of this server, cannot be
	// framed, and sends no referrer; the token an operator pastes stays in
	// the page and goes only to this server's /ws.
	page := func(h http.Header) {
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
	}
	mux.Handle("GET "+LivePagePath, serveEmbedded("live.html", page))
	mux.Handle("GET /client/live.js", serveEmbedded("live.js", nil))
	mux.Handle("GET /client/live.css", serveEmbedded("live.css", nil))
	mux.Handle("GET /client/console.js", serveEmbedded("console.js", nil))
	mux.Handle("GET /client/live-boot.js", serveEmbedded("live-boot.js", nil))
}

// serveEmbedded serves one file of the clientjs package with its ETag
// (revalidated on each use, so that a new server version is picked up).
func serveEmbedded(name string, headers func(http.Header)) http.Handler {
	f, ok := clientjs.Get(name)
	if !ok {
		panic("clientjs: no embedded " + name)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", f.ContentType)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.ETag)
		h.Set("X-Content-Type-Options", "nosniff")
		if headers != nil {
			headers(h)
		}
		http.ServeContent(w, r, f.Name, time.Time{}, bytes.NewReader(f.Data))
	})
}
