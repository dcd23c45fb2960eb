package server

// Throughput of temporary download links against plain net/http serving the
// same 64 MiB file, and the cost of a lookup hit and misses. The figures are in
// BENCHMARKS.md:
//
//	go test -run x -bench 'Files(Upload|Download)|Plain' -benchtime 10x ./server/
//	go test -run x -bench 'FilesLookup|FilesMissHTTP' ./server/

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const benchFileSize = 64 << 20

func benchClient(b *testing.B) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// benchFileEnv starts a server with the store of kind ("disk", "gridfs":
// on a mongosim of its own).
func benchFileEnv(b *testing.B, kind string, mutate ...func(*Config)) *testEnv {
	return fileEnv(b, kind, func(c *Config) {
		for _, f := range mutate {
			f(c)
		}
		c.MaxFileBytes = benchFileSize
		c.MaxFilesBytes = 1 << 40
		c.MaxFiles = 1 << 20
		c.FileTTL = time.Hour
		c.LogLevel = slog.LevelError + 4 // quiet
	})
}

// benchPost uploads data to url and fails unless the answer is 200.
func benchPost(b *testing.B, c *http.Client, url, authz string, data []byte) []byte {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(data))
	if err != nil {
		b.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		b.Fatalf("POST %s: %d %s", url, resp.StatusCode, answer)
	}
	return answer
}

// benchGet downloads url into io.Discard and checks the length.
func benchGet(b *testing.B, c *http.Client, url string) {
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || n != benchFileSize {
		b.Fatalf("GET %s: %d, %d bytes, %v", url, resp.StatusCode, n, err)
	}
}

// POST /api/files: the body streamed to a file in files_dir (disk), or to
// GridFS chunks on mongosim (gridfs; the files expire after 2 s, so that the
// simulator, which keeps everything in memory, holds a few at most).
func BenchmarkFilesUpload(b *testing.B) {
	for _, kind := range storeKinds {
		b.Run(kind, func(b *testing.B) {
			e := benchFileEnv(b, kind, func(c *Config) {
				if kind == "gridfs" {
					c.FileTTL = 2 * time.Second
				}
			})
			c := benchClient(b)
			data := randomBytes(benchFileSize, 9)
			b.SetBytes(benchFileSize)
			b.ReportAllocs()
			for b.Loop() {
				benchPost(b, c, e.base+"/api/files?name=bench.bin", "Bearer "+testPublishToken, data)
			}
		})
	}
}

// The baseline of an upload: a handler that copies the body to a new file
// with io.Copy, on a plain httptest server.
func BenchmarkPlainUpload(b *testing.B) {
	dir := b.TempDir()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.CreateTemp(dir, "up-*")
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer os.Remove(f.Name())
		if _, err := io.Copy(f, r.Body); err != nil {
			f.Close()
			http.Error(w, err.Error(), 400)
			return
		}
		if err := f.Close(); err != nil {
			http.Error(w, err.Error(), 500)
		}
	}))
	b.Cleanup(srv.Close)
	c := benchClient(b)
	data := randomBytes(benchFileSize, 9)
	b.SetBytes(benchFileSize)
	b.ReportAllocs()
	for b.Loop() {
		benchPost(b, c, srv.URL+"/up", "", data)
	}
}

// GET /files/<key>/<name> of a 64 MiB file, from either store.
func BenchmarkFilesDownload(b *testing.B) {
	for _, kind := range storeKinds {
		b.Run(kind, func(b *testing.B) {
			e := benchFileEnv(b, kind)
			c := benchClient(b)
			answer := benchPost(b, c, e.base+"/api/files?name=bench.bin", "Bearer "+testPublishToken, randomBytes(benchFileSize, 9))
			var m struct{ URL string }
			if err := json.Unmarshal(answer, &m); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(benchFileSize)
			b.ReportAllocs()
			for b.Loop() {
				benchGet(b, c, e.base+m.URL)
			}
		})
	}
}

// The baseline of a download: http.ServeFile of the same bytes on a plain
// httptest server.
func BenchmarkPlainServeFile(b *testing.B) {
	benchServeFile(b, func(ln net.Listener) net.Listener { return ln })
}

// http.ServeFile again, behind the server's own listener wrapper
// (batchListener), which every connection of the real server goes through
// (it passes ReadFrom on, so sendfile still works).
func BenchmarkPlainServeFileBatchListener(b *testing.B) {
	benchServeFile(b, func(ln net.Listener) net.Listener { return batchListener{Listener: ln} })
}

func benchServeFile(b *testing.B, wrap func(net.Listener) net.Listener) {
	path := filepath.Join(b.TempDir(), "bench.bin")
	if err := os.WriteFile(path, randomBytes(benchFileSize, 9), 0o600); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, path)
	}))
	srv.Listener = wrap(srv.Listener)
	srv.Start()
	b.Cleanup(srv.Close)
	c := benchClient(b)
	b.SetBytes(benchFileSize)
	b.ReportAllocs()
	for b.Loop() {
		benchGet(b, c, srv.URL+"/bench.bin")
	}
}

// base64Key returns a key of the same length as key that differs only in its
// last character.
func base64Key(key string) string {
	last := byte('A')
	if key[len(key)-1] == 'A' {
		last = 'B'
	}
	return key[:len(key)-1] + string(last)
}

// The same over HTTP: GET /files/<key>/<name> answering 404 for each kind of
// miss, and 200 for a hit of a small file (the disk store; an expired file's
// lookup is measured in package files, BenchmarkDiskLookup).
func BenchmarkFilesMissHTTP(b *testing.B) {
	e := benchFileEnv(b, "disk")
	c := benchClient(b)
	place := func() (string, string) {
		var m struct{ URL string }
		if err := json.Unmarshal(benchPost(b, c, e.base+"/api/files?name=report.xlsx", "Bearer "+testPublishToken, []byte("x")), &m); err != nil {
			b.Fatal(err)
		}
		key, _, _ := strings.Cut(strings.TrimPrefix(m.URL, "/files/"), "/")
		return m.URL, key
	}
	hit, key := place()
	for _, tc := range []struct {
		name, path string
		status     int
	}{
		{"hit", hit, 200},
		{"unknown-key", "/files/" + base64Key(key) + "/report.xlsx", 404},
		{"wrong-name", "/files/" + key + "/report.xlsy", 404},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				resp, err := c.Get(e.base + tc.path)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.status {
					b.Fatalf("%s: %d", tc.path, resp.StatusCode)
				}
			}
		})
	}
}
