package mongodb

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/airlay/airlay/events"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

func testEvents() []events.Event {
	return []events.Event{
		{Type: events.IssueUpdate, ID: issue1.Hex(), Data: json.RawMessage(`["status"]`)},
		{Type: events.Notification, ID: "n\"1", User: userA.Hex(), Data: json.RawMessage(`[{"text":"hi"}]`)},
		{Type: events.DatasetUpdate, ID: dataset1.Hex()},
	}
}

// TestBrokerWrites: one document per publish, acknowledged by a majority,
// holding the events as published.
func TestBrokerWrites(t *testing.T) {
	f := newFakeMongo(t)
	mg, _ := connect(t, f, testConfig())
	if err := mg.Broker.Publish(context.Background(), testEvents(), nil); err != nil {
		t.Fatal(err)
	}
	ins := f.commands("insert")
	if len(ins) != 1 {
		t.Fatalf("%d inserts", len(ins))
	}
	cmd := ins[0].Doc
	if coll, _ := cmd.Lookup("insert").StringValueOK(); coll != "airlay_events" {
		t.Errorf("insert into %q", coll)
	}
	if w, _ := cmd.Lookup("writeConcern", "w").StringValueOK(); w != "majority" {
		t.Errorf("write concern %v, want majority", cmd.Lookup("writeConcern"))
	}
	docs := f.docs("airlay_events")
	if len(docs) != 1 {
		t.Fatalf("%d documents", len(docs))
	}
	d := docs[0]
	if _, ok := d.Lookup("_id").ObjectIDOK(); !ok {
		t.Error("_id is not an ObjectId")
	}
	if at, ok := d.Lookup("createdAt").DateTimeOK(); !ok || time.Since(time.UnixMilli(at)) > time.Minute {
		t.Errorf("createdAt %v (the TTL index reads it)", d.Lookup("createdAt"))
	}
	if inst, _ := d.Lookup("instance").StringValueOK(); inst != "test-1" {
		t.Errorf("instance %q", inst)
	}
	want := `[{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":"[\"status\"]"},` +
		`{"type":"notification","id":"n\"1","user":"5dad615eae019570fb4647ed","data":"[{\"text\":\"hi\"}]"},` +
		`{"type":"datasetUpdate","id":"620217e481f6fc54736209e0","data":"[]"}]`
	if got := extJSON(t, bson.D{{Key: "e", Value: d.Lookup("events")}}); got != `{"e":`+want+`}` {
		t.Errorf("events\n got %s\nwant %s", got, want)
	}
	// What was written reads back as the same events.
	evs, err := decodePublished(d)
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range evs {
		w := testEvents()[i]
		if ev.Type != w.Type || ev.ID != w.ID || ev.User != w.User || string(ev.Data) != string(w.Data) {
			t.Errorf("event %d reads back as %+v, want %+v", i, ev, w)
		}
	}
}

// TestBrokerErrors: a failed write is an error (the server answers 503), is
// counted, and leaves no tracker behind.
func TestBrokerErrors(t *testing.T) {
	f := newFakeMongo(t)
	cfg := testConfig()
	cfg.QueryTimeout = 300 * time.Millisecond
	mg, _ := connect(t, f, cfg)
	f.setDown(true)
	if err := mg.Broker.Publish(context.Background(), testEvents(), events.NewTracker()); err == nil {
		t.Error("no error while MongoDB is down")
	}
	f.setDown(false)
	f.fail(fakeFail{cmd: "insert", reply: serverError(13, "Unauthorized")})
	err := mg.Broker.Publish(context.Background(), testEvents(), events.NewTracker())
	if err == nil || !strings.Contains(err.Error(), "airlay_events") {
		t.Errorf("server error: %v, want an error naming the collection", err)
	}
	if n := mg.Broker.waiting(); n != 0 {
		t.Errorf("%d trackers kept after failed writes", n)
	}
	if v := testutil.ToFloat64(mg.metrics.errors.WithLabelValues("insert_event")); v != 2 {
		t.Errorf("insert errors %v, want 2", v)
	}
	if docs := f.docs("airlay_events"); len(docs) != 0 {
		t.Errorf("%d documents written", len(docs))
	}
}

