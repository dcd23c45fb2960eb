package server

import (
	"fmt"
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
