package files

// The GridFS store: the mode with MongoDB. A file is a GridFS file of the
// bucket (default airlay_files): its chunks in <bucket>.chunks ({files_id, n,
// data}, chunkSize bytes each but the last) and, written last, its document in
// <bucket>.files ({_id, length, chunkSize, uploadDate, filename, metadata:
// {expires, instance}}), so that a file is visible only once it is whole; any
// GridFS tool reads it. The _id is the hex sha256 of "key/name" (ID): a link
// is one lookup by _id on any instance, and the key itself is stored nowhere.
//
// An upload in progress holds a reservation in <bucket>.uploads ({_id, bytes,
// until, instance}): the limits count the files whose link works plus the
// reservations, on every instance. A reservation that outlives its lease
// (until: the upload's start + upload_timeout + leaseMargin) belongs to an
// instance that died mid-upload: any instance removes its chunks, then it.
//
// Expiry: a link answers 404 from its expires on (the lookup asks for it);
// the file's chunks, then its document, are removed grace later, so that a
// download that began before the expiry can finish. The instance that placed
// a file removes it on time; every instance also sweeps the bucket every
// Sweep for the files of instances that are gone. Several instances removing
// the same file at once is safe: each delete is idempotent, and only the one
// whose delete of the document took effect counts it.

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/mongo/writeconcern"
)

// GridFS defaults.
const (
	DefaultBucket        = "airlay_files"
	DefaultChunkSize     = 255 << 10 // GridFS's own default
	DefaultGrace         = time.Minute
	DefaultSweep         = 30 * time.Second
	defaultTimeout       = 3 * time.Second
	defaultUploadTimeout = 10 * time.Minute
	// leaseMargin is added to upload_timeout for a reservation's lease; an
	// upload completes only with half of it left, so instances whose clocks
	// differ by less than that never remove a live upload.
	leaseMargin = time.Minute
	// chunksPerWrite chunks go in one insert, and come in one batch of a
	// download: the memory one transfer holds.
	chunksPerWrite = 4
	// gridGrowStep is how much an upload of unknown length reserves at a
	// time (each step is one update and one check of the totals).
	gridGrowStep = 8 << 20
	// sweepBatch is the most files or reservations one sweep removes.
	sweepBatch = 100
)

// GridFSOptions are the settings of a GridFS store besides the limits; zero
// fields take the default named.
type GridFSOptions struct {
	Bucket        string        // the bucket's name (its collections: .files, .chunks, .uploads); zero: DefaultBucket
	Instance      string        // this instance's name, written beside its files
	Timeout       time.Duration // longest one MongoDB operation; zero: 3s
	UploadTimeout time.Duration // longest an upload takes ([webSocketEvents] upload_timeout); zero: 10m
	Grace         time.Duration // how long an expired file's chunks stay for downloads begun before; zero: DefaultGrace; negative: none
	Sweep         time.Duration // how often the bucket is swept for other instances' expired files; zero: DefaultSweep
	ChunkSize     int           // zero: DefaultChunkSize
}

// GridFS keeps the temporary download files in a MongoDB GridFS bucket,
// shared by every instance of the database.
type GridFS struct {
	o       Options
	g       GridFSOptions
	files   *mongo.Collection
	chunks  *mongo.Collection
	uploads *mongo.Collection
	lease   time.Duration

	ctx    context.Context // cancelled by Close: uploads in progress fail
	admit  sync.Mutex      // one reservation (or growth) and its check at a time
	cancel context.CancelFunc
	puts   sync.WaitGroup

	mu      sync.Mutex
	live    []gridFile // this instance's files whose link works, by expiry
	dying   []gridFile // this instance's files to remove, by expiry
	stored  int64
	indexed bool
	closed  bool

	wake chan struct{}
	done chan struct{}
}

type gridFile struct {
	id      string
	size    int64
	expires time.Time
}

var _ Store = (*GridFS)(nil)

