package events

// Fan-out costs. The aim: allocations per event, none per subscriber. Run
//
//	go test -run x -bench . ./events/

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// nopSub records nothing. It is not zero-sized, so that every one is a
// distinct subscriber.
type nopSub struct{ _ int }

func (*nopSub) Send(*Delivery) {}

func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			h := NewHub()
			k := Key{IssueUpdate, hex24(1)}
			for range n {
				h.Subscribe(k, &nopSub{})
			}
			evs := []Event{{Type: IssueUpdate, ID: k.ID, Data: json.RawMessage(`["status","assignee"]`)}}
			h.Publish(evs, nil) // builds the cached subscriber list
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				h.Publish(evs, nil)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
		})
	}
}

// BenchmarkPublishHistory is BenchmarkPublish with the server's default
// history (5m, 64MiB): its frames are the delivered ones, and once full it
// drops one event per event kept.
func BenchmarkPublishHistory(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			h := NewHubWith(HubOptions{History: NewHistory(5*time.Minute, 64<<20)})
			k := Key{IssueUpdate, hex24(1)}
			for range n {
				h.Subscribe(k, &nopSub{})
			}
			evs := []Event{{Type: IssueUpdate, ID: k.ID, Data: json.RawMessage(`["status","assignee"]`)}}
			h.Publish(evs, nil)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				h.Publish(evs, nil)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
		})
	}
}

// BenchmarkPublishTracked is BenchmarkPublish with ?wait counting.
func BenchmarkPublishTracked(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			h := NewHub()
			k := Key{IssueUpdate, hex24(1)}
			for range n {
				h.Subscribe(k, &nopSub{})
			}
			evs := []Event{{Type: IssueUpdate, ID: k.ID, Data: json.RawMessage(`["status"]`)}}
			h.Publish(evs, nil)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				h.Publish(evs, NewTracker())
			}
		})
	}
}

// BenchmarkPublishPerObject: many keys with one subscriber each, as when
// every user watches their own issue; each op publishes events to distinct keys.
func BenchmarkPublishPerObject(b *testing.B) {
	const nkeys = 10000
	for _, c := range []struct {
		batch int
		hist  bool
	}{{1, false}, {100, false}, {1, true}, {100, true}} {
		batch := c.batch
		name := fmt.Sprintf("keys=%d/events=%d", nkeys, batch)
		if c.hist {
			name += "/history"
		}
		b.Run(name, func(b *testing.B) {
			h := NewHub()
			if c.hist { // the server's default history, full after the first 200,000 events or so
				h = NewHubWith(HubOptions{History: NewHistory(5*time.Minute, 64<<20)})
			}
			evs := make([]Event, nkeys)
			for i := range evs {
				k := Key{IssueUpdate, hex24(i)}
				h.Subscribe(k, &nopSub{})
				evs[i] = Event{Type: IssueUpdate, ID: k.ID, Data: json.RawMessage(`["status"]`)}
			}
			for i := 0; i < nkeys; i += batch {
				h.Publish(evs[i:i+batch], nil) // build every cached list
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				h.Publish(evs[i:i+batch], nil)
				if i += batch; i+batch > nkeys {
					i = 0
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(batch), "ns/event")
		})
	}
}

// BenchmarkSubscribe attaches and detaches distinct keys: one op is an
// attach plus a detach.
func BenchmarkSubscribe(b *testing.B) {
	const nkeys = 4096
	keys := make([]Key, nkeys)
	for i := range keys {
		keys[i] = Key{Types[i%len(Types)], hex24(i)}
	}
	b.Run("serial", func(b *testing.B) {
		h := NewHub()
		s := &nopSub{}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			k := keys[i%nkeys]
			h.Subscribe(k, s)
			h.Unsubscribe(k, s)
			i++
		}
	})
	b.Run("serial-busy-key", func(b *testing.B) {
		// The key stays held by others: no topic is created or deleted.
		h := NewHub()
		for _, k := range keys {
			h.Subscribe(k, &nopSub{})
		}
		s := &nopSub{}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			k := keys[i%nkeys]
			h.Subscribe(k, s)
			h.Unsubscribe(k, s)
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		h := NewHub()
		var seq atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			s := &nopSub{}
			i := int(seq.Add(1)) * 977
			for pb.Next() {
				k := keys[i%nkeys]
				h.Subscribe(k, s)
				h.Unsubscribe(k, s)
				i++
			}
		})
	})
	b.Run("parallel-with-publish", func(b *testing.B) {
		// Attach/detach while another goroutine keeps publishing to the keys.
		h := NewHub()
		for _, k := range keys {
			h.Subscribe(k, &nopSub{})
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			evs := []Event{{}}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := keys[i%nkeys]
				evs[0] = Event{Type: k.Type, ID: k.ID, User: k.ID}
				h.Publish(evs, nil)
			}
		}()
		var seq atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			s := &nopSub{}
			i := int(seq.Add(1)) * 977
			for pb.Next() {
				k := keys[i%nkeys]
				h.Subscribe(k, s)
				h.Unsubscribe(k, s)
				i++
			}
		})
		b.StopTimer()
		close(stop)
		<-done
	})
}

// realisticToken returns an RS256 access token of the login service's shape:
// header, claims with data {id, name, ...} and a 2048-bit signature (random
// bytes: ParseRequest does not verify it).
func realisticToken(tb testing.TB) string {
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`))
	now := time.Unix(1_800_000_000, 0)
	claims, err := json.Marshal(map[string]any{
		"iss": "dev.airlay.ru",
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
		"data": map[string]any{
			"id":    "5dad615eae019570fb4647ed",
			"name":  "Bob Example",
			"email": "bob@example.com",
			"roles": []string{"user"},
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	sig := make([]byte, 256)
	rand.Read(sig)
	tok := header + "." + enc.EncodeToString(claims) + "." + enc.EncodeToString(sig)
	if len(tok) < 550 || len(tok) > 750 {
		tb.Fatalf("token of %d bytes, want about 650", len(tok))
	}
	return tok
}

func BenchmarkParseRequest(b *testing.B) {
	tok := realisticToken(b)
	frames := map[string][]byte{
		"attach-issue":        request(tok, "attach", "issueUpdate", "610217e481f6fc54736209e0"),
		"attach-notification": request(tok, "attach", "notification", ""),
		"invalid-id":          request(tok, "attach", "issueUpdate", "610217e481f6fc54736209eZ"),
	}
	for _, name := range []string{"attach-issue", "attach-notification", "invalid-id"} {
		frame := frames[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				_, _ = ParseRequest(frame)
			}
		})
	}
}

func BenchmarkParsePublish(b *testing.B) {
	one := []byte(publishIssueExample)
	var batch []byte
	batch = append(batch, '[')
	for i := range 100 {
		if i > 0 {
			batch = append(batch, ',')
		}
		batch = fmt.Appendf(batch, `{"type":"issueUpdate","id":"%s","data":["status"]}`, hex24(i))
	}
	batch = append(batch, ']')
	for name, body := range map[string][]byte{"one": one, "batch=100": batch} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := ParsePublish(body, 1000); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	e := Event{Type: Notification, ID: "6a0000000000000000000001", User: "5dad615eae019570fb4647ed", Data: json.RawMessage(`[{"text":"hi"}]`)}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = e.AppendFrame(buf[:0], "0123456789abcdef:1733312345.17.0")
	}
}
