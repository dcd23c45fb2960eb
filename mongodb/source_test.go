package mongodb

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/airlay/airlay/events"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.mongodb.org/mongo-driver/bson"
)

// extJSON renders v as canonical extended JSON, to compare documents.
func extJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := bson.MarshalExtJSON(v, false, false)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPipelineAndOptions: one change stream for the database, with the
// $match of the configured sources, fullDocument only where a mapping needs
// it, and the wait of getMore.
func TestPipelineAndOptions(t *testing.T) {
	f := newFakeMongo(t)
	e := startSource(t, f, testConfig())
	e.waitReady()
	waitFor(t, "a getMore", func() bool { return len(f.commands("getMore")) > 0 })

	aggs := f.commands("aggregate")
	if len(aggs) != 1 {
		t.Fatalf("%d aggregate commands, want 1 (one stream per instance)", len(aggs))
	}
	cmd := aggs[0].Doc
	if v := cmd.Lookup("aggregate"); v.Type != bson.TypeInt32 || v.Int32() != 1 {
		t.Errorf("aggregate: %v, want 1 (a database-level stream)", v)
	}
	if db, _ := cmd.Lookup("$db").StringValueOK(); db != "airlay" {
		t.Errorf("$db %q", db)
	}
	cs := cmd.Lookup("pipeline", "0", "$changeStream").Document()
	if got, want := extJSON(t, cs), `{}`; got != want {
		t.Errorf("$changeStream %s, want %s (no updateLookup: the source looks up the documents it needs; no token on a first start)", got, want)
	}
	if got := extJSON(t, cmd.Lookup("pipeline", "3").Document()); got != `{"$changeStreamSplitLargeEvent":{}}` {
		t.Errorf("last stage %s, want $changeStreamSplitLargeEvent", got)
	}
	match := cmd.Lookup("pipeline", "1", "$match")
	wantMatch := `{"$or":[` +
		`{"ns.coll":"issues","operationType":{"$in":["insert","update","replace","delete"]}},` +
		`{"ns.coll":"notifications","operationType":{"$in":["insert"]}},` +
		`{"ns.coll":"datasets","operationType":{"$in":["insert","update","replace","delete"]}},` +
		`{"ns.coll":"uploads","operationType":{"$in":["insert","replace"]},"fullDocument.status":"finished"},` +
		`{"ns.coll":"uploads","operationType":"update","updateDescription.updatedFields.status":"finished"},` +
		`{"ns.coll":"exports","operationType":{"$in":["insert","replace"]},"fullDocument.status":"finished"},` +
		`{"ns.coll":"exports","operationType":"update","updateDescription.updatedFields.status":"finished"},` +
		`{"ns.coll":"airlay_events","operationType":"insert"},` +
		// instances' messages: asks to all, replies to this instance
		`{"ns.coll":"airlay_messages","operationType":"insert","fullDocument.to":{"$in":["*","test-1"]}},` +
		// revocation: deleted users, changed datasets
		`{"ns.coll":"users","operationType":"delete"},` +
		`{"ns.coll":"datasets","operationType":{"$in":["update","replace","delete"]}},` +
		`{"operationType":"invalidate"}]}`
	if got := extJSON(t, match.Document()); got != wantMatch {
		t.Errorf("$match\n got %s\nwant %s", got, wantMatch)
	}
	keep := cmd.Lookup("pipeline", "2", "$addFields", "fullDocument", "$cond", "if", "$in", "1")
	if got, want := extJSON(t, bson.D{{Key: "keep", Value: keep}}), `{"keep":["airlay_events","airlay_messages","notifications","uploads","exports"]}`; got != want {
		t.Errorf("fullDocument kept for %s, want %s", got, want)
	}
	if n := len(cmd.Lookup("pipeline").Array()); n == 0 {
		t.Error("no pipeline")
	}
	gm := f.commands("getMore")[0].Doc
	if ms, _ := gm.Lookup("maxTimeMS").AsInt64OK(); ms != 20 {
		t.Errorf("getMore maxTimeMS %d, want 20 (MaxAwait)", ms)
	}

	// With only a mapping that reads no document, fullDocument is kept
	// for the events collection only.
	f2 := newFakeMongo(t)
	cfg := testConfig()
	cfg.Sources = cfg.Sources[:1] // issueUpdate only
	e2 := startSource(t, f2, cfg)
	e2.waitReady()
	cs2 := f2.commands("aggregate")[0].Doc.Lookup("pipeline", "0", "$changeStream").Document()
	if got := extJSON(t, cs2); got != `{}` {
		t.Errorf("issueUpdate only: $changeStream %s, want {}", got)
	}
	keep2 := f2.commands("aggregate")[0].Doc.Lookup("pipeline", "2", "$addFields", "fullDocument", "$cond", "if", "$in", "1")
	if got := extJSON(t, bson.D{{Key: "keep", Value: keep2}}); got != `{"keep":["airlay_events","airlay_messages"]}` {
		t.Errorf("issueUpdate only: fullDocument kept for %s, want only the events and messages collections", got)
	}
}