// OpenGridFS opens the store in db and starts its expiry loop. It does not
// wait for MongoDB: the indexes are made by the loop once MongoDB answers,
// and meanwhile uploads and downloads fail with ErrUnavailable.
func OpenGridFS(db *mongo.Database, o Options, g GridFSOptions) (*GridFS, error) {
	o.setDefaults()
	if g.Bucket == "" {
		g.Bucket = DefaultBucket
	}
	if g.Timeout <= 0 {
		g.Timeout = defaultTimeout
	}
	if g.UploadTimeout <= 0 {
		g.UploadTimeout = defaultUploadTimeout
	}
	if g.Grace == 0 {
		g.Grace = DefaultGrace
	}
	g.Grace = max(g.Grace, 0)
	if g.Sweep <= 0 {
		g.Sweep = DefaultSweep
	}
	if g.ChunkSize <= 0 {
		g.ChunkSize = DefaultChunkSize
	}
	// The chunks need no majority each: the document, written after them
	// with majority, is acknowledged only once they have replicated too
	// (replication keeps the oplog's order).
	w1 := options.Collection().SetWriteConcern(writeconcern.W1())
	maj := options.Collection().SetWriteConcern(writeconcern.Majority())
	ctx, cancel := context.WithCancel(context.Background())
	st := &GridFS{
		o: o, g: g,
		files:   db.Collection(g.Bucket+".files", maj),
		chunks:  db.Collection(g.Bucket+".chunks", w1),
		uploads: db.Collection(g.Bucket+".uploads", maj),
		lease:   g.UploadTimeout + leaseMargin,
		ctx:     ctx, cancel: cancel,
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	o.Log.Info("temporary download files in MongoDB GridFS", "bucket", g.Bucket)
	go st.loop()
	return st, nil
}

// op is a context for one MongoDB operation of ctx.
func (st *GridFS) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, st.g.Timeout)
}

// unavailable wraps a driver error.
func unavailable(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
}

// Put streams body into chunks of a new file; the file's document, written
// last, makes it visible. It fails with ErrFull when the totals of every
// instance would pass a limit.
func (st *GridFS) Put(ctx context.Context, name string, body io.Reader, size int64) (Placed, error) {
	if size > st.o.MaxFile {
		return Placed{}, ErrTooLarge
	}
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return Placed{}, ErrClosed
	}
	st.puts.Add(1)
	st.mu.Unlock()
	defer st.puts.Done()

	// The request's context, and the store's: Close fails uploads.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(st.ctx, cancel)
	defer stop()

	key := NewKey()
	sum := ID(key, name)
	id := hex.EncodeToString(sum[:])
	started := time.Now()
	until := started.Add(st.lease)
	reserved := max(size, 0)
	fail := func(err error) (Placed, error) {
		// Remove what was written, whatever ctx says; the sweeper does it
		// after the lease if this fails.
		cctx, ccancel := context.WithTimeout(context.Background(), st.g.Timeout)
		defer ccancel()
		_, err1 := st.chunks.DeleteMany(cctx, bson.D{{Key: "files_id", Value: id}})
		if err1 == nil {
			_, err1 = st.uploads.DeleteOne(cctx, bson.D{{Key: "_id", Value: id}})
		}
		if err1 != nil {
			st.o.Log.Warn("remove a failed upload (the sweep removes it after its lease)", "err", err1)
		}
		if st.ctx.Err() != nil && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrFull) {
			return Placed{}, ErrClosed
		}
		return Placed{}, err
	}
	if err := st.reserve(ctx, id, reserved, started, until); err != nil {
		return fail(err)
	}
	cw := &chunkWriter{st: st, ctx: ctx, id: id, buf: make([]byte, 0, chunksPerWrite*st.g.ChunkSize)}
	w := &limitWriter{w: cw, maxFile: st.o.MaxFile, step: gridGrowStep, reserved: reserved,
		grow: func(n int64) error { return st.grow(ctx, id, n) }}
	if err := copyBody(w, body, size); err != nil {
		return fail(err)
	}
	if err := cw.flush(true); err != nil {
		return fail(err)
	}
	now := time.Now()
	if now.After(until.Add(-leaseMargin / 2)) {
		return fail(fmt.Errorf("%w: the upload outlasted its lease (upload_timeout)", ErrCut))
	}
	expires := now.Add(st.o.TTL)
	octx, ocancel := st.op(ctx)
	_, err := st.files.InsertOne(octx, bson.D{
		{Key: "_id", Value: id},
		{Key: "length", Value: w.n},
		{Key: "chunkSize", Value: int32(st.g.ChunkSize)},
		{Key: "uploadDate", Value: now},
		{Key: "filename", Value: name},
		{Key: "metadata", Value: bson.D{{Key: "expires", Value: expires}, {Key: "instance", Value: st.g.Instance}}},
	})
	ocancel()
	if err != nil {
		// A timeout may hide an insert that took effect: then the file
		// exists, unknown to the caller, until the sweep removes it.
		return fail(unavailable("insert the file's document", err))
	}
	// The reservation goes; while it is still there the file counts twice,
	// which errs on the safe side.
	cctx, ccancel := context.WithTimeout(context.Background(), st.g.Timeout)
	if _, err := st.uploads.DeleteOne(cctx, bson.D{{Key: "_id", Value: id}}); err != nil {
		st.o.Log.Warn("remove an upload's reservation (the sweep removes it after its lease)", "err", err)
	}
	ccancel()
	f := gridFile{id: id, size: w.n, expires: expires}
	st.mu.Lock()
	st.live = append(st.live, f)
	st.dying = append(st.dying, f)
	st.stored += f.size
	st.o.Metrics.files.Set(float64(len(st.live)))
	st.o.Metrics.bytes.Set(float64(st.stored))
	st.mu.Unlock()
	select {
	case st.wake <- struct{}{}:
	default:
	}
	return Placed{Key: key, Size: w.n, Expires: expires}, nil
}

