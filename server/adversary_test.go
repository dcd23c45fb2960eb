package server

// The adversarial suite: each attack on a server open to the internet, as
// a client with no token (or a careless one) would make it, with its exact
// expected outcome. Real server, real sockets, every scenario bounded in
// time. Run alone with
//
//	go test -run TestAdversary -v ./server/
//
// The figures of BENCHMARKS.md ("Hostile clients") come from the same
// scenarios at full length: go test -run TestAdversaryFigures -v ./server/ -adversary.figures

import (
	"bufio"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/airlay/airlay/events"
)

var adversaryFigures = flag.Bool("adversary.figures", false, "run TestAdversaryFigures at full length and print the figures of BENCHMARKS.md")

// advToken signs claims edited by edit with the test key; its header may be
// edited too (nil: none).
func advToken(t testing.TB, e *testEnv, user string, edit func(jwt.MapClaims), header map[string]any) string {
	t.Helper()
	c := wsClaims(e, user)
	if edit != nil {
		edit(c)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(privateKey(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// forged is a token of userA signed by a stranger's key: one RSA check each.
func forged(t testing.TB, e *testEnv) string {
	return wsSign(t, jwt.SigningMethodRS256, wsOtherKey(), wsClaims(e, userA))
}

// readUntilClose reads every frame until the connection ends and returns the
// answers' codes (events are skipped) and the close code (0: no close frame,
// the connection just ended).
func readUntilClose(t testing.TB, c *wsClient, timeout time.Duration) (codes []int, closeCode int, closeText string) {
	t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
	for {
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return codes, ce.Code, ce.Text
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("connection still open after %v (answers %v)", timeout, codes)
			}
			return codes, 0, err.Error()
		}
		if i := strings.Index(string(msg), `"code":`); i >= 0 && !strings.Contains(string(msg), `"type":`) {
			n, _ := strconv.Atoi(strings.TrimRight(string(msg[i+7:]), "}"))
			codes = append(codes, n)
		}
	}
}

// 1. Pings more often than the pong's 1 s write deadline, on a connection
// with nothing else to write: the client stays, and is not counted as a
// slow consumer.
func TestAdversaryPingFlood(t *testing.T) {
	e := newEnv(t, nil) // write_timeout 10s: the fixed slack was 1.25 s
	c := e.dial()
	c.do(e.token(userA, time.Hour), "attach", "issueUpdate", issue1, 0)
	frames := make(chan []byte, 16)
	ended := make(chan error, 1)
	_ = c.ws.SetReadDeadline(time.Time{})
	go func() { // reads the pongs (and later the event)
		for {
			_, msg, err := c.ws.ReadMessage()
			if err != nil {
				ended <- err
				return
			}
			frames <- msg
		}
	}()
	for _, every := range []time.Duration{100 * time.Millisecond, 300 * time.Millisecond} {
		for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); {
			if err := c.ws.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)); err != nil {
				t.Fatalf("pinging every %v: %v (dropped)", every, err)
			}
			select {
			case err := <-ended:
				t.Fatalf("pinging every %v: dropped: %v", every, err)
			case <-time.After(every):
			}
		}
	}
	e.publish("", `{"type":"issueUpdate","id":"`+issue1+`"}`)
	select {
	case m := <-frames:
		if !strings.Contains(string(m), `"type":"issueUpdate"`) {
			t.Fatalf("got %s", m)
		}
	case err := <-ended:
		t.Fatalf("dropped: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	if n := wsMetric(t, e, "airlay_slow_consumer_disconnects_total"); n != 0 {
		t.Fatalf("%v slow consumers", n)
	}
}

