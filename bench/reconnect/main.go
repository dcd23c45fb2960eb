// Command reconnect measures a reconnect storm against a running airlay
// server: conns connections with keys subscriptions each receive events
// while a publisher publishes at a steady rate; then every connection is
// cut at once (a deploy of a load balancer, a network blip), stays away for
// -away while events go on, and comes back, re-attaching each subscription
// with since (the position of the last event it got of it) or, with
// -since=false, without (the application would then reload every object).
// It reports the re-attaches per second of the storm, the server's CPU per
// re-attach (from /proc/PID/stat), how many were recovered and how many
// events were replayed.
//
//	wsbench setup-airlay -dir bench-airlay -port 8091
//	airlay-cli web_socket server --config bench-airlay/config.ini &
//	go run ./bench/reconnect -dir bench-airlay -pid $! -conns 5000 -keys 5 -since=true
package main

import (
	"bytes"
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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/airlay/airlay/auth"
	"github.com/gorilla/websocket"
	"gopkg.in/ini.v1"
)

type result struct {
	Label          string  `json:"label"`
	Since          bool    `json:"since"`
	Conns          int     `json:"conns"`
	Keys           int     `json:"keys"`
	Rate           float64 `json:"rate"`
	Away           string  `json:"away"`
	Warmup         string  `json:"warmup"`
	StormSeconds   float64 `json:"storm_seconds"`
	Attaches       int64   `json:"attaches"`
	PerSecond      float64 `json:"reattaches_per_second"`
	Recovered      int64   `json:"recovered"`
	NotRecovered   int64   `json:"not_recovered"`
	Plain          int64   `json:"plain"`
	Replayed       int64   `json:"replayed_events"`
	ServerCPUms    float64 `json:"server_cpu_ms"`
	CPUPerAttachUs float64 `json:"server_cpu_us_per_reattach"`
	Reloads        int64   `json:"reloads_needed"`
	Published      int64   `json:"events_published"`
}

type conn struct {
	ws   *websocket.Conn
	keys []string
	mu   sync.Mutex
	pos  map[string]string // key id -> last pos
	last string            // the latest pos of any key (the since of a key without one, as the clients do)
	// answers of the current connection's attaches
	answered chan struct{}
	want     int
	got      atomic.Int64
	reading  atomic.Bool // counting replays: events before every answer came
}

