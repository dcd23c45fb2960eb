package server

// Temporary download links, as PROTOCOL.md "Temporary download links: POST
// /api/files" describes, over real HTTP against the real server.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlay/airlay/files"
	"github.com/airlay/airlay/internal/mongosim"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// storeKinds are the stores every contract test runs against: the disk
// store of the mode without MongoDB, and GridFS on a mongosim of the test's
// own (what cmd wires when [mongodb] uri is set).
var storeKinds = []string{"disk", "gridfs"}

// forStores runs test once per store, in parallel subtests.
func forStores(t *testing.T, test func(t *testing.T, kind string)) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			if t.Name() != "TestFilesStalledUpload/"+kind && t.Name() != "TestFilesLargeStreamed/"+kind {
				t.Parallel()
			}
			test(t, kind)
		})
	}
}

// gridTestOptions are the GridFS settings of the tests' servers: no grace
// after expiry (a test that needs one sets it), a quick sweep.
func gridTestOptions() files.GridFSOptions {
	return files.GridFSOptions{Instance: "test", Grace: -1, Sweep: 200 * time.Millisecond}
}

// fileEnv starts a server whose files live in a fresh files_dir (disk) or in
// GridFS on a fresh mongosim (gridfs); grid changes the GridFS settings.
func fileEnv(t testing.TB, kind string, mutate func(*Config), grid ...func(*files.GridFSOptions)) *testEnv {
	t.Helper()
	dir := t.TempDir()
	cfg := Defaults()
	cfg.File = "test.ini"
	cfg.Address = "127.0.0.1"
	cfg.Port = 0
	cfg.JWTPublicKey = writePublicKey(t, t.TempDir())
	cfg.PublishToken = testPublishToken
	cfg.LogLevel = slog.LevelDebug
	cfg.FilesDir = dir
	if mutate != nil {
		mutate(&cfg)
	}
	var opts Options
	var db *mongo.Database
	if kind == "gridfs" {
		db = mongosim.Start(t).Client().Database("airlay")
		g := gridTestOptions()
		g.UploadTimeout = cfg.UploadTimeout
		for _, f := range grid {
			f(&g)
		}
		opts.Files = func(o files.Options) (files.Store, error) { return files.OpenGridFS(db, o, g) }
	}
	e := startEnv(t, &cfg, opts)
	e.gridDB = db
	return e
}

// upload POSTs body to /api/files?name=... (name query-escaped) and returns
// the status and the decoded answer. size -1 sends the body chunked.
func (e *testEnv) upload(name string, body io.Reader, size int64) (int, map[string]any) {
	e.t.Helper()
	return e.uploadRaw("?name="+url.QueryEscape(name), "Bearer "+testPublishToken, body, size)
}

func (e *testEnv) uploadRaw(query, authz string, body io.Reader, size int64) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.base+"/api/files"+query, body)
	if err != nil {
		e.t.Fatal(err)
	}
	req.ContentLength = size
	if size < 0 {
		req.Body = io.NopCloser(struct{ io.Reader }{body}) // hide the length: chunked
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	return e.do(req)
}

// placed uploads data under name, expects 200, and returns the URL.
func (e *testEnv) placed(name string, data []byte) string {
	e.t.Helper()
	status, m := e.upload(name, bytes.NewReader(data), int64(len(data)))
	if status != 200 {
		e.t.Fatalf("upload %q: %d %v", name, status, m)
	}
	u, _ := m["url"].(string)
	return u
}

// download GETs path with extra headers and returns the response and body.
func (e *testEnv) download(method, path string, h http.Header) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, b
}

// storeFiles lists what the store holds: the data files in the disk
// store's directory; in GridFS the files' documents and the reservations
// of uploads in progress, or, when there are none, the chunks left (which
// should be none).
func storeFiles(t testing.TB, e *testEnv) []string {
	t.Helper()
	if e.gridDB != nil {
		var names []string
		ctx := context.Background()
		for _, coll := range []string{"airlay_files.files", "airlay_files.uploads", "airlay_files.chunks"} {
			if coll == "airlay_files.chunks" && len(names) > 0 {
				break
			}
			cur, err := e.gridDB.Collection(coll).Find(ctx, bson.D{})
			if err != nil {
				t.Fatal(err)
			}
			for cur.Next(ctx) {
				names = append(names, coll+" "+cur.Current.Lookup("_id").String())
			}
			if err := cur.Err(); err != nil {
				t.Fatal(err)
			}
			cur.Close(ctx)
		}
		return names
	}
	entries, err := os.ReadDir(e.srv.files.(*files.Disk).Dir())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		if en.Name() != files.Marker {
			names = append(names, en.Name())
		}
	}
	return names
}

