package files

// The disk store: the mode without MongoDB. The store makes its own
// directory files_dir/airlay-files-NNN (files_dir empty: the system temp dir)
// holding a marker file, on which it keeps an exclusive lock while it runs,
// and one file per upload, named f-<16 hex digits>, unrelated to the key. At
// start-up it removes the directories of processes that are gone (marker
// present, unlocked), and in them only the files it names so; it never
// touches anything else. Several servers may share one files_dir.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// DirPrefix begins the name of a store's own directory in files_dir.
	DirPrefix = "airlay-files-"
	// Marker is the marker (and lock) file in that directory.
	Marker = ".airlay-files"
	// markerText begins the marker's contents; a directory whose marker
	// does not start with it is not the store's.
	markerText = "airlay event server: temporary download files. This directory is removed by the next airlay server that starts with the same files_dir once its own server is gone.\n"
	// dataPrefix begins the name of every data file.
	dataPrefix = "f-"
	// diskGrowStep is how much an upload of unknown length reserves of
	// max_files_bytes at a time.
	diskGrowStep = 1 << 20
)

// diskFile is one placed file.
type diskFile struct {
	id      [sha256.Size]byte
	path    string
	name    string
	size    int64
	created time.Time
	expires time.Time
}

// Disk keeps the temporary download files of one process in a directory:
// the index by URL, the limits and the expiry loop, in memory.
type Disk struct {
	o    Options
	dir  string
	lock *os.File // the marker, locked while the store is open

	mu        sync.Mutex
	index     map[[sha256.Size]byte]*diskFile
	queue     []*diskFile         // by expiry: every file has the same ttl
	uploading map[string]struct{} // paths of uploads in progress
	used      int64               // bytes of stored files plus reservations of uploads
	count     int                 // stored files plus uploads in progress
	stored    int64               // bytes of stored files
	closed    bool

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

var _ Store = (*Disk)(nil)

// OpenDisk removes what processes that are gone left in root (files_dir,
// or the temp dir when empty), makes this store's directory there and
// starts the expiry loop.
func OpenDisk(root string, o Options) (*Disk, error) {
	o.setDefaults()
	if root == "" {
		root = os.TempDir()
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	removed := removeLeftovers(root, o.Log)
	dir, err := os.MkdirTemp(root, DirPrefix+"*")
	if err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, Marker), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		_ = os.Remove(dir)
		return nil, err
	}
	// Lock before writing the text: a store opening at the same moment
	// that sees the marker unlocked also sees it empty, and leaves it.
	if err := lockFile(lock); err == nil {
		_, err = fmt.Fprintf(lock, "%spid %d, started %s\n", markerText, os.Getpid(), time.Now().UTC().Format(time.RFC3339))
	}
	if err != nil {
		lock.Close()
		_ = os.Remove(lock.Name())
		_ = os.Remove(dir)
		return nil, fmt.Errorf("marker %s: %w", lock.Name(), err)
	}
	st := &Disk{
		o: o, dir: dir, lock: lock,
		index:     make(map[[sha256.Size]byte]*diskFile),
		uploading: make(map[string]struct{}),
		wake:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	o.Log.Info("temporary download files", "dir", dir, "leftovers_removed", removed)
	go st.loop()
	return st, nil
}

// Dir is the store's own directory.
func (st *Disk) Dir() string { return st.dir }

// Usage returns the files and bytes that count against max_files and
// max_files_bytes now (uploads in progress included).
func (st *Disk) Usage() (files int, bytes int64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.count, st.used
}

// removeLeftovers removes the directories of stopped stores in root and
// returns how many files it removed. A directory counts as one only if its
// marker starts with markerText and nobody holds its lock; in it only
// the marker and data files go. Anything else stays, and so its directory.
func removeLeftovers(root string, log *slog.Logger) int {
	entries, err := os.ReadDir(root)
	if err != nil {
		return 0
	}
	removed := 0
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), DirPrefix) {
			continue
		}
		dir := filepath.Join(root, e.Name())
		marker, err := os.Open(filepath.Join(dir, Marker))
		if err != nil {
			continue // no marker: not ours (or not readable: another user's)
		}
		if ok, _ := tryLockFile(marker); !ok {
			marker.Close() // its process runs
			continue
		}
		head := make([]byte, len(markerText))
		if _, err := io.ReadFull(marker, head); err != nil || string(head) != markerText {
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
	hexPart, ok := strings.CutPrefix(name, dataPrefix)
	if !ok || len(hexPart) != 16 {
		return false
	}
	_, err := hex.DecodeString(hexPart)
	return err == nil && strings.ToLower(hexPart) == hexPart
}

