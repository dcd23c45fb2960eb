package server

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// A burst larger than melody's preallocated window reaches a healthy client
// whole and in order: it waits in the backlog, it is not a slow consumer.
func TestQueueBurstIsNotSlow(t *testing.T) {
	e := newEnv(t, nil) // send_queue 256
	c := e.dial()
	c.do(e.token(userA, time.Hour), "attach", "issueUpdate", issue1, 0)
	var b strings.Builder
	b.WriteByte('[')
	const n = 200
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"type":"issueUpdate","id":"%s","data":[%d]}`, issue1, i)
	}
	b.WriteByte(']')
	if status, ans := e.publish("?wait=5", b.String()); status != 200 || ans["delivered"] != float64(n) {
		t.Fatalf("publish: %d %v", status, ans)
	}
	for i := range n {
		m := c.expectEvent("issueUpdate", issue1)
		if got := m["data"].([]any)[0]; got != float64(i) {
			t.Fatalf("event %d carries %v", i, got)
		}
	}
}

// send_queue_bytes bounds what one connection may have queued: a burst of
// large events past it closes a connection that does not read.
func TestQueueBytesLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SendQueueBytes = 64 << 10 })
	c := e.dial()
	c.do(e.token(userA, time.Hour), "attach", "issueUpdate", issue1, 0)
	big := `{"type":"issueUpdate","id":"` + issue1 + `","data":["` + strings.Repeat("x", 40<<10) + `"]}`
	if status, _ := e.publish("", "["+big+","+big+","+big+"]"); status != 200 {
		t.Fatalf("publish: %d", status)
	}
	c.expectClose(CloseSlowConsumer, 5*time.Second)
}

// A peer that stops reading, with a queue that never fills, is dropped when
// a write waits write_timeout, and counted as a slow consumer.
func TestWriteTimeoutIsSlowConsumer(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.WriteTimeout = 200 * time.Millisecond })
	c := e.dial()
	if tcp, ok := c.ws.NetConn().(*net.TCPConn); ok {
		_ = tcp.SetReadBuffer(4096)
	}
	c.do(e.token(userA, time.Hour), "attach", "issueUpdate", issue1, 0)
	big := `{"type":"issueUpdate","id":"` + issue1 + `","data":["` + strings.Repeat("x", 256<<10) + `"]}`
	// One event at a time, under the queue's limits: only the socket fills.
	for i := 0; i < 40 && !strings.Contains(e.logs.String(), "write timed out"); i++ {
		if status, _ := e.publish("", big); status != 200 {
			t.Fatalf("publish: %d", status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, "the drop", 5*time.Second, func() bool { return strings.Contains(e.logs.String(), `reason="slow consumer"`) })
	if !strings.Contains(e.logs.String(), "write timed out") {
		t.Fatal("not dropped by the write timeout")
	}
}
