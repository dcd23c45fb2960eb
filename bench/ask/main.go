// Command ask measures the round trip of POST /api/ask against a running
// airlay server: -users frontends (one connection each, -tabs per user)
// attach request and reply at once to every request they get; -askers
// backends send -asks requests in all, each to a random user, and time
// each from the POST to its answer; meanwhile -conns other connections
// hold -keys issueUpdate subscriptions each and a publisher publishes
// -rate events per second to them (the background load). It prints one
// JSON line: p50, p99 and max of the round trip, the answers by status,
// and the deliveries of the background load. Bounded: -asks in all, and
// -max for the whole run.
//
//	wsbench setup-airlay -dir bench-airlay -port 8091
//	airlay-cli web_socket server --config bench-airlay/config.ini &
//	go run ./bench/ask -dir bench-airlay -conns 2000 -rate 2000 -asks 5000
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/airlay/airlay/auth"
	"github.com/gorilla/websocket"
	"gopkg.in/ini.v1"
)

type result struct {
	Label       string         `json:"label,omitempty"`
	Users       int            `json:"users"`
	Tabs        int            `json:"tabs"`
	Conns       int            `json:"conns"`
	Rate        float64        `json:"rate"`
	Asks        int            `json:"asks"`
	Askers      int            `json:"askers"`
	P50ms       float64        `json:"p50_ms"`
	P99ms       float64        `json:"p99_ms"`
	MaxMs       float64        `json:"max_ms"`
	Statuses    map[string]int `json:"statuses"`
	Published   int64          `json:"published"`
	Delivered   int64          `json:"delivered_background"`
	Seconds     float64        `json:"seconds"`
	AsksPerSec  float64        `json:"asks_per_s"`
	RefusedRepl int64          `json:"replies_refused"`
}

