package mongodb

// The findings of issue 16 about the change stream, each as a scenario
// against a server that behaves like MongoDB (see live_test.go).

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlay/airlay/events"
	"github.com/prometheus/client_golang/prometheus"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo/options"
)

var (
	upload2 = oid("640217e481f6fc54736209e1")
	upload3 = oid("640217e481f6fc54736209e2")
	upload4 = oid("640217e481f6fc54736209e3")
	export2 = oid("630217e481f6fc54736209e1")
)

func uploadFrame(dataset, upload primitive.ObjectID, name string) string {
	return frame("uploadFile", dataset, `[{"_id":"`+upload.Hex()+`","name":"`+name+`"}]`)
}

// --- 1: an event over 16 MB ---

// TestStreamSplitLargeEvent: an update whose change event is over 16 MB
// comes split in fragments ($changeStreamSplitLargeEvent); the source
// reassembles it into its event, and the stream goes on.
func TestStreamSplitLargeEvent(t *testing.T) {
	l := simLive(t)
	issues := l.coll("issues")
	ctx := context.Background()
	_, err := issues.InsertOne(ctx, bson.D{{Key: "_id", Value: issue1}, {Key: "status", Value: "open"}})
	l.must(err)
	rec := newRecorder()
	s := l.start(l.config("split"), rec)
	// The next update's event is 9 + 8 MB: over 16 MB, each field under it.
	l.sim.fault(map[string]any{"kind": "oversize", "ns": "airlay.issues", "op": "update", "sizes": map[string]int{"updateDescription": 9 << 20, "documentKey": 8 << 20}})
	_, err = issues.UpdateByID(ctx, issue1, bson.D{{Key: "$set", Value: bson.D{{Key: "status", Value: "done"}}}})
	l.must(err)
	_, err = issues.UpdateByID(ctx, issue1, bson.D{{Key: "$set", Value: bson.D{{Key: "title", Value: "t"}}}})
	l.must(err)
	got := rec.waitFrames(t, 2)
	if want := []string{frame("issueUpdate", issue1, `["status"]`), frame("issueUpdate", issue1, `["title"]`)}; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("frames\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if st := l.sim.stats(); st.SplitEvents < 1 {
		t.Errorf("mongosim split %d events, want the large one split", st.SplitEvents)
	}
	if v := s.metric("airlay_mongodb_stream_reopens_total"); v != 0 {
		t.Errorf("%v reopens, want 0", v)
	}
}

// TestStreamLargeEventSkipped: an event that cannot be read even split
// (one field over 16 MB) fails at its position at every read; after a few
// tries it is skipped, logged and counted, and the changes after it are
// delivered.
func TestStreamLargeEventSkipped(t *testing.T) {
	l := simLive(t)
	largeEventSkipped(t, l, func() {
		l.sim.fault(map[string]any{"kind": "oversize", "ns": "airlay.issues", "op": "update", "sizes": map[string]int{"updateDescription": 17 << 20}})
		_, err := l.coll("issues").UpdateByID(context.Background(), issue2, bson.D{{Key: "$set", Value: bson.D{{Key: "big", Value: 1}}}})
		l.must(err)
	}, "issues")
	if st := l.sim.stats(); st.TooLarge != 0 {
		t.Errorf("%d too-large errors; with the split stage the failure is the split's", st.TooLarge)
	}
}

// TestStreamLargeEventNoSplit: a server without $changeStreamSplitLargeEvent
// (before 6.0.9: the stage is unknown, 40324): the source opens without it,
// and an event over 16 MB (10334 BSONObjectTooLarge at every read) is
// skipped after a few tries.
func TestStreamLargeEventNoSplit(t *testing.T) {
	l := simLive(t)
	l.sim.fault(map[string]any{"kind": "error", "commands": []string{"aggregate"}, "change_stream": true, "times": 1, "code": 40324, "message": "Unrecognized pipeline stage name: '$changeStreamSplitLargeEvent'"})
	s := largeEventSkipped(t, l, func() {
		l.sim.fault(map[string]any{"kind": "oversize", "ns": "airlay.issues", "op": "update", "sizes": map[string]int{"updateDescription": 9 << 20, "documentKey": 8 << 20}})
		_, err := l.coll("issues").UpdateByID(context.Background(), issue2, bson.D{{Key: "$set", Value: bson.D{{Key: "big", Value: 1}}}})
		l.must(err)
	}, "issues")
	if st := l.sim.stats(); st.TooLarge < 3 {
		t.Errorf("%d reads failed with 10334, want 3 (the tries) or more", st.TooLarge)
	}
	if !strings.Contains(s.logs.String(), "cannot split large events") {
		t.Error("the log does not say the server cannot split events")
	}
}