// TestBrokerWriteConcernErrorApplied: MongoDB's model, not "an error means
// nothing was written": a write-concern error comes after the insert was
// applied on the primary, and the change stream delivers it. Publish
// reports the error (the server answers 503: "may or may not have been
// written"), yet the events reach the subscribers once.
func TestBrokerWriteConcernErrorApplied(t *testing.T) {
	f := newFakeMongo(t)
	rec := newRecorder()
	e := startSource(t, f, testConfig(), rec)
	e.waitReady()
	f.fail(wcError("insert"))
	err := e.mg.Broker.Publish(context.Background(), testEvents(), events.NewTracker())
	if err == nil {
		t.Fatal("no error after a write-concern error")
	}
	if docs := f.docs("airlay_events"); len(docs) != 1 {
		t.Errorf("%d documents, want 1: the insert was applied", len(docs))
	}
	if got := rec.waitFrames(t, 3); len(got) != 3 {
		t.Errorf("frames %v", got)
	}
	if n := e.mg.Broker.waiting(); n != 0 {
		t.Errorf("%d trackers kept", n)
	}
}

// TestBrokerIdempotencyKey: a publish with an Idempotency-Key that failed
// with a write-concern error after its insert was applied, retried with the
// same key on another instance, and again on the first, is delivered once
// on every instance; the retries report a duplicate. After the window the
// key publishes again. ?wait counts a keyed publish.
func TestBrokerIdempotencyKey(t *testing.T) {
	f := newFakeMongo(t)
	recA, recB := newRecorder(), newRecorder()
	cfgA, cfgB := testConfig(), testConfig()
	cfgA.Instance, cfgB.Instance = "a", "b"
	a := startSource(t, f, cfgA, recA)
	b := startSource(t, f, cfgB, recB)
	a.waitReady()
	b.waitReady()
	ctx := context.Background()

	f.fail(wcError("insert"))
	dup, err := a.mg.Broker.PublishKeyed(ctx, "order-17", testEvents(), events.NewTracker())
	if err == nil || dup {
		t.Fatalf("first try: dup %v err %v, want the write-concern error", dup, err)
	}
	for _, br := range []*Broker{b.mg.Broker, a.mg.Broker} {
		tr := events.NewTracker()
		dup, err = br.PublishKeyed(ctx, "order-17", testEvents()[:1], tr)
		if err != nil || !dup {
			t.Fatalf("retry on %s: dup %v err %v, want a duplicate", br.instance, dup, err)
		}
	}
	docs := f.docs("airlay_events")
	if len(docs) != 1 {
		t.Fatalf("%d documents, want 1", len(docs))
	}
	if id, _ := docs[0].Lookup("_id").StringValueOK(); id != "order-17" {
		t.Errorf("_id %v, want the key", docs[0].Lookup("_id"))
	}
	if _, ok := docs[0].Lookup("attempt").ObjectIDOK(); !ok {
		t.Errorf("attempt %v, want an ObjectId", docs[0].Lookup("attempt"))
	}
	// A marker after the retries: each instance got the events once.
	if err := b.mg.Broker.Publish(ctx, []events.Event{{Type: events.IssueUpdate, ID: issue2.Hex()}}, nil); err != nil {
		t.Fatal(err)
	}
	for name, rec := range map[string]*recorder{"a": recA, "b": recB} {
		got := rec.waitFrames(t, 4)
		if len(got) != 4 || got[3] != frame("issueUpdate", issue2, `[]`) {
			t.Errorf("instance %s got %d frames, want the 3 events once and the marker:\n%s", name, len(got), strings.Join(got, "\n"))
		}
	}

	// ?wait: the tracker of a keyed publish counts this instance's writes.
	tr := events.NewTracker()
	if dup, err := a.mg.Broker.PublishKeyed(ctx, "order-18", testEvents(), tr); err != nil || dup {
		t.Fatalf("order-18: dup %v err %v", dup, err)
	}
	select {
	case <-tr.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the tracker of a keyed publish never completed")
	}
	if d, p := tr.Counts(); d != 3 || p != 0 {
		t.Errorf("counts %d %d, want 3 0", d, p)
	}
	if n := a.mg.Broker.waiting() + b.mg.Broker.waiting(); n != 0 {
		t.Errorf("%d trackers kept (duplicates must not keep theirs)", n)
	}

	// Past the window (events_ttl keeps the document longer) the key is
	// free: published again, once.
	later := time.Now().Add(DefaultIdempotencyWindow + time.Second)
	b.mg.Broker.now = func() time.Time { return later }
	if dup, err := b.mg.Broker.PublishKeyed(ctx, "order-17", testEvents()[:1], nil); err != nil || dup {
		t.Fatalf("after the window: dup %v err %v", dup, err)
	}
	if got := recA.waitFrames(t, 8); len(got) != 8 || got[7] != frame("issueUpdate", issue1, `["status"]`) {
		t.Errorf("after the window, a got:\n%s", strings.Join(got, "\n"))
	}
	if n := len(f.docs("airlay_events")); n != 3 {
		t.Errorf("%d documents, want 3 (order-17 replaced, order-18, the marker)", n)
	}
}

