package server

// Temporary download links, as PROTOCOL.md "Temporary download links: POST
// /api/files" describes: a backend places a file with POST /api/files and
// gets an unguessable URL that anyone may GET until file_ttl passes; then the
// URL answers 404 and the file is gone from disk.
//
// On disk: the server makes its own directory files_dir/airlay-files-NNN
// (files_dir empty: the system temp dir) holding a marker file, on which it
// keeps an exclusive lock while it runs, and one file per upload, named
// f-<16 hex digits>, unrelated to the key. At start-up the server removes the
// directories of servers that are gone (marker present, unlocked), and in them
// only the files it names so; it never touches anything else. Several servers
// may share one files_dir.

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/airlay/airlay/events"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	// fileDirPrefix begins the name of a server's own directory in files_dir.
	fileDirPrefix = "airlay-files-"
	// fileMarker is the marker (and lock) file in that directory.
	fileMarker = ".airlay-files"
	// fileMarkerText begins the marker's contents; a directory whose marker
	// does not start with it is not the server's.
	fileMarkerText = "airlay event server: temporary download files. This directory is removed by the next airlay server that starts with the same files_dir once its own server is gone.\n"
	// fileDataPrefix begins the name of every data file.
	fileDataPrefix = "f-"

	// fileKeyBytes is the random part of a download URL: 160 bits.
	fileKeyBytes = 20
	// maxFileName is the longest name, in bytes, POST /api/files accepts.
	maxFileName = 255
	// fileGrowStep is how much an upload of unknown length reserves of
	// max_files_bytes at a time.
	fileGrowStep = 1 << 20
)

// uploadIdleTimeout is how long an upload may send nothing before it is
// dropped, so that a stalled client does not hold its share of the store.
// A variable only for the tests.
var uploadIdleTimeout = time.Minute

// Errors of the file store.
var (
	errFileTooLarge = errors.New("file over max_file_bytes")
	errStoreFull    = errors.New("store full (max_files or max_files_bytes)")
	errDiskFull     = errors.New("no space left on the device of files_dir")
	errUploadCut    = errors.New("upload cut off before its end")
	errStoreClosed  = errors.New("file store closed")
)

// storedFile is one placed file.
type storedFile struct {
	id      [sha256.Size]byte // index key: sha256 of "key/name"
	path    string
	name    string
	size    int64
	created time.Time
	expires time.Time
}

