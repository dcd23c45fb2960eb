package server

import (
	"sync"
	"testing"
	"time"

	"github.com/airlay/airlay/events"
	"github.com/gorilla/websocket"
)

// BenchmarkHandleRequest measures an attach and a detach as the server
// handles them (parse, cached token check, index), without the socket.
func BenchmarkHandleRequest(b *testing.B) {
	e := newEnv(b, nil)
	tok := e.token(userA, time.Hour)
	attach := []byte(request(tok, "attach", "issueUpdate", issue1))
	detach := []byte(request(tok, "detach", "issueUpdate", issue1))
	c := &conn{srv: e.srv, subs: make(map[events.Key]struct{}), room: make(chan struct{}, 1), timer: time.NewTimer(time.Hour)} // claim resets the timer (auth_timeout)
	b.Cleanup(func() { c.disconnected() })
	if code, _ := e.srv.handleRequest(c, attach); code != events.OK {
		b.Fatalf("attach answered %d", code)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		frame := attach
		if i%2 == 0 {
			frame = detach
		}
		if code, _ := e.srv.handleRequest(c, frame); code != events.OK {
			b.Fatalf("answered %d", code)
		}
	}
}

// BenchmarkWSRoundTrip measures one request and its answer over a real
// loopback WebSocket.
func BenchmarkWSRoundTrip(b *testing.B) {
	e := newEnv(b, nil)
	c := e.dial()
	tok := e.token(userA, time.Hour)
	frames := [2][]byte{[]byte(request(tok, "attach", "issueUpdate", issue1)), []byte(request(tok, "detach", "issueUpdate", issue1))}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := c.ws.WriteMessage(websocket.TextMessage, frames[i%2]); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.ws.ReadMessage(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFanOut measures one published event reaching 1,000 real
// connections: publish through the hub and read every copy.
func BenchmarkFanOut(b *testing.B) {
	const n = 1000
	e := newEnv(b, func(c *Config) { c.LogLevel = 8 }) // errors only: 1,000 open lines would be noise
	tok := e.token(userA, time.Hour)
	clients := make([]*wsClient, n)
	for i := range clients {
		clients[i] = e.dial()
		clients[i].do(tok, "attach", "issueUpdate", issue1, 0)
	}
	ev := []events.Event{{Type: events.IssueUpdate, ID: issue1, Data: []byte(`["status"]`)}}
	var got sync.WaitGroup
	for _, c := range clients {
		go func() {
			for {
				if _, _, err := c.ws.ReadMessage(); err != nil {
					return
				}
				got.Done()
			}
		}()
	}
	b.ReportAllocs()
	for b.Loop() {
		got.Add(n)
		e.srv.hub.Publish(ev, nil)
		got.Wait()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
}
