package mongodb

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlay/airlay/events"
	"github.com/airlay/airlay/internal/testkit"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// Objects of the tests.
var (
	userA    = oid("5dad615eae019570fb4647ed")
	userB    = oid("5dad615eae019570fb4647ee")
	issue1   = oid("610217e481f6fc54736209e0")
	issue2   = oid("610217e481f6fc54736209e1")
	dataset1 = oid("620217e481f6fc54736209e0")
	dataset2 = oid("620217e481f6fc54736209e1")
	upload1  = oid("640217e481f6fc54736209e0")
	export1  = oid("630217e481f6fc54736209e0")
	notif1   = oid("6a0000000000000000000001")
)

func oid(h string) primitive.ObjectID {
	id, err := primitive.ObjectIDFromHex(h)
	if err != nil {
		panic(err)
	}
	return id
}

// defaultMappings are the documented defaults (DefaultSources, config.ini).
func defaultMappings() []Mapping {
	all := []string{OpInsert, OpUpdate, OpReplace, OpDelete}
	return []Mapping{
		{Type: events.IssueUpdate, Collection: "issues", Operations: all, IDField: "_id", Data: DataChanged},
		{Type: events.Notification, Collection: "notifications", Operations: []string{OpInsert}, IDField: "_id", UserField: "user", Data: DataDocument},
		{Type: events.DatasetUpdate, Collection: "datasets", Operations: all, IDField: "_id", Data: DataChanged},
		{Type: events.UploadFile, Collection: "uploads", Operations: []string{OpInsert, OpUpdate, OpReplace}, IDField: "dataset", FinishedField: "status", FinishedValue: "finished", Data: DataFields, DataFields: []string{"_id", "name"}},
		{Type: events.DownloadFile, Collection: "exports", Operations: []string{OpInsert, OpUpdate, OpReplace}, IDField: "_id", FinishedField: "status", FinishedValue: "finished", Data: DataFields, DataFields: []string{"url", "name"}},
	}
}

// testConfig is the default configuration with fast timings.
func testConfig() Config {
	return Config{
		Database: "airlay", Instance: "test-1", Sources: defaultMappings(),
		Users: "users", Datasets: "datasets", DatasetAccess: []string{"owner", "members"},
		CacheTTL: 5 * time.Second, CacheSize: 1000, QueryTimeout: 2 * time.Second,
		Events: "airlay_events", EventsTTL: time.Hour, Resume: "airlay_resume_tokens",
		MaxAwait: 20 * time.Millisecond, RetryMin: 5 * time.Millisecond, RetryMax: 40 * time.Millisecond,
		SaveInterval: time.Nanosecond,
	}
}

// env is a Mongo on a fakeMongo, its source running into a hub.
type env struct {
	t    *testing.T
	f    *fakeMongo
	mg   *Mongo
	hub  *events.Hub
	logs *testkit.Buffer
	stop func() // cancels Run and waits for it
}

func connect(t *testing.T, f *fakeMongo, cfg Config) (*Mongo, *testkit.Buffer) {
	t.Helper()
	return connectWith(t, f.clientOptions(), cfg)
}

func connectWith(t *testing.T, co *options.ClientOptions, cfg Config) (*Mongo, *testkit.Buffer) {
	t.Helper()
	logs := &testkit.Buffer{}
	mg, err := Connect(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), co)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = mg.Close(context.Background())
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	return mg, logs
}

// startSource connects to f and runs the source until the test ends.
// Recorders given are subscribed before the source starts, so that they
// miss nothing it delivers at once (changes made while no source ran).
func startSource(t *testing.T, f *fakeMongo, cfg Config, recs ...*recorder) *env {
	t.Helper()
	mg, logs := connect(t, f, cfg)
	e := &env{t: t, f: f, mg: mg, hub: events.NewHub(), logs: logs}
	for _, r := range recs {
		r.subscribe(e.hub)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mg.Broker.Run(ctx, e.hub) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Error("Source.Run did not return after cancel")
			}
		})
	}
	t.Cleanup(e.stop)
	return e
}