// reserve writes the reservation of upload id and checks the totals.
func (st *GridFS) reserve(ctx context.Context, id string, bytes int64, started, until time.Time) error {
	st.admit.Lock()
	defer st.admit.Unlock()
	seq := time.Now().UnixNano() // taken in turn: a reservation waiting here must not order before one admitted meanwhile
	octx, cancel := st.op(ctx)
	_, err := st.uploads.InsertOne(octx, bson.D{
		{Key: "_id", Value: id}, {Key: "bytes", Value: bytes}, {Key: "until", Value: until},
		{Key: "seq", Value: seq}, {Key: "instance", Value: st.g.Instance}, {Key: "started", Value: started},
	})
	cancel()
	if err != nil {
		return unavailable("reserve", err)
	}
	return st.check(ctx, seq)
}

// grow reserves n more bytes for upload id, or gives them back and answers
// ErrFull when the totals pass max_files_bytes.
func (st *GridFS) grow(ctx context.Context, id string, n int64) error {
	st.admit.Lock()
	defer st.admit.Unlock()
	octx, cancel := st.op(ctx)
	_, err := st.uploads.UpdateOne(octx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "bytes", Value: n}}}})
	cancel()
	if err != nil {
		return unavailable("grow the reservation", err)
	}
	if err := st.check(ctx, 0); err != nil {
		if errors.Is(err, ErrFull) {
			octx, cancel := st.op(ctx)
			_, err1 := st.uploads.UpdateOne(octx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "bytes", Value: -n}}}})
			cancel()
			if err1 != nil {
				return unavailable("give back a reservation", err1)
			}
		}
		return err
	}
	return nil
}

// check answers ErrFull when the files and reservations of every instance
// pass a limit. A new upload (seq: its reservation's) counts the
// reservations made before its own (and its own), so that of uploads racing
// for the last room the first ones win instead of all refusing each other;
// a growth (seq 0) counts every reservation. The reservation is written
// before the check, and one instance checks one at a time: an instance never
// passes a limit with its own uploads. Two instances can, by the uploads they
// admit within one round trip of each other (plus the difference of their
// clocks, which order seq): at most one upload per other instance at the
// moment the store fills up (see the README).
// Reservations are summed before files: an upload that completes between
// the two reads is counted twice rather than not at all.
func (st *GridFS) check(ctx context.Context, seq int64) error {
	now := time.Now()
	filter := bson.D{{Key: "until", Value: bson.D{{Key: "$gt", Value: now}}}}
	if seq != 0 {
		filter = append(filter, bson.E{Key: "seq", Value: bson.D{{Key: "$lte", Value: seq}}})
	}
	n1, b1, err := st.total(ctx, st.uploads, filter, "$bytes")
	if err != nil {
		return err
	}
	n2, b2, err := st.total(ctx, st.files, bson.D{{Key: "metadata.expires", Value: bson.D{{Key: "$gt", Value: now}}}}, "$length")
	if err != nil {
		return err
	}
	if n1+n2 > int64(st.o.MaxFiles) || b1+b2 > st.o.MaxBytes {
		return ErrFull
	}
	return nil
}

