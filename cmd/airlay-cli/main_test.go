package main

// Black-box tests of the airlay-cli binary: TestMain builds it once and every
// test runs it as a subprocess, as an operator would.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/airlay/airlay"
	"github.com/airlay/airlay/auth"
	"github.com/airlay/airlay/internal/mongosim"
	"github.com/airlay/airlay/internal/testkit"
	"github.com/airlay/airlay/server"
	"github.com/gorilla/websocket"
)

// bin is the airlay-cli binary under test.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "airlay-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "airlay-cli")
	build := exec.Command(goTool(), "build", "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build airlay-cli:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	mongosim.Cleanup()
	os.Exit(code)
}

func goTool() string {
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p
		}
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// result is one finished run of the binary.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// cli runs the binary with args in dir ("" for a fresh temp dir) and waits.
func cli(t *testing.T, dir string, args ...string) result {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("airlay-cli %q: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("airlay-cli %q did not finish in 30s", args)
	}
	return r
}

func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want []string // on stdout
	}{
		{[]string{"--help"}, []string{"usage: airlay-cli <command>", "web_socket", "version"}},
		{[]string{"-h"}, []string{"usage: airlay-cli <command>"}},
		{[]string{"help"}, []string{"usage: airlay-cli <command>"}},
		{[]string{"web_socket", "--help"}, []string{"usage: airlay-cli web_socket <command>", "server", "token", "keygen", "config"}},
		{[]string{"web_socket", "-h"}, []string{"usage: airlay-cli web_socket <command>"}},
		{[]string{"web_socket", "server", "--help"}, []string{"usage: airlay-cli web_socket server", "-config", "config.ini"}},
		{[]string{"web_socket", "server", "-h"}, []string{"usage: airlay-cli web_socket server"}},
		{[]string{"web_socket", "token", "--help"}, []string{"usage: airlay-cli web_socket token", "-key", "-user", "-name", "-ttl", "-issuer"}},
		{[]string{"web_socket", "keygen", "--help"}, []string{"usage: airlay-cli web_socket keygen", "DIR"}},
		{[]string{"web_socket", "config", "--help"}, []string{"usage: airlay-cli web_socket config"}},
		{[]string{"version"}, []string{"airlay-cli " + server.Version + "\n"}},
		{[]string{"version", "--help"}, []string{"usage: airlay-cli version"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			r := cli(t, "", tt.args...)
			if r.code != 0 {
				t.Fatalf("want exit 0; %v", r)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("stdout lacks %q; %v", w, r)
				}
			}
			if r.stderr != "" {
				t.Errorf("stderr not empty; %v", r)
			}
		})
	}
}

// TestHelpPrintedOnce: --help prints the usage once.
func TestHelpPrintedOnce(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--help"},
		{"web_socket", "--help"},
		{"web_socket", "server", "--help"},
		{"web_socket", "server", "-h"},
		{"web_socket", "token", "--help"},
		{"web_socket", "keygen", "--help"},
		{"web_socket", "config", "--help"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			r := cli(t, "", args...)
			if n := strings.Count(r.stdout, "usage:"); r.code != 0 || n != 1 {
				t.Errorf("want exit 0 and the usage once, got it %d times; %v", n, r)
			}
		})
	}
}

func TestVersionExact(t *testing.T) {
	t.Parallel()
	r := cli(t, "", "version")
	if want := "airlay-cli " + server.Version + "\n"; r.stdout != want || r.code != 0 {
		t.Fatalf("want %q and exit 0; %v", want, r)
	}
}