// fileStore keeps the temporary download files of one server: the index by
// URL, the quotas, and the expiry loop. Its methods are safe for concurrent
// use.
type fileStore struct {
	dir      string
	ttl      time.Duration
	maxFile  int64
	maxBytes int64
	maxFiles int
	idle     time.Duration
	log      *slog.Logger
	m        *fileMetrics
	lock     *os.File // the marker, locked while the store is open

	mu        sync.Mutex
	index     map[[sha256.Size]byte]*storedFile
	queue     []*storedFile       // by expiry: every file has the same ttl
	uploading map[string]struct{} // paths of uploads in progress
	used      int64               // bytes of stored files plus reservations of uploads
	count     int                 // stored files plus uploads in progress
	stored    int64               // bytes of stored files
	closed    bool

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

// fileStoreOptions are the settings of a fileStore: the limits and the ttl
// must be set; Log and Metrics may be nil.
type fileStoreOptions struct {
	TTL      time.Duration
	MaxFile  int64
	MaxBytes int64
	MaxFiles int
	Idle     time.Duration
	Log      *slog.Logger
	Metrics  *fileMetrics
}

// openFileStore removes what servers that are gone left in root (files_dir,
// or the temp dir when empty), makes this server's directory there and
// starts the expiry loop.
func openFileStore(root string, o fileStoreOptions) (*fileStore, error) {
	if root == "" {
		root = os.TempDir()
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	removed := removeLeftovers(root, o.Log)
	dir, err := os.MkdirTemp(root, fileDirPrefix+"*")
	if err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, fileMarker), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		_ = os.Remove(dir)
		return nil, err
	}
	// Lock before writing the text: a server starting at the same moment
	// that sees the marker unlocked also sees it empty, and leaves it.
	if err := lockFile(lock); err == nil {
		_, err = fmt.Fprintf(lock, "%spid %d, started %s\n", fileMarkerText, os.Getpid(), time.Now().UTC().Format(time.RFC3339))
	}
	if err != nil {
		lock.Close()
		_ = os.Remove(lock.Name())
		_ = os.Remove(dir)
		return nil, fmt.Errorf("marker %s: %w", lock.Name(), err)
	}
	if o.Metrics == nil {
		o.Metrics = newFileMetrics(nil)
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	st := &fileStore{
		dir: dir, ttl: o.TTL, maxFile: o.MaxFile, maxBytes: o.MaxBytes, maxFiles: o.MaxFiles,
		idle: o.Idle, log: o.Log, m: o.Metrics, lock: lock,
		index:     make(map[[sha256.Size]byte]*storedFile),
		uploading: make(map[string]struct{}),
		wake:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	st.log.Info("temporary download files", "dir", dir, "leftovers_removed", removed)
	go st.loop()
	return st, nil
}

// removeLeftovers removes the directories of stopped servers in root and
// returns how many files it removed. A directory counts as one only if its
// marker starts with fileMarkerText and nobody holds its lock; in it only
// the marker and data files go. Anything else stays, and so its directory.
func removeLeftovers(root string, log *slog.Logger) int {
	entries, err := os.ReadDir(root)
	if err != nil {
		return 0
	}
	removed := 0
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), fileDirPrefix) {
			continue
		}
		dir := filepath.Join(root, e.Name())
		marker, err := os.Open(filepath.Join(dir, fileMarker))
		if err != nil {
			continue // no marker: not ours (or not readable: another user's)
		}
		if ok, _ := tryLockFile(marker); !ok {
			marker.Close() // its server runs
			continue
		}
		head := make([]byte, len(fileMarkerText))
		if _, err := io.ReadFull(marker, head); err != nil || string(head) != fileMarkerText {
			marker.Close()
			continue
		}
		files, _ := os.ReadDir(dir)
		for _, f := range files {
			if f.Type().IsRegular() && isDataFileName(f.Name()) {
				if err := os.Remove(filepath.Join(dir, f.Name())); err == nil {
					removed++
				}
			}
		}
		_ = os.Remove(marker.Name()) // still locked: nobody else cleans it meanwhile
		marker.Close()
		if err := os.Remove(dir); err != nil && log != nil {
			log.Warn("left a directory of an earlier run in place: it holds files airlay did not create", "dir", dir, "err", err)
		}
	}
	return removed
}

// isDataFileName reports whether name is one the store gives its files.
func isDataFileName(name string) bool {
	hexPart, ok := strings.CutPrefix(name, fileDataPrefix)
	if !ok || len(hexPart) != 16 {
		return false
	}
	_, err := hex.DecodeString(hexPart)
	return err == nil && strings.ToLower(hexPart) == hexPart
}

// fileID is the index key of a URL: sha256 of key and name. A lookup hashes
// whatever it is given and makes one map lookup, so an unknown key, a known
// key with another name, and an expired file cost the same. Neither a key nor
// a stored name contains "/", so no other (key, name) gives the same string.
func fileID(key, name string) [sha256.Size]byte {
	h := sha256.New()
	_, _ = io.WriteString(h, key)
	_, _ = io.WriteString(h, "/")
	_, _ = io.WriteString(h, name)
	var id [sha256.Size]byte
	h.Sum(id[:0])
	return id
}

