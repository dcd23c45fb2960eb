package main

// checkconfig and checktoken, through the binary.

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlay/airlay/auth"
	"github.com/golang-jwt/jwt/v5"
)

// cliEnv runs the binary in dir with env added to the environment and
// stdin as its input.
func cliEnv(t *testing.T, dir string, env []string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("airlay-cli %q: %v", args, err)
	}
	return r
}

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	copyFile(t, filepath.Join(sharedKeys(t), "jwt.pem"), filepath.Join(dir, "jwt.pem"))
	path := writeConfig(t, dir, "[webSocketEvents]\njwt_public_key = jwt.pem\nport = 9000\npublish_token = file-secret\nmax_publish_bytes = 1MB\n"+
		"[mongodb]\nuri = mongodb://app:db-pass-1@db1:27017,db2:27017/airlay?replicaSet=rs0\n")
	env := []string{"AIRLAY_WEBSOCKETEVENTS_PUBLISH_TOKEN=env-secret", "AIRLAY_MONGODB_DATABASE=prod"}
	r := cliEnv(t, dir, env, "", "web_socket", "checkconfig", "--config", path)
	if r.code != 0 {
		t.Fatalf("checkconfig: %v", r)
	}
	for _, want := range []string{
		path + ": valid",
		"[webSocketEvents]", "[mongodb]",
		"port = 9000", "; file, line 3",
		"publish_token = ****", "; environment AIRLAY_WEBSOCKETEVENTS_PUBLISH_TOKEN",
		"max_publish_bytes = 1048576 (1MiB)",
		"max_connections = 10000",
		"uri = mongodb://app:****@db1:27017,db2:27017/airlay?replicaSet=rs0",
		"database = prod", "; environment AIRLAY_MONGODB_DATABASE",
		"idempotency_window = 10m",
		"issueUpdate = collection=issues operations=insert,update,replace,delete id=_id data=changed",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("checkconfig lacks %q:\n%s", want, r.stdout)
		}
	}
	for _, line := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(line, "max_connections = ") && !strings.HasSuffix(line, "; default") {
			t.Errorf("max_connections: %q, want origin default", line)
		}
	}
	for _, secret := range []string{"file-secret", "env-secret", "db-pass-1"} {
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Errorf("checkconfig shows the secret %q", secret)
		}
	}
	// What it refuses, it refuses like the server: one line, exit 1.
	r = cliEnv(t, dir, []string{"AIRLAY_WEBSOCKETEVENTS_MAX_CONNECTIONS=many"}, "", "web_socket", "checkconfig", "--config", path)
	assertOneLine(t, r, path, "[webSocketEvents] max_connections", "AIRLAY_WEBSOCKETEVENTS_MAX_CONNECTIONS")
	r = cliEnv(t, dir, []string{"AIRLAY_MONGODB_CACHE_SIZE=0"}, "", "web_socket", "checkconfig", "--config", path)
	assertOneLine(t, r, path, "[mongodb] cache_size", "AIRLAY_MONGODB_CACHE_SIZE")
	bad := writeConfig(t, t.TempDir(), "[webSocketEvents]\njwt_public_key = missing.pem\n")
	assertOneLine(t, cli(t, "", "web_socket", "checkconfig", "--config", bad), bad, "jwt_public_key", "missing.pem")
}

// The server takes every setting from the environment as well: a port and
// the publish token given only there.
func TestServerEnvironment(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	copyFile(t, filepath.Join(sharedKeys(t), "jwt.pem"), filepath.Join(dir, "jwt.pem"))
	path := writeConfig(t, dir, "[webSocketEvents]\njwt_public_key = jwt.pem\naddress = 127.0.0.1\nport = 1\n")
	r := cliEnv(t, dir, []string{"AIRLAY_WEBSOCKETEVENTS_PORT=70000"}, "", "web_socket", "server", "--config", path)
	assertOneLine(t, r, "AIRLAY_WEBSOCKETEVENTS_PORT", "70000")
	r = cliEnv(t, dir, []string{"AIRLAY_WEBSOCKETEVENTS_PROT=8081"}, "", "web_socket", "server", "--config", path)
	assertOneLine(t, r, "AIRLAY_WEBSOCKETEVENTS_PROT")
}