// TestMapping: every kind of change of every default source, in one stream,
// in batches of three; the frames come in order, and the changes that must
// not make an event make none.
func TestMapping(t *testing.T) {
	type step struct {
		name   string
		change bson.D
		want   []string // frames, in order; none for a change that makes no event
	}
	issueDoc := bson.D{{Key: "_id", Value: issue1}, {Key: "title", Value: "t"}, {Key: "status", Value: "open"}}
	steps := []step{
		{"issue insert", chInsert("issues", issueDoc), []string{frame("issueUpdate", issue1, `[]`)}},
		{"issue update: changed top-level fields", chUpdate("issues", issue1, bson.D{{Key: "status", Value: "done"}, {Key: "meta.editor", Value: "x"}, {Key: "title", Value: "u"}}, []string{"labels", "meta.old"}, nil),
			[]string{frame("issueUpdate", issue1, `["status","meta","title","labels"]`)}},
		{"issue replace", chReplace("issues", issueDoc), []string{frame("issueUpdate", issue1, `[]`)}},
		{"issue delete", chDelete("issues", issue2), []string{frame("issueUpdate", issue2, `[]`)}},
		{"issue with a string _id: none", chInsert("issues", bson.D{{Key: "_id", Value: "not-an-id"}}), nil},
		{"issue with an ObjectId as hex string _id", chDelete("issues", strings.ToUpper(issue2.Hex())), []string{frame("issueUpdate", issue2, `[]`)}},
		{"other collection: none", chInsert("comments", bson.D{{Key: "_id", Value: issue1}}), nil},
		{"other operation (drop): none", bson.D{{Key: "operationType", Value: "drop"}, ns("issues")}, nil},
		{"dataset update", chUpdate("datasets", dataset1, bson.D{{Key: "members", Value: bson.A{userA}}}, nil, nil),
			[]string{frame("datasetUpdate", dataset1, `["members"]`)}},
		{"dataset delete", chDelete("datasets", dataset2), []string{frame("datasetUpdate", dataset2, `[]`)}},
		{"upload inserted finished", chInsert("uploads", bson.D{{Key: "_id", Value: upload1}, {Key: "dataset", Value: dataset1}, {Key: "status", Value: "finished"}, {Key: "name", Value: "a.csv"}, {Key: "size", Value: 3}}),
			[]string{frame("uploadFile", dataset1, `[{"_id":"`+upload1.Hex()+`","name":"a.csv"}]`)}},
		{"upload inserted running: none", chInsert("uploads", bson.D{{Key: "_id", Value: upload1}, {Key: "dataset", Value: dataset1}, {Key: "status", Value: "running"}}), nil},
		{"upload progress update: none", chUpdate("uploads", upload1, bson.D{{Key: "progress", Value: 50}}, nil,
			bson.D{{Key: "_id", Value: upload1}, {Key: "dataset", Value: dataset1}, {Key: "status", Value: "running"}}), nil},
		{"upload failed: none", chUpdate("uploads", upload1, bson.D{{Key: "status", Value: "failed"}}, nil,
			bson.D{{Key: "_id", Value: upload1}, {Key: "dataset", Value: dataset1}, {Key: "status", Value: "failed"}}), nil},
		{"upload finished by update: id is its dataset", chUpdate("uploads", upload1, bson.D{{Key: "status", Value: "finished"}}, nil,
			bson.D{{Key: "_id", Value: upload1}, {Key: "dataset", Value: dataset2.Hex()}, {Key: "status", Value: "finished"}, {Key: "name", Value: "b.csv"}}),
			[]string{frame("uploadFile", dataset2, `[{"_id":"`+upload1.Hex()+`","name":"b.csv"}]`)}},
		{"upload finished but no dataset: none", chUpdate("uploads", upload2, bson.D{{Key: "status", Value: "finished"}}, nil,
			bson.D{{Key: "_id", Value: upload2}, {Key: "status", Value: "finished"}}), nil},
		{"upload deleted: none", chDelete("uploads", upload1), nil},
		{"export finished: what the frontend fetches", chUpdate("exports", export1, bson.D{{Key: "status", Value: "finished"}, {Key: "url", Value: "/files/k/r.xlsx"}}, nil,
			bson.D{{Key: "_id", Value: export1}, {Key: "user", Value: userA}, {Key: "status", Value: "finished"}, {Key: "url", Value: "/files/k/r.xlsx"}, {Key: "name", Value: "r.xlsx"}}),
			[]string{frame("downloadFile", export1, `[{"url":"/files/k/r.xlsx","name":"r.xlsx"}]`)}},
		{"export created: none", chInsert("exports", bson.D{{Key: "_id", Value: export1}, {Key: "status", Value: "queued"}}), nil},
		{"export replaced finished", chReplace("exports", bson.D{{Key: "_id", Value: export1}, {Key: "status", Value: "finished"}, {Key: "url", Value: "/u"}}),
			[]string{frame("downloadFile", export1, `[{"url":"/u"}]`)}},
		{"notification: to its recipient, the document as data", chInsert("notifications", bson.D{{Key: "_id", Value: notif1}, {Key: "user", Value: userB}, {Key: "text", Value: "hi <b>"}, {Key: "at", Value: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}),
			[]string{frame("notification", notif1, `[{"_id":"`+notif1.Hex()+`","user":"`+userB.Hex()+`","text":"hi \u003cb\u003e","at":"2026-01-02T03:04:05Z"}]`)}},
		{"notification without recipient: none", chInsert("notifications", bson.D{{Key: "_id", Value: notif1}, {Key: "text", Value: "x"}}), nil},
		{"notification updated: none", chUpdate("notifications", notif1, bson.D{{Key: "read", Value: true}}, nil, nil), nil},
		{"published through the events collection", chInsert("airlay_events", bson.D{{Key: "_id", Value: notif1}, {Key: "events", Value: bson.A{
			bson.D{{Key: "type", Value: "issueUpdate"}, {Key: "id", Value: issue2.Hex()}, {Key: "data", Value: `["status"]`}},
			bson.D{{Key: "type", Value: "notification"}, {Key: "user", Value: userA.Hex()}, {Key: "id", Value: "n-1"}, {Key: "data", Value: bson.A{bson.D{{Key: "text", Value: "hi"}}}}},
		}}}), []string{frame("issueUpdate", issue2, `["status"]`), frame("notification", "n-1", `[{"text":"hi"}]`)}},
		{"events collection, not a publish: none", chInsert("airlay_events", bson.D{{Key: "_id", Value: notif1}, {Key: "x", Value: 1}}), nil},
		{"events collection, bad event: none", chInsert("airlay_events", bson.D{{Key: "_id", Value: notif1}, {Key: "events", Value: bson.A{bson.D{{Key: "type", Value: "issueUpdate"}, {Key: "id", Value: "x"}}}}}), nil},
		{"last", chDelete("issues", issue1), []string{frame("issueUpdate", issue1, `[]`)}},
	}
	f := newFakeMongo(t)
	f.batch = 3
	// The documents that the updates of uploads and exports look up: the
	// last argument of those chUpdate steps, as the collections hold them
	// when the stream reads the changes.
	for _, s := range steps {
		if coll, _ := mustRaw(s.change).Lookup("ns", "coll").StringValueOK(); (coll == "uploads" || coll == "exports") && len(s.want) > 0 || strings.Contains(s.name, "no dataset") {
			if after, ok := mustRaw(s.change).Lookup("fullDocument").DocumentOK(); ok {
				if op, _ := mustRaw(s.change).Lookup("operationType").StringValueOK(); op == "update" {
					var d bson.D
					_ = bson.Unmarshal(after, &d)
					f.insertDocs(coll, d)
				}
			}
		}
	}
	e := startSource(t, f, testConfig())
	rec := newRecorder()
	rec.subscribe(e.hub)
	e.waitReady()
	var want []string
	var changes []bson.D
	for _, s := range steps {
		changes = append(changes, s.change)
		want = append(want, s.want...)
	}
	f.addChanges(changes...)
	got := rec.waitFrames(t, len(want))
	time.Sleep(50 * time.Millisecond) // nothing more comes
	got = rec.got()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("frames:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
		// Name the steps that went wrong.
		for _, s := range steps {
			for _, w := range s.want {
				if !contains(got, w) {
					t.Errorf("%s: missing %s", s.name, w)
				}
			}
		}
	}
	if n := len(f.commands("getMore")); n < len(steps)/3 {
		t.Errorf("%d getMores for %d changes in batches of 3", n, len(steps))
	}
	if v := testutil.ToFloat64(e.mg.metrics.changes.WithLabelValues("issues")); v < 5 {
		t.Errorf("change events of issues counted %v", v)
	}
	if testutil.CollectAndCount(e.mg.metrics.lag) != 1 {
		t.Error("lag not observed")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var _ = errors.New
var _ = events.IssueUpdate

// TestFragments: the fragments of a split event make the event again, with
// the last fragment's token; a fragment out of sequence is an error, not a
// wrong event.
func TestFragments(t *testing.T) {
	frag := func(n, of int32, fields ...bson.E) bson.Raw {
		d := bson.D{{Key: "_id", Value: fakeToken(int(n))}, {Key: "splitEvent", Value: bson.D{{Key: "fragment", Value: n}, {Key: "of", Value: of}}}}
		return mustRaw(append(d, fields...))
	}
	var f fragments
	whole := mustRaw(bson.D{{Key: "_id", Value: fakeToken(9)}, {Key: "operationType", Value: "insert"}})
	if got, done, err := f.add(whole); !done || err != nil || !bytes.Equal(got, whole) {
		t.Fatalf("an event that is not split: %v %v", done, err)
	}
	if _, done, err := f.add(frag(1, 2, bson.E{Key: "operationType", Value: "update"}, bson.E{Key: "ns", Value: bson.D{{Key: "coll", Value: "issues"}}})); done || err != nil {
		t.Fatalf("fragment 1 of 2: done %v, err %v", done, err)
	}
	got, done, err := f.add(frag(2, 2, bson.E{Key: "updateDescription", Value: bson.D{{Key: "updatedFields", Value: bson.D{{Key: "a", Value: 1}}}}}))
	if !done || err != nil {
		t.Fatalf("fragment 2 of 2: done %v, err %v", done, err)
	}
	if want := `{"_id":{"_data":"8200000000000002"},"operationType":"update","ns":{"coll":"issues"},"updateDescription":{"updatedFields":{"a":1}}}`; extJSON(t, got) != want {
		t.Errorf("reassembled\n%s\nwant\n%s", extJSON(t, got), want)
	}
	if _, _, err := f.add(frag(2, 3)); err == nil {
		t.Error("fragment 2 without fragment 1: no error")
	}
	_, _, _ = f.add(frag(1, 3))
	if _, _, err := f.add(whole); err == nil {
		t.Error("an event in the middle of a split one: no error")
	}
	if f.pending() {
		t.Error("still pending after an error")
	}
}