// checkFileName returns nil when name is a plain file name: valid UTF-8, 1
// to maxFileName bytes, not "." or "..", without "/", "\" or control
// characters (NUL included).
func checkFileName(name string) error {
	switch {
	case name == "", name == ".", name == "..":
		return errors.New("empty, . or ..")
	case len(name) > maxFileName:
		return fmt.Errorf("longer than %d bytes", maxFileName)
	case !utf8.ValidString(name):
		return errors.New("not UTF-8")
	}
	for _, r := range name {
		if r == '/' || r == '\\' || r < 0x20 || r == 0x7f {
			return errors.New("path separator or control character")
		}
	}
	return nil
}

// put streams body into a new file and indexes it under a fresh key. size is
// the body's length, or -1 when unknown; a body that ends before size bytes
// is errUploadCut. Nothing stays on disk when put fails.
func (st *fileStore) put(name string, body io.Reader, size int64) (key string, f *storedFile, err error) {
	if size > st.maxFile {
		return "", nil, errFileTooLarge
	}
	reserved := max(size, 0)
	path, file, err := st.begin(reserved)
	if err != nil {
		return "", nil, err
	}
	w := &quotaWriter{st: st, f: file, reserved: reserved}
	fail := func(err error) (string, *storedFile, error) {
		file.Close()
		_ = os.Remove(path)
		st.end(path, w.reserved, nil)
		return "", nil, err
	}
	bufp := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(w, body, *bufp)
	copyBufs.Put(bufp)
	if err == nil && size >= 0 && n != size {
		err = errUploadCut
	}
	if err != nil {
		if w.werr == nil && !errors.Is(err, errFileTooLarge) && !errors.Is(err, errStoreFull) && !errors.Is(err, errUploadCut) {
			err = fmt.Errorf("%w: %w", errUploadCut, err) // the body failed, not the disk
		}
		return fail(err)
	}
	if err := file.Close(); err != nil {
		return fail(diskError(err))
	}
	var raw [fileKeyBytes]byte
	_, _ = rand.Read(raw[:]) // never fails (crypto/rand, Go 1.24+)
	key = base64.RawURLEncoding.EncodeToString(raw[:])
	f = &storedFile{id: fileID(key, name), path: path, name: name, size: n}
	if err := st.end(path, w.reserved, f); err != nil {
		return "", nil, err // end gave back the slot and removed the file
	}
	return key, f, nil
}

// begin takes a file slot and reserves bytes for an upload, and creates its
// file.
func (st *fileStore) begin(bytes int64) (string, *os.File, error) {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return "", nil, errStoreClosed
	}
	if st.count >= st.maxFiles || st.used+bytes > st.maxBytes {
		st.mu.Unlock()
		return "", nil, errStoreFull
	}
	st.count++
	st.used += bytes
	st.mu.Unlock()
	for {
		var raw [8]byte
		_, _ = rand.Read(raw[:])
		path := filepath.Join(st.dir, fileDataPrefix+hex.EncodeToString(raw[:]))
		file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			st.end("", bytes, nil)
			return "", nil, diskError(err)
		}
		st.mu.Lock()
		closed := st.closed
		if !closed {
			st.uploading[path] = struct{}{}
		}
		st.mu.Unlock()
		if closed { // closed meanwhile: close removed the directory's files
			file.Close()
			_ = os.Remove(path)
			st.end("", bytes, nil)
			return "", nil, errStoreClosed
		}
		return path, file, nil
	}
}

// grow reserves n more bytes for an upload.
func (st *fileStore) grow(n int64) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.used+n > st.maxBytes {
		return false
	}
	st.used += n
	return true
}

