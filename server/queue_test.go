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

// send_queue_bytes bounds what one connection may have queued of earlier
// publishes: with a reader that does not read, a publish that finds the
// queue at the bound closes the connection as a slow consumer. (Its 4008
// rarely gets through: the socket is full; the client sees the end.)
func TestQueueBytesLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SendQueueBytes = 64 << 10 })
	c := e.dial()
	c.do(e.token(userA, time.Hour), "attach", "issueUpdate", issue1, 0)
	big := `{"type":"issueUpdate","id":"` + issue1 + `","data":["` + strings.Repeat("x", 40<<10) + `"]}`
	for i := 0; i < 400 && !strings.Contains(e.logs.String(), "send queue full"); i++ {
		if status, _ := e.publish("", "["+big+","+big+","+big+"]"); status != 200 {
			t.Fatalf("publish: %d", status)
		}
	}
	if !strings.Contains(e.logs.String(), "send queue full") {
		t.Fatal("48 MiB published to a connection that does not read, and its queue never filled")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_ = c.ws.SetReadDeadline(deadline)
		if _, _, err := c.ws.ReadMessage(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the connection did not end: %v", err)
			}
			break
		}
	}
	waitFor(t, "the close", 5*time.Second, func() bool { return strings.Contains(e.logs.String(), `reason="slow consumer"`) })
}

// A single publish larger than send_queue and send_queue_bytes reaches a
// reader that reads promptly, whole and in order: the bounds judge what is
// left of earlier publishes, never the frames of the one being handed out.
func TestSinglePublishNeverClosesPromptReader(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SendQueue = 16; c.SendQueueBytes = 16 << 10 })
	c := e.dial()
	c.do(e.token(userA, time.Hour), "attach", "issueUpdate", issue1, 0)
	const n = 1000
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"type":"issueUpdate","id":"%s","data":[%d,"%s"]}`, issue1, i, strings.Repeat("y", 100))
	}
	b.WriteByte(']')
	status, answer := e.publish("?wait=10", b.String())
	if status != 200 || answer["delivered"] != float64(n) {
		t.Fatalf("publish: %d %v", status, answer)
	}
	for i := range n {
		m := c.expectEvent("issueUpdate", issue1)
		if got := m["data"].([]any)[0]; got != float64(i) {
			t.Fatalf("event %d carries %v", i, got)
		}
	}
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