// 2. A publish of max_publish_events (1000, the default) to one key, with the
// default send_queue (256): every prompt reader gets all of it, in order.
func TestAdversaryLargePublish(t *testing.T) {
	e := newEnv(t, nil)
	const readers, n = 3, 1000
	cs := make([]*wsClient, readers)
	for i := range cs {
		cs[i] = e.dial()
		cs[i].do(e.token(userA, time.Hour), "attach", "issueUpdate", issue1, 0)
	}
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"type":"issueUpdate","id":"%s","data":[%d]}`, issue1, i)
	}
	b.WriteByte(']')
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				m, err := c.tryRead(10 * time.Second)
				if err != nil {
					errs <- fmt.Errorf("event %d: %v", i, err)
					return
				}
				if m["data"].([]any)[0] != float64(i) {
					errs <- fmt.Errorf("event %d carries %v", i, m["data"])
					return
				}
			}
		}()
	}
	status, ans := wsPublish(t, e, "?wait=10", b.String())
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if status != 200 || ans["delivered"] != float64(readers*n) || ans["pending"] != 0.0 {
		t.Fatalf("publish: %d %v, want delivered %d", status, ans, readers*n)
	}
}

// 3. No valid token within auth_timeout: closed with 4002, whatever the
// client does meanwhile (answer pings, send garbage, send no token).
func TestAdversaryAuthTimeout(t *testing.T) {
	const timeout = 400 * time.Millisecond
	e := newEnv(t, func(c *Config) {
		c.AuthTimeout = timeout
		c.PingInterval = 100 * time.Millisecond
		c.PongTimeout = time.Second
	})
	behaviours := map[string]func(c *wsClient, stop <-chan struct{}){
		"silent, answers pings": func(*wsClient, <-chan struct{}) {},
		"sends garbage": func(c *wsClient, stop <-chan struct{}) {
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					_ = c.ws.WriteMessage(websocket.TextMessage, []byte(`{"nope":1}`))
				}
			}
		},
		"sends no token": func(c *wsClient, stop <-chan struct{}) {
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					_ = c.ws.WriteMessage(websocket.TextMessage, []byte(request("", "attach", "issueUpdate", issue1)))
				}
			}
		},
		"sends forged tokens, fewer than max_token_failures": func(c *wsClient, stop <-chan struct{}) {
			for range 3 {
				_ = c.ws.WriteMessage(websocket.TextMessage, []byte(request(forged(t, e), "attach", "issueUpdate", issue1)))
			}
		},
	}
	var wg sync.WaitGroup
	for name, act := range behaviours {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := e.dial()
			opened := time.Now()
			stop := make(chan struct{})
			go act(c, stop)
			_, code, text := readUntilClose(t, c, 5*time.Second)
			close(stop)
			took := time.Since(opened)
			if code != 4002 || text != "authentication timeout" {
				t.Errorf("%s: closed with %d %q, want 4002", name, code, text)
			}
			if took < timeout-50*time.Millisecond || took > timeout+time.Second {
				t.Errorf("%s: closed after %v, want about %v", name, took, timeout)
			}
		}()
	}
	// A client that authenticates in time stays.
	ok := e.dial()
	ok.do(e.token(userA, time.Hour), "attach", "issueUpdate", issue1, 0)
	wg.Wait()
	ok.do(e.token(userA, time.Hour), "attach", "issueUpdate", issue2, 0)
}

// 4. Invalid tokens: at most max_token_failures code-2 answers in a row,
// then 4003 right after the last; at most that many RSA checks per
// connection without a valid token; only a valid token ends a row.
func TestAdversaryTokenFailures(t *testing.T) {
	e := newEnv(t, nil) // max_token_failures 5
	bad := forged(t, e)
	expired := wsExpired(t, e, userA)
	good := e.token(userA, time.Hour)
	garbage := `{"auth":1}`
	tests := []struct {
		name    string
		frames  []string
		answers []int
		closed  bool // 4003 after the answers
		rsa     int64
	}{
		{"forged x5", slices.Repeat([]string{request(bad, "attach", "issueUpdate", issue1)}, 5), []int{2, 2, 2, 2, 2}, true, 5},
		{"forged x12, pipelined: 5 answers, 5 RSA checks", slices.Repeat([]string{request(bad, "attach", "issueUpdate", issue1)}, 12), []int{2, 2, 2, 2, 2}, true, 5},
		{"expired x5: no RSA check at all", slices.Repeat([]string{request(expired, "attach", "issueUpdate", issue1)}, 5), []int{2, 2, 2, 2, 2}, true, 0},
		{"codes 1 and 5 neither count nor reset", []string{
			request(bad, "attach", "issueUpdate", issue1), request(bad, "attach", "issueUpdate", issue1),
			garbage, request("", "attach", "issueUpdate", issue1),
			request(bad, "attach", "issueUpdate", issue1), request(bad, "attach", "issueUpdate", issue1), request(bad, "attach", "issueUpdate", issue1),
		}, []int{2, 2, 5, 1, 2, 2, 2}, true, 5},
		{"a valid token ends the row", append(append(
			slices.Repeat([]string{request(bad, "attach", "issueUpdate", issue1)}, 4),
			request(good, "attach", "issueUpdate", issue1)),
			slices.Repeat([]string{request(bad, "attach", "issueUpdate", issue1)}, 4)...),
			[]int{2, 2, 2, 2, 0, 2, 2, 2, 2}, false, 9},
		{"another user's valid token counts", append(
			[]string{request(good, "attach", "issueUpdate", issue1)},
			slices.Repeat([]string{request(e.token(userB, time.Hour), "attach", "issueUpdate", issue1)}, 5)...),
			[]int{0, 2, 2, 2, 2, 2}, true, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.srv.verifier.RSAVerifications()
			c := e.dial()
			for _, f := range tc.frames {
				if err := c.ws.WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
					t.Fatal(err)
				}
			}
			if !tc.closed {
				for i, want := range tc.answers {
					if m := c.read(5 * time.Second); m["code"] != float64(want) {
						t.Fatalf("answer %d: %v, want code %d", i, m, want)
					}
				}
				c.expectNothing(200 * time.Millisecond)
				return
			}
			codes, code, text := readUntilClose(t, c, 5*time.Second)
			if !slices.Equal(codes, tc.answers) || code != 4003 || text != "too many invalid tokens" {
				t.Fatalf("answers %v then close %d %q; want %v then 4003", codes, code, text, tc.answers)
			}
			if n := e.srv.verifier.RSAVerifications() - before; tc.rsa >= 0 && n != tc.rsa {
				t.Fatalf("%d RSA verifications, want %d", n, tc.rsa)
			}
		})
	}
}

// 5. Refused upgrades do not flood the log: one warning per interval with
// the number held back.
func TestAdversaryRefusedUpgradesLog(t *testing.T) {
	const interval, flood = 300 * time.Millisecond, 1500 * time.Millisecond
	cfg := Defaults()
	cfg.File, cfg.Address, cfg.Port = "test.ini", "127.0.0.1", 0
	cfg.JWTPublicKey = writePublicKey(t, t.TempDir())
	cfg.PublishToken = testPublishToken
	cfg.MaxConnections = 1
	e := startEnv(t, &cfg, Options{WarnInterval: interval})
	held := e.dial()
	held.do(e.token(userA, time.Hour), "attach", "issueUpdate", issue1, 0)
	refused := floodUpgrades(t, e, 4, flood)
	time.Sleep(interval + 100*time.Millisecond) // the last summary line
	lines := strings.Count(e.logs.String(), "max_connections reached")
	if refused < 100 {
		t.Fatalf("only %d upgrades refused: the flood did not happen", refused)
	}
	maxLines := int(flood/interval) + 2
	if lines < 1 || lines > maxLines {
		t.Fatalf("%d warnings for %d refused upgrades in %v, want 1 to %d", lines, refused, flood, maxLines)
	}
	if !strings.Contains(e.logs.String(), "suppressed=") {
		t.Fatalf("no line says how many were held back:\n%s", e.logs.String())
	}
	t.Logf("%d refused upgrades, %d warning lines", refused, lines)
}

// floodUpgrades sends /ws upgrades from n keep-alive sockets for d and
// returns how many were answered 503.
func floodUpgrades(t testing.TB, e *testEnv, n int, d time.Duration) int64 {
	var refused atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
			for time.Now().Before(end) {
				if _, err := io.WriteString(conn, req); err != nil {
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusServiceUnavailable {
					refused.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return refused.Load()
}

// 6. Shutdown while HTTP requests hold on (a publish with a slow body, a
// ?wait on a consumer that does not read): every client gets its 1001 at
// the start, not after shutdown_timeout, and none gets 1006.
func TestAdversaryShutdownWithStuckRequests(t *testing.T) {
	e := newEnv(t, nil)
	const clients = 20
	cs := make([]*wsClient, clients)
	for i := range cs {
		cs[i] = e.dial()
		cs[i].do(e.token(userA, time.Hour), "attach", "issueUpdate", issue1, 0)
	}
	// A stuck consumer for the ?wait: attached, never reads, small buffer.
	stuck := e.dial()
	if tcp, ok := stuck.ws.NetConn().(*net.TCPConn); ok {
		_ = tcp.SetReadBuffer(4096)
	}
	stuck.do(e.token(userB, time.Hour), "attach", "issueUpdate", issue2, 0)
	big := `{"type":"issueUpdate","id":"` + issue2 + `","data":["` + strings.Repeat("z", 200<<10) + `"]}`
	go func() { _, _ = postRaw(e, "/api/events?wait=30", "["+big+","+big+","+big+","+big+"]", 0) }()
	// A publish whose body never completes.
	slow, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "POST /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n{\"type\":", testPublishToken)
	time.Sleep(200 * time.Millisecond) // both requests in progress

	start := time.Now()
	go e.shutdown(3 * time.Second)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, code, text := readUntilClose(t, c, 5*time.Second)
			if code != 1001 {
				t.Errorf("client %d: close %d %q, want 1001", i, code, text)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("client %d: 1001 after %v, want at once", i, took)
			}
		}()
	}
	wg.Wait()
}

// postRaw posts body with the publish token over a fresh connection and
// returns the status; timeout 0: none.
func postRaw(e *testEnv, path, body string, timeout time.Duration) (int, error) {
	req, err := http.NewRequest(http.MethodPost, e.base+path, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+testPublishToken)
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// 7. JWT leniencies: each refused with code 2.
func TestAdversaryJWTStrict(t *testing.T) {
	e := newEnv(t, nil)
	valid := e.token(userA, time.Hour)
	p := strings.Split(valid, ".")
	alphabet := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, p[2][len(p[2])-1])
	exp := time.Now().Add(time.Hour).Unix()
	tokens := map[string]string{
		"exp as a string":               advToken(t, e, userA, func(c jwt.MapClaims) { c["exp"] = strconv.FormatInt(exp, 10) }, nil),
		"nbf as a string":               advToken(t, e, userA, func(c jwt.MapClaims) { c["nbf"] = strconv.FormatInt(exp-7200, 10) }, nil),
		"iat as a string":               advToken(t, e, userA, func(c jwt.MapClaims) { c["iat"] = strconv.FormatInt(exp-3600, 10) }, nil),
		"crit names an extension":       advToken(t, e, userA, nil, map[string]any{"crit": []string{"b64"}, "b64": false}),
		"unused signature bits set":     p[0] + "." + p[1] + "." + p[2][:len(p[2])-1] + string(alphabet[last|1]),
		"padded signature":              valid + "=",
		"padded payload":                p[0] + "." + p[1] + strings.Repeat("=", (4-len(p[1])%4)%4+4) + "." + p[2],
		"standard base64 signature":     p[0] + "." + p[1] + "." + base64.StdEncoding.EncodeToString(mustDecode(t, p[2])),
		"alg none":                      wsSign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, wsClaims(e, userA)),
		"HS256 keyed by the public key": wsSign(t, jwt.SigningMethodHS256, []byte("-----BEGIN PUBLIC KEY-----"), wsClaims(e, userA)),
	}
	for name, tok := range tokens {
		t.Run(name, func(t *testing.T) {
			c := wsDial(t, e)
			c.do(tok, "attach", "issueUpdate", issue1, 2)
			c.do(valid, "attach", "issueUpdate", issue1, 0) // the canonical spelling passes
		})
	}
}

func mustDecode(t testing.TB, s string) []byte {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// 8. A slow request body is bounded in time on every endpoint, and does
// not hold the shutdown.
func TestAdversarySlowBodies(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.BodyTimeout = 300 * time.Millisecond
		c.UploadTimeout = 500 * time.Millisecond
	})
	cases := []struct {
		name, head string
		within     time.Duration
		status     int
	}{
		{"publish, body stalls", "POST /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testPublishToken + "\r\nContent-Length: 100\r\n\r\n{\"type\"", time.Second, http.StatusRequestTimeout},
		{"publish, body trickles", "POST /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testPublishToken + "\r\nContent-Length: 1000\r\n\r\n", time.Second, http.StatusRequestTimeout},
		{"upload, body trickles", "POST /api/files?name=a.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testPublishToken + "\r\nContent-Length: 100000\r\n\r\n", 1500 * time.Millisecond, http.StatusBadRequest},
	}
	var wg sync.WaitGroup
	for _, tc := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			start := time.Now()
			io.WriteString(conn, tc.head)
			stop := make(chan struct{})
			defer close(stop)
			if strings.Contains(tc.name, "trickles") {
				go func() { // a byte every 50 ms: never idle, never done
					for {
						select {
						case <-stop:
							return
						case <-time.After(50 * time.Millisecond):
							if _, err := conn.Write([]byte(" ")); err != nil {
								return
							}
						}
					}
				}()
			}
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Errorf("%s: %v after %v", tc.name, err, time.Since(start))
				return
			}
			resp.Body.Close()
			if took := time.Since(start); resp.StatusCode != tc.status || took > tc.within {
				t.Errorf("%s: %d after %v, want %d within %v", tc.name, resp.StatusCode, took, tc.status, tc.within)
			}
		}()
	}
	wg.Wait()
}

// 9. Any client frame is a sign of life: a client that never answers pings
// but keeps sending requests (or pings) stays; silence gets it dropped.
func TestAdversaryFramesKeepAlive(t *testing.T) {
	const pongTimeout = 400 * time.Millisecond
	e := newEnv(t, func(c *Config) { c.PingInterval = 100 * time.Millisecond; c.PongTimeout = pongTimeout })
	for _, how := range []string{"requests", "pings"} {
		t.Run(how, func(t *testing.T) {
			c := wsDial(t, e)
			c.ws.SetPingHandler(func(string) error { return nil }) // never pongs
			frames := make(chan []byte, 64)
			ended := make(chan error, 1)
			go func() { // the reader runs the handlers and collects the answers
				for {
					_, msg, err := c.ws.ReadMessage()
					if err != nil {
						ended <- err
						return
					}
					frames <- msg
				}
			}()
			tok := e.token(userA, time.Hour)
			send := func(f string) {
				if err := c.ws.WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
					t.Fatalf("dropped: %v", err)
				}
				select {
				case m := <-frames:
					if !strings.Contains(string(m), `"code":0`) {
						t.Fatalf("answer %s", m)
					}
				case err := <-ended:
					t.Fatalf("dropped: %v", err)
				case <-time.After(2 * time.Second):
					t.Fatal("no answer")
				}
			}
			send(request(tok, "attach", "issueUpdate", issue1))
			for range 12 { // 1.2 s: three pong timeouts
				if how == "requests" {
					send(request(tok, "attach", "issueUpdate", issue1))
				} else if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second)); err != nil {
					t.Fatalf("dropped: %v", err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			send(request(tok, "attach", "issueUpdate", issue2)) // still open
			start := time.Now()
			select { // silent now: dropped
			case <-ended:
				if took := time.Since(start); took > pongTimeout+time.Second {
					t.Fatalf("dropped %v after falling silent, want about %v", took, pongTimeout)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("a silent connection was kept")
			}
		})
	}
}

// 10. The answer to a request comes before the 4001 that its own token
// causes (a token inside the leeway has expired already).
func TestAdversaryAnswerBeforeExpiry(t *testing.T) {
	e := newEnv(t, nil) // token_leeway 5s
	for i := range 5 {
		c := e.dial()
		tok := wsTokenWith(t, e, userA, func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-2 * time.Second).Unix() })
		c.sendText(request(tok, "attach", "issueUpdate", issue1))
		codes, code, text := readUntilClose(t, c, 5*time.Second)
		if !slices.Equal(codes, []int{0}) || code != 4001 || text != "token expired" {
			t.Fatalf("round %d: answers %v then close %d %q, want [0] then 4001", i, codes, code, text)
		}
	}
}

// 11. A frame over max_message_bytes while the client is still sending it:
// the client gets 1009, not a reset. The client here writes the whole frame
// before it reads, as browsers do; a reset fails that write, and a browser
// then reports 1006 without reading what came before it.
func TestAdversaryHugeFrame(t *testing.T) {
	e := newEnv(t, nil)
	for i := range 3 {
		c := e.dial()
		_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := c.ws.WriteMessage(websocket.TextMessage, make([]byte, 10<<20)); err != nil {
			t.Fatalf("round %d: the client's write of the frame failed (a browser shows 1006): %v", i, err)
		}
		_, code, text := readUntilClose(t, c, 10*time.Second)
		if code != websocket.CloseMessageTooBig {
			t.Fatalf("round %d: %d %q, want 1009", i, code, text)
		}
	}
}

// 12. /metrics can be kept private.
func TestAdversaryMetricsToken(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MetricsToken = "scrape-secret" })
	for _, tc := range []struct {
		authz  string
		status int
		code   any
	}{{"", 401, 1.0}, {"Bearer nope", 401, 2.0}, {"Bearer " + testPublishToken, 401, 2.0}, {"Bearer scrape-secret", 200, nil}} {
		req, _ := http.NewRequest(http.MethodGet, e.base+"/metrics", nil)
		if tc.authz != "" {
			req.Header.Set("Authorization", tc.authz)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Fatalf("%q: %d", tc.authz, resp.StatusCode)
		}
		if tc.status == 200 && !strings.Contains(string(body), "airlay_connections ") {
			t.Fatalf("%q: no metrics in %q", tc.authz, body[:min(len(body), 200)])
		}
		if tc.status != 200 && (!strings.Contains(string(body), fmt.Sprintf(`"code":%v`, tc.code)) || strings.Contains(string(body), "airlay_")) {
			t.Fatalf("%q: %s", tc.authz, body)
		}
	}
}

// 13. The malformed frames and forged tokens that held before, as
// scenarios of this suite: each on its own connection, exact answer, and
// the connection goes on.
func TestAdversaryMalformed(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.token(userA, time.Hour)
	frames := []struct {
		name  string
		frame string
		code  int
	}{
		{"not JSON", `{"auth":`, 5},
		{"an array", `[1,2]`, 5},
		{"a string", `"attach"`, 5},
		{"null", `null`, 5},
		{"unknown action", request(tok, "subscribe", "issueUpdate", issue1), 5},
		{"unknown type", request(tok, "attach", "issueupdate", issue1), 5},
		{"id not an ObjectId", request(tok, "attach", "issueUpdate", "610217e481f6fc54736209eZ"), 5},
		{"id missing", request(tok, "attach", "issueUpdate", ""), 5},
		{"auth a number", `{"auth":7,"action":"attach","event":{"type":"issueUpdate","id":"` + issue1 + `"}}`, 5},
		{"deeply nested", `{"auth":"x","action":"attach","event":` + strings.Repeat(`{"a":`, 500) + `1` + strings.Repeat(`}`, 500) + `}`, 5},
		{"no auth", request("", "attach", "issueUpdate", issue1), 1},
		{"forged", request(forged(t, e), "attach", "issueUpdate", issue1), 2},
		{"random bytes as token", request("eyJ.eyJ.sig", "attach", "issueUpdate", issue1), 2},
	}
	for _, f := range frames {
		t.Run(f.name, func(t *testing.T) {
			c := wsDial(t, e)
			c.sendText(f.frame)
			c.expectCode(f.code)
			c.do(tok, "attach", "issueUpdate", issue1, 0)
		})
	}
	t.Run("binary frame", func(t *testing.T) {
		c := wsDial(t, e)
		if err := c.ws.WriteMessage(websocket.BinaryMessage, []byte(request(tok, "attach", "issueUpdate", issue1))); err != nil {
			t.Fatal(err)
		}
		c.expectCode(5)
		c.do(tok, "attach", "issueUpdate", issue1, 0)
	})
	t.Run("invalid UTF-8", func(t *testing.T) {
		c := wsDial(t, e)
		c.sendText("{\"auth\":\"\xff\"}")
		if _, code, _ := readUntilClose(t, c, 5*time.Second); code != events.InvalidUTF8.Code {
			t.Fatalf("close %d, want 1007", code)
		}
	})
}

// The figures of BENCHMARKS.md ("Hostile clients"), in one run: healthy
// clients' delivery latency without and with a flood of invalid tokens from
// four sockets that reconnect as soon as they are closed, the CPU one such
// connection costs, and the log lines of refused upgrades. Short by
// default (the flooders must be closed within a second); -adversary.figures
// runs it at full length.
func TestAdversaryFigures(t *testing.T) {
	phase, logFlood := 1500*time.Millisecond, time.Duration(0)
	if *adversaryFigures {
		phase, logFlood = 10*time.Second, 10*time.Second
	}
	e := newEnv(t, func(c *Config) { c.LogLevel = slog.LevelInfo })
	const healthy, rate = 50, 20 // clients, events per second
	var mu sync.Mutex
	var lat []time.Duration
	for range healthy {
		c := e.dial()
		c.do(e.token(userA, time.Hour), "attach", "issueUpdate", issue1, 0)
		_ = c.ws.SetReadDeadline(time.Time{})
		go func() {
			for {
				_, msg, err := c.ws.ReadMessage()
				if err != nil {
					return
				}
				i := strings.Index(string(msg), `"data":[`)
				j := strings.IndexByte(string(msg[i+8:]), ']')
				sent, _ := strconv.ParseInt(string(msg[i+8:i+8+j]), 10, 64)
				d := time.Since(time.Unix(0, sent))
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	measure := func(d time.Duration) []time.Duration {
		mu.Lock()
		lat = lat[:0]
		mu.Unlock()
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
			e.publish("", fmt.Sprintf(`{"type":"issueUpdate","id":"%s","data":[%d]}`, issue1, time.Now().UnixNano()))
		}
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		out := slices.Clone(lat)
		slices.Sort(out)
		return out
	}
	pct := func(s []time.Duration, p float64) time.Duration {
		if len(s) == 0 {
			return 0
		}
		return s[min(len(s)-1, int(float64(len(s))*p))]
	}

	quiet := measure(phase)

	// The flood: 4 sockets, forged tokens as fast as the server answers,
	// a new connection as soon as one is closed.
	bad := forged(t, e)
	rsaBefore := e.srv.verifier.RSAVerifications()
	stop := make(chan struct{})
	flood := startFlood(e, bad, 0, stop)
	flooded := measure(phase)
	close(stop)
	conns, maxLife := flood()
	rsa := e.srv.verifier.RSAVerifications() - rsaBefore

	// CPU of one attacker connection: the flood alone (each sends exactly
	// max_token_failures frames), server and attacker in this one process
	// (an upper bound of the server's share).
	cpu0 := processCPU(t)
	t0 := time.Now()
	stop = make(chan struct{})
	flood = startFlood(e, bad, e.cfg.MaxTokenFailures, stop)
	time.Sleep(phase)
	close(stop)
	alone, _ := flood()
	cpuPerConn := (processCPU(t) - cpu0) / time.Duration(max(1, alone))
	floodSecs := time.Since(t0).Seconds()

	t.Logf("healthy p50/p99 without flood: %v / %v (%d deliveries)", pct(quiet, .5), pct(quiet, .99), len(quiet))
	t.Logf("healthy p50/p99 with flood:    %v / %v (%d deliveries); p99 ratio %.2f", pct(flooded, .5), pct(flooded, .99), len(flooded), float64(pct(flooded, .99))/float64(max(1, pct(quiet, .99))))
	t.Logf("flood: %d connections, %d RSA verifications (%.1f per connection), longest life %v",
		conns, rsa, float64(rsa)/float64(max(1, conns)), maxLife)
	t.Logf("attacker connection alone: %d in %.1fs, %v of CPU each (server and attacker together)", alone, floodSecs, cpuPerConn)
	if maxLife > time.Second {
		t.Errorf("a flooder lived %v, want under a second", maxLife)
	}
	if conns == 0 || rsa > int64(e.cfg.MaxTokenFailures)*conns {
		t.Errorf("%d RSA verifications for %d flood connections, want at most %d each", rsa, conns, e.cfg.MaxTokenFailures)
	}
	if logFlood > 0 {
		held := e.dial() // max_connections: fill it, then flood refused upgrades
		_ = held
		e.srv.cfg.MaxConnections = int(e.srv.connCount.Load())
		before := strings.Count(e.logs.String(), "\n")
		refused := floodUpgrades(t, e, 4, logFlood)
		lines := strings.Count(e.logs.String(), "\n") - before
		t.Logf("refused upgrades: %d in %v from 4 keep-alive sockets, %d log lines", refused, logFlood, lines)
	}
	// The healthy readers end with their connections, at the cleanup.
}

// startFlood starts 4 sockets that each connect, send token as an attach
// (perConn times, or without end when 0) and read until the server closes
// them, then connect again, until stop is closed. The func it returns waits
// for them and gives the number of connections and the longest one's life.
func startFlood(e *testEnv, token string, perConn int, stop <-chan struct{}) func() (conns int64, longest time.Duration) {
	var n, maxLife atomic.Int64
	var wg sync.WaitGroup
	frame := []byte(request(token, "attach", "issueUpdate", issue1))
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ws, _, err := websocket.DefaultDialer.Dial(e.ws, nil)
				if err != nil {
					continue
				}
				n.Add(1)
				start := time.Now()
				if perConn == 0 {
					go func() {
						for ws.WriteMessage(websocket.TextMessage, frame) == nil {
						}
					}()
				} else {
					for range perConn {
						_ = ws.WriteMessage(websocket.TextMessage, frame)
					}
				}
				for {
					if _, _, err := ws.ReadMessage(); err != nil {
						break
					}
				}
				if life := int64(time.Since(start)); life > maxLife.Load() {
					maxLife.Store(life)
				}
				ws.Close()
			}
		}()
	}
	return func() (int64, time.Duration) {
		wg.Wait()
		return n.Load(), time.Duration(maxLife.Load())
	}
}

// processCPU returns the user and system CPU this process has used.
func processCPU(t testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
