// Package mongosim runs mongosim, the one-node replica-set simulator of
// ../shared/tools/mongosim, for the tests of several packages: built from
// $MONGOSIM_DIR (default: ../shared/tools/mongosim beside the repository's
// root) or run from $MONGOSIM_BIN, on 127.0.0.1 port 0, one process per
// test, stopped at its end.
//
// Without mongosim a test that needs it is skipped, loudly; with
// AIRLAY_REQUIRE_MONGOSIM=1 (CI sets it) it fails instead. A package using
// it calls Cleanup from its TestMain, which removes the binary it built.
//
// Package mongodb's tests start it through this too (mongodb/mongosim_test.go
// adds their fault and stats helpers).
package mongosim

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
	once   sync.Once
	binary string
	errBin error
	tmp    string
)

// Cleanup removes the simulator binary built for this test run.
func Cleanup() {
	if tmp != "" {
		_ = os.RemoveAll(tmp)
	}
}

func sourceDir() (string, error) {
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

func build() (string, error) {
	if b := os.Getenv("MONGOSIM_BIN"); b != "" {
		if _, err := os.Stat(b); err != nil {
			return "", fmt.Errorf("MONGOSIM_BIN: %w", err)
		}
		return b, nil
	}
	dir, err := sourceDir()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return "", fmt.Errorf("mongosim not found at %s (set MONGOSIM_DIR or MONGOSIM_BIN): %w", dir, err)
	}
	tmp, err = os.MkdirTemp("", "airlay-mongosim-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(tmp, "mongosim")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build mongosim in %s: %v\n%s", dir, err, out)
	}
	return bin, nil
}

// Proc is one running simulator.
type Proc struct {
	URI     string // mongodb://127.0.0.1:PORT/?replicaSet=rs0
	Control string // http://127.0.0.1:PORT, its control endpoint
	t       testing.TB
}

// Start starts a simulator for this test (args: extra flags of serve).
func Start(t testing.TB, args ...string) *Proc {
	t.Helper()
	once.Do(func() { binary, errBin = build() })
	if errBin != nil {
		if os.Getenv("AIRLAY_REQUIRE_MONGOSIM") != "" {
			t.Fatalf("mongosim is required (AIRLAY_REQUIRE_MONGOSIM is set): %v", errBin)
		}
		t.Skipf("SKIPPED: this test needs mongosim (the MongoDB simulator): %v", errBin)
	}
	cmd := exec.Command(binary, append([]string{"serve", "-addr", "127.0.0.1:0", "-control", "127.0.0.1:0", "-noop-interval", "0"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Proc{t: t}
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
	for p.URI == "" || p.Control == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("mongosim exited: %s", stderr.String())
			}
			if i := strings.Index(l, "(mongodb://"); i >= 0 {
				p.URI = strings.TrimSuffix(l[i+1:], ")")
			}
			if i := strings.Index(l, "http://"); i >= 0 {
				p.Control = strings.Fields(l[i:])[0]
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

// Client is a driver client of the simulator, disconnected at the end.
func (p *Proc) Client() *mongo.Client {
	p.t.Helper()
	return Connect(p.t, p.URI)
}

// Connect is a driver client of uri, disconnected at the end of the test.
func Connect(t testing.TB, uri string) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(context.Background(), options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

// Stats are the simulator's counters (GET /stats): commands by name,
// writes by "db.coll op".
type Stats struct {
	Commands map[string]int64 `json:"commands"`
	Writes   map[string]int64 `json:"writes"`
}

// Stats reads the counters.
func (p *Proc) Stats() Stats {
	p.t.Helper()
	resp, err := http.Get(p.Control + "/stats")
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var s Stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		p.t.Fatal(err)
	}
	return s
}

// Sub returns the counters of s minus those of before.
func (s Stats) Sub(before Stats) Stats {
	d := Stats{Commands: map[string]int64{}, Writes: map[string]int64{}}
	for k, v := range s.Commands {
		if v -= before.Commands[k]; v != 0 {
			d.Commands[k] = v
		}
	}
	for k, v := range s.Writes {
		if v -= before.Writes[k]; v != 0 {
			d.Writes[k] = v
		}
	}
	return d
}