func main() {
	dir := flag.String("dir", "bench-airlay", "directory written by wsbench setup-airlay")
	users := flag.Int("users", 50, "users whose frontends answer requests")
	tabs := flag.Int("tabs", 2, "connections (tabs) per answering user: each gets every request, the first reply wins")
	conns := flag.Int("conns", 2000, "background connections receiving the published events")
	keys := flag.Int("keys", 2, "issueUpdate subscriptions per background connection")
	keyspace := flag.Int("keyspace", 200, "distinct objects of the background load")
	rate := flag.Float64("rate", 2000, "background events published per second")
	asks := flag.Int("asks", 5000, "requests in all")
	askers := flag.Int("askers", 8, "concurrent backends")
	maxRun := flag.Duration("max", 2*time.Minute, "longest run")
	label := flag.String("label", "", "free text for the JSON line")
	out := flag.String("json", "", "append the JSON line to this file")
	flag.Parse()

	cfg, err := ini.Load(filepath.Join(*dir, "config.ini"))
	if err != nil {
		log.Fatal(err)
	}
	sec := cfg.Section("webSocketEvents")
	base := "http://127.0.0.1:" + sec.Key("port").String()
	wsURL := "ws://127.0.0.1:" + sec.Key("port").String() + "/ws"
	pub := sec.Key("publish_token").String()
	key, err := auth.LoadPrivateKey(filepath.Join(*dir, "wsbench_jwt_private.pem"))
	if err != nil {
		log.Fatal(err)
	}
	userID := func(u int) string { return fmt.Sprintf("5dad615eae019570fb46%04x", u) }
	token := func(u int) string {
		t, err := auth.Mint(key, auth.MintOptions{UserID: userID(u), Issuer: sec.Key("jwt_issuer").String(), TTL: time.Hour})
		if err != nil {
			log.Fatal(err)
		}
		return t
	}
	objID := func(i int) string { return fmt.Sprintf("6102cccc81f6fc547362%04x", i) }
	ctx, cancel := context.WithTimeout(context.Background(), *maxRun)
	defer cancel()

	dial := func() *websocket.Conn {
		ws, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
		if err != nil {
			log.Fatal(err)
		}
		return ws
	}
	expectOK := func(ws *websocket.Conn) {
		var a struct{ Code int }
		if err := ws.ReadJSON(&a); err != nil || a.Code != 0 {
			log.Fatalf("attach: %v code %d", err, a.Code)
		}
	}
	var wg sync.WaitGroup
	var delivered, refused atomic.Int64
	var all []*websocket.Conn

	// Background connections: read and count.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < *conns; i++ {
		ws := dial()
		tok := token(1000 + i%100)
		for _, k := range rng.Perm(*keyspace)[:*keys] {
			_ = ws.WriteJSON(map[string]any{"auth": tok, "action": "attach", "event": map[string]string{"type": "issueUpdate", "id": objID(k)}})
			expectOK(ws)
		}
		all = append(all, ws)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
				delivered.Add(1)
			}
		}()
	}
	// Answering frontends: reply at once to each request.
	for u := 0; u < *users; u++ {
		tok := token(u)
		for t := 0; t < *tabs; t++ {
			ws := dial()
			_ = ws.WriteJSON(map[string]any{"auth": tok, "action": "attach", "event": map[string]string{"type": "request"}})
			expectOK(ws)
			all = append(all, ws)
			var wmu sync.Mutex
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					_, msg, err := ws.ReadMessage()
					if err != nil {
						return
					}
					var f struct {
						Type string          `json:"type"`
						ID   string          `json:"id"`
						Data json.RawMessage `json:"data"`
						Code *int            `json:"code"`
					}
					if json.Unmarshal(msg, &f) != nil {
						continue
					}
					if f.Code != nil && *f.Code == 5 {
						refused.Add(1) // the other tab's reply won
					}
					if f.Type == "request" {
						wmu.Lock()
						_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"auth":"`+tok+`","action":"reply","event":{"type":"request","id":"`+f.ID+`"},"data":`+string(f.Data)+`}`))
						wmu.Unlock()
					}
				}
			}()
		}
	}

	httpc := &http.Client{Timeout: 70 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: *askers + 4}}
	var published atomic.Int64
	pubCtx, stopPub := context.WithCancel(ctx)
	go func() {
		const batch = 10
		tick := time.NewTicker(time.Duration(float64(time.Second) * batch / *rate))
		defer tick.Stop()
		prng := rand.New(rand.NewPCG(3, 4))
		for {
			select {
			case <-pubCtx.Done():
				return
			case <-tick.C:
			}
			var b strings.Builder
			b.WriteByte('[')
			for j := 0; j < batch; j++ {
				if j > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, `{"type":"issueUpdate","id":"%s","data":["x"]}`, objID(prng.IntN(*keyspace)))
			}
			b.WriteByte(']')
			req, _ := http.NewRequest(http.MethodPost, base+"/api/events", strings.NewReader(b.String()))
			req.Header.Set("Authorization", "Bearer "+pub)
			if resp, err := httpc.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					published.Add(batch)
				}
			}
		}
	}()
	time.Sleep(2 * time.Second) // the background load runs before the first ask

	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	statuses := map[string]int{}
	t0 := time.Now()
	var aw sync.WaitGroup
	for a := 0; a < *askers; a++ {
		aw.Add(1)
		go func(a int) {
			defer aw.Done()
			prng := rand.New(rand.NewPCG(uint64(a), 9))
			for next.Add(1) <= int64(*asks) && ctx.Err() == nil {
				body := fmt.Sprintf(`{"user":"%s","data":["q",%d]}`, userID(prng.IntN(*users)), a)
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/ask?timeout=5", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+pub)
				start := time.Now()
				resp, err := httpc.Do(req)
				st := "error"
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					st = fmt.Sprint(resp.StatusCode)
				}
				d := time.Since(start)
				mu.Lock()
				statuses[st]++
				if st == "200" {
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		}(a)
	}
	aw.Wait()
	secs := time.Since(t0).Seconds()
	stopPub()
	for _, ws := range all {
		_ = ws.Close()
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	r := result{Label: *label, Users: *users, Tabs: *tabs, Conns: *conns, Rate: *rate, Asks: *asks, Askers: *askers,
		P50ms: q(0.50), P99ms: q(0.99), MaxMs: q(1), Statuses: statuses, Published: published.Load(), Delivered: delivered.Load(),
		Seconds: secs, AsksPerSec: float64(len(lat)) / secs, RefusedRepl: refused.Load()}
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			log.Fatal(err)
		}
		_, _ = f.Write(append(b, '\n'))
		f.Close()
	}
}