// TestIntegrationLargeEvent: a genuinely large change event (an insert of
// a 16 MB notification with a long _id: the event holds the document, the
// key and a token made of the key) is skipped, and later changes come.
func TestIntegrationLargeEvent(t *testing.T) {
	l := realLive(t)
	largeEventSkipped(t, l, func() {
		id := strings.Repeat("n", 20000)
		doc := bson.D{{Key: "_id", Value: id}, {Key: "user", Value: userA}, {Key: "text", Value: strings.Repeat("x", 16<<20-len(id)-2000)}}
		_, err := l.coll("notifications").InsertOne(context.Background(), doc)
		l.must(err)
	}, "notifications")
}

// largeEventSkipped: write makes a change whose event cannot be read; the
// changes around it must come, it must be counted and logged.
func largeEventSkipped(t *testing.T, l *live, write func(), coll string) *liveSource {
	ctx := context.Background()
	issues := l.coll("issues")
	_, err := issues.InsertOne(ctx, bson.D{{Key: "_id", Value: issue1}})
	l.must(err)
	_, err = issues.InsertOne(ctx, bson.D{{Key: "_id", Value: issue2}})
	l.must(err)
	rec := newRecorder()
	cfg := l.config("large")
	cfg.RetryMin, cfg.RetryMax = 20*time.Millisecond, 200*time.Millisecond
	s := l.start(cfg, rec)
	_, err = issues.UpdateByID(ctx, issue1, bson.D{{Key: "$set", Value: bson.D{{Key: "a", Value: 1}}}})
	l.must(err)
	rec.waitFrames(t, 1)
	// c comes right before the large event: a batch can hold both.
	_, err = issues.UpdateByID(ctx, issue1, bson.D{{Key: "$set", Value: bson.D{{Key: "c", Value: 1}}}})
	l.must(err)
	write()
	_, err = issues.UpdateByID(ctx, issue1, bson.D{{Key: "$set", Value: bson.D{{Key: "b", Value: 1}}}})
	l.must(err)
	deadline := time.Now().Add(15 * time.Second)
	for len(rec.got()) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	want := []string{frame("issueUpdate", issue1, `["a"]`), frame("issueUpdate", issue1, `["c"]`), frame("issueUpdate", issue1, `["b"]`)}
	if got := rec.got(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the stream stalled behind the large event: frames\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if v := s.metric("airlay_mongodb_changes_without_event_total", "collection", coll, "reason", "too_large"); v != 1 {
		t.Errorf("skipped large events counted %v, want 1", v)
	}
	if !strings.Contains(s.logs.String(), "skipped a change event that cannot be read") {
		t.Error("the log does not name the skipped event")
	}
	if v := s.metric("airlay_mongodb_stream_reopens_total"); v < 3 || v > 8 {
		t.Errorf("%v reopens, want about 3 tries and the reopen after the skip", v)
	}
	waitFor(t, "ready again", func() bool { return s.mg.Ready() == nil })
	return s
}

// TestStreamBackoffGrows: every read fails right after a successful open
// (a getMore error the driver does not resume): the waits between reopens
// keep growing; an open that succeeds does not reset them.
func TestStreamBackoffGrows(t *testing.T) {
	l := simLive(t)
	cfg := l.config("backoff")
	cfg.RetryMin, cfg.RetryMax = 5*time.Millisecond, 200*time.Millisecond
	s := l.start(cfg)
	start := s.cmds.count("aggregate", "")
	l.sim.fault(map[string]any{"kind": "error", "commands": []string{"getMore"}, "change_stream": true, "code": 8000, "message": "injected"})
	time.Sleep(1200 * time.Millisecond)
	opens := s.cmds.count("aggregate", "") - start
	l.sim.clearFaults()
	// 5, 10, 20, 40, 80, 160, 200, 200 ... ms: about 10 opens in 1.2 s;
	// with the wait reset by every open, one every 5 ms (over 100).
	if opens < 4 || opens > 16 {
		t.Errorf("%d opens in 1.2s with waits from 5ms doubling to 200ms, want about 10", opens)
	}
	waitFor(t, "ready again", func() bool { return s.mg.Ready() == nil })
}

// --- 3: a finished field with a dot ---

func dottedConfig(l *live) Config {
	cfg := l.config("dotted")
	for i := range cfg.Sources {
		if cfg.Sources[i].Type == events.UploadFile {
			cfg.Sources[i].FinishedField = "job.status"
		}
	}
	return cfg
}

// dottedFinished: finished=job.status:finished fires for each shape in
// which MongoDB reports the update: the key "job.status" ($set of the path
// when job exists), job: {status: ...} ($set of the path when job does
// not exist, or of the whole subdocument), and an insert with it; not for
// another value, nor for setting it again (MongoDB reports no change).
func dottedFinished(t *testing.T, l *live) {
	ctx := context.Background()
	uploads := l.coll("uploads")
	docs := []any{
		bson.D{{Key: "_id", Value: upload1}, {Key: "dataset", Value: dataset1}, {Key: "name", Value: "a.csv"}, {Key: "job", Value: bson.D{{Key: "status", Value: "running"}}}},
		bson.D{{Key: "_id", Value: upload2}, {Key: "dataset", Value: dataset2}, {Key: "name", Value: "b.csv"}},
		bson.D{{Key: "_id", Value: upload3}, {Key: "dataset", Value: dataset1}, {Key: "name", Value: "c.csv"}, {Key: "job", Value: bson.D{{Key: "status", Value: "running"}}}},
	}
	_, err := uploads.InsertMany(ctx, docs)
	l.must(err)
	rec := newRecorder()
	l.start(dottedConfig(l), rec)
	set := func(id primitive.ObjectID, d bson.D) {
		t.Helper()
		_, err := uploads.UpdateByID(ctx, id, bson.D{{Key: "$set", Value: d}})
		l.must(err)
	}
	set(upload1, bson.D{{Key: "job.status", Value: "failed"}})                                                          // another value: none
	set(upload1, bson.D{{Key: "job.status", Value: "finished"}})                                                        // updatedFields {"job.status": ...}
	set(upload1, bson.D{{Key: "job.status", Value: "finished"}})                                                        // unchanged: no change event at all
	set(upload2, bson.D{{Key: "job.status", Value: "finished"}})                                                        // job did not exist: {job: {status}}
	set(upload3, bson.D{{Key: "job", Value: bson.D{{Key: "status", Value: "finished"}, {Key: "at", Value: int32(1)}}}}) // the whole subdocument
	_, err = uploads.InsertOne(ctx, bson.D{{Key: "_id", Value: upload4}, {Key: "dataset", Value: dataset2}, {Key: "name", Value: "d.csv"}, {Key: "job", Value: bson.D{{Key: "status", Value: "finished"}}}})
	l.must(err)
	want := []string{uploadFrame(dataset1, upload1, "a.csv"), uploadFrame(dataset2, upload2, "b.csv"), uploadFrame(dataset1, upload3, "c.csv"), uploadFrame(dataset2, upload4, "d.csv")}
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.got()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if got := rec.got(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("frames\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestStreamDottedFinished(t *testing.T)      { dottedFinished(t, simLive(t)) }
func TestIntegrationDottedFinished(t *testing.T) { dottedFinished(t, realLive(t)) }

// --- 5: resume-token saves ---

// tokenWrites counts the oplog entries of the resume-token collection.
func tokenWrites(t *testing.T, l *live) int {
	t.Helper()
	ctx := context.Background()
	cur, err := l.client.Database("local").Collection("oplog.rs").Find(ctx, bson.D{{Key: "ns", Value: l.db + ".airlay_resume_tokens"}})
	if err != nil {
		t.Fatal(err)
	}
	var docs []bson.Raw
	if err := cur.All(ctx, &docs); err != nil {
		t.Fatal(err)
	}
	return len(docs)
}

// tokenSaves: two instances on one database, idle: no token is written;
// one change: each saves once, and then nothing more. An instance
// restarted continues after its saved token.
func tokenSaves(t *testing.T, l *live) {
	ctx := context.Background()
	_ = l.client.Database(l.db).CreateCollection(ctx, "airlay_resume_tokens")
	base := tokenWrites(t, l)
	recA, recB := newRecorder(), newRecorder()
	a := l.start(l.config("inst-a"), recA)
	l.start(l.config("inst-b"), recB)
	time.Sleep(time.Second)
	if n := tokenWrites(t, l) - base; n != 0 {
		t.Fatalf("%d token writes in 1s with nothing to deliver, want 0", n)
	}
	_, err := l.coll("issues").InsertOne(ctx, bson.D{{Key: "_id", Value: issue1}})
	l.must(err)
	recA.waitFrames(t, 1)
	recB.waitFrames(t, 1)
	waitFor(t, "both tokens saved", func() bool { return tokenWrites(t, l)-base >= 2 })
	time.Sleep(time.Second)
	if n := tokenWrites(t, l) - base; n != 2 {
		t.Fatalf("%d token writes for one change and 1s idle, want 2 (one per instance)", n)
	}
	// A restart resumes after the token A saved.
	a.stop()
	_, err = l.coll("issues").UpdateByID(ctx, issue1, bson.D{{Key: "$set", Value: bson.D{{Key: "x", Value: 1}}}})
	l.must(err)
	recA2 := newRecorder()
	l.start(l.config("inst-a"), recA2)
	if got := recA2.waitFrames(t, 1); got[0] != frame("issueUpdate", issue1, `["x"]`) {
		t.Fatalf("after restart: %s", got[0])
	}
}

func TestStreamTokenSaves(t *testing.T)      { tokenSaves(t, simLive(t)) }
func TestIntegrationTokenSaves(t *testing.T) { tokenSaves(t, realLive(t)) }

// TestStreamTokenRefresh: with nothing to deliver, an instance still saves
// its position every TokenRefresh (so that a restart finds its token in
// the oplog), and two instances doing so do not feed each other.
func TestStreamTokenRefresh(t *testing.T) {
	l := simLive(t)
	cfgA, cfgB := l.config("ref-a"), l.config("ref-b")
	cfgA.TokenRefresh, cfgB.TokenRefresh = 300*time.Millisecond, 300*time.Millisecond
	_, err := l.coll("other").InsertOne(context.Background(), bson.D{{Key: "x", Value: 1}}) // moves the position
	l.must(err)
	l.start(cfgA)
	l.start(cfgB)
	_, err = l.coll("other").InsertOne(context.Background(), bson.D{{Key: "x", Value: 2}})
	l.must(err)
	time.Sleep(1500 * time.Millisecond)
	n := l.sim.stats().writes("airlay.airlay_resume_tokens", "u")
	if n < 2 || n > 12 {
		t.Errorf("%d token writes in 1.5s by two instances refreshing every 300ms, want 2..12", n)
	}
}

// --- 6: lookups ---

// lookups: only updates that make an event of a mapping that reads the
// document cost a lookup (not issues or datasets, not unfinished
// uploads); a document deleted before its lookup is counted and logged.
func lookups(t *testing.T, l *live) {
	ctx := context.Background()
	_, err := l.coll("issues").InsertOne(ctx, bson.D{{Key: "_id", Value: issue1}})
	l.must(err)
	_, err = l.coll("datasets").InsertOne(ctx, bson.D{{Key: "_id", Value: dataset1}, {Key: "owner", Value: userA}})
	l.must(err)
	_, err = l.coll("uploads").InsertOne(ctx, bson.D{{Key: "_id", Value: upload1}, {Key: "dataset", Value: dataset1}, {Key: "name", Value: "a.csv"}, {Key: "status", Value: "running"}})
	l.must(err)
	_, err = l.coll("exports").InsertOne(ctx, bson.D{{Key: "_id", Value: export2}, {Key: "status", Value: "running"}})
	l.must(err)
	rec := newRecorder()
	cfg := l.config("lookups")
	s := l.start(cfg, rec)
	n := 0
	for i := 0; i < 10; i++ {
		_, err = l.coll("issues").UpdateByID(ctx, issue1, bson.D{{Key: "$set", Value: bson.D{{Key: "n", Value: i}}}})
		l.must(err)
		_, err = l.coll("datasets").UpdateByID(ctx, dataset1, bson.D{{Key: "$set", Value: bson.D{{Key: "n", Value: i}}}})
		l.must(err)
		_, err = l.coll("uploads").UpdateByID(ctx, upload1, bson.D{{Key: "$set", Value: bson.D{{Key: "progress", Value: i}}}})
		l.must(err)
		n += 2
	}
	_, err = l.coll("uploads").UpdateByID(ctx, upload1, bson.D{{Key: "$set", Value: bson.D{{Key: "status", Value: "finished"}}}})
	l.must(err)
	got := rec.waitFrames(t, n+1)
	if last := got[len(got)-1]; last != uploadFrame(dataset1, upload1, "a.csv") {
		t.Fatalf("last frame %s, want the finished upload", last)
	}
	for _, cs := range s.cmds.changeStreams() {
		if _, err := cs.LookupErr("fullDocument"); err == nil {
			t.Errorf("a change stream with fullDocument: %s", cs)
		}
	}
	if f := s.cmds.count("find", "issues") + s.cmds.count("find", "datasets"); f != 0 {
		t.Errorf("%d finds on issues and datasets, want none", f)
	}
	if f := s.cmds.count("find", "uploads"); f != 1 {
		t.Errorf("%d finds on uploads, want 1 (the finished update)", f)
	}
	if v := s.metric("airlay_mongodb_document_lookups_total", "collection", "uploads"); v != 1 {
		t.Errorf("lookups of uploads counted %v, want 1", v)
	}
	if l.sim != nil {
		st := l.sim.stats()
		if len(st.Lookups) != 0 {
			t.Errorf("mongosim made updateLookup fetches %v, want none", st.Lookups)
		}
	}

	// The export finishes and is deleted while the instance is stopped:
	// the update's lookup finds nothing.
	s.stop()
	_, err = l.coll("exports").UpdateByID(ctx, export2, bson.D{{Key: "$set", Value: bson.D{{Key: "status", Value: "finished"}}}})
	l.must(err)
	_, err = l.coll("exports").DeleteOne(ctx, bson.D{{Key: "_id", Value: export2}})
	l.must(err)
	s2 := l.start(cfg)
	waitFor(t, "the lost export counted", func() bool {
		return s2.metric("airlay_mongodb_changes_without_event_total", "collection", "exports", "reason", "document_gone") == 1
	})
	if !strings.Contains(s2.logs.String(), "deleted before its lookup") {
		t.Error("the log does not say the export's document was gone")
	}
	for _, cs := range s2.cmds.changeStreams() {
		if _, err := cs.LookupErr("fullDocument"); err == nil {
			t.Errorf("a change stream with fullDocument: %s", cs)
		}
	}
}

func TestStreamLookups(t *testing.T)      { lookups(t, simLive(t)) }
func TestIntegrationLookups(t *testing.T) { lookups(t, realLive(t)) }

// --- metrics ---

// TestStreamLagAndNoEvent: the stream lag is small while the stream keeps
// up and grows while MongoDB is away; changes that make no event are
// counted by reason.
func TestStreamLagAndNoEvent(t *testing.T) {
	l := simLive(t)
	ctx := context.Background()
	rec := newRecorder()
	s := l.start(l.config("lag"), rec)
	_, err := l.coll("issues").InsertOne(ctx, bson.D{{Key: "_id", Value: "not-an-object-id"}})
	l.must(err)
	_, err = l.coll("uploads").InsertOne(ctx, bson.D{{Key: "_id", Value: upload1}, {Key: "status", Value: "finished"}}) // no dataset
	l.must(err)
	_, err = l.coll("airlay_events").InsertOne(ctx, bson.D{{Key: "x", Value: 1}})
	l.must(err)
	_, err = l.coll("issues").InsertOne(ctx, bson.D{{Key: "_id", Value: issue1}})
	l.must(err)
	rec.waitFrames(t, 1)
	for _, c := range [][2]string{{"issues", "bad_id"}, {"uploads", "bad_id"}, {"airlay_events", "not_a_publish"}} {
		if v := s.metric("airlay_mongodb_changes_without_event_total", "collection", c[0], "reason", c[1]); v != 1 {
			t.Errorf("changes without event of %s for %s: %v, want 1", c[0], c[1], v)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if v := s.metric("airlay_mongodb_stream_lag_seconds"); v > 0.5 {
		t.Errorf("lag %vs while caught up", v)
	}
	l.sim.fault(map[string]any{"kind": "drop", "duration_ms": 2500})
	time.Sleep(1500 * time.Millisecond)
	if v := s.metric("airlay_mongodb_stream_lag_seconds"); v < 1 {
		t.Errorf("lag %vs after 1.5s without MongoDB, want over 1s", v)
	}
	waitFor(t, "ready again", func() bool { return s.mg.Ready() == nil })
	_, err = l.coll("issues").UpdateByID(ctx, issue1, bson.D{{Key: "$set", Value: bson.D{{Key: "a", Value: 1}}}})
	l.must(err)
	rec.waitFrames(t, 2)
	time.Sleep(300 * time.Millisecond)
	if v := s.metric("airlay_mongodb_stream_lag_seconds"); v > 0.5 {
		t.Errorf("lag %vs after recovery", v)
	}
	if v := s.metric("airlay_mongodb_stream_reopens_total"); v < 1 {
		t.Errorf("reopens %v after an outage", v)
	}
}

// BenchmarkStreamCPU: the CPU this process (the driver and the source)
// spends per change event read from a mongosim stream: batches of 1000
// inserts into issues, made by the simulator itself (its control
// endpoint), each an issueUpdate event handed to the hub. Reported as
// cpu-ns/change (user+system time of this process, the simulator is
// another process).
func BenchmarkStreamCPU(b *testing.B) {
	p := startSim(b)
	cfg := testConfig()
	cfg.MaxAwait, cfg.SaveInterval = 200*time.Millisecond, time.Second // the defaults: one token save a second
	mg, err := Connect(cfg, quiet(), options.Client().ApplyURI(p.uri))
	if err != nil {
		b.Fatal(err)
	}
	hub := events.NewHub()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = mg.Broker.Run(ctx, hub); close(done) }()
	defer func() { cancel(); <-done; _ = mg.Close(context.Background()) }()
	for mg.Ready() != nil {
		time.Sleep(time.Millisecond)
	}
	const batch = 1000
	var docs strings.Builder
	for i := 0; i < batch; i++ {
		if i > 0 {
			docs.WriteByte(',')
		}
		docs.WriteString(`{"status":"open","title":"an issue","n":1}`)
	}
	cmd := `{"insert":"issues","documents":[` + docs.String() + `]}`
	counter := mg.metrics.changes.WithLabelValues("issues")
	read := func() float64 {
		reg := prometheus.NewRegistry()
		reg.MustRegister(counter)
		mfs, _ := reg.Gather()
		return mfs[0].GetMetric()[0].GetCounter().GetValue()
	}
	b.ResetTimer()
	var cpu time.Duration
	for i := 0; i < b.N; i++ {
		want := read() + batch
		c0 := processCPU()
		p.exec("airlay", cmd)
		deadline := time.Now().Add(30 * time.Second)
		for read() < want {
			if time.Now().After(deadline) {
				b.Fatalf("%v of %v changes read", read(), want)
			}
			time.Sleep(time.Millisecond)
		}
		cpu += processCPU() - c0
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*batch), "cpu-ns/change")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// --- the default sources, with changes made by writes ---

// defaultSources: every default source with the changes a backend makes,
// as the server reports them; and what MongoDB does not report: setting
// status: "finished" again (item 4 of issue 16) makes no change event, so
// no event.
func defaultSources(t *testing.T, l *live) {
	ctx := context.Background()
	rec := newRecorder()
	l.start(l.config("sources"), rec)
	do := func(_ any, err error) {
		t.Helper()
		l.must(err)
	}
	set := func(coll string, id any, d bson.D) {
		t.Helper()
		do(l.coll(coll).UpdateByID(ctx, id, bson.D{{Key: "$set", Value: d}}))
	}
	do(l.coll("issues").InsertOne(ctx, bson.D{{Key: "_id", Value: issue1}, {Key: "title", Value: "t"}, {Key: "meta", Value: bson.D{{Key: "editor", Value: "a"}}}, {Key: "x", Value: 1}}))
	do(l.coll("issues").UpdateByID(ctx, issue1, bson.D{{Key: "$set", Value: bson.D{{Key: "title", Value: "u"}}}, {Key: "$unset", Value: bson.D{{Key: "x", Value: ""}}}}))
	set("issues", issue1, bson.D{{Key: "meta.editor", Value: "b"}}) // the key "meta.editor": the field meta
	set("issues", issue1, bson.D{{Key: "title", Value: "u"}})       // unchanged: no change event
	do(l.coll("issues").ReplaceOne(ctx, bson.D{{Key: "_id", Value: issue1}}, bson.D{{Key: "title", Value: "r"}}))
	do(l.coll("issues").DeleteOne(ctx, bson.D{{Key: "_id", Value: issue1}}))
	do(l.coll("datasets").InsertOne(ctx, bson.D{{Key: "_id", Value: dataset1}, {Key: "owner", Value: userA}}))
	do(l.coll("datasets").UpdateByID(ctx, dataset1, bson.D{{Key: "$push", Value: bson.D{{Key: "members", Value: userB}}}}))
	do(l.coll("uploads").InsertOne(ctx, bson.D{{Key: "_id", Value: upload1}, {Key: "dataset", Value: dataset1}, {Key: "name", Value: "a.csv"}, {Key: "status", Value: "running"}}))
	set("uploads", upload1, bson.D{{Key: "progress", Value: 50}})
	set("uploads", upload1, bson.D{{Key: "status", Value: "finished"}})
	set("uploads", upload1, bson.D{{Key: "status", Value: "finished"}}) // again: MongoDB reports no change
	do(l.coll("uploads").InsertOne(ctx, bson.D{{Key: "_id", Value: upload2}, {Key: "dataset", Value: dataset2}, {Key: "name", Value: "b.csv"}, {Key: "status", Value: "finished"}}))
	do(l.coll("exports").InsertOne(ctx, bson.D{{Key: "_id", Value: export1}, {Key: "user", Value: userA}, {Key: "status", Value: "queued"}}))
	set("exports", export1, bson.D{{Key: "status", Value: "finished"}, {Key: "url", Value: "/files/k/r.xlsx"}, {Key: "name", Value: "r.xlsx"}})
	do(l.coll("notifications").InsertOne(ctx, bson.D{{Key: "_id", Value: notif1}, {Key: "user", Value: userB}, {Key: "text", Value: "hi"}}))
	want := []string{
		frame("issueUpdate", issue1, `[]`),
		frame("issueUpdate", issue1, `["title","x"]`),
		frame("issueUpdate", issue1, `["meta"]`),
		frame("issueUpdate", issue1, `[]`),
		frame("issueUpdate", issue1, `[]`),
		frame("datasetUpdate", dataset1, `[]`),
		frame("datasetUpdate", dataset1, `["members"]`),
		uploadFrame(dataset1, upload1, "a.csv"),
		uploadFrame(dataset2, upload2, "b.csv"),
		frame("downloadFile", export1, `[{"url":"/files/k/r.xlsx","name":"r.xlsx"}]`),
		frame("notification", notif1, `[{"_id":"`+notif1.Hex()+`","user":"`+userB.Hex()+`","text":"hi"}]`),
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.got()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if got := rec.got(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("frames\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestStreamDefaultSources(t *testing.T)      { defaultSources(t, simLive(t)) }
func TestIntegrationDefaultSources(t *testing.T) { defaultSources(t, realLive(t)) }
