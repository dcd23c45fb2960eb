//go:build !race

// The race detector makes every frame larger, so this measure means
// something only without it; .ci/run runs it in a separate step.

package server

import (
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"
)

// TestIdleConnectionStack checks what an idle, subscribed connection costs
// in goroutine stacks: melody's writer and the reader (net/http's goroutine
// running melody's read loop), 4 KiB each. A goroutine keeps the stack its
// deepest call needed, so one deep call on the reader path (a log line at
// open, a large frame in request handling) doubles the reader's stack for
// the connection's whole life; that is what this catches.
func TestIdleConnectionStack(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LogLevel = slog.LevelInfo })
	tok := e.token(userA, time.Hour)
	warm := e.dial() // the first use of a token takes the RSA path, deeper and once
	warm.do(tok, "attach", "issueUpdate", issue1, 0)

	const n = 300
	stack := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.StackInuse
	}
	before := stack()
	clients := make([]*wsClient, n)
	for i := range clients {
		c := e.dial()
		id := fmt.Sprintf("%024x", i+1)
		c.sendText(`{}`) // a malformed request: code 5
		c.expectCode(5)
		c.do(tok, "attach", "issueUpdate", id, 0)
		c.do(tok, "attach", "issueUpdate", issue1, 0)
		c.do(tok, "detach", "issueUpdate", id, 0)
		clients[i] = c
	}
	if status, _ := e.publish("", eventJSON("issueUpdate", issue1)); status != 200 {
		t.Fatalf("publish answered %d", status)
	}
	for _, c := range clients {
		c.expectEvent("issueUpdate", issue1)
	}
	per := float64(stack()-before) / n
	t.Logf("goroutine stacks: %.0f bytes per idle connection", per)
	// 8 KiB when both goroutines stay at 4 KiB; 12 KiB or more when the
	// reader grows to 8 KiB.
	if per > 10<<10 {
		t.Fatalf("idle connections hold %.0f bytes of goroutine stack each, want at most %d: a call on the reader's path has grown its stack", per, 10<<10)
	}
}