// usageErrors are command lines that must exit 2 with a usage message on
// stderr.
var usageErrors = []struct {
	args []string
	want []string // on stderr
}{
	{nil, []string{"no command", "usage: airlay-cli <command>"}},
	{[]string{"nope"}, []string{`unknown command "nope"`, "usage: airlay-cli <command>"}},
	{[]string{"--nope"}, []string{"usage: airlay-cli <command>"}},
	{[]string{"version", "extra"}, []string{"usage: airlay-cli version"}},
	{[]string{"web_socket"}, []string{"usage: airlay-cli web_socket <command>"}},
	{[]string{"web_socket", "nope"}, []string{`unknown command "web_socket nope"`, "usage: airlay-cli web_socket <command>"}},
	{[]string{"web_socket", "server", "--nope"}, []string{"-nope", "usage: airlay-cli web_socket server", "-config"}},
	{[]string{"web_socket", "server", "extra"}, []string{`unexpected argument "extra"`, "usage: airlay-cli web_socket server"}},
	{[]string{"web_socket", "server", "--config"}, []string{"-config", "usage: airlay-cli web_socket server"}},
	{[]string{"web_socket", "keygen"}, []string{"usage: airlay-cli web_socket keygen DIR"}},
	{[]string{"web_socket", "keygen", "a", "b"}, []string{"usage: airlay-cli web_socket keygen DIR"}},
	{[]string{"web_socket", "keygen", "--nope", "dir"}, []string{"-nope", "usage: airlay-cli web_socket keygen"}},
	{[]string{"web_socket", "token"}, []string{"--key and --user are required", "usage: airlay-cli web_socket token"}},
	{[]string{"web_socket", "token", "--key", "k.pem"}, []string{"--key and --user are required"}},
	{[]string{"web_socket", "token", "--user", "5dad615eae019570fb4647ed"}, []string{"--key and --user are required"}},
	{[]string{"web_socket", "token", "--key", "k.pem", "--user", "5dad615eae019570fb4647ed", "--ttl", "soon"}, []string{"-ttl", "usage: airlay-cli web_socket token"}},
	{[]string{"web_socket", "token", "--key", "k.pem", "--user", "5dad615eae019570fb4647ed", "--ttl", "0s"}, []string{"--ttl must be positive"}},
	{[]string{"web_socket", "token", "--key", "k.pem", "--user", "5dad615eae019570fb4647ed", "extra"}, []string{`unexpected argument "extra"`}},
	{[]string{"web_socket", "config", "extra"}, []string{`unexpected argument "extra"`}},
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range usageErrors {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			r := cli(t, "", tt.args...)
			if r.code != 2 {
				t.Fatalf("want exit 2; %v", r)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q; %v", w, r)
				}
			}
		})
	}
}

// TestUsageErrorsStdoutEmpty: a usage error writes nothing to stdout, where
// a script expects the command's output (`TOKEN=$(airlay-cli web_socket
// token ...)`); the usage goes to stderr only, once.
func TestUsageErrorsStdoutEmpty(t *testing.T) {
	t.Parallel()
	for _, tt := range usageErrors {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			r := cli(t, "", tt.args...)
			if r.stdout != "" {
				t.Errorf("usage error printed to stdout; %v", r)
			}
			if n := strings.Count(r.stderr, "usage:"); n != 1 {
				t.Errorf("stderr has %d usage texts, want 1; %v", n, r)
			}
		})
	}
}

func TestConfigCommand(t *testing.T) {
	t.Parallel()
	r := cli(t, "", "web_socket", "config")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("want exit 0 and no stderr; %v", r)
	}
	if r.stdout != string(airlay.ExampleConfig) {
		t.Fatalf("stdout is not the example config.ini:\n%s", r.stdout)
	}
	for _, w := range []string{"[webSocketEvents]", "[mongodb]", "jwt_public_key", "publish_token", "max_publish_events"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("example config lacks %q", w)
		}
	}
	// The example is itself a config the server accepts (given its key).
	dir := t.TempDir()
	copyFile(t, filepath.Join(sharedKeys(t), "jwt.pem"), filepath.Join(dir, "jwt.pem"))
	if _, err := server.ParseConfig(filepath.Join(dir, "config.ini"), []byte(r.stdout)); err != nil {
		t.Fatalf("the example config does not parse: %v", err)
	}
}

func TestKeygen(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "keys") // created by keygen
	r := cli(t, "", "web_socket", "keygen", dir)
	if r.code != 0 {
		t.Fatalf("keygen: want exit 0; %v", r)
	}
	pubPath, privPath := filepath.Join(dir, "jwt.pem"), filepath.Join(dir, "jwt-private.pem")
	for path, perm := range map[string]os.FileMode{pubPath: 0o644, privPath: 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatalf("keygen wrote no %s: %v", path, err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), perm)
		}
	}
	pub, err := auth.LoadPublicKey(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := auth.LoadPrivateKey(privPath)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(&priv.PublicKey) {
		t.Fatal("jwt.pem is not the public half of jwt-private.pem")
	}
	pubBefore, privBefore := readFile(t, pubPath), readFile(t, privPath)

	r = cli(t, "", "web_socket", "keygen", dir)
	if r.code != 0 {
		t.Fatalf("second keygen: want exit 0; %v", r)
	}
	if !strings.Contains(r.stderr, "keeping") {
		t.Errorf("second keygen does not say it keeps the pair; %v", r)
	}
	if !bytes.Equal(readFile(t, pubPath), pubBefore) || !bytes.Equal(readFile(t, privPath), privBefore) {
		t.Fatal("second keygen changed the key pair")
	}

	// Half a pair: refuse, write nothing.
	half := t.TempDir()
	copyFile(t, pubPath, filepath.Join(half, "jwt.pem"))
	r = cli(t, "", "web_socket", "keygen", half)
	if r.code == 0 {
		t.Fatalf("keygen beside a lone jwt.pem: want an error; %v", r)
	}
	if fileExists(filepath.Join(half, "jwt-private.pem")) {
		t.Fatal("keygen wrote a private key beside a foreign jwt.pem")
	}
}

