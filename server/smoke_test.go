package server

import (
	"testing"
	"time"
)

func TestAttachPublishReceive(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial()
	tok := e.token(userA, time.Hour)
	c.do(tok, "attach", "issueUpdate", issue1, 0)
	status, ans := e.publish("?wait=5", `{"type":"issueUpdate","id":"`+issue1+`","data":["status"]}`)
	if status != 200 || ans["delivered"] != 1.0 || ans["pending"] != 0.0 {
		t.Fatalf("publish: %d %v", status, ans)
	}
	m := c.expectEvent("issueUpdate", issue1)
	if d := m["data"].([]any); len(d) != 1 || d[0] != "status" {
		t.Fatalf("data %v", m["data"])
	}
}
