package main

// Tests of `web_socket listen` and `web_socket publish`, run as subprocesses
// against a server subprocess.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

	"github.com/airlay/airlay/internal/servertest"
	"github.com/airlay/airlay/internal/testkit"
)

const (
	issueID2 = "610217e481f6fc54736209e1"
	exportID = "630217e481f6fc54736209e0"
)

// listenProc is a running `web_socket listen`.
type listenProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *testkit.Buffer
	stderr *testkit.Buffer
	exited chan struct{}
}

// startCLI starts the binary with env added to the environment (without
// the caller's AIRLAY_ variables).
func startCLI(t *testing.T, env []string, args ...string) *listenProc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(cleanEnv(), env...)
	p := &listenProc{cmd: cmd, stdout: &testkit.Buffer{}, stderr: &testkit.Buffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%q\nstdout:\n%s\nstderr:\n%s", args, p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AIRLAY_") {
			env = append(env, kv)
		}
	}
	return env
}

// wait waits for the exit and returns the exit code.
func (p *listenProc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		t.Fatalf("still running after %v", timeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

// waitLine waits until stream has a line matching re.
func (p *listenProc) waitLine(t *testing.T, stream *testkit.Buffer, re string) {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(10 * time.Second)
	for !rx.MatchString(stream.String()) {
		select {
		case <-p.exited:
			if rx.MatchString(stream.String()) {
				return
			}
			t.Fatalf("exited (code %d) without a line matching %s", p.cmd.ProcessState.ExitCode(), re)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line matching %s within 10s", re)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eventLines is splitLines of printed events, each without its position
// (see noPos).
func eventLines(s string) []string {
	lines := splitLines(s)
	for i, l := range lines {
		lines[i] = noPos(l)
	}
	return lines
}

// noPos returns an event frame without its last member, "pos", which
// tests compare apart; other text as it is.
func noPos(frame string) string {
	i := strings.LastIndex(frame, `,"pos":"`)
	if i < 0 || !strings.HasSuffix(frame, `"}`) {
		return frame
	}
	return frame[:i] + "}"
}

func splitLines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// waitSubscriptions waits until the server holds n subscriptions (from its
// metrics), so that a publish reaches a listener that was just started.
func (p *serverProc) waitSubscriptions(t *testing.T, n int) {
	t.Helper()
	rx := regexp.MustCompile(`(?m)^airlay_subscriptions (\d+)`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(p.base + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if m := rx.FindSubmatch(b); m != nil {
				if got, _ := strconv.Atoi(string(m[1])); got == n {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server does not hold %d subscriptions within 10s", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *serverProc) wsURL() string { return "ws" + strings.TrimPrefix(p.base, "http") + "/ws" }

func issueEvent(id, data string) string {
	return fmt.Sprintf(`{"type":"issueUpdate","id":%q,"data":[%s]}`, id, data)
}

func TestListenFilterCount(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	tok := mintToken(t, userID)
	// Flags after the subscriptions work too.
	l := startCLI(t, []string{"AIRLAY_TOKEN=" + tok}, "web_socket", "listen", "--url", srv.wsURL(),
		"issueUpdate:"+issueID, "issueUpdate:"+strings.ToUpper(issueID2), "--filter", `"id":"`+issueID2+`"|urgent`, "--count", "2")
	l.waitLine(t, l.stderr, `\{"event":"connection","state":"open"\}`)
	srv.waitSubscriptions(t, 2)
	for _, ev := range []string{issueEvent(issueID, `"a"`), issueEvent(issueID2, `"b"`), issueEvent(issueID, `"urgent"`), issueEvent(issueID2, `"after the count"`)} {
		if status, a := srv.publish(t, "", ev); status != 200 {
			t.Fatalf("publish: %d %v", status, a)
		}
	}
	if code := l.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d, want 0 after --count 2", code)
	}
	want := []string{
		`{"type":"issueUpdate","id":"` + issueID2 + `","data":["b"]}`,
		`{"type":"issueUpdate","id":"` + issueID + `","data":["urgent"]}`,
	}
	if got := eventLines(l.stdout.String()); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stdout:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	wantErr := []string{`{"event":"connection","state":"open"}`, `{"event":"connection","state":"close","reason":"normal","code":1000}`}
	if got := splitLines(l.stderr.String()); strings.Join(got, "\n") != strings.Join(wantErr, "\n") {
		t.Errorf("stderr:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantErr, "\n"))
	}
	if strings.Contains(l.stdout.String()+l.stderr.String(), tok) {
		t.Error("the token was echoed")
	}
}

// Lines on stdin are requests; their answers come on stdout in order.
func TestListenStdinRequests(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(mintToken(t, userID)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := startCLI(t, nil, "web_socket", "listen", "--url", srv.wsURL(), "--token-file", tokFile)
	l.waitLine(t, l.stderr, `"state":"open"`)
	fmt.Fprintf(l.stdin, `{"action":"attach","event":{"type":"issueUpdate","id":%q}}`+"\n", issueID)
	fmt.Fprintln(l.stdin, `not json`)
	fmt.Fprintln(l.stdin)
	fmt.Fprintf(l.stdin, `{"auth":"","action":"attach","event":{"type":"notification"}}`+"\n")
	fmt.Fprintf(l.stdin, `{"action":"attach","event":{"type":"downloadFile","id":%q}}`+"\n", exportID)
	l.waitLine(t, l.stdout, `(?s)(\{"status".*){4}`)
	srv.waitSubscriptions(t, 2)
	if status, _ := srv.publish(t, "", issueEvent(issueID, `"x"`)); status != 200 {
		t.Fatal("publish failed")
	}
	l.waitLine(t, l.stdout, `"data":\["x"\]`)
	if err := l.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := l.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGINT, want 0", code)
	}
	want := []string{
		`{"status":200,"message":"Ok","code":0}`,
		`{"status":400,"message":"Invalid request","code":5}`,
		`{"status":400,"message":"Token not set","code":1}`,
		`{"status":200,"message":"Ok","code":0}`,
		`{"type":"issueUpdate","id":"` + issueID + `","data":["x"]}`,
	}
	if got := eventLines(l.stdout.String()); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stdout:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.HasSuffix(l.stderr.String(), `{"event":"connection","state":"close","reason":"normal","code":1000}`+"\n") {
		t.Errorf("stderr does not end with a normal close:\n%s", l.stderr.String())
	}
}

// --timeout bounds connecting to a server that never answers.
func TestListenTimeout(t *testing.T) {
	t.Parallel()
	addr := servertest.ListenSilent(t)
	start := time.Now()
	l := startCLI(t, []string{"AIRLAY_TOKEN=x"}, "web_socket", "listen", "--url", "ws://"+addr+"/ws", "--timeout", "300ms", "notification")
	if code := l.wait(t, 5*time.Second); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("took %v with --timeout 300ms", el)
	}
	got := splitLines(l.stderr.String())
	var st stateLine
	if len(got) != 2 || json.Unmarshal([]byte(got[0]), &st) != nil || st.Event != "connection" || st.State != "fail" || !strings.Contains(st.Error, "timed out") {
		t.Fatalf("stderr %q: want a fail line saying it timed out, then the error", got)
	}
	if !strings.HasPrefix(got[1], "airlay-cli: ") {
		t.Errorf("last line %q", got[1])
	}
}

// Refusals: a failed connect or a refused attach exits 1 with the server's
// message; usage errors exit 2.
func TestListenRefusals(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	tok := mintToken(t, userID)
	closedPort := fmt.Sprintf("ws://127.0.0.1:%d/ws", freePort(t))
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  []string
		args []string
		code int
		want string // on stderr
	}{
		{"bad token", []string{"AIRLAY_TOKEN=not-a-token"}, []string{"--url", srv.wsURL(), "issueUpdate:" + issueID}, 1, "refused: Invalid token (code 2)"},
		{"bad id", []string{"AIRLAY_TOKEN=" + tok}, []string{"--url", srv.wsURL(), "issueUpdate:42"}, 1, "refused: Invalid request (code 5)"},
		{"bad type", []string{"AIRLAY_TOKEN=" + tok}, []string{"--url", srv.wsURL(), "issues:" + issueID}, 1, "refused: Invalid request (code 5)"},
		{"second refused", []string{"AIRLAY_TOKEN=" + tok}, []string{"--url", srv.wsURL(), "notification", "datasetUpdate"}, 1, "attach datasetUpdate refused: Invalid request (code 5)"},
		{"connection refused", []string{"AIRLAY_TOKEN=" + tok}, []string{"--url", closedPort, "notification"}, 1, `"state":"fail","error":"connect ` + closedPort},
		{"not a ws endpoint", []string{"AIRLAY_TOKEN=" + tok}, []string{"--url", strings.TrimSuffix(srv.wsURL(), "/ws") + "/nope", "notification"}, 1, "HTTP 404: Not found"},
		{"token file missing", nil, []string{"--url", srv.wsURL(), "--token-file", filepath.Join(dir, "nope"), "notification"}, 1, "--token-file"},
		{"no token", nil, []string{"--url", srv.wsURL(), "notification"}, 2, "set AIRLAY_TOKEN or use --token-file"},
		{"no url", []string{"AIRLAY_TOKEN=" + tok}, []string{"notification"}, 2, "--url is required"},
		{"bad filter", []string{"AIRLAY_TOKEN=" + tok}, []string{"--url", srv.wsURL(), "--filter", "(", "notification"}, 2, "--filter"},
		{"bad sub", []string{"AIRLAY_TOKEN=" + tok}, []string{"--url", srv.wsURL(), ":" + issueID}, 2, "want type[:id]"},
		{"unknown flag", []string{"AIRLAY_TOKEN=" + tok}, []string{"--url", srv.wsURL(), "--token", tok}, 2, "-token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := startCLI(t, tt.env, append([]string{"web_socket", "listen"}, tt.args...)...)
			if code := l.wait(t, 10*time.Second); code != tt.code {
				t.Fatalf("exit %d, want %d\nstderr:\n%s", code, tt.code, l.stderr.String())
			}
			if !strings.Contains(l.stderr.String(), tt.want) {
				t.Errorf("stderr lacks %q:\n%s", tt.want, l.stderr.String())
			}
			if l.stdout.String() != "" {
				t.Errorf("stdout not empty: %q", l.stdout.String())
			}
			if strings.Contains(l.stderr.String(), tok) {
				t.Error("the token was echoed")
			}
		})
	}
}

// Without --reconnect a drop ends listen with exit 1; with it, listen comes
// back after the server restarts on the same port and keeps printing.
func TestListenReconnect(t *testing.T) {
	t.Parallel()
	for _, reconnect := range []bool{false, true} {
		t.Run(fmt.Sprintf("reconnect=%v", reconnect), func(t *testing.T) {
			t.Parallel()
			srv := startServer(t)
			port := srv.base[strings.LastIndex(srv.base, ":")+1:]
			args := []string{"web_socket", "listen", "--url", srv.wsURL(), "issueUpdate:" + issueID}
			if reconnect {
				args = append(args, "--reconnect")
			}
			l := startCLI(t, []string{"AIRLAY_TOKEN=" + mintToken(t, userID)}, args...)
			srv.waitSubscriptions(t, 1)
			srv.publish(t, "", issueEvent(issueID, `"before"`))
			l.waitLine(t, l.stdout, `"before"`)
			srv.stop(t, syscall.SIGTERM)
			l.waitLine(t, l.stderr, `\{"event":"connection","state":"close","reason":"drop","code":1001\}`)
			if !reconnect {
				if code := l.wait(t, 5*time.Second); code != 1 {
					t.Fatalf("exit %d after a drop without --reconnect, want 1", code)
				}
				if !strings.Contains(l.stderr.String(), "airlay-cli: connection closed by the server: 1001") {
					t.Errorf("stderr:\n%s", l.stderr.String())
				}
				return
			}
			l.waitLine(t, l.stderr, `"state":"fail"`)
			n, _ := strconv.Atoi(port)
			var again *serverProc
			for attempt := 0; ; attempt++ {
				p, err := tryStartServer(t, n)
				if err == nil {
					again = p
					break
				}
				if !errors.Is(err, errPortTaken) || attempt > 20 {
					t.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			again.waitSubscriptions(t, 1)
			again.publish(t, "", issueEvent(issueID, `"after"`))
			l.waitLine(t, l.stdout, `"after"`)
			if err := l.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := l.wait(t, 5*time.Second); code != 0 {
				t.Fatalf("exit %d after SIGTERM, want 0", code)
			}
			want := []string{`{"type":"issueUpdate","id":"` + issueID + `","data":["before"]}`, `{"type":"issueUpdate","id":"` + issueID + `","data":["after"]}`}
			if got := eventLines(l.stdout.String()); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("stdout:\n%s\nwant each event once:\n%s", l.stdout.String(), strings.Join(want, "\n"))
			}
			st := splitLines(l.stderr.String())
			if st[0] != `{"event":"connection","state":"open"}` || st[len(st)-1] != `{"event":"connection","state":"close","reason":"normal","code":1000}` ||
				strings.Count(l.stderr.String(), `"state":"open"`) != 2 {
				t.Errorf("stderr:\n%s", l.stderr.String())
			}
			// The restarted server is another epoch: the re-attach with
			// since cannot recover, and says so once.
			reload := `{"event":"reload","type":"issueUpdate","id":"` + issueID + `"}`
			if n := strings.Count(l.stderr.String(), reload); n != 1 {
				t.Errorf("stderr has %s %d times, want once:\n%s", reload, n, l.stderr.String())
			}
			for _, line := range st {
				var s stateLine
				if err := json.Unmarshal([]byte(line), &s); err != nil || s.Event != "connection" && line != reload {
					t.Errorf("stderr line %q is not a connection state or the reload", line)
				}
			}
		})
	}
}

func TestPublish(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodTok := write("pub-token", publishToken+"\n")
	arrayFile := write("array.json", "[\n"+issueEvent(issueID, "1")+",\n"+issueEvent(issueID, "2")+"\n]\n")
	linesFile := write("events.ndjson", issueEvent(issueID, "3")+"\n\n"+issueEvent(issueID, "4")+"\n")
	badFile := write("bad.ndjson", issueEvent(issueID, "5")+"\n{oops\n")
	emptyFile := write("empty.json", "\n")
	env := []string{"AIRLAY_PUBLISH_TOKEN=" + publishToken}
	url := srv.base
	ok := `{"status":200,"message":"Ok","code":0}`
	tests := []struct {
		name   string
		env    []string
		stdin  string
		args   []string
		code   int
		stdout string // exact, or a regexp when it starts with ^
		stderr string // contained
	}{
		{"one event", env, "", []string{"--url", url, issueEvent(issueID, `"a"`)}, 0, ok, ""},
		{"wait", env, "", []string{"--url", url + "/", "--wait", "1", issueEvent(issueID, `"b"`)}, 0, `{"status":200,"message":"Ok","code":0,"delivered":1,"pending":0}`, ""},
		{"array file", env, "", []string{"--url", url, "--file", arrayFile}, 0, ok, ""},
		{"lines file", nil, "", []string{"--url", url + "/api/events", "--token-file", goodTok, "--file", linesFile}, 0, ok, ""},
		{"stdin", env, issueEvent(issueID, "6") + "\n", []string{"--url", url, "--file", "-"}, 0, ok, ""},
		{"bad event", env, "", []string{"--url", url, `{"type":"issueUpdate"}`}, 1, `{"status":400,"message":"Invalid request","code":5,"detail":"id is required for issueUpdate"}`, "400 Bad Request"},
		{"bad file", env, "", []string{"--url", url, "--file", badFile}, 1, `{"status":400,"message":"Invalid request","code":5,"detail":"the body goes on after its first JSON value (several events go in one JSON array)"}`, "400"},
		{"bad wait", env, "", []string{"--url", url, "--wait", "99", issueEvent(issueID, "7")}, 1, `{"status":400,"message":"Invalid request","code":5,"detail":"wait must be a number of seconds from 0 to 60"}`, "400"},
		{"wrong token", []string{"AIRLAY_PUBLISH_TOKEN=wrong"}, "", []string{"--url", url, issueEvent(issueID, "8")}, 1, `{"status":401,"message":"Invalid token","code":2,"detail":"the bearer token is not this server's publish_token"}`, "401"},
		{"empty file", env, "", []string{"--url", url, "--file", emptyFile}, 1, "", "no events"},
		{"unreachable", env, "", []string{"--url", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)), issueEvent(issueID, "9")}, 1, "", "connection refused"},
		{"no token", nil, "", []string{"--url", url, issueEvent(issueID, "10")}, 2, "", "set AIRLAY_PUBLISH_TOKEN or use --token-file"},
		{"event and file", env, "", []string{"--url", url, "--file", arrayFile, issueEvent(issueID, "11")}, 2, "", "give one EVENT_JSON or --file F"},
		{"nothing", env, "", []string{"--url", url}, 2, "", "give one EVENT_JSON or --file F"},
		{"ws url", env, "", []string{"--url", srv.wsURL(), issueEvent(issueID, "12")}, 2, "", "want http://HOST:PORT"},
	}
	// A listener sees exactly the events published with exit 0.
	l := startCLI(t, []string{"AIRLAY_TOKEN=" + mintToken(t, userID)}, "web_socket", "listen", "--url", srv.wsURL(), "issueUpdate:"+issueID)
	srv.waitSubscriptions(t, 1)
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, bin, append([]string{"web_socket", "publish"}, tt.args...)...)
		cmd.Env = append(cleanEnv(), tt.env...)
		cmd.Stdin = strings.NewReader(tt.stdin)
		var stdout, stderr testkit.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if code != tt.code {
			t.Errorf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", tt.name, code, tt.code, stdout.String(), stderr.String())
		}
		if got := strings.TrimSuffix(stdout.String(), "\n"); got != tt.stdout {
			t.Errorf("%s: stdout %q, want %q", tt.name, got, tt.stdout)
		}
		if !strings.Contains(stderr.String(), tt.stderr) {
			t.Errorf("%s: stderr %q lacks %q", tt.name, stderr.String(), tt.stderr)
		}
		if strings.Contains(stdout.String()+stderr.String(), publishToken) {
			t.Errorf("%s: the publish token was echoed", tt.name)
		}
	}
	l.waitLine(t, l.stdout, `"data":\[6\]`)
	var got []string
	sc := bufio.NewScanner(strings.NewReader(l.stdout.String()))
	for sc.Scan() {
		var e struct{ Data []any }
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || len(e.Data) != 1 {
			t.Fatalf("listen printed %q", sc.Text())
		}
		got = append(got, fmt.Sprint(e.Data[0]))
	}
	if want := "a b 1 2 3 4 6"; strings.Join(got, " ") != want {
		t.Errorf("the listener got %q, want %q", strings.Join(got, " "), want)
	}
}

func TestListenPublishHelp(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"web_socket", "--help"}, []string{"listen --url ws://HOST:PORT/ws", "publish --url http://HOST:PORT"}},
		{[]string{"web_socket", "listen", "--help"}, []string{"usage: airlay-cli web_socket listen", "-filter", "-count", "-timeout", "-reconnect", "-token-file", "AIRLAY_TOKEN"}},
		{[]string{"web_socket", "publish", "--help"}, []string{"usage: airlay-cli web_socket publish", "-wait", "-file", "-token-file", "AIRLAY_PUBLISH_TOKEN"}},
	} {
		r := cli(t, "", tt.args...)
		if r.code != 0 || strings.Count(r.stdout, "usage:") != 1 {
			t.Errorf("%q: want exit 0 and the usage once; %v", tt.args, r)
		}
		for _, w := range tt.want {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("%q: stdout lacks %q", tt.args, w)
			}
		}
	}
}