// storeUsage is what counts against max_files and max_files_bytes now.
func storeUsage(t testing.TB, e *testEnv) (int64, int64) {
	t.Helper()
	switch st := e.srv.files.(type) {
	case *files.Disk:
		n, b := st.Usage()
		return int64(n), b
	case *files.GridFS:
		n, b, err := st.Usage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return n, b
	}
	t.Fatalf("store %T", e.srv.files)
	return 0, 0
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{byte(seed)}).Read(b)
	return b
}

// metricValue reads one series from /metrics ("" labels: a plain series).
func metricValue(t testing.TB, e *testEnv, series string) string {
	t.Helper()
	resp, b := e.download(http.MethodGet, "/metrics", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

var fileURLPattern = regexp.MustCompile(`^/files/([A-Za-z0-9_-]{27})/([^/]+)$`)

func TestFilesRoundTrip(t *testing.T) {
	t.Parallel()
	forStores(t, func(t *testing.T, kind string) {
		e := fileEnv(t, kind, nil)
		data := randomBytes(100_000, 1)
		before := time.Now().UTC().Truncate(time.Second)
		status, m := e.upload("report.xlsx", bytes.NewReader(data), int64(len(data)))
		if status != 200 {
			t.Fatalf("upload: %d %v", status, m)
		}
		if got, want := apiKeys(m), []string{"code", "expires", "message", "status", "url"}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("answer keys %v, want %v", got, want)
		}
		if m["status"] != 200.0 || m["code"] != 0.0 || m["message"] != "Ok" {
			t.Errorf("answer %v", m)
		}
		u, _ := m["url"].(string)
		sm := fileURLPattern.FindStringSubmatch(u)
		if sm == nil || sm[2] != "report.xlsx" {
			t.Fatalf("url %q, want /files/<27 base64url chars>/report.xlsx", u)
		}
		exp, err := time.Parse(time.RFC3339, fmt.Sprint(m["expires"]))
		if err != nil || !strings.HasSuffix(fmt.Sprint(m["expires"]), "Z") {
			t.Fatalf("expires %v: not RFC 3339 UTC (%v)", m["expires"], err)
		}
		if d := exp.Sub(before); d < e.cfg.FileTTL || d > e.cfg.FileTTL+5*time.Second {
			t.Errorf("expires %v is %v after the upload, want file_ttl %v", exp, d, e.cfg.FileTTL)
		}

		resp, b := e.download(http.MethodGet, u, nil)
		if resp.StatusCode != 200 || !bytes.Equal(b, data) {
			t.Fatalf("GET %s: %d, %d bytes (want the %d bytes sent)", u, resp.StatusCode, len(b), len(data))
		}
		for k, want := range map[string]string{
			"Content-Length":         fmt.Sprint(len(data)),
			"Content-Type":           "application/octet-stream",
			"Content-Disposition":    `attachment; filename="report.xlsx"`,
			"Cache-Control":          "no-store",
			"X-Content-Type-Options": "nosniff",
			"Accept-Ranges":          "bytes",
		} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s: %q, want %q", k, got, want)
			}
		}
		// HEAD: the headers, no body.
		resp, b = e.download(http.MethodHead, u, nil)
		if resp.StatusCode != 200 || len(b) != 0 || resp.Header.Get("Content-Length") != fmt.Sprint(len(data)) {
			t.Errorf("HEAD: %d, %d bytes, Content-Length %q", resp.StatusCode, len(b), resp.Header.Get("Content-Length"))
		}

		// An empty file is a file.
		u0 := e.placed("empty.csv", nil)
		if resp, b := e.download(http.MethodGet, u0, nil); resp.StatusCode != 200 || len(b) != 0 || resp.Header.Get("Content-Length") != "0" {
			t.Errorf("empty file: %d, %d bytes, Content-Length %q", resp.StatusCode, len(b), resp.Header.Get("Content-Length"))
		}
		// Chunked (no Content-Length) works too.
		status, m = e.upload("chunked.bin", bytes.NewReader(data), -1)
		if status != 200 {
			t.Fatalf("chunked upload: %d %v", status, m)
		}
		if resp, b := e.download(http.MethodGet, m["url"].(string), nil); resp.StatusCode != 200 || !bytes.Equal(b, data) {
			t.Errorf("chunked: %d, %d bytes", resp.StatusCode, len(b))
		}

		// Two uploads of the same name get unrelated keys.
		u2 := e.placed("report.xlsx", data)
		if u2 == u {
			t.Errorf("same URL twice: %s", u)
		}
		if got := metricValue(t, e, "airlay_files_stored"); got != "4" {
			t.Errorf("airlay_files_stored %q, want 4", got)
		}
		if got := metricValue(t, e, "airlay_files_stored_bytes"); got != fmt.Sprint(3*len(data)) {
			t.Errorf("airlay_files_stored_bytes %q, want %d", got, 3*len(data))
		}
		if got := metricValue(t, e, `airlay_file_uploads_total{status="200"}`); got != "4" {
			t.Errorf("uploads 200: %q, want 4", got)
		}
		if got := metricValue(t, e, "airlay_file_downloads_total"); got != "3" {
			t.Errorf("downloads: %q, want 3 (HEAD does not count)", got)
		}
	})
}

