package files

// The GridFS store against mongosim (internal/mongosim), as several
// instances sharing one database use it: each "instance" is a store of its
// own on a client of its own. The HTTP contract runs against this store in
// server/files_test.go; the binary, two processes and kill -9 in
// cmd/airlay-cli/files_test.go.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlay/airlay/internal/mongosim"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/gridfs"
	"go.mongodb.org/mongo-driver/mongo/options"
)

func TestMain(m *testing.M) {
	code := m.Run()
	mongosim.Cleanup()
	os.Exit(code)
}

func gridLimits() Options {
	return Options{TTL: time.Hour, MaxFile: 64 << 20, MaxBytes: 1 << 30, MaxFiles: 1000, Log: slog.New(slog.DiscardHandler)}
}

// openGrid opens a store on its own client of uri (one instance), closed at
// the end.
func openGrid(t testing.TB, uri, db string, o Options, g GridFSOptions) *GridFS {
	t.Helper()
	if g.Instance == "" {
		g.Instance = "test"
	}
	st, err := OpenGridFS(mongosim.Connect(t, uri).Database(db), o, g)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func randomData(n int, seed uint64) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{byte(seed)}).Read(b)
	return b
}

// read opens key/name on st and reads [from, to) of it (to -1: the end)
// through Seek and Read, as a Range does.
func read(t testing.TB, st Store, key, name string, from, to int64) ([]byte, error) {
	t.Helper()
	f, err := st.Open(context.Background(), key, name)
	if err != nil {
		return nil, err
	}
	defer f.Content.Close()
	if to < 0 {
		to = f.Size
	}
	if _, err := f.Content.Seek(from, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(f.Content, to-from))
}