func main() {
	dir := flag.String("dir", "bench-airlay", "directory written by wsbench setup-airlay")
	pid := flag.Int("pid", 0, "server process id, for its CPU (0: not measured)")
	conns := flag.Int("conns", 5000, "connections")
	keys := flag.Int("keys", 5, "subscriptions per connection")
	keyspace := flag.Int("keyspace", 5000, "distinct objects")
	rate := flag.Float64("rate", 500, "events published per second, throughout")
	away := flag.Duration("away", time.Second, "how long the connections stay away")
	warmup := flag.Duration("warmup", 10*time.Second, "events before the cut (a connection that got none re-attaches without since)")
	since := flag.Bool("since", true, "re-attach with since")
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
	var tokens []string
	for u := 0; u < 100; u++ {
		t, err := auth.Mint(key, auth.MintOptions{UserID: fmt.Sprintf("5dad615eae019570fb46%04x", u), Issuer: sec.Key("jwt_issuer").String(), TTL: time.Hour})
		if err != nil {
			log.Fatal(err)
		}
		tokens = append(tokens, t)
	}
	objID := func(i int) string { return fmt.Sprintf("6102cccc81f6fc547362%04x", i) }
	rng := rand.New(rand.NewPCG(1, 2))
	cs := make([]*conn, *conns)
	for i := range cs {
		c := &conn{pos: map[string]string{}}
		for _, k := range rng.Perm(*keyspace)[:*keys] {
			c.keys = append(c.keys, objID(k))
		}
		cs[i] = c
	}
	var replayed, recovered, notRecovered, plain atomic.Int64
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	// open connects c and attaches its keys (with since when asked and
	// known); it returns once every answer came.
	open := func(i int, withSince bool) error {
		c := cs[i]
		ws, _, err := dialer.Dial(wsURL, nil)
		if err != nil {
			return err
		}
		c.ws = ws
		c.answered = make(chan struct{})
		c.want = len(c.keys)
		c.got.Store(0)
		c.reading.Store(true)
		tok := tokens[i%len(tokens)]
		go read(c, &recovered, &notRecovered, &plain)
		for _, k := range c.keys {
			req := map[string]any{"auth": tok, "action": "attach", "event": map[string]string{"type": "issueUpdate", "id": k}}
			c.mu.Lock()
			p := c.pos[k]
			if p == "" {
				p = c.last
			}
			c.mu.Unlock()
			if withSince && p != "" {
				req["since"] = p
			}
			b, _ := json.Marshal(req)
			if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
				return err
			}
		}
		select {
		case <-c.answered:
			return nil
		case <-time.After(30 * time.Second):
			return fmt.Errorf("conn %d: no answers within 30s", i)
		}
	}
	all := func(withSince bool) error {
		sem := make(chan struct{}, 200)
		var wg sync.WaitGroup
		var first atomic.Value
		for i := range cs {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if err := open(i, withSince); err != nil {
					first.CompareAndSwap(nil, err)
				}
			}()
		}
		wg.Wait()
		if e := first.Load(); e != nil {
			return e.(error)
		}
		return nil
	}
	if err := all(false); err != nil {
		log.Fatal(err)
	}
	recovered.Store(0)
	notRecovered.Store(0)
	plain.Store(0)
	replayed.Store(0)

	// The publisher: batches of 10 at the rate, until stopped.
	var published atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		httpc := &http.Client{Timeout: 10 * time.Second}
		prng := rand.New(rand.NewPCG(3, 4))
		const batch = 10
		every := time.Duration(float64(time.Second) * batch / *rate)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
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
			resp, err := httpc.Do(req)
			if err != nil {
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				published.Add(batch)
			}
		}
	}()
	time.Sleep(*warmup) // connections get positions

	// The cut: every socket closed at once; events go on meanwhile.
	for _, c := range cs {
		_ = c.ws.NetConn().Close()
	}
	time.Sleep(*away)
	cpu0, rep0 := cpuOf(*pid), metric(base, "airlay_history_replayed_total")
	t0 := time.Now()
	if err := all(*since); err != nil {
		log.Fatal(err)
	}
	storm := time.Since(t0)
	cpu := cpuOf(*pid) - cpu0
	replayed.Store(int64(metric(base, "airlay_history_replayed_total") - rep0))
	time.Sleep(500 * time.Millisecond)
	stop()
	<-pubDone
	n := int64(*conns * *keys)
	r := result{
		Label: *label, Since: *since, Conns: *conns, Keys: *keys, Rate: *rate, Away: away.String(), Warmup: warmup.String(),
		StormSeconds: storm.Seconds(), Attaches: n, PerSecond: float64(n) / storm.Seconds(),
		Recovered: recovered.Load(), NotRecovered: notRecovered.Load(), Plain: plain.Load(), Replayed: replayed.Load(),
		ServerCPUms: cpu.Seconds() * 1000, CPUPerAttachUs: cpu.Seconds() * 1e6 / float64(n), Published: published.Load(),
	}
	r.Reloads = r.NotRecovered + r.Plain
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			_, _ = f.Write(append(b, '\n'))
			f.Close()
		}
	}
	for _, c := range cs {
		_ = c.ws.Close()
	}
}

// read reads c's frames: answers (counted until all came) and events (the
// last pos per key).
func read(c *conn, recovered, notRecovered, plain *atomic.Int64) {
	ws := c.ws
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return
		}
		if bytes.HasPrefix(msg, []byte(`{"status"`)) {
			var a struct {
				Code      int   `json:"code"`
				Recovered *bool `json:"recovered"`
			}
			_ = json.Unmarshal(msg, &a)
			switch {
			case a.Recovered == nil:
				plain.Add(1)
			case *a.Recovered:
				recovered.Add(1)
			default:
				notRecovered.Add(1)
			}
			if int(c.got.Add(1)) == c.want {
				close(c.answered)
			}
			continue
		}
		var e struct {
			ID  string `json:"id"`
			Pos string `json:"pos"`
		}
		if json.Unmarshal(msg, &e) != nil {
			continue
		}
		c.mu.Lock()
		c.pos[e.ID], c.last = e.Pos, e.Pos
		c.mu.Unlock()
	}
}

// metric reads one counter of the server's /metrics (0 when absent).
func metric(base, name string) float64 {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name+" ") {
			v, _ := strconv.ParseFloat(strings.TrimPrefix(l, name+" "), 64)
			return v
		}
	}
	return 0
}

// cpuOf returns the user+system CPU time of process pid.
func cpuOf(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // clock ticks (USER_HZ 100)
}