// Misses: unknown key, known key with another name, a name in another
// case, a truncated key, other paths under /files: all the same 404.
func TestFilesMisses(t *testing.T) {
	t.Parallel()
	forStores(t, func(t *testing.T, kind string) {
		e := fileEnv(t, kind, nil)
		u := e.placed("a.txt", []byte("hello"))
		key := fileURLPattern.FindStringSubmatch(u)[1]
		_, want := e.download(http.MethodGet, "/files/"+strings.Repeat("A", 27)+"/a.txt", nil)
		for _, path := range []string{
			"/files/" + strings.Repeat("A", 27) + "/a.txt",
			"/files/" + key + "/b.txt",
			"/files/" + key + "/A.txt",
			"/files/" + key + "/a.txt%20",
			"/files/" + key[:26] + "/a.txt",
			"/files/" + key + "x/a.txt",
			"/files/" + key,
			"/files/" + key + "/",
			"/files/" + key + "/a.txt/x",
			"/files/a.txt",
		} {
			resp, b := e.download(http.MethodGet, path, nil)
			if resp.StatusCode != 404 {
				t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
				continue
			}
			if !bytes.Equal(b, want) {
				t.Errorf("GET %s: %q, want the same answer as any miss %q", path, b, want)
			}
		}
		var m map[string]any
		if err := json.Unmarshal(want, &m); err != nil {
			t.Fatal(err)
		}
		plainExpectAnswer(t, "miss", 404, m, 404, 5, "Not found")
		if resp, _ := e.download(http.MethodGet, u, nil); resp.StatusCode != 200 {
			t.Errorf("the file itself: %d", resp.StatusCode)
		}
	})
}

func TestFilesNames(t *testing.T) {
	t.Parallel()
	forStores(t, func(t *testing.T, kind string) {
		e := fileEnv(t, kind, nil)
		for _, name := range []string{
			"a b.txt",
			"отчёт за май.xlsx",
			"報告.pdf",
			`say "hi".txt`,
			"100%.csv",
			"semi;colon,comma.txt",
			"...",
			"x.",
			" leading space",
			"%2F..%2Fetc",
			"a+b=c&d#e?f.txt",
			"emoji 📊.csv",
			strings.Repeat("я", 127), // 254 bytes
		} {
			data := []byte("contents of " + name)
			status, m := e.upload(name, bytes.NewReader(data), int64(len(data)))
			if status != 200 {
				t.Errorf("name %q: %d %v", name, status, m)
				continue
			}
			u := m["url"].(string)
			if want := "/" + url.PathEscape(name); !strings.HasSuffix(u, want) {
				t.Errorf("name %q: url %q, want it to end in %q", name, u, want)
			}
			resp, b := e.download(http.MethodGet, u, nil)
			if resp.StatusCode != 200 || !bytes.Equal(b, data) {
				t.Errorf("name %q: GET %s: %d %q", name, u, resp.StatusCode, b)
				continue
			}
			cd := resp.Header.Get("Content-Disposition")
			disp, params, err := mime.ParseMediaType(cd)
			if err != nil || disp != "attachment" || params["filename"] != name {
				t.Errorf("name %q: Content-Disposition %q parses as %q %q (%v)", name, cd, disp, params["filename"], err)
			}
			for i := 0; i < len(cd); i++ {
				if cd[i] < 0x20 || cd[i] >= 0x7f {
					t.Errorf("name %q: Content-Disposition %q is not printable ASCII", name, cd)
					break
				}
			}
			// The ASCII fallback is a quoted string without escapes, for old clients.
			fb := regexp.MustCompile(`filename="([^"\\]*)"`).FindStringSubmatch(cd)
			if fb == nil {
				t.Errorf("name %q: no plain filename= fallback in %q", name, cd)
			}
		}
		cd := contentDisposition("отчёт.xlsx")
		if want := `attachment; filename="_____.xlsx"; filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.xlsx`; cd != want {
			t.Errorf("Cyrillic: %s, want %s", cd, want)
		}

		for _, tc := range []struct{ what, query string }{
			{"no name", ""},
			{"other parameter", "?file=a.txt"},
			{"empty", "?name="},
			{".", "?name=."},
			{"..", "?name=.."},
			{"../x", "?name=" + url.QueryEscape("../x")},
			{"a/b", "?name=a%2Fb"},
			{"/abs", "?name=%2Fetc%2Fpasswd"},
			{"trailing /", "?name=a%2F"},
			{`a\b`, "?name=a%5Cb"},
			{`..\x`, "?name=..%5Cx"},
			{"NUL", "?name=a%00b"},
			{"newline", "?name=a%0Ab"},
			{"CR", "?name=a%0Db"},
			{"DEL", "?name=a%7Fb"},
			{"tab", "?name=a%09b"},
			{"not UTF-8", "?name=a%FFb"},
			{"256 bytes", "?name=" + strings.Repeat("x", 256)},
			{"128 Cyrillic letters (256 bytes)", "?name=" + url.QueryEscape(strings.Repeat("я", 128))},
			{"twice", "?name=a.txt&name=b.txt"},
			{"bad escape", "?name=%zz"},
		} {
			status, m := e.uploadRaw(tc.query, "Bearer "+testPublishToken, strings.NewReader("x"), 1)
			pubExpectAnswer(t, tc.what, status, m, 400, 5, "Invalid request")
		}
		if status, m := e.uploadRaw("?name="+strings.Repeat("x", 255), "Bearer "+testPublishToken, strings.NewReader("x"), 1); status != 200 {
			t.Errorf("255 bytes: %d %v", status, m)
		}
		if n := len(storeFiles(t, e)); n != 14 {
			t.Errorf("%d files on disk, want 14 (nothing for the refused names)", n)
		}
	})
}