func count(t testing.TB, db *mongo.Database, coll string) int64 {
	t.Helper()
	n, err := db.Collection(coll).CountDocuments(context.Background(), bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// What the store writes is GridFS: the driver's own GridFS reads it back,
// chunk by chunk, with the name, length and chunk size the store wrote.
func TestGridFSIsGridFS(t *testing.T) {
	t.Parallel()
	sim := mongosim.Start(t)
	st := openGrid(t, sim.URI, "airlay", gridLimits(), GridFSOptions{})
	data := randomData(3*DefaultChunkSize+17, 1) // four chunks, the last short
	p, err := st.Put(context.Background(), "report.xlsx", bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	db := sim.Client().Database("airlay")
	bucket, err := gridfs.NewBucket(db, options.GridFSBucket().SetName(DefaultBucket))
	if err != nil {
		t.Fatal(err)
	}
	sum := ID(p.Key, "report.xlsx")
	id := fmt.Sprintf("%x", sum[:])
	ds, err := bucket.OpenDownloadStream(id)
	if err != nil {
		t.Fatalf("the driver's GridFS does not find the file %s: %v", id, err)
	}
	got, err := io.ReadAll(ds)
	ds.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the driver's GridFS read %d bytes (%v), want the %d written", len(got), err, len(data))
	}
	f := ds.GetFile()
	if f.Name != "report.xlsx" || f.Length != int64(len(data)) || f.ChunkSize != DefaultChunkSize {
		t.Errorf("file document: %+v", f)
	}
	if n := count(t, db, DefaultBucket+".chunks"); n != 4 {
		t.Errorf("%d chunks, want 4", n)
	}
	if n := count(t, db, DefaultBucket+".uploads"); n != 0 {
		t.Errorf("%d reservations left after the upload", n)
	}
	// The key is stored nowhere: only its hash with the name.
	raw, err := db.Collection(DefaultBucket+".files").FindOne(context.Background(), bson.D{}).Raw()
	if err != nil || bytes.Contains(raw, []byte(p.Key)) {
		t.Errorf("the file's document holds the key (%v)", err)
	}
	// Its indexes: GridFS's own, and those of expiry and the sweep.
	waitUntil(t, "the indexes", 5*time.Second, func() bool {
		return hasIndex(t, db, DefaultBucket+".chunks", "files_id,n") &&
			hasIndex(t, db, DefaultBucket+".files", "metadata.expires") &&
			hasIndex(t, db, DefaultBucket+".uploads", "until")
	})
}

// hasIndex reports whether coll has an index on the fields keys (comma-separated, in order).
func hasIndex(t testing.TB, db *mongo.Database, coll, key string) bool {
	t.Helper()
	specs, err := db.Collection(coll).Indexes().ListSpecifications(context.Background())
	if err != nil {
		return false
	}
	for _, s := range specs {
		elems, _ := s.KeysDocument.Elements()
		var names []string
		for _, e := range elems {
			names = append(names, e.Key())
		}
		if strings.Join(names, ",") == key {
			return true
		}
	}
	return false
}

func waitUntil(t testing.TB, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two instances on one database: a file placed on A is read on B, whole
// and from any position (seek by chunk); its link ends on both at once;
// both remove it at the same moment, and it is counted once.
func TestGridFSTwoInstances(t *testing.T) {
	t.Parallel()
	sim := mongosim.Start(t)
	o := gridLimits()
	o.TTL = time.Second
	ma, mb := NewMetrics(), NewMetrics()
	oa, ob := o, o
	oa.Metrics, ob.Metrics = ma, mb
	g := GridFSOptions{ChunkSize: 1000, Grace: -1, Sweep: 50 * time.Millisecond}
	a := openGrid(t, sim.URI, "airlay", oa, GridFSOptions{Instance: "a", ChunkSize: g.ChunkSize, Grace: g.Grace, Sweep: g.Sweep})
	b := openGrid(t, sim.URI, "airlay", ob, GridFSOptions{Instance: "b", ChunkSize: g.ChunkSize, Grace: g.Grace, Sweep: g.Sweep})
	data := randomData(10_500, 2)
	const files = 5
	var keys []string
	for i := range files {
		p, err := a.Put(context.Background(), fmt.Sprintf("f%d.bin", i), bytes.NewReader(data), -1)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, p.Key)
	}
	for _, tc := range []struct{ from, to int64 }{{0, -1}, {0, 1}, {999, 1001}, {1000, 2000}, {5555, 10_500}, {10_499, 10_500}, {10_500, 10_500}} {
		got, err := read(t, b, keys[0], "f0.bin", tc.from, tc.to)
		to := tc.to
		if to < 0 {
			to = int64(len(data))
		}
		if err != nil || !bytes.Equal(got, data[tc.from:to]) {
			t.Errorf("B reads [%d, %d) of A's file: %d bytes, %v", tc.from, to, len(got), err)
		}
	}
	// A multi-range reads the same file again from another position.
	f, err := b.Open(context.Background(), keys[0], "f0.bin")
	if err != nil {
		t.Fatal(err)
	}
	for _, pos := range []int64{9000, 10, 4321} {
		f.Content.Seek(pos, io.SeekStart)
		buf := make([]byte, 700)
		if _, err := io.ReadFull(f.Content, buf); err != nil || !bytes.Equal(buf, data[pos:pos+700]) {
			t.Errorf("seek back to %d: %v", pos, err)
		}
	}
	f.Content.Close()
	if _, err := b.Open(context.Background(), keys[0], "F0.bin"); !errors.Is(err, ErrNotFound) {
		t.Errorf("another name: %v, want ErrNotFound", err)
	}
	// Expiry: both instances answer ErrNotFound from the same moment on,
	// and the files go (A's own removal and B's sweep race for them).
	waitUntil(t, "the links to end", 5*time.Second, func() bool {
		_, errA := a.Open(context.Background(), keys[0], "f0.bin")
		_, errB := b.Open(context.Background(), keys[0], "f0.bin")
		return errors.Is(errA, ErrNotFound) && errors.Is(errB, ErrNotFound)
	})
	db := sim.Client().Database("airlay")
	waitUntil(t, "the files to go", 5*time.Second, func() bool {
		return count(t, db, DefaultBucket+".files") == 0 && count(t, db, DefaultBucket+".chunks") == 0
	})
	if ea, eb := testutil.ToFloat64(ma.expiries), testutil.ToFloat64(mb.expiries); ea+eb != files {
		t.Errorf("expired: A counted %v, B %v, want %d in all (each file once)", ea, eb, files)
	}
	if n := testutil.ToFloat64(ma.files); n != 0 {
		t.Errorf("A's airlay_files_stored %v after the expiry", n)
	}
}

// Several instances removing the same expired files at the same moment:
// every file goes once, no chunk stays, nobody fails.
func TestGridFSConcurrentExpiry(t *testing.T) {
	t.Parallel()
	sim := mongosim.Start(t)
	o := gridLimits()
	o.TTL = 300 * time.Millisecond
	placer := openGrid(t, sim.URI, "airlay", o, GridFSOptions{Instance: "placer", ChunkSize: 100, Grace: time.Hour, Sweep: time.Hour})
	const n = 30
	for i := range n {
		if _, err := placer.Put(context.Background(), fmt.Sprintf("f%d", i), bytes.NewReader(randomData(1000, uint64(i))), 1000); err != nil {
			t.Fatal(err)
		}
	}
	placer.Close() // the placer is gone; the others sweep
	time.Sleep(o.TTL)
	var ms []*Metrics
	for i := range 3 {
		oi := o
		oi.Metrics = NewMetrics()
		ms = append(ms, oi.Metrics)
		openGrid(t, sim.URI, "airlay", oi, GridFSOptions{Instance: fmt.Sprint("sweeper-", i), Grace: -1, Sweep: 10 * time.Millisecond})
	}
	db := sim.Client().Database("airlay")
	waitUntil(t, "the files to go", 10*time.Second, func() bool {
		return count(t, db, DefaultBucket+".files") == 0 && count(t, db, DefaultBucket+".chunks") == 0
	})
	var total float64
	for _, m := range ms {
		total += testutil.ToFloat64(m.expiries)
	}
	if total != n {
		t.Errorf("the sweepers counted %v expiries, want %d", total, n)
	}
}

// The limits hold across instances: files and bytes placed through A and
// B count together, uploads in progress included; racing uploads never
// pass max_files.
func TestGridFSLimitsAcrossInstances(t *testing.T) {
	t.Parallel()
	sim := mongosim.Start(t)
	o := gridLimits()
	o.MaxFile, o.MaxBytes, o.MaxFiles = 1000, 2500, 3
	a := openGrid(t, sim.URI, "airlay", o, GridFSOptions{Instance: "a"})
	b := openGrid(t, sim.URI, "airlay", o, GridFSOptions{Instance: "b"})
	ctx := context.Background()
	put := func(st Store, n int, size int64) error {
		_, err := st.Put(ctx, "x.bin", bytes.NewReader(make([]byte, n)), size)
		return err
	}
	if err := put(a, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := put(b, 1000, -1); err != nil {
		t.Fatal(err)
	}
	if err := put(a, 600, 600); !errors.Is(err, ErrFull) {
		t.Errorf("600 bytes on A over 2000 of 2500 placed on A and B: %v, want ErrFull", err)
	}
	if err := put(b, 600, -1); !errors.Is(err, ErrFull) {
		t.Errorf("600 bytes chunked on B: %v, want ErrFull", err)
	}
	if err := put(b, 500, 500); err != nil {
		t.Errorf("500 bytes fit: %v", err)
	}
	if err := put(a, 0, 0); !errors.Is(err, ErrFull) {
		t.Errorf("a 4th file on A with max_files 3: %v, want ErrFull", err)
	}
	if err := put(a, 1001, 1001); !errors.Is(err, ErrTooLarge) {
		t.Errorf("1001 bytes: %v, want ErrTooLarge", err)
	}

	// Racing: 12 uploads at once through two instances into room for 4:
	// the first win (not none: racers do not all refuse each other), and
	// the limit is passed by at most one upload of the other instance.
	sim2 := mongosim.Start(t)
	o.MaxFiles, o.MaxBytes = 4, 1<<20
	c := openGrid(t, sim2.URI, "airlay", o, GridFSOptions{Instance: "c"})
	d := openGrid(t, sim2.URI, "airlay", o, GridFSOptions{Instance: "d"})
	var ok, full atomic.Int64
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := c
			if i%2 == 1 {
				st = d
			}
			switch err := put(st, 100, 100); {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrFull):
				full.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	db := sim2.Client().Database("airlay")
	if n := count(t, db, DefaultBucket+".files"); ok.Load() > 4+1 || ok.Load() < 2 || n != ok.Load() || ok.Load()+full.Load() != 12 {
		t.Errorf("12 racing uploads, room for 4: %d placed, %d refused, %d files stored", ok.Load(), full.Load(), n)
	}
	if n := count(t, db, DefaultBucket+".uploads"); n != 0 {
		t.Errorf("%d reservations left", n)
	}
	t.Logf("12 racing uploads into room for 4: %d placed, %d refused", ok.Load(), full.Load())
}

// What an instance killed mid-upload leaves (a reservation and some
// chunks, no document: nothing visible) is removed by another once the
// lease passed; a reservation beside a finished file's document only goes
// itself.
func TestGridFSAbandonedUpload(t *testing.T) {
	t.Parallel()
	sim := mongosim.Start(t)
	db := sim.Client().Database("airlay")
	ctx := context.Background()
	past := time.Now().Add(-time.Second)
	ins := func(coll string, doc bson.D) {
		if _, err := db.Collection(DefaultBucket+"."+coll).InsertOne(ctx, doc); err != nil {
			t.Fatal(err)
		}
	}
	// The dead upload.
	ins("uploads", bson.D{{Key: "_id", Value: "dead"}, {Key: "bytes", Value: 2000}, {Key: "until", Value: past}, {Key: "instance", Value: "gone"}})
	ins("chunks", bson.D{{Key: "files_id", Value: "dead"}, {Key: "n", Value: 0}, {Key: "data", Value: []byte("x")}})
	// One that finished, whose reservation was not removed.
	ins("uploads", bson.D{{Key: "_id", Value: "done"}, {Key: "bytes", Value: 1}, {Key: "until", Value: past}})
	ins("chunks", bson.D{{Key: "files_id", Value: "done"}, {Key: "n", Value: 0}, {Key: "data", Value: []byte("y")}})
	ins("files", bson.D{{Key: "_id", Value: "done"}, {Key: "length", Value: 1}, {Key: "chunkSize", Value: 1000}, {Key: "filename", Value: "y"},
		{Key: "uploadDate", Value: time.Now()}, {Key: "metadata", Value: bson.D{{Key: "expires", Value: time.Now().Add(time.Hour)}}}})
	// One in progress on a live instance (lease ahead).
	ins("uploads", bson.D{{Key: "_id", Value: "live"}, {Key: "bytes", Value: 1}, {Key: "until", Value: time.Now().Add(time.Hour)}})
	ins("chunks", bson.D{{Key: "files_id", Value: "live"}, {Key: "n", Value: 0}, {Key: "data", Value: []byte("z")}})

	openGrid(t, sim.URI, "airlay", gridLimits(), GridFSOptions{Sweep: 20 * time.Millisecond})
	waitUntil(t, "the abandoned upload to go", 5*time.Second, func() bool {
		n, _ := db.Collection(DefaultBucket+".chunks").CountDocuments(ctx, bson.D{{Key: "files_id", Value: "dead"}})
		return count(t, db, DefaultBucket+".uploads") == 1 && n == 0
	})
	for _, id := range []string{"done", "live"} {
		if n, _ := db.Collection(DefaultBucket+".chunks").CountDocuments(ctx, bson.D{{Key: "files_id", Value: id}}); n != 1 {
			t.Errorf("the chunk of %q: %d, want it kept", id, n)
		}
	}
	if n, _ := db.Collection(DefaultBucket+".uploads").CountDocuments(ctx, bson.D{{Key: "_id", Value: "live"}}); n != 1 {
		t.Errorf("the live upload's reservation is gone")
	}
}

// An upload cut off, or failing at the store's Close, leaves nothing.
func TestGridFSFailedUploads(t *testing.T) {
	t.Parallel()
	sim := mongosim.Start(t)
	db := sim.Client().Database("airlay")
	st := openGrid(t, sim.URI, "airlay", gridLimits(), GridFSOptions{ChunkSize: 1000})
	ctx := context.Background()
	// Shorter than announced.
	if _, err := st.Put(ctx, "short", bytes.NewReader(make([]byte, 5000)), 6000); !errors.Is(err, ErrCut) {
		t.Errorf("short body: %v, want ErrCut", err)
	}
	// The body fails midway.
	if _, err := st.Put(ctx, "broken", io.MultiReader(bytes.NewReader(make([]byte, 5000)), errReader{}), -1); !errors.Is(err, ErrCut) {
		t.Errorf("broken body: %v, want ErrCut", err)
	}
	for _, c := range []string{"files", "chunks", "uploads"} {
		if n := count(t, db, DefaultBucket+"."+c); n != 0 {
			t.Errorf("%d documents in %s after failed uploads", n, c)
		}
	}
	// Close while an upload waits for its body: ErrClosed, nothing left.
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		_, err := st.Put(ctx, "slow", pr, -1)
		errc <- err
	}()
	pw.Write(make([]byte, 5000))
	go func() { time.Sleep(100 * time.Millisecond); pw.CloseWithError(errors.New("the client went away")) }()
	st.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) && !errors.Is(err, ErrCut) {
		t.Errorf("upload during Close: %v", err)
	}
	for _, c := range []string{"files", "chunks", "uploads"} {
		if n := count(t, db, DefaultBucket+"."+c); n != 0 {
			t.Errorf("%d documents in %s after Close", n, c)
		}
	}
	if _, err := st.Put(ctx, "late", bytes.NewReader(nil), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close: %v", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// MongoDB unreachable: Put and Open fail with ErrUnavailable within the
// timeout (the server answers 503 code 7), never ErrNotFound.
func TestGridFSUnavailable(t *testing.T) {
	t.Parallel()
	client, err := mongo.Connect(context.Background(), options.Client().ApplyURI("mongodb://127.0.0.1:1/?directConnection=true").SetServerSelectionTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	st, err := OpenGridFS(client.Database("airlay"), gridLimits(), GridFSOptions{Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	start := time.Now()
	if _, err := st.Put(context.Background(), "a", bytes.NewReader([]byte("a")), 1); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Put: %v, want ErrUnavailable", err)
	}
	if _, err := st.Open(context.Background(), NewKey(), "a"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Open: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}
}

// MongoDB operations per upload and per download, counted by mongosim
// (its /stats); BENCHMARKS.md has them:
//
//	go test -run TestGridFSOperations -v ./files/
func TestGridFSOperations(t *testing.T) {
	sim := mongosim.Start(t)
	st := openGrid(t, sim.URI, "airlay", gridLimits(), GridFSOptions{Sweep: time.Hour})
	db := sim.Client().Database("airlay")
	waitUntil(t, "the indexes", 5*time.Second, func() bool { return hasIndex(t, db, DefaultBucket+".uploads", "until") })
	ctx := context.Background()
	for _, size := range []int{100 << 10, 10 << 20} {
		data := randomData(size, 3)
		before := sim.Stats()
		p, err := st.Put(ctx, "f.bin", bytes.NewReader(data), int64(size))
		if err != nil {
			t.Fatal(err)
		}
		up := sim.Stats().Sub(before)
		chunks := (size + DefaultChunkSize - 1) / DefaultChunkSize
		inserts := 1 + (chunks+chunksPerWrite-1)/chunksPerWrite + 1 // reservation, chunk batches, document
		if got := up.Commands["insert"]; got != int64(inserts) || up.Commands["aggregate"] != 2 || up.Commands["delete"] != 1 {
			t.Errorf("upload of %d bytes: %v, want %d inserts, 2 aggregates, 1 delete", size, up.Commands, inserts)
		}
		before = sim.Stats()
		got, err := read(t, st, p.Key, "f.bin", 0, -1)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatal(err)
		}
		down := sim.Stats().Sub(before)
		batches := (chunks + chunksPerWrite - 1) / chunksPerWrite
		// find of the document, find of the chunks (first batch), a getMore
		// per further batch, the cursor's kill when it is not exhausted.
		total := down.Commands["find"] + down.Commands["getMore"] + down.Commands["getmore"]
		if down.Commands["find"] != 2 || total < int64(1+batches) || total > int64(2+batches) {
			t.Errorf("download of %d bytes: %v, want 2 finds and about %d batches", size, down.Commands, batches)
		}
		// A Range at the end reads from the chunk holding it on.
		before = sim.Stats()
		if _, err := read(t, st, p.Key, "f.bin", int64(size-10), -1); err != nil {
			t.Fatal(err)
		}
		rng := sim.Stats().Sub(before)
		if rng.Commands["find"] != 2 || rng.Commands["getMore"]+rng.Commands["getmore"] != 0 {
			t.Errorf("range at the end of %d bytes: %v, want 2 finds, no getMore", size, rng.Commands)
		}
		t.Logf("%d bytes (%d chunks): upload %v; download %v; last 10 bytes %v", size, chunks, up.Commands, down.Commands, rng.Commands)
	}
}