const userID = "5dad615eae019570fb4647ed"

func TestToken(t *testing.T) {
	t.Parallel()
	keys := sharedKeys(t)
	before := time.Now()
	r := cli(t, "", "web_socket", "token", "--key", filepath.Join(keys, "jwt-private.pem"), "--user", userID, "--name", "bob", "--ttl", "1h")
	if r.code != 0 {
		t.Fatalf("token: want exit 0; %v", r)
	}
	tok := strings.TrimSuffix(r.stdout, "\n")
	if strings.ContainsAny(tok, " \n") {
		t.Fatalf("stdout is not one token line: %q", r.stdout)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q has %d parts, want 3", tok, len(parts))
	}
	var header struct {
		Alg string `json:"alg"`
	}
	decodePart(t, parts[0], &header)
	if header.Alg != "RS256" {
		t.Errorf("alg = %q, want RS256", header.Alg)
	}
	var claims struct {
		Exp  *int64 `json:"exp"`
		Iat  int64  `json:"iat"`
		Data struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"data"`
	}
	decodePart(t, parts[1], &claims)
	if claims.Data.ID != userID || claims.Data.Name != "bob" {
		t.Errorf("data = %+v, want id %s and name bob", claims.Data, userID)
	}
	if claims.Exp == nil {
		t.Fatal("no exp claim")
	}
	lo, hi := before.Add(time.Hour).Unix()-2, time.Now().Add(time.Hour).Unix()+2
	if *claims.Exp < lo || *claims.Exp > hi {
		t.Errorf("exp = %d, want about now+1h (%d..%d)", *claims.Exp, lo, hi)
	}

	// A bad --user is an error, and no token.
	for _, bad := range []string{"bob", "5dad615eae019570fb4647e", "5dad615eae019570fb4647eg"} {
		r := cli(t, "", "web_socket", "token", "--key", filepath.Join(keys, "jwt-private.pem"), "--user", bad)
		if r.code == 0 || r.stdout != "" {
			t.Errorf("--user %q: want a non-zero exit and no token; %v", bad, r)
		}
		if !strings.Contains(r.stderr, bad) {
			t.Errorf("--user %q: stderr does not name it; %v", bad, r)
		}
	}
	// A missing key file names the file.
	r = cli(t, "", "web_socket", "token", "--key", "/nonexistent/jwt-private.pem", "--user", userID)
	if r.code == 0 || !strings.Contains(r.stderr, "/nonexistent/jwt-private.pem") {
		t.Errorf("missing key: want a non-zero exit naming the file; %v", r)
	}
}

func decodePart(t *testing.T, part string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		t.Fatalf("token part %q is not base64url: %v", part, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("token part %s is not JSON: %v", b, err)
	}
}

// assertOneLine checks that a start-up failure said one line, naming all of want.
func assertOneLine(t *testing.T, r result, want ...string) {
	t.Helper()
	if r.code == 0 {
		t.Fatalf("want a non-zero exit; %v", r)
	}
	if r.stdout != "" {
		t.Errorf("stdout not empty; %v", r)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") || strings.TrimSpace(r.stderr) == "" {
		t.Fatalf("want exactly one line on stderr; %v", r)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q; %v", w, r)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	keys := sharedKeys(t)

	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "nope.ini")
		assertOneLine(t, cli(t, "", "web_socket", "server", "--config", path), path)
	})
	t.Run("default config.ini missing", func(t *testing.T) {
		t.Parallel()
		assertOneLine(t, cli(t, t.TempDir(), "web_socket", "server"), "config.ini")
	})
	t.Run("port abc", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		copyFile(t, filepath.Join(keys, "jwt.pem"), filepath.Join(dir, "jwt.pem"))
		path := writeConfig(t, dir, "[webSocketEvents]\naddress = 127.0.0.1\nport = abc\njwt_public_key = jwt.pem\n")
		assertOneLine(t, cli(t, "", "web_socket", "server", "--config", path), path, "[webSocketEvents]", "port")
	})
	t.Run("port out of range", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		copyFile(t, filepath.Join(keys, "jwt.pem"), filepath.Join(dir, "jwt.pem"))
		path := writeConfig(t, dir, "[webSocketEvents]\nport = 70000\njwt_public_key = jwt.pem\n")
		assertOneLine(t, cli(t, "", "web_socket", "server", "--config", path), path, "[webSocketEvents]", "port")
	})
	t.Run("jwt_public_key file missing", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		path := writeConfig(t, dir, "[webSocketEvents]\naddress = 127.0.0.1\nport = 0\njwt_public_key = missing.pem\n")
		assertOneLine(t, cli(t, "", "web_socket", "server", "--config", path), path, "[webSocketEvents]", "jwt_public_key", "missing.pem")
	})
	t.Run("jwt_public_key not set", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		path := writeConfig(t, dir, "[webSocketEvents]\naddress = 127.0.0.1\nport = 0\n")
		assertOneLine(t, cli(t, "", "web_socket", "server", "--config", path), path, "[webSocketEvents]", "jwt_public_key")
	})
	t.Run("jwt_public_key is the private key", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		copyFile(t, filepath.Join(keys, "jwt-private.pem"), filepath.Join(dir, "jwt.pem"))
		path := writeConfig(t, dir, "[webSocketEvents]\naddress = 127.0.0.1\nport = 0\njwt_public_key = jwt.pem\n")
		assertOneLine(t, cli(t, "", "web_socket", "server", "--config", path), path, "[webSocketEvents]", "jwt_public_key")
	})
	t.Run("bad size", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		copyFile(t, filepath.Join(keys, "jwt.pem"), filepath.Join(dir, "jwt.pem"))
		path := writeConfig(t, dir, "[webSocketEvents]\njwt_public_key = jwt.pem\nmax_publish_bytes = lots\n")
		assertOneLine(t, cli(t, "", "web_socket", "server", "--config", path), path, "[webSocketEvents]", "max_publish_bytes")
	})
}

// sharedKeys returns a directory with a key pair made by `keygen`, once per
// test binary.
var (
	keysOnce sync.Once
	keysDir  string
	keysErr  error
)

func sharedKeys(t *testing.T) string {
	t.Helper()
	keysOnce.Do(func() {
		dir, err := os.MkdirTemp("", "airlay-cli-keys-")
		if err != nil {
			keysErr = err
			return
		}
		out, err := exec.Command(bin, "web_socket", "keygen", dir).CombinedOutput()
		if err != nil {
			keysErr = fmt.Errorf("keygen: %v: %s", err, out)
			return
		}
		keysDir = dir
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
	return keysDir
}

func writeConfig(t *testing.T, dir, text string) string {
	t.Helper()
	path := filepath.Join(dir, "config.ini")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if err := os.WriteFile(to, readFile(t, from), 0o644); err != nil {
		t.Fatal(err)
	}
}

// serverProc is a running `airlay-cli web_socket server`.
type serverProc struct {
	cmd    *exec.Cmd
	base   string // http://127.0.0.1:PORT
	stderr *testkit.Buffer
	stdout *testkit.Buffer
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

const publishToken = "test-publish-secret"

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// errPortTaken: the picked port was taken between freePort and the listen.
var errPortTaken = errors.New("port taken")

// listenLine finds the address in the start-up log line
// `level=INFO msg=listening addr=127.0.0.1:PORT ...`.
var listenLine = regexp.MustCompile(`msg=listening addr=(\S+)`)

// startServer starts the server on a free loopback port and waits until
// /healthz answers.
func startServer(t *testing.T) *serverProc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p, err := tryStartServer(t, freePort(t))
		if err == nil {
			return p
		}
		if errors.Is(err, errPortTaken) && attempt < 3 {
			continue
		}
		t.Fatal(err)
	}
}

// tryStartServer writes a config into a temp dir, starts the server on
// port (0: any) and waits until its log says where it listens and /healthz
// answers there.
func tryStartServer(t *testing.T, port int) (*serverProc, error) {
	t.Helper()
	return tryStartServerMongo(t, port, "uri =\n")
}

// tryStartServerMongo is tryStartServer with mongo as the [mongodb] section.
func tryStartServerMongo(t *testing.T, port int, mongo string) (*serverProc, error) {
	t.Helper()
	dir := t.TempDir()
	copyFile(t, filepath.Join(sharedKeys(t), "jwt.pem"), filepath.Join(dir, "jwt.pem"))
	path := writeConfig(t, dir, fmt.Sprintf(`; written by main_test.go
[webSocketEvents]
address = 127.0.0.1
port = %d
jwt_public_key = jwt.pem
publish_token = %s
shutdown_timeout = 5s

[mongodb]
%s
[someOtherPart]
whatever = ignored
`, port, publishToken, mongo))
	p := &serverProc{
		cmd:    exec.Command(bin, "web_socket", "server", "--config", path),
		stderr: &testkit.Buffer{},
		stdout: &testkit.Buffer{},
		exited: make(chan struct{}),
	}
	p.cmd.Dir = t.TempDir() // the config is found by --config, not the cwd
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("server stderr:\n%s", p.stderr.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	client := &http.Client{Timeout: time.Second}
	var lastErr error
	for {
		select {
		case <-p.exited:
			if strings.Contains(p.stderr.String(), "address already in use") {
				return nil, errPortTaken
			}
			return nil, fmt.Errorf("server exited before it served: %v\nstderr:\n%s", p.err, p.stderr.String())
		default:
		}
		if p.base == "" {
			if m := listenLine.FindStringSubmatch(p.stderr.String()); m != nil {
				if want := fmt.Sprintf("127.0.0.1:%d", port); port != 0 && m[1] != want {
					return nil, fmt.Errorf("the log says it listens on %s, want %s", m[1], want)
				}
				p.base = "http://" + m[1]
			}
		}
		if p.base != "" {
			resp, err := client.Get(p.base + "/healthz")
			lastErr = err
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return p, nil
				}
				lastErr = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no \"listening\" log line and 200 from GET /healthz within 15s (base %q, last error %v)\nstderr:\n%s", p.base, lastErr, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends sig and waits for the exit.
func (p *serverProc) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		t.Fatalf("server still running 5s after %v", sig)
	}
	if p.err != nil {
		t.Fatalf("server exit after %v: %v, want exit 0\nstderr:\n%s", sig, p.err, p.stderr.String())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("server exit code %d after %v, want 0", code, sig)
	}
}

func mintToken(t *testing.T, user string) string {
	t.Helper()
	r := cli(t, "", "web_socket", "token", "--key", filepath.Join(sharedKeys(t), "jwt-private.pem"), "--user", user, "--name", "bob", "--ttl", "1h")
	if r.code != 0 {
		t.Fatalf("token: %v", r)
	}
	return strings.TrimSpace(r.stdout)
}

func (p *serverProc) dial(t *testing.T) *websocket.Conn {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(p.base, "http")+"/ws", nil)
	if err != nil {
		t.Fatalf("dial /ws: %v", err)
	}
	resp.Body.Close()
	t.Cleanup(func() { ws.Close() })
	return ws
}

// roundTrip sends one text frame and reads the next text frame.
func roundTrip(t *testing.T, ws *websocket.Conn, frame string) string {
	t.Helper()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		t.Fatal(err)
	}
	return readText(t, ws)
}

func readText(t *testing.T, ws *websocket.Conn) string {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, msg, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.TextMessage {
		t.Fatalf("got a frame of type %d, want text", typ)
	}
	return noPos(string(msg))
}

// publish POSTs body to /api/events and returns the status and the answer.
func (p *serverProc) publish(t *testing.T, query, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, p.base+"/api/events"+query, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+publishToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var answer map[string]any
	if err := json.Unmarshal(raw, &answer); err != nil {
		t.Fatalf("POST /api/events answered %d %q: not JSON", resp.StatusCode, raw)
	}
	return resp.StatusCode, answer
}

const (
	okFrame = `{"status":200,"message":"Ok","code":0}`
	issueID = "610217e481f6fc54736209e0"
)

func TestServerEndToEnd(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	tok := mintToken(t, userID)
	ws := p.dial(t)

	attach := fmt.Sprintf(`{"auth":%q,"action":"attach","event":{"type":"issueUpdate","id":%q}}`, tok, issueID)
	if got := roundTrip(t, ws, attach); got != okFrame {
		t.Fatalf("attach issueUpdate answered %s, want %s", got, okFrame)
	}
	attachN := fmt.Sprintf(`{"auth":%q,"action":"attach","event":{"type":"notification"}}`, tok)
	if got := roundTrip(t, ws, attachN); got != okFrame {
		t.Fatalf("attach notification answered %s, want %s", got, okFrame)
	}
	if got := roundTrip(t, ws, `{"auth":"x","action":"attach"}`); got != `{"status":400,"message":"Invalid request","code":5}` {
		t.Fatalf("malformed request answered %s", got)
	}

	// The contract's first publish example.
	status, answer := p.publish(t, "", `{"type": "issueUpdate", "id": "610217e481f6fc54736209e0", "data": ["status"]}`)
	if status != http.StatusOK || answer["status"] != 200.0 || answer["code"] != 0.0 || answer["message"] != "Ok" {
		t.Fatalf("publish answered %d %v", status, answer)
	}
	if got, want := readText(t, ws), `{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":["status"]}`; got != want {
		t.Fatalf("event frame %s, want %s", got, want)
	}

	// The second, waiting for the write.
	status, answer = p.publish(t, "?wait=5", `{"type": "notification", "user": "5dad615eae019570fb4647ed", "id": "6a0000000000000000000001", "data": [{"text": "hi"}]}`)
	if status != http.StatusOK || answer["code"] != 0.0 || answer["delivered"] != 1.0 || answer["pending"] != 0.0 {
		t.Fatalf("publish ?wait=5 answered %d %v, want 200 with delivered 1, pending 0", status, answer)
	}
	if got, want := readText(t, ws), `{"type":"notification","id":"6a0000000000000000000001","data":[{"text":"hi"}]}`; got != want {
		t.Fatalf("event frame %s, want %s", got, want)
	}

	// Graceful shutdown: close 1001 to the client, exit 0.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("after SIGTERM the client read %q, %v; want a close frame", msg, err)
	}
	if ce.Code != websocket.CloseGoingAway {
		t.Fatalf("close code %d (%q), want 1001", ce.Code, ce.Text)
	}
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("server still running 5s after SIGTERM")
	}
	if p.err != nil || p.cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("server exit after SIGTERM: %v, want 0\nstderr:\n%s", p.err, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "shutting down") {
		t.Errorf("log lacks \"shutting down\":\n%s", p.stderr.String())
	}
	if _, err := http.Get(p.base + "/healthz"); err == nil {
		t.Error("the port still answers after the exit")
	}
}