func TestFilesRanges(t *testing.T) {
	t.Parallel()
	forStores(t, func(t *testing.T, kind string) {
		e := fileEnv(t, kind, nil)
		data := randomBytes(10_000, 2)
		u := e.placed("big.bin", data)
		for _, tc := range []struct {
			rng          string
			status       int
			from, to     int // the bytes expected, data[from:to]
			contentRange string
		}{
			{"bytes=0-99", 206, 0, 100, "bytes 0-99/10000"},
			{"bytes=5000-", 206, 5000, 10000, "bytes 5000-9999/10000"},
			{"bytes=-10", 206, 9990, 10000, "bytes 9990-9999/10000"},
			{"bytes=9999-20000", 206, 9999, 10000, "bytes 9999-9999/10000"},
			{"bytes=10000-", 416, 0, 0, "bytes */10000"},
			{"bytes=20000-30000", 416, 0, 0, "bytes */10000"},
		} {
			resp, b := e.download(http.MethodGet, u, http.Header{"Range": {tc.rng}})
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Range") != tc.contentRange {
				t.Errorf("Range %s: %d Content-Range %q, want %d %q", tc.rng, resp.StatusCode, resp.Header.Get("Content-Range"), tc.status, tc.contentRange)
				continue
			}
			if tc.status == 206 {
				if !bytes.Equal(b, data[tc.from:tc.to]) || resp.Header.Get("Content-Length") != fmt.Sprint(tc.to-tc.from) {
					t.Errorf("Range %s: %d bytes, Content-Length %q, want data[%d:%d]", tc.rng, len(b), resp.Header.Get("Content-Length"), tc.from, tc.to)
				}
			}
			if tc.status == 206 && resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("Range %s: Cache-Control %q", tc.rng, resp.Header.Get("Cache-Control"))
			}
		}
		// Resume: If-Range with the Last-Modified of the first answer.
		resp, _ := e.download(http.MethodHead, u, nil)
		lm := resp.Header.Get("Last-Modified")
		resp, b := e.download(http.MethodGet, u, http.Header{"Range": {"bytes=4096-"}, "If-Range": {lm}})
		if lm == "" || resp.StatusCode != 206 || !bytes.Equal(b, data[4096:]) {
			t.Errorf("resume with If-Range %q: %d, %d bytes", lm, resp.StatusCode, len(b))
		}
		// Two ranges: multipart/byteranges.
		resp, b = e.download(http.MethodGet, u, http.Header{"Range": {"bytes=0-0,9999-9999"}})
		if resp.StatusCode != 206 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/byteranges") || !bytes.Contains(b, data[9999:]) {
			t.Errorf("two ranges: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	})
}

func TestFilesAuthAndDisabled(t *testing.T) {
	t.Parallel()
	forStores(t, func(t *testing.T, kind string) {
		e := fileEnv(t, kind, nil)
		for _, tc := range []struct {
			what, authz string
			code        int
			msg         string
		}{
			{"no token", "", 1, "Token not set"},
			{"empty bearer", "Bearer ", 1, "Token not set"},
			{"basic", "Basic dGVzdDp0ZXN0", 1, "Token not set"},
			{"wrong token", "Bearer nope", 2, "Invalid token"},
			{"token prefix", "Bearer " + testPublishToken[:5], 2, "Invalid token"},
		} {
			status, m := e.uploadRaw("?name=a.txt", tc.authz, strings.NewReader("x"), 1)
			pubExpectAnswer(t, tc.what, status, m, 401, tc.code, tc.msg)
		}
		// 401 comes before the name is looked at.
		status, m := e.uploadRaw("?name=..", "", strings.NewReader("x"), 1)
		pubExpectAnswer(t, "no token, bad name", status, m, 401, 1, "Token not set")
		for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
			req, _ := http.NewRequest(method, e.base+"/api/files?name=a.txt", strings.NewReader("x"))
			req.Header.Set("Authorization", "Bearer "+testPublishToken)
			status, m := e.do(req)
			pubExpectAnswer(t, method, status, m, 405, 5, "Method not allowed")
		}
		if n := len(storeFiles(t, e)); n != 0 {
			t.Errorf("%d files on disk after refused uploads", n)
		}

		dir := t.TempDir()
		off := fileEnv(t, kind, func(c *Config) { c.PublishToken = ""; c.FilesDir = dir })
		status, m = off.uploadRaw("?name=a.txt", "Bearer "+testPublishToken, strings.NewReader("x"), 1)
		pubExpectAnswer(t, "publish_token empty", status, m, 404, 5, "Not found")
		resp, _ := off.download(http.MethodGet, "/files/"+strings.Repeat("A", 27)+"/a.txt", nil)
		if resp.StatusCode != 404 {
			t.Errorf("GET /files/... with files disabled: %d", resp.StatusCode)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("files disabled, but files_dir holds %v", entries)
		}
		if off.gridDB != nil {
			if names, err := off.gridDB.ListCollectionNames(context.Background(), bson.D{}); err != nil || len(names) != 0 {
				t.Errorf("files disabled, but the database holds %v (%v)", names, err)
			}
		}
		_, b := apiCall(off, http.MethodGet, "/api/config", nil, "")
		if m := apiDecode(t, "config", b); m["files_enabled"] != false {
			t.Errorf("files disabled: files_enabled %v", m["files_enabled"])
		}
		_, b = apiCall(e, http.MethodGet, "/api/config", nil, "")
		if m := apiDecode(t, "config", b); m["files_enabled"] != true {
			t.Errorf("files enabled: files_enabled %v", m["files_enabled"])
		}
	})
}