// signToken signs claims with the test key pair (any exp, iss, alg).
func signToken(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	priv, err := auth.LoadPrivateKey(filepath.Join(sharedKeys(t), "jwt-private.pem"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCheckToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	copyFile(t, filepath.Join(sharedKeys(t), "jwt.pem"), filepath.Join(dir, "jwt.pem"))
	path := writeConfig(t, dir, "[webSocketEvents]\njwt_public_key = jwt.pem\njwt_issuer = dev.airlay.ru\ntoken_leeway = 2s\n")
	now := time.Now()
	user := "5dad615eae019570fb4647ed"
	good := signToken(t, jwt.MapClaims{"iss": "dev.airlay.ru", "exp": now.Add(time.Hour).Unix(), "data": map[string]any{"id": user, "name": "Ann"}})

	r := cliEnv(t, dir, nil, "", "web_socket", "checktoken", "--config", path, good)
	if r.code != 0 || !strings.Contains(r.stdout, "token valid") || !strings.Contains(r.stdout, "user (data.id): "+user) || !strings.Contains(r.stdout, "name (data.name): Ann") {
		t.Errorf("a good token: %v", r)
	}
	// From a file ("Bearer " and a newline are fine) and from stdin.
	file := filepath.Join(dir, "tok.txt")
	if err := os.WriteFile(file, []byte("Bearer "+good+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := cliEnv(t, dir, nil, "", "web_socket", "checktoken", "--config", path, file); r.code != 0 {
		t.Errorf("from a file: %v", r)
	}
	if r := cliEnv(t, dir, nil, good+"\n", "web_socket", "checktoken", "--config", path, "-"); r.code != 0 {
		t.Errorf("from stdin: %v", r)
	}

	other := t.TempDir()
	if out, err := exec.Command(bin, "web_socket", "keygen", other).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v %s", err, out)
	}
	otherPriv, err := auth.LoadPrivateKey(filepath.Join(other, "jwt-private.pem"))
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": "dev.airlay.ru", "exp": now.Add(time.Hour).Unix(), "data": map[string]any{"id": user}}).SignedString(otherPriv)
	hs, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": now.Add(time.Hour).Unix()}).SignedString([]byte("k"))

	for _, tc := range []struct {
		name, token string
		says        []string
	}{
		{"expired", signToken(t, jwt.MapClaims{"iss": "dev.airlay.ru", "exp": now.Add(-90 * time.Second).Unix(), "data": map[string]any{"id": user}}), []string{"expired", "ago", "leeway 2s"}},
		{"no exp", signToken(t, jwt.MapClaims{"iss": "dev.airlay.ru", "data": map[string]any{"id": user}}), []string{"exp"}},
		{"not yet valid", signToken(t, jwt.MapClaims{"iss": "dev.airlay.ru", "exp": now.Add(time.Hour).Unix(), "nbf": now.Add(10 * time.Minute).Unix(), "data": map[string]any{"id": user}}), []string{"nbf", "from now"}},
		{"wrong issuer", signToken(t, jwt.MapClaims{"iss": "evil", "exp": now.Add(time.Hour).Unix(), "data": map[string]any{"id": user}}), []string{`"evil"`, `"dev.airlay.ru"`}},
		{"no issuer", signToken(t, jwt.MapClaims{"exp": now.Add(time.Hour).Unix(), "data": map[string]any{"id": user}}), []string{"no iss"}},
		{"no data.id", signToken(t, jwt.MapClaims{"iss": "dev.airlay.ru", "exp": now.Add(time.Hour).Unix()}), []string{"data.id"}},
		{"data.id not an ObjectId", signToken(t, jwt.MapClaims{"iss": "dev.airlay.ru", "exp": now.Add(time.Hour).Unix(), "data": map[string]any{"id": 42}}), []string{"data.id", "42"}},
		{"another key", otherKey, []string{"signature", "jwt.pem"}},
		{"HS256", hs, []string{"HS256", "RS256"}},
		{"not a JWT", "a.b.c", []string{"not a JWT"}},
	} {
		r := cliEnv(t, dir, nil, "", "web_socket", "checktoken", "--config", path, tc.token)
		assertOneLine(t, r, append([]string{"token refused", "code 2"}, tc.says...)...)
		if len(tc.token) > 10 && strings.Contains(r.stderr, tc.token) {
			t.Errorf("%s: the message shows the token", tc.name)
		}
	}
	r = cli(t, "", "web_socket", "checktoken", "--config", path)
	if r.code != exitUsage {
		t.Errorf("no token: exit %d, want %d", r.code, exitUsage)
	}
}

// The config mistakes of issue 13 through the binary: one line each, exit 1.
func TestServerConfigMistakes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, text string
		says       []string
	}{
		{"line without =", "[webSocketEvents]\njwt_public_key = jwt.pem\nport 8081\n", []string{":3:", "[webSocketEvents]", "port 8081"}},
		{"section in the wrong case", "[websocketEvents]\njwt_public_key = jwt.pem\n", []string{":1:", "[websocketEvents]", "did you mean [webSocketEvents]"}},
		{"duplicate key", "[webSocketEvents]\njwt_public_key = jwt.pem\nport = 1\nport = 2\n", []string{":4:", "[webSocketEvents] port", "twice"}},
	} {
		dir := t.TempDir()
		copyFile(t, filepath.Join(sharedKeys(t), "jwt.pem"), filepath.Join(dir, "jwt.pem"))
		path := writeConfig(t, dir, tc.text)
		for _, sub := range []string{"server", "checkconfig"} {
			r := cli(t, "", "web_socket", sub, "--config", path)
			if r.code != 1 {
				t.Errorf("%s, %s: exit %d, want 1", tc.name, sub, r.code)
			}
			assertOneLine(t, r, append([]string{path}, tc.says...)...)
		}
	}
}
