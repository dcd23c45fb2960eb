package mongodb

// The faithful harness: mongosim (../shared/tools/mongosim from the
// repository's root, or $MONGOSIM_DIR; $MONGOSIM_BIN for a binary built
// already), a one-node replica-set simulator that derives change events
// from its own oplog as MongoDB does (updatedFields as written, no entry
// for a write that changes nothing, updateLookup at read time, the 16 MB
// event limit, $changeStreamSplitLargeEvent). Each test that needs it gets
// a simulator process of its own, on 127.0.0.1 port 0, stopped at the end.
//
// Without mongosim these tests are skipped, loudly; with
// AIRLAY_REQUIRE_MONGOSIM=1 (CI sets it) they fail instead.
//
// The simulator is a separate module (airlay/tools/mongosim, not
// fetchable from the module proxy), so it is built and run as a program
// rather than imported: the project's go.mod stays free of a replace
// directive that would break every build without that directory.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

var (
	simOnce sync.Once
	simBin  string
	simErr  error
	simTmp  string
)

// TestMain removes the simulator binary built for the run.
func TestMain(m *testing.M) {
	code := m.Run()
	if simTmp != "" {
		_ = os.RemoveAll(simTmp)
	}
	os.Exit(code)
}

// mongosimDir is where the simulator's sources are.
func mongosimDir() (string, error) {
	if d := os.Getenv("MONGOSIM_DIR"); d != "" {
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/airlay/airlay\n") {
			return filepath.Join(filepath.Dir(d), "shared", "tools", "mongosim"), nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("the repository's root (go.mod) not found above %s", wd)
		}
	}
}

func buildMongosim() (string, error) {
	if b := os.Getenv("MONGOSIM_BIN"); b != "" {
		if _, err := os.Stat(b); err != nil {
			return "", fmt.Errorf("MONGOSIM_BIN: %w", err)
		}
		return b, nil
	}
	dir, err := mongosimDir()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return "", fmt.Errorf("mongosim not found at %s (set MONGOSIM_DIR or MONGOSIM_BIN): %w", dir, err)
	}
	simTmp, err = os.MkdirTemp("", "airlay-mongosim-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(simTmp, "mongosim")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build mongosim in %s: %v\n%s", dir, err, out)
	}
	return bin, nil
}

// simProc is one running simulator.
type simProc struct {
	t       testing.TB
	uri     string
	control string // http://host:port
	cmd     *exec.Cmd
}

// startSim starts a simulator for this test (args: extra flags of serve).
func startSim(t testing.TB, args ...string) *simProc {
	t.Helper()
	simOnce.Do(func() { simBin, simErr = buildMongosim() })
	if simErr != nil {
		if os.Getenv("AIRLAY_REQUIRE_MONGOSIM") != "" {
			t.Fatalf("mongosim is required (AIRLAY_REQUIRE_MONGOSIM is set): %v", simErr)
		}
		t.Skipf("SKIPPED: this test needs mongosim (the MongoDB simulator): %v", simErr)
	}
	cmd := exec.Command(simBin, append([]string{"serve", "-addr", "127.0.0.1:0", "-control", "127.0.0.1:0", "-noop-interval", "0"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &simProc{t: t, cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("mongosim stderr:\n%s", stderr.String())
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, out)
	}()
	deadline := time.After(20 * time.Second)
	for p.uri == "" || p.control == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("mongosim exited: %s", stderr.String())
			}
			if i := strings.Index(l, "(mongodb://"); i >= 0 {
				p.uri = strings.TrimSuffix(l[i+1:], ")")
			}
			if i := strings.Index(l, "http://"); i >= 0 {
				p.control = strings.Fields(l[i:])[0]
			}
		case <-deadline:
			t.Fatalf("mongosim did not start within 20s: %s", stderr.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	return p
}

// client is a driver client of the simulator, closed at the end.
func (p *simProc) client() *mongo.Client {
	p.t.Helper()
	c, err := mongo.Connect(context.Background(), options.Client().ApplyURI(p.uri))
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

// fault adds a fault (see mongosim's README) and returns its id.
func (p *simProc) fault(f map[string]any) int {
	p.t.Helper()
	b, _ := json.Marshal(f)
	resp, err := http.Post(p.control+"/fault", "application/json", strings.NewReader(string(b)))
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		ID    int    `json:"id"`
		Error string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&r)
	if resp.StatusCode != 200 {
		p.t.Fatalf("mongosim fault %s: %d %s", b, resp.StatusCode, r.Error)
	}
	return r.ID
}

func (p *simProc) clearFaults() {
	p.t.Helper()
	req, _ := http.NewRequest("DELETE", p.control+"/fault", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	resp.Body.Close()
}

// simStats is what the tests read of mongosim's counters.
type simStats struct {
	Commands     map[string]int64 `json:"commands"`
	Finds        map[string]int64 `json:"finds"`
	Lookups      map[string]int64 `json:"update_lookups"`
	Writes       map[string]int64 `json:"writes"`
	OplogWrites  int64            `json:"oplog_writes"`
	TooLarge     int64            `json:"too_large_events"`
	SplitEvents  int64            `json:"split_events"`
	ChangeStream int64            `json:"change_streams_opened"`
}

func (p *simProc) stats() simStats {
	p.t.Helper()
	resp, err := http.Get(p.control + "/stats")
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var s simStats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		p.t.Fatal(err)
	}
	return s
}

// writes counts the oplog entries of ns ("db.coll") for operation op (i,
// u, r, d).
func (s simStats) writes(ns, op string) int64 { return s.Writes[ns+" "+op] }

// exec runs a command (extended JSON) in database db, as a client of the
// simulator would, without faults.
func (p *simProc) exec(db, cmd string) {
	p.t.Helper()
	resp, err := http.Post(p.control+"/command?db="+db, "application/json", strings.NewReader(cmd))
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"ok":{"$numberDouble":"1.0"}`) && !strings.Contains(string(body), `"ok":1`) {
		p.t.Fatalf("mongosim command %.200s: %d %s", cmd, resp.StatusCode, body)
	}
}