// Put streams body into a new file and indexes it under a fresh key.
// Nothing stays on disk when it fails.
func (st *Disk) Put(_ context.Context, name string, body io.Reader, size int64) (Placed, error) {
	if size > st.o.MaxFile {
		return Placed{}, ErrTooLarge
	}
	reserved := max(size, 0)
	path, file, err := st.begin(reserved)
	if err != nil {
		return Placed{}, err
	}
	w := &limitWriter{w: diskWriter{file}, maxFile: st.o.MaxFile, step: diskGrowStep, grow: st.grow, reserved: reserved}
	fail := func(err error) (Placed, error) {
		file.Close()
		_ = os.Remove(path)
		st.end(path, w.reserved, nil)
		return Placed{}, err
	}
	if err := copyBody(w, body, size); err != nil {
		return fail(err)
	}
	if err := file.Close(); err != nil {
		return fail(diskError(err))
	}
	key := NewKey()
	f := &diskFile{id: ID(key, name), path: path, name: name, size: w.n}
	if err := st.end(path, w.reserved, f); err != nil {
		return Placed{}, err // end gave back the slot and removed the file
	}
	return Placed{Key: key, Size: f.size, Expires: f.expires}, nil
}

// diskWriter maps a full disk to ErrDiskFull.
type diskWriter struct{ f *os.File }

func (w diskWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		err = diskError(err)
	}
	return n, err
}

// begin takes a file slot and reserves bytes for an upload, and creates its
// file.
func (st *Disk) begin(bytes int64) (string, *os.File, error) {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return "", nil, ErrClosed
	}
	if st.count >= st.o.MaxFiles || st.used+bytes > st.o.MaxBytes {
		st.mu.Unlock()
		return "", nil, ErrFull
	}
	st.count++
	st.used += bytes
	st.mu.Unlock()
	for {
		var raw [8]byte
		_, _ = rand.Read(raw[:])
		path := filepath.Join(st.dir, dataPrefix+hex.EncodeToString(raw[:]))
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
			return "", nil, ErrClosed
		}
		return path, file, nil
	}
}

// grow reserves n more bytes for an upload.
func (st *Disk) grow(n int64) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.used+n > st.o.MaxBytes {
		return ErrFull
	}
	st.used += n
	return nil
}

// end finishes an upload that reserved bytes: f nil gives back its slot and
// reservation; otherwise f is indexed with the reservation cut to its size.
func (st *Disk) end(path string, reserved int64, f *diskFile) error {
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
			return ErrClosed
		}
		return nil
	}
	st.used += f.size - reserved
	now := time.Now()
	f.created, f.expires = now, now.Add(st.o.TTL)
	st.index[f.id] = f
	st.queue = append(st.queue, f)
	st.stored += f.size
	st.o.Metrics.files.Set(float64(len(st.index)))
	st.o.Metrics.bytes.Set(float64(st.stored))
	if len(st.queue) == 1 {
		select {
		case st.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// Open returns the file at /files/key/name, or ErrNotFound.
func (st *Disk) Open(_ context.Context, key, name string) (*File, error) {
	id := ID(key, name)
	now := time.Now()
	st.mu.Lock()
	f := st.index[id]
	st.mu.Unlock()
	if f == nil || !now.Before(f.expires) {
		return nil, ErrNotFound
	}
	file, err := os.Open(f.path)
	if err != nil {
		return nil, ErrNotFound // expired between the lookup and here
	}
	return &File{Name: f.name, Size: f.size, Created: f.created, Expires: f.expires, Content: file}, nil
}

// loop removes files as they expire.
func (st *Disk) loop() {
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
func (st *Disk) expire(now time.Time) time.Duration {
	st.mu.Lock()
	var gone []*diskFile
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
		st.o.Metrics.files.Set(float64(len(st.index)))
		st.o.Metrics.bytes.Set(float64(st.stored))
	}
	st.mu.Unlock()
	for _, f := range gone {
		if err := os.Remove(f.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			st.o.Log.Warn("remove expired file", "err", err)
		}
		st.o.Metrics.expiries.Inc()
	}
	return wait
}

// Close stops the expiry loop and removes every file and the directory.
// Uploads still running fail with ErrClosed.
func (st *Disk) Close() error {
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
	st.o.Metrics.files.Set(0)
	st.o.Metrics.bytes.Set(0)
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

// diskError maps a full disk or quota to ErrDiskFull.
func diskError(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", ErrDiskFull, err)
	}
	return err
}
