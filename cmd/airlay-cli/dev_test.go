package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlay/airlay/internal/testkit"
	"github.com/gorilla/websocket"
)

// devProc is a running `web_socket dev`.
type devProc struct {
	cmd            *exec.Cmd
	stdout, stderr *testkit.Buffer
	exited         chan struct{}
}

func startDev(t *testing.T, cwd string, args ...string) *devProc {
	t.Helper()
	p := &devProc{cmd: exec.Command(bin, append([]string{"web_socket", "dev"}, args...)...), stdout: &testkit.Buffer{}, stderr: &testkit.Buffer{}, exited: make(chan struct{})}
	p.cmd.Dir = cwd
	p.cmd.Env = cleanEnv()
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("dev stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

// devMessageLine finds the start-up message's WebSocket line.
var devWSLine = regexp.MustCompile(`(?m)^  WebSocket  ws://(127\.0\.0\.1:\d+)/ws$`)

// waitMessage waits for the start-up message and returns the server's
// address.
func (p *devProc) waitMessage(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if m := devWSLine.FindStringSubmatch(p.stderr.String()); m != nil && strings.Contains(p.stderr.String(), "Stop it with Ctrl-C.") {
			return m[1]
		}
		select {
		case <-p.exited:
			t.Fatalf("dev exited (code %d) before its message", p.cmd.ProcessState.ExitCode())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no start-up message within 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The README's first command on a fresh checkout: one command gives a
// server that publishes, takes the token it wrote, serves the live page,
// and says how; the secrets stay in files, out of the output; a second
// start keeps the keys and the secret.
func TestDevServer(t *testing.T) {
	cwd := t.TempDir()
	p := startDev(t, cwd, "--port", "0")
	addr := p.waitMessage(t)
	base := "http://" + addr
	dir := filepath.Join(cwd, "dev")
	read := func(name string) string { return strings.TrimSpace(string(readFile(t, filepath.Join(dir, name)))) }
	secret, tok := read("publish_token"), read("token")
	if secret == "" || tok == "" {
		t.Fatalf("publish secret %q, token %q", secret, tok)
	}
	for _, name := range []string{"publish_token", "token", "jwt-private.pem", "config.ini"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", name, err, fi.Mode().Perm())
		}
	}
	out := p.stderr.String() + p.stdout.String()
	if strings.Contains(out, secret) || strings.Contains(out, tok) {
		t.Error("the output shows the publish secret or the token")
	}
	for _, want := range []string{
		"live page  " + base + "/live",
		`curl -s -H "Authorization: Bearer $(cat dev/publish_token)" ` + base + `/api/events -d '{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":["status"]}'`,
		"AIRLAY_TOKEN=$(cat dev/token) " + bin + " web_socket listen --url ws://" + addr + "/ws issueUpdate:610217e481f6fc54736209e0",
		bin + " web_socket token --key dev/jwt-private.pem --user <ObjectId>",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the message lacks %q", want)
		}
	}

	// What the message says works: attach with dev/token, publish with
	// dev/publish_token (the curl line as an HTTP request), the live page.
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	defer ws.Close()
	if got := roundTrip(t, ws, `{"auth":"`+tok+`","action":"attach","event":{"type":"issueUpdate","id":"`+devIssue+`"}}`); got != okFrame {
		t.Fatalf("attach with dev/token: %s", got)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/api/events", strings.NewReader(`{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":["status"]}`))
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var a map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&a)
	resp.Body.Close()
	if resp.StatusCode != 200 || a["code"] != 0.0 {
		t.Fatalf("the curl line: %d %v", resp.StatusCode, a)
	}
	if got := readText(t, ws); got != `{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":["status"]}` {
		t.Fatalf("event %s", got)
	}
	if resp, err := http.Get(base + "/live"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /live: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("dev exit %d after SIGTERM", code)
	}

	// A second start keeps the key pair and the secret (tokens minted
	// before stay valid) and writes a fresh token.
	key := read("jwt-private.pem")
	p2 := startDev(t, cwd, "--port", "0")
	p2.waitMessage(t)
	if read("jwt-private.pem") != key || read("publish_token") != secret {
		t.Error("the second start replaced the key pair or the publish secret")
	}
	_ = p2.cmd.Process.Signal(syscall.SIGTERM)
	<-p2.exited
}

// A taken port is named, with what to do.
func TestDevPortTaken(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	r := cli(t, "", "web_socket", "dev", "--port", strconv.Itoa(port))
	if r.code != 1 || !strings.Contains(r.stderr, "address already in use") || !strings.Contains(r.stderr, "try --port "+strconv.Itoa(port+1)) {
		t.Errorf("dev on a taken port: %v", r)
	}
}

// The development directory never reaches git or a Docker build context.
func TestDevDirIgnored(t *testing.T) {
	root := filepath.Join("..", "..")
	for _, f := range []string{".gitignore", ".dockerignore"} {
		lines := strings.Split(string(readFile(t, filepath.Join(root, f))), "\n")
		found := false
		for _, l := range lines {
			if l == "/dev/" || l == "dev/" || l == "dev" {
				found = true
			}
		}
		if !found {
			t.Errorf("%s does not list dev/", f)
		}
	}
	if git, err := exec.LookPath("git"); err == nil {
		cmd := exec.Command(git, "check-ignore", "-q", "dev/jwt-private.pem")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("git check-ignore dev/jwt-private.pem: %v %s (want ignored)", err, out)
		}
	}
}

// health asks a running server; 0 when it answers 200, 1 when it does not
// (nothing listening, or 503 during shutdown).
func TestHealth(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	for _, args := range [][]string{
		{"--url", p.base},
		{"--url", p.base, "--ready"},
	} {
		r := cli(t, "", append([]string{"web_socket", "health"}, args...)...)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "ok: GET "+p.base) {
			t.Errorf("health %q: %v", args, r)
		}
	}
	// --config: the port (and address) of the config file.
	cfgDir := t.TempDir()
	port := strings.TrimPrefix(p.base, "http://127.0.0.1:")
	copyFile(t, filepath.Join(sharedKeys(t), "jwt.pem"), filepath.Join(cfgDir, "jwt.pem"))
	writeConfig(t, cfgDir, "[webSocketEvents]\naddress = 0.0.0.0\nport = "+port+"\njwt_public_key = jwt.pem\n")
	if r := cli(t, cfgDir, "web_socket", "health"); r.code != 0 || r.stdout != "ok: GET http://127.0.0.1:"+port+"/healthz answered 200 OK\n" {
		t.Errorf("health with ./config.ini: %v", r)
	}
	p.stop(t, syscall.SIGTERM)
	if r := cli(t, "", "web_socket", "health", "--url", p.base, "--timeout", "1s"); r.code != 1 || !strings.Contains(r.stderr, "connection refused") {
		t.Errorf("health of a stopped server: %v", r)
	}

	// A server whose MongoDB is unreachable serves (health 0) but is not
	// ready (health --ready 1, naming the 503).
	m, err := tryStartServerMongo(t, 0, fmt.Sprintf("uri = %s\ninstance = test-health\nquery_timeout = 500ms\n", unreachableMongo(t)))
	if err != nil {
		t.Fatal(err)
	}
	if r := cli(t, "", "web_socket", "health", "--url", m.base); r.code != 0 {
		t.Errorf("health, MongoDB unreachable: %v", r)
	}
	if r := cli(t, "", "web_socket", "health", "--url", m.base, "--ready"); r.code != 1 || !strings.Contains(r.stderr, "answered 503 Service Unavailable") {
		t.Errorf("health --ready, MongoDB unreachable: %v", r)
	}
}
