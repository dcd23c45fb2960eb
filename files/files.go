// Package files keeps the temporary download files of POST /api/files, as
// PROTOCOL.md "Temporary download links" describes: a backend places a file
// and gets an unguessable key; anyone with /files/<key>/<name> may read it
// until file_ttl passes; then it is gone.
//
// Two stores sit behind Store: Disk, files in a directory of this process
// (the mode without MongoDB; a link works on the instance that stored the
// file), and GridFS, files in a MongoDB GridFS bucket (a link works on every
// instance sharing the database). Both keep the same limits (max_file_bytes,
// max_files_bytes, max_files) and the same expiry. The HTTP side (names in
// the query, status codes, headers, Range) is package server's.
package files

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"
)

// Store keeps temporary download files. Its methods are safe for concurrent
// use.
type Store interface {
	// Put streams body into a new file called name under a fresh key. size
	// is the body's length, or -1 when unknown; a body that ends before
	// size bytes is ErrCut. Nothing of a failed Put stays visible, and its
	// share of the limits is given back.
	Put(ctx context.Context, name string, body io.Reader, size int64) (Placed, error)
	// Open returns the file at /files/key/name, or ErrNotFound when there is
	// none or its link expired. The caller closes its Content.
	Open(ctx context.Context, key, name string) (*File, error)
	// Close stops the store: uploads in progress fail with ErrClosed.
	Close() error
}

// Placed is what Put placed.
type Placed struct {
	Key     string // the random part of the URL
	Size    int64
	Expires time.Time
}

// File is a placed file, open for reading.
type File struct {
	Name    string
	Size    int64
	Created time.Time // when its upload finished (Last-Modified)
	Expires time.Time
	// Content reads the file; Seek is cheap (it moves a position only), so
	// a Range costs what it reads.
	Content io.ReadSeekCloser
}

// Options are the limits every store keeps; the ttl and the limits must be
// set.
type Options struct {
	TTL      time.Duration // file_ttl: how long a link works
	MaxFile  int64         // max_file_bytes: largest file (ErrTooLarge past it)
	MaxBytes int64         // max_files_bytes: bytes of every file, uploads in progress included (ErrFull past it)
	MaxFiles int           // max_files: files, uploads in progress included (ErrFull past it)
	Log      *slog.Logger  // nil: slog.Default()
	Metrics  *Metrics      // nil: series of their own, registered nowhere
}

func (o *Options) setDefaults() {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
}

const (
	// KeyBytes is the random part of a download URL: 160 bits.
	KeyBytes = 20
	// MaxName is the longest name, in bytes, a file may have.
	MaxName = 255
)

// NewKey returns a fresh random key: KeyBytes from crypto/rand in base64url
// without padding (27 characters).
func NewKey() string {
	var raw [KeyBytes]byte
	_, _ = rand.Read(raw[:]) // never fails (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

// ID is the index key of a URL: sha256 of key and name. A lookup hashes
// whatever it is given and makes one index lookup, so an unknown key, a
// known key with another name, and an expired file cost the same; the key
// itself is stored nowhere. Neither a key nor a stored name contains "/", so
// no other (key, name) gives the same string.
func ID(key, name string) [sha256.Size]byte {
	h := sha256.New()
	_, _ = io.WriteString(h, key)
	_, _ = io.WriteString(h, "/")
	_, _ = io.WriteString(h, name)
	var id [sha256.Size]byte
	h.Sum(id[:0])
	return id
}

// CheckName returns nil when name is a plain file name: valid UTF-8, 1 to
// MaxName bytes, not "." or "..", without "/", "\" or control characters
// (NUL included).
func CheckName(name string) error {
	switch {
	case name == "", name == ".", name == "..":
		return errors.New("empty, . or ..")
	case len(name) > MaxName:
		return fmt.Errorf("longer than %d bytes", MaxName)
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

// limitWriter writes an upload within max_file_bytes, reserving more of
// max_files_bytes through grow as the file passes its reservation: step at
// a time (less near max_file_bytes), or just what it needs when a step
// does not fit.
type limitWriter struct {
	w        io.Writer
	maxFile  int64
	step     int64
	grow     func(n int64) error // nil, ErrFull or the store's own error
	n        int64               // bytes written
	reserved int64
	err      error // the error Write returned last: the store's, not the body's
}

func (w *limitWriter) Write(p []byte) (int, error) {
	end := w.n + int64(len(p))
	if end > w.maxFile {
		w.err = ErrTooLarge
		return 0, w.err
	}
	if need := end - w.reserved; need > 0 {
		more := max(need, min(w.step, w.maxFile-w.reserved))
		err := w.grow(more)
		if errors.Is(err, ErrFull) && more != need {
			more = need
			err = w.grow(need)
		}
		if err != nil {
			w.err = err
			return 0, err
		}
		w.reserved += more
	}
	n, err := w.w.Write(p)
	w.n += int64(n)
	if err != nil {
		w.err = err
	}
	return n, err
}

// copyBody copies body into w and tells the body's failures (ErrCut) from
// the store's; size >= 0 must be met exactly.
func copyBody(w *limitWriter, body io.Reader, size int64) error {
	bufp := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(w, body, *bufp)
	copyBufs.Put(bufp)
	if err == nil && size >= 0 && n != size {
		return ErrCut
	}
	if err != nil && (w.err == nil || !errors.Is(err, w.err)) {
		return fmt.Errorf("%w: %w", ErrCut, err) // the body failed, not the store
	}
	return err
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}