// With --reconnect a failed first connection is retried: listen waits for a
// server that is not up yet.
func TestListenWaitsForServer(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	l := startCLI(t, []string{"AIRLAY_TOKEN=" + mintToken(t, userID)}, "web_socket", "listen", "--reconnect",
		"--url", fmt.Sprintf("ws://127.0.0.1:%d/ws", port), "issueUpdate:"+issueID)
	l.waitLine(t, l.stderr, `(?s)"state":"fail".*"state":"fail"`)
	srv, err := tryStartServer(t, port)
	if errors.Is(err, errPortTaken) {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	l.waitLine(t, l.stderr, `"state":"open"`)
	srv.waitSubscriptions(t, 1)
	srv.publish(t, "", issueEvent(issueID, `"late"`))
	l.waitLine(t, l.stdout, `"late"`)
	if err := l.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := l.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

// ask POSTs /api/ask in the background; the channel gets status and answer.
func (p *serverProc) ask(t *testing.T, timeout, body string) <-chan map[string]any {
	ch := make(chan map[string]any, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, p.base+"/api/ask?timeout="+timeout, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+publishToken)
		resp, err := (&http.Client{Timeout: 70 * time.Second}).Do(req)
		if err != nil {
			t.Errorf("ask: %v", err)
			ch <- nil
			return
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		ch <- m
	}()
	return ch
}

// --reply: requests come on stdout, each stdin line is the reply to the
// oldest one (a JSON array as is, other text as one string); its answer
// comes on stdout.
func TestListenReply(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(mintToken(t, userID)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := startCLI(t, nil, "web_socket", "listen", "--url", srv.wsURL(), "--token-file", tokFile, "--reply", "issueUpdate:"+issueID)
	l.waitLine(t, l.stderr, `"state":"open"`)
	srv.waitSubscriptions(t, 2)
	fmt.Fprintln(l.stdin, "nobody asked")
	l.waitLine(t, l.stderr, `no request to reply to`)
	for i, c := range []struct{ line, want string }{{"yes, still editing", `["yes, still editing"]`}, {`[1, {"a": 2}]`, `[1,{"a":2}]`}} {
		ch := srv.ask(t, "10", `{"user":"`+userID+`","data":["q`+strconv.Itoa(i)+`"]}`)
		l.waitLine(t, l.stdout, `"type":"request","id":"[0-9a-f]{32}","data":\["q`+strconv.Itoa(i)+`"\]`)
		fmt.Fprintln(l.stdin, c.line)
		var m map[string]any
		select {
		case m = <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal("no answer to the ask")
		}
		if got, _ := json.Marshal(m["reply"]); m["code"] != 0.0 || string(got) != c.want {
			t.Errorf("ask %d answered %v, want reply %s", i, m, c.want)
		}
	}
	l.waitLine(t, l.stdout, `(?s)(\{"status":200.*){2}`)
	if err := l.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := l.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGINT, want 0", code)
	}
}