// end finishes an upload that reserved bytes: f nil gives back its slot and
// reservation; otherwise f is indexed with the reservation cut to its size.
func (st *fileStore) end(path string, reserved int64, f *storedFile) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if path != "" {
		delete(st.uploading, path)
	}
	if f == nil || st.closed {
		st.count--
		st.used -= reserved
		if f != nil {
			_ = os.Remove(f.path)
			return errStoreClosed
		}
		return nil
	}
	st.used += f.size - reserved
	now := time.Now()
	f.created, f.expires = now, now.Add(st.ttl)
	st.index[f.id] = f
	st.queue = append(st.queue, f)
	st.stored += f.size
	st.m.files.Set(float64(len(st.index)))
	st.m.bytes.Set(float64(st.stored))
	if len(st.queue) == 1 {
		select {
		case st.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// get returns the file at /files/key/name, or nil when there is none or it
// expired.
func (st *fileStore) get(key, name string) *storedFile {
	id := fileID(key, name)
	now := time.Now()
	st.mu.Lock()
	f := st.index[id]
	st.mu.Unlock()
	if f == nil || !now.Before(f.expires) {
		return nil
	}
	return f
}

// loop removes files as they expire.
func (st *fileStore) loop() {
	defer close(st.done)
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		wait := st.expire(time.Now())
		var tc <-chan time.Time
		if wait > 0 {
			t.Reset(wait)
			tc = t.C
		}
		select {
		case <-tc:
		case <-st.wake:
		case <-st.stop:
			t.Stop()
			return
		}
	}
}

// expire removes the files expired at now and returns the time until the
// next expires (0: none left).
func (st *fileStore) expire(now time.Time) time.Duration {
	st.mu.Lock()
	var gone []*storedFile
	for len(st.queue) > 0 && !now.Before(st.queue[0].expires) {
		f := st.queue[0]
		st.queue[0] = nil
		st.queue = st.queue[1:]
		delete(st.index, f.id)
		st.count--
		st.used -= f.size
		st.stored -= f.size
		gone = append(gone, f)
	}
	var wait time.Duration
	if len(st.queue) > 0 {
		wait = max(st.queue[0].expires.Sub(now), time.Millisecond)
	}
	if len(gone) > 0 {
		st.m.files.Set(float64(len(st.index)))
		st.m.bytes.Set(float64(st.stored))
	}
	st.mu.Unlock()
	for _, f := range gone {
		if err := os.Remove(f.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			st.log.Warn("remove expired file", "err", err)
		}
		st.m.expiries.Inc()
	}
	return wait
}

// close stops the expiry loop and removes every file and the directory.
// Uploads still running fail with errStoreClosed.
func (st *fileStore) close() error {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil
	}
	st.closed = true
	var paths []string
	for _, f := range st.index {
		paths = append(paths, f.path)
	}
	for p := range st.uploading {
		paths = append(paths, p)
	}
	st.index, st.queue = nil, nil
	st.stored = 0
	st.m.files.Set(0)
	st.m.bytes.Set(0)
	st.mu.Unlock()
	close(st.stop)
	<-st.done
	for _, p := range paths {
		_ = os.Remove(p)
	}
	_ = os.Remove(st.lock.Name())
	st.lock.Close()
	return os.Remove(st.dir)
}

// quotaWriter writes an upload to its file within max_file_bytes and
// max_files_bytes, reserving more of the latter as the file grows past its
// reservation.
type quotaWriter struct {
	st       *fileStore
	f        *os.File
	n        int64 // bytes written
	reserved int64
	werr     error // the file's own write error
}

func (w *quotaWriter) Write(p []byte) (int, error) {
	end := w.n + int64(len(p))
	if end > w.st.maxFile {
		return 0, errFileTooLarge
	}
	if need := end - w.reserved; need > 0 {
		more := max(need, min(fileGrowStep, w.st.maxFile-w.reserved))
		if !w.st.grow(more) {
			if more == need || !w.st.grow(need) {
				return 0, errStoreFull
			}
			more = need
		}
		w.reserved += more
	}
	n, err := w.f.Write(p)
	w.n += int64(n)
	if err != nil {
		w.werr = diskError(err)
		return n, w.werr
	}
	return n, nil
}