func TestFilesLimits(t *testing.T) {
	t.Parallel()
	forStores(t, func(t *testing.T, kind string) {
		e := fileEnv(t, kind, func(c *Config) {
			c.MaxFileBytes = 1000
			c.MaxFilesBytes = 2500
			c.MaxFiles = 3
		})
		big := bytes.Repeat([]byte("x"), 1001)
		// 413: by Content-Length before reading, and chunked once past the limit.
		status, m := e.upload("big.bin", bytes.NewReader(big), 1001)
		pubExpectAnswer(t, "1001 bytes", status, m, 413, 5, "Request too large")
		status, m = e.upload("big.bin", bytes.NewReader(big), -1)
		pubExpectAnswer(t, "1001 bytes chunked", status, m, 413, 5, "Request too large")

		u1 := e.placed("a.bin", big[:1000])
		e.placed("b.bin", big[:1000])
		// 507: 2000 of 2500 bytes used; 600 more do not fit, whether announced
		// or chunked.
		status, m = e.upload("c.bin", bytes.NewReader(big[:600]), 600)
		pubExpectAnswer(t, "over max_files_bytes", status, m, 507, 7, "Insufficient storage")
		status, m = e.upload("c.bin", bytes.NewReader(big[:600]), -1)
		pubExpectAnswer(t, "over max_files_bytes, chunked", status, m, 507, 7, "Insufficient storage")
		// What fits still fits, and the store keeps what it has.
		e.placed("c.bin", big[:500])
		if resp, b := e.download(http.MethodGet, u1, nil); resp.StatusCode != 200 || len(b) != 1000 {
			t.Errorf("a.bin after 507: %d, %d bytes", resp.StatusCode, len(b))
		}
		// 507: max_files = 3.
		status, m = e.upload("d.bin", strings.NewReader(""), 0)
		pubExpectAnswer(t, "over max_files", status, m, 507, 7, "Insufficient storage")
		if n := len(storeFiles(t, e)); n != 3 {
			t.Errorf("%d files on disk, want 3", n)
		}
		if got := metricValue(t, e, `airlay_file_uploads_total{status="507"}`); got != "3" {
			t.Errorf("uploads 507: %q, want 3", got)
		}
		if got := metricValue(t, e, `airlay_file_uploads_total{status="413"}`); got != "2" {
			t.Errorf("uploads 413: %q, want 2", got)
		}
	})
}