func TestServerSIGINT(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	ws := p.dial(t)
	p.stop(t, os.Interrupt)
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := ws.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Errorf("after SIGINT the client read %v, want close 1001", err)
	}
	if !strings.Contains(p.stderr.String(), "shutting down") {
		t.Errorf("log lacks \"shutting down\":\n%s", p.stderr.String())
	}
}

func TestServerSIGTERMIdle(t *testing.T) {
	t.Parallel()
	p := startServer(t)
	p.stop(t, syscall.SIGTERM)
	if !strings.Contains(p.stderr.String(), "shutting down") {
		t.Errorf("log lacks \"shutting down\":\n%s", p.stderr.String())
	}
}

// TestServerPortInUse: a port that is taken is an error, not a hang.
func TestServerPortInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	copyFile(t, filepath.Join(sharedKeys(t), "jwt.pem"), filepath.Join(dir, "jwt.pem"))
	path := writeConfig(t, dir, fmt.Sprintf("[webSocketEvents]\naddress = 127.0.0.1\nport = %d\njwt_public_key = jwt.pem\n", ln.Addr().(*net.TCPAddr).Port))
	r := cli(t, "", "web_socket", "server", "--config", path)
	// One line naming the file, the key and the address, and nothing
	// logged before it.
	assertOneLine(t, r, path, "[webSocketEvents] port", ln.Addr().String(), "in use")
	if strings.Contains(r.stderr, "level=") {
		t.Errorf("log lines before the error; %v", r)
	}
}

// TestServerPortZero: with port = 0 the server takes any free port and its
// log says which.
func TestServerPortZero(t *testing.T) {
	t.Parallel()
	p, err := tryStartServer(t, 0)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(p.base, ":0") {
		t.Fatalf("the log says it listens on %s", p.base)
	}
	p.stop(t, syscall.SIGTERM)
}