// diskError maps a full disk or quota to errDiskFull.
func diskError(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", errDiskFull, err)
	}
	return err
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// idleReader extends the connection's read deadline while an upload keeps
// sending, so that a stalled upload ends after uploadIdleTimeout, but never
// past end (upload_timeout after the start), so that a trickle ends too.
type idleReader struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
	end  time.Time
	next time.Time // when to extend the deadline again
}

func (r *idleReader) Read(p []byte) (int, error) {
	if now := time.Now(); now.After(r.next) {
		d := now.Add(r.idle)
		if d.After(r.end) {
			d = r.end
		}
		_ = r.rc.SetReadDeadline(d)
		r.next = now.Add(r.idle / 4)
	}
	return r.r.Read(p)
}

// fileMetrics are the series of temporary download links.
type fileMetrics struct {
	files     prometheus.Gauge
	bytes     prometheus.Gauge
	uploads   *prometheus.CounterVec
	downloads prometheus.Counter
	expiries  prometheus.Counter
}

// newFileMetrics makes the series and registers them with reg (nil: none).
func newFileMetrics(reg *prometheus.Registry) *fileMetrics {
	m := &fileMetrics{
		files:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "airlay_files_stored", Help: "Temporary download files on disk."}),
		bytes:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "airlay_files_stored_bytes", Help: "Bytes of temporary download files on disk."}),
		uploads:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "airlay_file_uploads_total", Help: "POST /api/files requests, by HTTP status."}, []string{"status"}),
		downloads: prometheus.NewCounter(prometheus.CounterOpts{Name: "airlay_file_downloads_total", Help: "GET requests of a temporary download link that found the file (ranges included)."}),
		expiries:  prometheus.NewCounter(prometheus.CounterOpts{Name: "airlay_files_expired_total", Help: "Temporary download files removed because their link expired."}),
	}
	if reg != nil {
		reg.MustRegister(m.files, m.bytes, m.uploads, m.downloads, m.expiries)
	}
	return m
}

// openFiles opens the file store when publish_token enables POST /api/files;
// a failure is a *ConfigError naming files_dir.
func (s *Server) openFiles() error {
	s.fileMetrics = newFileMetrics(s.metrics.reg)
	if s.cfg.PublishToken == "" {
		return nil
	}
	st, err := openFileStore(s.cfg.FilesDir, fileStoreOptions{
		TTL: s.cfg.FileTTL, MaxFile: s.cfg.MaxFileBytes, MaxBytes: s.cfg.MaxFilesBytes, MaxFiles: s.cfg.MaxFiles,
		Idle: uploadIdleTimeout, Log: s.log, Metrics: s.fileMetrics,
	})
	if err != nil {
		return &ConfigError{File: s.cfg.File, Section: SectionServer, Key: "files_dir", Err: err}
	}
	s.files = st
	return nil
}

// closeFiles removes every file of this run.
func (s *Server) closeFiles() {
	if s.files == nil {
		return
	}
	if err := s.files.close(); err != nil {
		s.log.Warn("remove temporary download files", "err", err)
	}
}

type fileAnswer struct {
	Status  int    `json:"status"`
	Message string `json:"message"`
	Code    int    `json:"code"`
	URL     string `json:"url"`
	Expires string `json:"expires"`
}

