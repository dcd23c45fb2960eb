package server

// The HTTP side of temporary download links, as PROTOCOL.md "Temporary
// download links: POST /api/files" describes: POST /api/files places a file
// in the store (package files: on disk, or in GridFS when cmd wires MongoDB
// through Options.Files) and answers its URL; GET /files/<key>/<name> serves
// it, Range included, until its link expires.

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/airlay/airlay/events"
	"github.com/airlay/airlay/files"
	"github.com/prometheus/client_golang/prometheus"
)

// uploadIdleTimeout is how long an upload may send nothing before it is
// dropped, so that a stalled client does not hold its share of the store.
// A variable only for the tests.
var uploadIdleTimeout = time.Minute

// fileMetrics are the HTTP series of temporary download links; the store's
// own (files stored, expired) are in store.
type fileMetrics struct {
	store     *files.Metrics
	uploads   *prometheus.CounterVec
	downloads prometheus.Counter
}

// newFileMetrics makes the series and registers them with reg.
func newFileMetrics(reg *prometheus.Registry) *fileMetrics {
	m := &fileMetrics{
		store:     files.NewMetrics(),
		uploads:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "airlay_file_uploads_total", Help: "POST /api/files requests, by HTTP status."}, []string{"status"}),
		downloads: prometheus.NewCounter(prometheus.CounterOpts{Name: "airlay_file_downloads_total", Help: "GET requests of a temporary download link that found the file (ranges included)."}),
	}
	reg.MustRegister(m.uploads, m.downloads)
	reg.MustRegister(m.store.Collectors()...)
	return m
}

// openFiles opens the file store when publish_token enables POST /api/files:
// Options.Files when set (GridFS), otherwise the disk store under files_dir,
// whose failure is a *ConfigError naming files_dir.
func (s *Server) openFiles(open func(files.Options) (files.Store, error)) error {
	s.fileMetrics = newFileMetrics(s.metrics.reg)
	s.uploadIdle = uploadIdleTimeout
	if s.cfg.PublishToken == "" {
		return nil
	}
	o := files.Options{
		TTL: s.cfg.FileTTL, MaxFile: s.cfg.MaxFileBytes, MaxBytes: s.cfg.MaxFilesBytes, MaxFiles: s.cfg.MaxFiles,
		Log: s.log, Metrics: s.fileMetrics.store,
	}
	if open != nil {
		st, err := open(o)
		if err != nil {
			return fmt.Errorf("temporary download files: %w", err)
		}
		s.files = st
		return nil
	}
	st, err := files.OpenDisk(s.cfg.FilesDir, o)
	if err != nil {
		return &ConfigError{File: s.cfg.File, Section: SectionServer, Key: "files_dir", Err: err}
	}
	s.files = st
	return nil
}

// closeFiles closes the store (the disk store removes every file of this
// run; GridFS keeps them for the other instances until they expire).
func (s *Server) closeFiles() {
	if s.files == nil {
		return
	}
	if err := s.files.Close(); err != nil {
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
		err = files.CheckName(q.Get("name"))
	}
	if err != nil {
		s.log.Debug("upload refused", "err", fmt.Errorf("name: %w", err))
		writeError(w, http.StatusBadRequest, events.InvalidRequest.Message(), events.InvalidRequest, "the query parameter name: "+err.Error())
		return
	}
	name := q.Get("name")
	body := &idleReader{r: r.Body, rc: rc, idle: s.uploadIdle, end: time.Now().Add(s.cfg.UploadTimeout)}
	p, err := s.files.Put(r.Context(), name, body, r.ContentLength)
	switch {
	case err == nil:
		s.log.Debug("file placed", "bytes", p.Size)
		writeJSON(w, fileAnswer{
			Status: http.StatusOK, Message: events.OK.Message(), Code: int(events.OK),
			URL:     "/files/" + p.Key + "/" + url.PathEscape(name),
			Expires: p.Expires.UTC().Format(time.RFC3339),
		})
	case errors.Is(err, files.ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "Request too large", events.InvalidRequest,
			"the file is over max_file_bytes ("+strconv.FormatInt(s.cfg.MaxFileBytes, 10)+" bytes)")
	case errors.Is(err, files.ErrFull), errors.Is(err, files.ErrDiskFull):
		s.log.Warn("upload refused", "err", err)
		detail := "the store of temporary files is full (max_files or max_files_bytes); retry later"
		if errors.Is(err, files.ErrDiskFull) {
			detail = "the disk of files_dir is full; retry later"
		}
		writeError(w, http.StatusInsufficientStorage, "Insufficient storage", events.Unavailable, detail)
	case errors.Is(err, files.ErrCut):
		s.log.Info("upload cut off", "err", err)
		writeError(w, http.StatusBadRequest, events.InvalidRequest.Message(), events.InvalidRequest, "the body ended before its Content-Length, or stalled for 60 s")
	case errors.Is(err, files.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, events.Unavailable.Message(), events.Unavailable, "the server is shutting down")
	case errors.Is(err, files.ErrUnavailable):
		s.warn.Warn("upload failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, events.Unavailable.Message(), events.Unavailable, "MongoDB failed; nothing was stored, retry later")
	default:
		s.log.Error("upload failed", "err", err)
		writeError(w, http.StatusInternalServerError, "Internal error", events.Unavailable, "the file could not be written (the server's log says why)")
	}
}

// handleFileDownload is GET (and HEAD) /files/{key}/{name}.
func (s *Server) handleFileDownload(w http.ResponseWriter, r *http.Request) {
	if s.files == nil {
		writeAnswer(w, http.StatusNotFound, "Not found", events.InvalidRequest)
		return
	}
	f, err := s.files.Open(r.Context(), r.PathValue("key"), r.PathValue("name"))
	switch {
	case errors.Is(err, files.ErrNotFound):
		writeAnswer(w, http.StatusNotFound, "Not found", events.InvalidRequest)
		return
	case err != nil:
		s.warn.Warn("download failed", "err", err)
		writeAnswer(w, http.StatusServiceUnavailable, events.Unavailable.Message(), events.Unavailable)
		return
	}
	defer f.Content.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", contentDisposition(f.Name))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if r.Method == http.MethodGet {
		s.fileMetrics.downloads.Inc()
	}
	http.ServeContent(w, r, f.Name, f.Created, f.Content)
}

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