// max_files_bytes below max_file_bytes could never hold the largest file.
func TestFilesConfig(t *testing.T) {
	t.Parallel()
	_, err := cfgParse("/etc/airlay/config.ini", "[webSocketEvents]\njwt_public_key = jwt.pem\nmax_file_bytes = 2GiB\n")
	cfgExpectError(t, "max_files_bytes < max_file_bytes", err, "/etc/airlay/config.ini", SectionServer, "max_files_bytes", "max_file_bytes")
	c, err := cfgParse("/etc/airlay/config.ini", "[webSocketEvents]\njwt_public_key = jwt.pem\nmax_file_bytes = 1GiB\nmax_files_bytes = 1GiB\nfiles_dir = files\n")
	if err != nil || c.MaxFilesBytes != 1<<30 || c.FilesDir != "/etc/airlay/files" {
		t.Errorf("%+v %v", c, err)
	}
	// A files_dir that cannot be made stops start-up, naming the key.
	file := filepath.Join(t.TempDir(), "plain-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Defaults()
	cfg.File = "test.ini"
	cfg.JWTPublicKey = writePublicKey(t, t.TempDir())
	cfg.PublishToken = testPublishToken
	cfg.FilesDir = filepath.Join(file, "sub")
	_, err = New(&cfg, Options{})
	cfgExpectError(t, "files_dir under a file", err, "test.ini", SectionServer, "files_dir")
}

func TestFilesExpiry(t *testing.T) {
	t.Parallel()
	forStores(t, func(t *testing.T, kind string) {
		const ttl = time.Second
		e := fileEnv(t, kind, func(c *Config) { c.FileTTL = ttl })
		placed1 := time.Now()
		u1 := e.placed("first.txt", []byte("one"))
		time.Sleep(300 * time.Millisecond)
		u2 := e.placed("second.txt", []byte("two"))
		// Both are there until they expire. (On a machine so busy that a
		// second passed meanwhile, only what follows is checked.)
		if resp, _ := e.download(http.MethodGet, u1, nil); resp.StatusCode != 200 && time.Since(placed1) < ttl {
			t.Fatalf("before expiry: %d", resp.StatusCode)
		}
		if n := len(storeFiles(t, e)); n != 2 && time.Since(placed1) < ttl {
			t.Fatalf("%d files on disk, want 2", n)
		}
		// Nobody asks; the loop removes them on its own, in order.
		waitFor(t, "the first file to go", 5*time.Second, func() bool { return len(storeFiles(t, e)) <= 1 })
		if resp, _ := e.download(http.MethodGet, u1, nil); resp.StatusCode != 404 {
			t.Errorf("after expiry: %d, want 404", resp.StatusCode)
		}
		waitFor(t, "the second file to go", 5*time.Second, func() bool { return len(storeFiles(t, e)) == 0 })
		if resp, _ := e.download(http.MethodGet, u2, nil); resp.StatusCode != 404 {
			t.Errorf("after expiry: %d, want 404", resp.StatusCode)
		}
		if got := metricValue(t, e, "airlay_files_expired_total"); got != "2" {
			t.Errorf("airlay_files_expired_total %q, want 2", got)
		}
		if got := metricValue(t, e, "airlay_files_stored_bytes"); got != "0" {
			t.Errorf("airlay_files_stored_bytes %q, want 0", got)
		}
		// The store works on after emptying.
		u3 := e.placed("third.txt", []byte("three"))
		if resp, _ := e.download(http.MethodGet, u3, nil); resp.StatusCode != 200 {
			t.Errorf("third: %d", resp.StatusCode)
		}
		waitFor(t, "the third file to go", 5*time.Second, func() bool { return len(storeFiles(t, e)) == 0 })
	})
}

// A download that began before the link expired finishes. On disk the
// file is gone meanwhile (the open file is read on); in GridFS its chunks
// stay for the grace after the expiry, then go.
func TestFilesDownloadOutlivesExpiry(t *testing.T) {
	t.Parallel()
	forStores(t, func(t *testing.T, kind string) {
		const ttl = 2 * time.Second
		const grace = 4 * time.Second
		e := fileEnv(t, kind, func(c *Config) { c.FileTTL = ttl }, func(g *files.GridFSOptions) { g.Grace = grace })
		data := randomBytes(8<<20, 3)
		placed := time.Now()
		u := e.placed("slow.bin", data)
		resp, err := http.Get(e.base + u)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 && time.Since(placed) >= ttl {
			t.Skipf("the machine took %v to start the download; the link had expired", time.Since(placed))
		}
		defer resp.Body.Close()
		first := make([]byte, 1<<10)
		if _, err := io.ReadFull(resp.Body, first); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "expiry", 5*time.Second, func() bool {
			r, _ := e.download(http.MethodHead, u, nil)
			return r.StatusCode == 404
		})
		if kind == "disk" {
			waitFor(t, "the file to go", 5*time.Second, func() bool { return len(storeFiles(t, e)) == 0 })
		}
		rest, err := io.ReadAll(resp.Body)
		if err != nil || !bytes.Equal(append(first, rest...), data) {
			t.Errorf("download across expiry: %d bytes, %v", len(first)+len(rest), err)
		}
		waitFor(t, "the file to go", 2*grace+5*time.Second, func() bool { return len(storeFiles(t, e)) == 0 })
	})
}