// handleFileUpload is POST /api/files?name=NAME.
func (s *Server) handleFileUpload(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w) // before the wrapper, which does not unwrap
	sw := &statusWriter{ResponseWriter: w}
	defer func() { s.fileMetrics.uploads.WithLabelValues(strconv.Itoa(sw.status)).Inc() }()
	w = sw
	if !s.backendPost(w, r, s.files != nil) {
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err == nil && len(q["name"]) != 1 {
		err = errors.New("name missing or given twice")
	}
	if err == nil {
		err = checkFileName(q.Get("name"))
	}
	if err != nil {
		s.log.Debug("upload refused", "err", fmt.Errorf("name: %w", err))
		writeError(w, http.StatusBadRequest, events.InvalidRequest.Message(), events.InvalidRequest, "the query parameter name: "+err.Error())
		return
	}
	name := q.Get("name")
	body := &idleReader{r: r.Body, rc: rc, idle: s.files.idle, end: time.Now().Add(s.cfg.UploadTimeout)}
	key, f, err := s.files.put(name, body, r.ContentLength)
	switch {
	case err == nil:
		s.log.Debug("file placed", "bytes", f.size)
		writeJSON(w, fileAnswer{
			Status: http.StatusOK, Message: events.OK.Message(), Code: int(events.OK),
			URL:     "/files/" + key + "/" + url.PathEscape(name),
			Expires: f.expires.UTC().Format(time.RFC3339),
		})
	case errors.Is(err, errFileTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "Request too large", events.InvalidRequest,
			"the file is over max_file_bytes ("+strconv.FormatInt(s.cfg.MaxFileBytes, 10)+" bytes)")
	case errors.Is(err, errStoreFull), errors.Is(err, errDiskFull):
		s.log.Warn("upload refused", "err", err)
		detail := "the store of temporary files is full (max_files or max_files_bytes); retry later"
		if errors.Is(err, errDiskFull) {
			detail = "the disk of files_dir is full; retry later"
		}
		writeError(w, http.StatusInsufficientStorage, "Insufficient storage", events.Unavailable, detail)
	case errors.Is(err, errUploadCut):
		s.log.Info("upload cut off", "err", err)
		writeError(w, http.StatusBadRequest, events.InvalidRequest.Message(), events.InvalidRequest, "the body ended before its Content-Length, or stalled for 60 s")
	case errors.Is(err, errStoreClosed):
		writeError(w, http.StatusServiceUnavailable, events.Unavailable.Message(), events.Unavailable, "the server is shutting down")
	default:
		s.log.Error("upload failed", "err", err)
		writeError(w, http.StatusInternalServerError, "Internal error", events.Unavailable, "the file could not be written (the server's log says why)")
	}
}

// handleFileDownload is GET (and HEAD) /files/{key}/{name}.
func (s *Server) handleFileDownload(w http.ResponseWriter, r *http.Request) {
	var f *storedFile
	if s.files != nil {
		f = s.files.get(r.PathValue("key"), r.PathValue("name"))
	}
	var file *os.File
	if f != nil {
		var err error
		if file, err = os.Open(f.path); err != nil {
			f = nil // expired between the lookup and here
		}
	}
	if f == nil {
		writeAnswer(w, http.StatusNotFound, "Not found", events.InvalidRequest)
		return
	}
	defer file.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", contentDisposition(f.name))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if r.Method == http.MethodGet {
		s.fileMetrics.downloads.Inc()
	}
	http.ServeContent(w, r, f.name, f.created, file)
}

// contentDisposition returns `attachment` with name as RFC 6266 says: a
// plain ASCII name as filename="..."; any other with an ASCII fallback
// (other characters as "_") and the exact name as filename* in UTF-8,
// (RFC 5987).
func contentDisposition(name string) string {
	var fallback strings.Builder
	plain := true
	for _, r := range name {
		if r < 0x20 || r >= 0x7f || r == '"' || r == '\\' || r == '%' {
			fallback.WriteByte('_')
			plain = false
		} else {
			fallback.WriteRune(r)
		}
	}
	if plain {
		return `attachment; filename="` + name + `"`
	}
	var ext strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if isAttrChar(c) {
			ext.WriteByte(c)
		} else {
			fmt.Fprintf(&ext, "%%%02X", c)
		}
	}
	return `attachment; filename="` + fallback.String() + `"; filename*=UTF-8''` + ext.String()
}

// isAttrChar reports whether c may appear unencoded in an RFC 5987 value.
func isAttrChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$&+-.^_`|~", c) >= 0
}