// TestBrokerRoundTrip: a publish travels through the events collection and
// this instance's change stream to the hub; the publisher's tracker counts
// the writes (?wait).
func TestBrokerRoundTrip(t *testing.T) {
	f := newFakeMongo(t)
	e := startSource(t, f, testConfig())
	rec := newRecorder()
	rec.subscribe(e.hub)
	e.waitReady()
	tr := events.NewTracker()
	if err := e.mg.Broker.Publish(context.Background(), testEvents(), tr); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tr.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the tracker never completed")
	}
	if d, p := tr.Counts(); d != 3 || p != 0 {
		t.Errorf("counts %d delivered %d pending, want 3, 0", d, p)
	}
	got := rec.got()
	want := []string{frame("issueUpdate", issue1, `["status"]`), `{"type":"notification","id":"n\"1","data":[{"text":"hi"}]}`, frame("datasetUpdate", dataset1, `[]`)}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("frames\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := e.mg.Broker.waiting(); n != 0 {
		t.Errorf("%d trackers kept after delivery", n)
	}
	if v := testutil.ToFloat64(e.mg.metrics.changes.WithLabelValues("airlay_events")); v != 1 {
		t.Errorf("events collection changes %v", v)
	}
}

// TestBrokerPendingBounded: trackers are kept for at most PendingMax
// publishes and PendingTTL.
func TestBrokerPendingBounded(t *testing.T) {
	f := newFakeMongo(t)
	cfg := testConfig()
	cfg.PendingMax = 2
	mg, logs := connect(t, f, cfg) // no source: nothing is taken
	now := time.Now()
	mg.Broker.now = func() time.Time { return now }
	for i := 0; i < 3; i++ {
		if err := mg.Broker.Publish(context.Background(), testEvents(), events.NewTracker()); err != nil {
			t.Fatal(err)
		}
	}
	if n := mg.Broker.waiting(); n != 2 {
		t.Errorf("%d kept, want 2", n)
	}
	if !strings.Contains(logs.String(), "too many publishes waiting") {
		t.Error("not logged")
	}
	now = now.Add(71 * time.Second) // past PendingTTL
	if err := mg.Broker.Publish(context.Background(), testEvents(), events.NewTracker()); err != nil {
		t.Fatal(err)
	}
	if n := mg.Broker.waiting(); n != 1 {
		t.Errorf("%d kept after the others expired, want 1", n)
	}
}

