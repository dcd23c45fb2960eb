package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/airlay/airlay"
	"github.com/airlay/airlay/auth"
)

// The development server's user: the token in DIR/token is for it.
const (
	devUser     = "5dad615eae019570fb4647ed"
	devTokenTTL = 24 * time.Hour
	devIssue    = "610217e481f6fc54736209e0"
)

// cmdDev is `web_socket dev`: a complete development server in one command.
// In DIR (default dev, made 0700) it keeps a key pair and a publish secret
// across runs, writes DIR/config.ini (the committed config.ini with the
// development values: loopback only, the live page on) and a fresh token,
// starts the server on that config and, once it answers, says what to do
// next. The secrets are not printed: the commands read them from DIR.
func cmdDev(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dev", "[--dir DIR] [--port N]", stdout)
	dir := fs.String("dir", "dev", "directory of the development key pair, publish secret, token and config.ini")
	port := fs.Int("port", 8081, "listen port on 127.0.0.1 (0: any free port)")
	if err := noArgs(fs, args, stdout); err != nil {
		return err
	}
	if *port < 0 || *port > 65535 {
		return &usageError{fmt.Sprintf("--port %d: want 0 to 65535", *port), usageOf(fs)}
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	if _, _, err := auth.GenerateKeyPair(*dir); err != nil && !errors.Is(err, auth.ErrKeysExist) {
		return fmt.Errorf("dev: key pair: %w", err)
	}
	secret, err := devSecret(filepath.Join(*dir, "publish_token"))
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(*dir, "config.ini")
	if err := os.WriteFile(cfgPath, devConfig(*port, secret), 0o600); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	priv, err := auth.LoadPrivateKey(filepath.Join(*dir, "jwt-private.pem"))
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	tok, err := auth.Mint(priv, auth.MintOptions{UserID: devUser, Name: "dev", TTL: devTokenTTL})
	if err != nil {
		return err
	}
	if err := writeSecretFile(filepath.Join(*dir, "token"), tok+"\n"); err != nil {
		return err
	}

	// The message comes once the server answers on its address (the log
	// line "listening" says which when --port is 0).
	logs := &addrWatcher{w: stderr, found: make(chan string, 1)}
	done := make(chan struct{})
	defer close(done)
	go func() {
		var addr string
		select {
		case addr = <-logs.found:
		case <-done:
			return
		}
		if waitHealthy("http://"+addr+"/healthz", 10*time.Second, done) {
			fmt.Fprint(stderr, devMessage(*dir, addr))
		}
	}()
	err = cmdServer([]string{"--config", cfgPath}, stdout, logs)
	if err != nil && strings.Contains(err.Error(), "address already in use") {
		return fmt.Errorf("%w (another server runs there? try --port %d, or --port 0 for any free port)", err, *port+1)
	}
	return err
}

// devSecret returns the publish secret kept in path, making one the first
// time (24 random bytes, base64url).
func devSecret(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		if s := strings.TrimSpace(string(b)); s != "" {
			return s, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("dev: %w", err)
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	s := "dev-" + base64.RawURLEncoding.EncodeToString(raw)
	return s, writeSecretFile(path, s+"\n")
}

func writeSecretFile(path, text string) error {
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	return nil
}

// devConfig is the committed config.ini with the development values.
func devConfig(port int, secret string) []byte {
	text := string(airlay.ExampleConfig)
	for _, kv := range [][2]string{
		{"address", "127.0.0.1"},
		{"port", strconv.Itoa(port)},
		{"jwt_public_key", "jwt.pem"},
		{"publish_token", secret},
		{"live_page", "true"},
	} {
		re := regexp.MustCompile(`(?m)^` + kv[0] + ` = [^;\n]*`)
		text = re.ReplaceAllLiteralString(text, kv[0]+" = "+kv[1]+" ")
	}
	return []byte("; Written by `airlay-cli web_socket dev` at every start: edits here are lost.\n" +
		"; To run with settings of your own, copy it and use `airlay-cli web_socket server --config FILE`.\n" + text)
}

// cliName is how the user ran this binary, for the commands the message
// suggests: `go run ./cmd/airlay-cli` when it was built by go run.
func cliName() string {
	exe := os.Args[0]
	if strings.Contains(exe, "go-build") {
		return "go run ./cmd/airlay-cli"
	}
	return exe
}

func devMessage(dir, addr string) string {
	base := "http://" + addr
	q := shellQuote
	cli := cliName()
	var b strings.Builder
	fmt.Fprintf(&b, "\nairlay development server on %s (key pair, publish secret, token and config.ini in %s/, kept out of git)\n", base, dir)
	fmt.Fprintf(&b, "  WebSocket  ws://%s/ws\n", addr)
	fmt.Fprintf(&b, "  live page  %s/live  (console: paste %s/publish_token; debugger: paste %s/token)\n", base, dir, dir)
	fmt.Fprintf(&b, "  token      %s/token: user %s, valid %d hours; for another user:\n", dir, devUser, int(devTokenTTL.Hours()))
	fmt.Fprintf(&b, "             %s web_socket token --key %s --user <ObjectId>\n", cli, q(filepath.Join(dir, "jwt-private.pem")))
	fmt.Fprintf(&b, "  listen     AIRLAY_TOKEN=$(cat %s) %s web_socket listen --url ws://%s/ws issueUpdate:%s\n", q(filepath.Join(dir, "token")), cli, addr, devIssue)
	fmt.Fprintf(&b, "  publish    curl -s -H \"Authorization: Bearer $(cat %s)\" %s/api/events -d '{\"type\":\"issueUpdate\",\"id\":\"%s\",\"data\":[\"status\"]}'\n", q(filepath.Join(dir, "publish_token")), base, devIssue)
	b.WriteString("Stop it with Ctrl-C.\n\n")
	return b.String()
}

// shellQuote quotes p for a shell when it needs it.
func shellQuote(p string) string {
	if regexp.MustCompile(`^[A-Za-z0-9_./-]+$`).MatchString(p) {
		return p
	}
	return "'" + strings.ReplaceAll(p, "'", `'\''`) + "'"
}

// addrWatcher passes the server's log through and reports the address of
// its "listening" line.
type addrWatcher struct {
	w     io.Writer
	found chan string
	seen  bool
}

var listeningAddr = regexp.MustCompile(`msg=listening addr=(\S+)|"msg":"listening","addr":"([^"]+)"`)

func (a *addrWatcher) Write(p []byte) (int, error) {
	if !a.seen {
		if m := listeningAddr.FindSubmatch(p); m != nil {
			a.seen = true
			addr := string(m[1]) + string(m[2])
			if host, port, err := net.SplitHostPort(addr); err == nil && (host == "0.0.0.0" || host == "::") {
				addr = net.JoinHostPort("127.0.0.1", port)
			}
			a.found <- addr
		}
	}
	return a.w.Write(p)
}

// waitHealthy polls url until it answers 200, for at most d.
func waitHealthy(url string, d time.Duration, stop <-chan struct{}) bool {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case <-stop:
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false
}
