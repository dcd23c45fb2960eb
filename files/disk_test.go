package files

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/airlay/airlay/internal/testkit"
)

func diskOptions(log *slog.Logger) Options {
	return Options{TTL: time.Hour, MaxFile: 1 << 20, MaxBytes: 1 << 20, MaxFiles: 10, Log: log}
}

// Leftovers of a process that is gone are removed when a store opens (at
// the server's start-up); anything the store did not create stays, and so
// do the files of a store still open.
func TestDiskStartupCleanup(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	quiet := slog.New(slog.DiscardHandler)
	// An earlier run that died: a store made by the real code, abandoned
	// without closing (its lock goes with the "process").
	old, err := OpenDisk(root, diskOptions(quiet))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a.txt", "b.txt"} {
		if _, err := old.Put(context.Background(), name, strings.NewReader("old "+name), -1); err != nil {
			t.Fatal(err)
		}
	}
	// A second dead run, with a file the operator put into its directory.
	old2, err := OpenDisk(root, diskOptions(quiet))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old2.Put(context.Background(), "c.txt", strings.NewReader("old c"), -1); err != nil {
		t.Fatal(err)
	}
	abandon(old)
	abandon(old2)
	foreign := map[string]string{
		"mine.txt":                                  "the operator's",
		"f-0123456789abcdef":                        "looks like a data file, but not in a directory of ours",
		filepath.Join(old2.dir, "notes.txt"):        "the operator's, in a directory of a dead run",
		"airlay-files-123/f-0123456789abcdef":       "a directory named like ours, without a marker",
		"airlay-files-456/" + Marker:                "a marker that is not ours",
		"airlay-files-456/f-0123456789abcdef":       "beside a marker that is not ours",
		"other/airlay-files-789/f-0123456789abcdef": "deeper down",
	}
	for p, text := range foreign {
		if !filepath.IsAbs(p) {
			p = filepath.Join(root, p)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	logs := &testkit.Buffer{}
	st, err := OpenDisk(root, diskOptions(slog.New(slog.NewTextHandler(logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old.dir); !os.IsNotExist(err) {
		t.Errorf("the dead run's directory %s is still there (%v)", old.dir, err)
	}
	if got := dirFiles(t, old2.dir); fmt.Sprint(got) != "[notes.txt]" {
		t.Errorf("the dead run's directory with a foreign file holds %v, want only notes.txt", got)
	}
	for p, text := range foreign {
		if !filepath.IsAbs(p) {
			p = filepath.Join(root, p)
		}
		if b, err := os.ReadFile(p); err != nil || string(b) != text {
			t.Errorf("%s (%s): %q %v", p, text, b, err)
		}
	}
	if !strings.Contains(logs.String(), "leftovers_removed=3") {
		t.Errorf("start-up log does not say 3 leftovers went:\n%s", logs.String())
	}
	// A store opening beside a running one leaves its files alone.
	p, err := st.Put(context.Background(), "alive.txt", strings.NewReader("alive"), 5)
	if err != nil {
		t.Fatal(err)
	}
	logs2 := &testkit.Buffer{}
	other, err := OpenDisk(root, diskOptions(slog.New(slog.NewTextHandler(logs2, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	f, err := st.Open(context.Background(), p.Key, "alive.txt")
	if err != nil {
		t.Fatalf("the running store's file: %v", err)
	}
	b, _ := io.ReadAll(f.Content)
	f.Content.Close()
	if string(b) != "alive" {
		t.Errorf("the running store's file: %q", b)
	}
	if !strings.Contains(logs2.String(), "leftovers_removed=0") {
		t.Errorf("second store's start-up log:\n%s", logs2.String())
	}
	// Close (the server's graceful shutdown) removes the store's own
	// directory.
	if _, err := st.Put(context.Background(), "x.txt", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(st.dir); !os.IsNotExist(err) {
		t.Errorf("after Close %s is still there (%v)", st.dir, err)
	}
}

// abandon stops a store as a crash would: the lock is released, nothing is
// removed.
func abandon(st *Disk) {
	close(st.stop)
	<-st.done
	st.lock.Close()
}

func dirFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	sort.Strings(names)
	return names
}