func TestDecodePublishedRejects(t *testing.T) {
	ev := func(kv ...bson.E) bson.D { return bson.D(kv) }
	e := func(k string, v any) bson.E { return bson.E{Key: k, Value: v} }
	for _, tc := range []struct {
		name string
		doc  bson.D
	}{
		{"no events", bson.D{e("_id", 1)}},
		{"events not an array", bson.D{e("events", "x")}},
		{"empty events", bson.D{e("events", bson.A{})}},
		{"event not a document", bson.D{e("events", bson.A{1})}},
		{"unknown type", bson.D{e("events", bson.A{ev(e("type", "issueDelete"), e("id", issue1.Hex()))})}},
		{"bad id", bson.D{e("events", bson.A{ev(e("type", "issueUpdate"), e("id", "x"))})}},
		{"user on issueUpdate", bson.D{e("events", bson.A{ev(e("type", "issueUpdate"), e("id", issue1.Hex()), e("user", userA.Hex()))})}},
		{"notification without user", bson.D{e("events", bson.A{ev(e("type", "notification"))})}},
		{"data not an array", bson.D{e("events", bson.A{ev(e("type", "issueUpdate"), e("id", issue1), e("data", `{"a":1}`))})}},
		{"data not JSON", bson.D{e("events", bson.A{ev(e("type", "issueUpdate"), e("id", issue1), e("data", `[1,`))})}},
		{"data a number", bson.D{e("events", bson.A{ev(e("type", "issueUpdate"), e("id", issue1), e("data", 5))})}},
		{"data not UTF-8", bson.D{e("events", bson.A{ev(e("type", "issueUpdate"), e("id", issue1), e("data", "[\"\xff\"]"))})}},
		{"one bad among good", bson.D{e("events", bson.A{ev(e("type", "issueUpdate"), e("id", issue1)), ev(e("type", "x"))})}},
	} {
		if evs, err := decodePublished(mustRaw(tc.doc)); err == nil || !errors.Is(err, ErrBadPublished) {
			t.Errorf("%s: %v, %v; want ErrBadPublished", tc.name, evs, err)
		}
	}
	// Written by hand (mongosh): ObjectIds, a BSON data array, spaces in JSON.
	evs, err := decodePublished(mustRaw(bson.D{e("events", bson.A{
		ev(e("type", "issueUpdate"), e("id", issue1), e("data", bson.A{"status", 1})),
		ev(e("type", "datasetUpdate"), e("id", strings.ToUpper(dataset1.Hex())), e("data", ` [ "a" , 2 ] `)),
		ev(e("type", "notification"), e("user", userA)),
	})}))
	if err != nil {
		t.Fatal(err)
	}
	if evs[0].ID != issue1.Hex() || string(evs[0].Data) != `["status",1]` || evs[1].ID != dataset1.Hex() || string(evs[1].Data) != `["a",2]` || evs[2].User != userA.Hex() || evs[2].ID != "" || evs[2].Data != nil {
		t.Errorf("decoded %+v", evs)
	}
}

func TestAppendJSON(t *testing.T) {
	at := time.Date(2026, 11, 22, 10, 5, 0, 123e6, time.UTC)
	dec, _ := primitive.ParseDecimal128("1.50")
	doc := bson.D{
		{Key: "s", Value: "a\"b\n\xff"}, {Key: "i", Value: int32(-3)}, {Key: "l", Value: int64(1) << 60}, {Key: "f", Value: 1.5},
		{Key: "nan", Value: math.NaN()}, {Key: "b", Value: true}, {Key: "n", Value: nil}, {Key: "oid", Value: issue1},
		{Key: "at", Value: at}, {Key: "bin", Value: primitive.Binary{Data: []byte{1, 2, 3}}}, {Key: "dec", Value: dec},
		{Key: "arr", Value: bson.A{1, bson.D{{Key: "x", Value: bson.A{}}}}}, {Key: "ts", Value: primitive.Timestamp{T: 5, I: 6}},
	}
	got := string(appendJSON(nil, bson.RawValue{Type: bson.TypeEmbeddedDocument, Value: mustRaw(doc)}))
	want := `{"s":"a\"b\n\ufffd","i":-3,"l":1152921504606846976,"f":1.5,"nan":null,"b":true,"n":null,"oid":"610217e481f6fc54736209e0",` +
		`"at":"2026-11-22T10:05:00.123Z","bin":"AQID","dec":"1.50","arr":[1,{"x":[]}],"ts":{"t":5,"i":6}}`
	if got != want {
		t.Errorf("appendJSON\n got %s\nwant %s", got, want)
	}
	if !json.Valid([]byte(got)) {
		t.Error("not valid JSON")
	}
}

func TestFinishedValue(t *testing.T) {
	for _, tc := range []struct {
		text string
		want any
	}{{"finished", "finished"}, {"true", true}, {"false", false}, {"3", int64(3)}, {"-2.5", -2.5}, {"NaN", "NaN"}, {"1e3", "1e3"}, {"Inf", "Inf"}} {
		m := Mapping{FinishedValue: tc.text}
		if got := m.finishedValue(); got != tc.want {
			t.Errorf("%q: %#v, want %#v", tc.text, got, tc.want)
		}
	}
	i32 := bson.RawValue{Type: bson.TypeInt32, Value: mustRaw(bson.D{{Key: "x", Value: int32(3)}}).Lookup("x").Value}
	if !sameValue(i32, int64(3)) || sameValue(i32, "3") {
		t.Error("number comparison")
	}
}