// An upload cut off midway leaves no file, and gives back its share of the
// limits.
func TestFilesInterruptedUpload(t *testing.T) {
	t.Parallel()
	forStores(t, func(t *testing.T, kind string) {
		e := fileEnv(t, kind, func(c *Config) { c.MaxFiles = 1; c.MaxFilesBytes = 1 << 20; c.MaxFileBytes = 1 << 20 })
		addr := strings.TrimPrefix(e.base, "http://")
		for _, chunked := range []bool{false, true} {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			head := "POST /api/files?name=cut.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testPublishToken + "\r\n"
			if chunked {
				head += "Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n", 100_000)
			} else {
				head += "Content-Length: 1000000\r\n\r\n"
			}
			if _, err := conn.Write(append([]byte(head), make([]byte, 50_000)...)); err != nil {
				t.Fatal(err)
			}
			// The server is writing the file.
			waitFor(t, "the upload to begin", 5*time.Second, func() bool { return len(storeFiles(t, e)) == 1 })
			conn.Close()
			waitFor(t, "the cut upload to go", 5*time.Second, func() bool { return len(storeFiles(t, e)) == 0 })
			// Its slot (max_files = 1) and bytes are free again.
			waitFor(t, "the slot to be free", 5*time.Second, func() bool {
				n, b := storeUsage(t, e)
				return n == 0 && b == 0
			})
		}
		// A body shorter than its Content-Length, and the client half-closes:
		// 400, and nothing stays.
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /api/files?name=short.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100\r\n\r\n%s", testPublishToken, strings.Repeat("y", 50))
		conn.(*net.TCPConn).CloseWrite()
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("short body: %d, want 400", resp.StatusCode)
		}
		u := e.placed("whole.bin", []byte("whole"))
		if resp, b := e.download(http.MethodGet, u, nil); resp.StatusCode != 200 || string(b) != "whole" {
			t.Errorf("after the cut uploads: %d %q", resp.StatusCode, b)
		}
	})
}

// An upload that stalls is dropped after the idle timeout. Not parallel:
// it changes uploadIdleTimeout for the servers it starts.
func TestFilesStalledUpload(t *testing.T) {
	forStores(t, func(t *testing.T, kind string) {
		saved := uploadIdleTimeout
		uploadIdleTimeout = 300 * time.Millisecond
		e := fileEnv(t, kind, nil)
		uploadIdleTimeout = saved
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /api/files?name=stall.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100000\r\n\r\n%s", testPublishToken, strings.Repeat("z", 1000))
		waitFor(t, "the upload to begin", 5*time.Second, func() bool { return len(storeFiles(t, e)) == 1 })
		waitFor(t, "the stalled upload to go", 5*time.Second, func() bool { return len(storeFiles(t, e)) == 0 })
	})
}

