package clientjs_test

// The real server of internal/servertest, in this process, on a loopback
// port that stays the same across a restart.

import (
	"testing"

	"github.com/airlay/airlay/internal/servertest"
	"github.com/airlay/airlay/server"
)

const (
	userA  = "5dad615eae019570fb4647ed"
	issue1 = "610217e481f6fc54736209e0"
	issue2 = "610217e481f6fc54736209e1"
	pubTok = "test-publish-secret-do-not-show"
)

// startServer starts the real server with pubTok as its publish token (the
// tests check that it never reaches a page), then lets mutate change the
// settings knowing the server's own origin; it stops when the test ends.
func startServer(t *testing.T, mutate func(cfg *server.Config, origin string)) *servertest.Server {
	t.Helper()
	return servertest.Start(t, func(cfg *server.Config, origin string) {
		cfg.PublishToken = pubTok
		if mutate != nil {
			mutate(cfg, origin)
		}
	})
}