// total counts the documents of c matching filter and sums field.
func (st *GridFS) total(ctx context.Context, c *mongo.Collection, filter bson.D, field string) (n, sum int64, err error) {
	octx, cancel := st.op(ctx)
	defer cancel()
	cur, err := c.Aggregate(octx, mongo.Pipeline{
		{{Key: "$match", Value: filter}},
		{{Key: "$group", Value: bson.D{{Key: "_id", Value: nil}, {Key: "n", Value: bson.D{{Key: "$sum", Value: 1}}}, {Key: "bytes", Value: bson.D{{Key: "$sum", Value: field}}}}}},
	})
	if err != nil {
		return 0, 0, unavailable("sum "+c.Name(), err)
	}
	defer cur.Close(octx)
	if !cur.Next(octx) {
		if err := cur.Err(); err != nil {
			return 0, 0, unavailable("sum "+c.Name(), err)
		}
		return 0, 0, nil
	}
	n = numberAt(cur.Current, "n")
	sum = numberAt(cur.Current, "bytes")
	return n, sum, nil
}

// numberAt reads an integer field of any BSON number type.
func numberAt(doc bson.Raw, key string) int64 {
	v, err := doc.LookupErr(key)
	if err != nil {
		return 0
	}
	if i, ok := v.AsInt64OK(); ok {
		return i
	}
	if f, ok := v.DoubleOK(); ok {
		return int64(f)
	}
	return 0
}

// chunkWriter writes an upload's chunks, chunksPerWrite in one insert: it
// holds at most that many chunks' bytes.
type chunkWriter struct {
	st  *GridFS
	ctx context.Context
	id  string
	buf []byte
	n   int32 // the next chunk's number
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+k]
		p = p[k:]
		written += k
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(false); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// flush inserts the whole chunks held, and with last the partial one too.
func (w *chunkWriter) flush(last bool) error {
	size := w.st.g.ChunkSize
	var docs []any
	i := 0
	for ; i < len(w.buf); i += size {
		end := i + size
		if end > len(w.buf) {
			if !last {
				break
			}
			end = len(w.buf)
		}
		docs = append(docs, bson.D{
			{Key: "_id", Value: primitive.NewObjectID()},
			{Key: "files_id", Value: w.id},
			{Key: "n", Value: w.n},
			{Key: "data", Value: primitive.Binary{Data: w.buf[i:end]}},
		})
		w.n++
	}
	if len(docs) == 0 {
		return nil
	}
	octx, cancel := w.st.op(w.ctx)
	_, err := w.st.chunks.InsertMany(octx, docs)
	cancel()
	if err != nil {
		return unavailable("insert chunks", err)
	}
	rest := copy(w.buf, w.buf[min(i, len(w.buf)):])
	w.buf = w.buf[:rest]
	return nil
}

// Usage returns the files and bytes that count against max_files and
// max_files_bytes on every instance now (reservations included).
func (st *GridFS) Usage(ctx context.Context) (files int64, bytes int64, err error) {
	now := time.Now()
	n1, b1, err := st.total(ctx, st.uploads, bson.D{{Key: "until", Value: bson.D{{Key: "$gt", Value: now}}}}, "$bytes")
	if err != nil {
		return 0, 0, err
	}
	n2, b2, err := st.total(ctx, st.files, bson.D{{Key: "metadata.expires", Value: bson.D{{Key: "$gt", Value: now}}}}, "$length")
	return n1 + n2, b1 + b2, err
}

// Close stops the loop and fails the uploads in progress (their chunks
// and reservations are removed); the files stay for the other instances
// until they expire.
func (st *GridFS) Close() error {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil
	}
	st.closed = true
	st.mu.Unlock()
	st.cancel()
	<-st.done
	st.puts.Wait()
	st.o.Metrics.files.Set(0)
	st.o.Metrics.bytes.Set(0)
	return nil
}