func TestFilesConcurrentUploads(t *testing.T) {
	t.Parallel()
	forStores(t, func(t *testing.T, kind string) {
		e := fileEnv(t, kind, nil)
		const n = 12
		urls := make([]string, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				data := randomBytes(256<<10+i, uint64(i))
				size := int64(len(data))
				if i%2 == 1 {
					size = -1
				}
				req, _ := http.NewRequest(http.MethodPost, e.base+"/api/files?name="+fmt.Sprintf("f%d.bin", i), bytes.NewReader(data))
				req.ContentLength = size
				if size < 0 {
					req.Body = io.NopCloser(struct{ io.Reader }{bytes.NewReader(data)})
				}
				req.Header.Set("Authorization", "Bearer "+testPublishToken)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				var m map[string]any
				if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != 200 {
					t.Errorf("upload %d: %d %v %v", i, resp.StatusCode, m, err)
					return
				}
				urls[i], _ = m["url"].(string)
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		seen := map[string]bool{}
		for i, u := range urls {
			if seen[u] {
				t.Errorf("URL %s twice", u)
			}
			seen[u] = true
			resp, b := e.download(http.MethodGet, u, nil)
			if resp.StatusCode != 200 || !bytes.Equal(b, randomBytes(256<<10+i, uint64(i))) {
				t.Errorf("file %d: %d, %d bytes", i, resp.StatusCode, len(b))
			}
		}
		if got := len(storeFiles(t, e)); got != n {
			t.Errorf("%d files on disk, want %d", got, n)
		}
	})
}

// A large file goes through whole (SHA-256), and the server streams it: the
// upload allocates a small fraction of its size. Not parallel, so that the
// allocation count is this test's.
func TestFilesLargeStreamed(t *testing.T) {
	forStores(t, func(t *testing.T, kind string) {
		const size = 64 << 20
		e := fileEnv(t, kind, func(c *Config) { c.MaxFileBytes = size })
		src := rand.NewChaCha8([32]byte{7})
		sum := sha256.New()
		body := io.TeeReader(io.LimitReader(src, size), sum)

		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		var status int
		var m map[string]any
		peak := peakHeap(func() { status, m = e.upload("large.bin", body, size) })
		runtime.ReadMemStats(&after)
		if status != 200 {
			t.Fatalf("upload: %d %v", status, m)
		}
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("a %d MiB upload allocated %d KiB (client and server), peak live heap +%d KiB", size>>20, alloc>>10, peak>>10)
		// On disk nothing but fixed buffers is allocated. GridFS marshals
		// every chunk into a command (garbage, collected as it goes), so
		// there the bound is on the live heap: a few chunks, never the file.
		if kind == "disk" && alloc > 8<<20 {
			t.Errorf("a %d MiB upload allocated %d KiB (client and server): not streamed", size>>20, alloc>>10)
		}
		if peak > 16<<20 {
			t.Errorf("a %d MiB upload raised the live heap by %d KiB: not streamed", size>>20, peak>>10)
		}
		want := sum.Sum(nil)

		resp, err := http.Get(e.base + m["url"].(string))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got := sha256.New()
		var n int64
		peak = peakHeap(func() { n, err = io.Copy(got, resp.Body) })
		t.Logf("its download: peak live heap +%d KiB", peak>>10)
		if peak > 16<<20 {
			t.Errorf("a %d MiB download raised the live heap by %d KiB: not streamed", size>>20, peak>>10)
		}
		if err != nil || n != size || !bytes.Equal(got.Sum(nil), want) || resp.Header.Get("Content-Length") != fmt.Sprint(size) {
			t.Errorf("download: %d bytes, %v, sha256 %x want %x", n, err, got.Sum(nil), want)
		}
	})
}

// peakHeap runs f and returns by how much the heap's live objects grew at
// most meanwhile (sampled every 2 ms, with the collector set to run at 10 %
// growth, so that garbage does not pass for live memory).
func peakHeap(f func()) uint64 {
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	sample := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 { rtmetrics.Read(sample); return sample[0].Value.Uint64() }
	base := read()
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			if v := read(); v > base && v-base > peak.Load() {
				peak.Store(v - base)
			}
			select {
			case <-tick.C:
			case <-stop:
				return
			}
		}
	}()
	f()
	close(stop)
	<-done
	return peak.Load()
}

// files_dir empty: the server's directory is under the system temp dir, and
// goes with a graceful shutdown.
func TestFilesDefaultDir(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	dir := e.srv.files.(*files.Disk).Dir()
	if filepath.Dir(dir) != filepath.Clean(os.TempDir()) || !strings.HasPrefix(filepath.Base(dir), files.DirPrefix) {
		t.Errorf("files in %s, want %s/%s...", dir, os.TempDir(), files.DirPrefix)
	}
	u := e.placed("a.txt", []byte("a"))
	if resp, b := e.download(http.MethodGet, u, nil); resp.StatusCode != 200 || string(b) != "a" {
		t.Errorf("GET: %d %q", resp.StatusCode, b)
	}
	if err := e.shutdown(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("after shutdown %s is still there (%v)", dir, err)
	}
}

// With MongoDB unreachable, an upload answers 503 code 7 (nothing stored)
// and a download 503 code 7, not 404: the link may well exist.
func TestFilesMongoDown(t *testing.T) {
	t.Parallel()
	client, err := mongo.Connect(context.Background(), options.Client().ApplyURI("mongodb://127.0.0.1:1/?directConnection=true").SetServerSelectionTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	cfg := Defaults()
	cfg.File = "test.ini"
	cfg.Address = "127.0.0.1"
	cfg.JWTPublicKey = writePublicKey(t, t.TempDir())
	cfg.PublishToken = testPublishToken
	g := gridTestOptions()
	g.Timeout = 300 * time.Millisecond
	e := startEnv(t, &cfg, Options{Files: func(o files.Options) (files.Store, error) { return files.OpenGridFS(client.Database("airlay"), o, g) }})
	status, m := e.upload("a.txt", strings.NewReader("a"), 1)
	pubExpectAnswer(t, "upload, MongoDB down", status, m, 503, 7, "Service unavailable")
	resp, b := e.download(http.MethodGet, "/files/"+files.NewKey()+"/a.txt", nil)
	var dm map[string]any
	if err := json.Unmarshal(b, &dm); err != nil {
		t.Fatalf("download answer %q: %v", b, err)
	}
	plainExpectAnswer(t, "download, MongoDB down", resp.StatusCode, dm, 503, 7, "Service unavailable")
}