// waitReady waits until the stream is open.
func (e *env) waitReady() {
	e.t.Helper()
	waitFor(e.t, "the change stream to open", func() bool { return e.mg.Ready() == nil })
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// recorder is a subscriber that keeps every frame it gets, with its key.
type recorder struct {
	mu     sync.Mutex
	frames []string // without their positions (see stripPos)
	pos    []string // the position of each frame
	wake   chan struct{}
}

func newRecorder() *recorder { return &recorder{wake: make(chan struct{}, 1)} }

func (r *recorder) Send(d *events.Delivery) {
	r.mu.Lock()
	f, p := splitPos(string(d.Frame))
	r.frames = append(r.frames, f)
	r.pos = append(r.pos, p)
	r.mu.Unlock()
	if d.Tracker != nil {
		d.Tracker.Delivered()
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.frames...)
}

// subscribe subscribes r to every key of the test objects.
func (r *recorder) subscribe(h *events.Hub) {
	ids := []primitive.ObjectID{userA, userB, issue1, issue2, dataset1, dataset2, upload1, export1, notif1}
	for _, t := range events.Types {
		for _, id := range ids {
			h.Subscribe(events.Key{Type: t, ID: id.Hex()}, r)
		}
	}
}

// waitFrames waits until r holds n frames and returns them.
func (r *recorder) waitFrames(t testing.TB, n int) []string {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		if got := r.got(); len(got) >= n {
			return got
		}
		select {
		case <-r.wake:
		case <-deadline:
			t.Fatalf("timed out waiting for %d frames; got %d:\n%s", n, len(r.got()), strings.Join(r.got(), "\n"))
		}
	}
}

// Change event builders (what MongoDB sends; the fake adds _id and times).

func ns(coll string) bson.E {
	return bson.E{Key: "ns", Value: bson.D{{Key: "db", Value: "airlay"}, {Key: "coll", Value: coll}}}
}

func key(id any) bson.E { return bson.E{Key: "documentKey", Value: bson.D{{Key: "_id", Value: id}}} }

func chInsert(coll string, doc bson.D) bson.D {
	return bson.D{{Key: "operationType", Value: "insert"}, ns(coll), key(doc[0].Value), {Key: "fullDocument", Value: doc}}
}

func chReplace(coll string, doc bson.D) bson.D {
	return bson.D{{Key: "operationType", Value: "replace"}, ns(coll), key(doc[0].Value), {Key: "fullDocument", Value: doc}}
}

// chUpdate: set fields, removed fields, and the document after the update
// (sent only to a stream that asked for updateLookup).
func chUpdate(coll string, id any, set bson.D, removed []string, after bson.D) bson.D {
	if removed == nil {
		removed = []string{}
	}
	d := bson.D{{Key: "operationType", Value: "update"}, ns(coll), key(id),
		{Key: "updateDescription", Value: bson.D{{Key: "updatedFields", Value: set}, {Key: "removedFields", Value: removed}, {Key: "truncatedArrays", Value: bson.A{}}}}}
	if after != nil {
		d = append(d, bson.E{Key: "fullDocument", Value: after})
	}
	return d
}

func chDelete(coll string, id any) bson.D {
	return bson.D{{Key: "operationType", Value: "delete"}, ns(coll), key(id)}
}

func frame(typ string, id any, data string) string {
	var s string
	switch v := id.(type) {
	case primitive.ObjectID:
		s = v.Hex()
	case string:
		s = v
	}
	return `{"type":"` + typ + `","id":"` + s + `","data":` + data + `}`
}

// splitPos cuts the position off an event frame, which tests compare
// apart: the frame as it would be without "pos", and the position ("" for
// a frame without one, such as an answer).
func splitPos(frame string) (rest, pos string) {
	i := strings.LastIndex(frame, `,"pos":"`)
	if i < 0 || !strings.HasSuffix(frame, `"}`) {
		return frame, ""
	}
	return frame[:i] + "}", frame[i+len(`,"pos":"`) : len(frame)-2]
}

// stripPos is splitPos without the position.
func stripPos(frame string) string {
	rest, _ := splitPos(frame)
	return rest
}
