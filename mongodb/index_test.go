package mongodb

// The TTL index of the events collection follows events_ttl: created at
// start, created again after the database was dropped (invalidate), and
// changed in place (collMod) when events_ttl changed.

import (
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
)

func ttlOf(t *testing.T, f *fakeMongo) (int64, bool) {
	t.Helper()
	spec := f.index("airlay_events", "createdAt")
	if spec == nil {
		return 0, false
	}
	n, _ := spec.Lookup("expireAfterSeconds").AsInt64OK()
	return n, true
}

func TestTTLIndexCreated(t *testing.T) {
	f := newFakeMongo(t)
	e := startSource(t, f, testConfig())
	e.waitReady()
	waitFor(t, "the TTL index", func() bool { n, ok := ttlOf(t, f); return ok && n == 3600 })
	if name, _ := f.index("airlay_events", "createdAt").Lookup("name").StringValueOK(); name != "airlay_ttl" {
		t.Errorf("index name %q", name)
	}
	if !strings.Contains(e.logs.String(), "TTL index created") {
		t.Errorf("the log does not say the index was created:\n%s", e.logs.String())
	}
}

// A changed events_ttl changes the index: no manual drop.
func TestTTLIndexFollowsEventsTTL(t *testing.T) {
	f := newFakeMongo(t)
	f.indexes = map[string][]bson.Raw{"airlay_events": {mustRaw(bson.D{{Key: "v", Value: int32(2)}, {Key: "key", Value: bson.D{{Key: "createdAt", Value: int32(1)}}},
		{Key: "name", Value: "airlay_ttl"}, {Key: "expireAfterSeconds", Value: int32(3600)}})}}
	cfg := testConfig()
	cfg.EventsTTL = 10 * time.Minute
	e := startSource(t, f, cfg)
	e.waitReady()
	waitFor(t, "the TTL index at 600s", func() bool { n, _ := ttlOf(t, f); return n == 600 })
	if n := len(f.commands("collMod")); n != 1 {
		t.Errorf("%d collMod commands, want 1", n)
	}
	if !strings.Contains(e.logs.String(), "updated (was 3600s)") {
		t.Errorf("the log does not say what changed:\n%s", e.logs.String())
	}
	// Restarted with the same events_ttl: nothing to do.
	e.stop()
	e2 := startSource(t, f, cfg)
	e2.waitReady()
	onEvents := 0 // the messages collection has a TTL index of its own
	for _, c := range f.commands("createIndexes") {
		if name, _ := c.Doc.Lookup("createIndexes").StringValueOK(); name == "airlay_events" {
			onEvents++
		}
	}
	if n := len(f.commands("collMod")) + onEvents; n != 1 {
		t.Errorf("%d collMod/createIndexes after a restart with the same events_ttl, want none more", n-1)
	}
}

// dropDatabase: the stream is invalidated; the source reopens after it and
// creates the index again.
func TestTTLIndexAfterDropDatabase(t *testing.T) {
	f := newFakeMongo(t)
	e := startSource(t, f, testConfig())
	e.waitReady()
	waitFor(t, "the TTL index", func() bool { _, ok := ttlOf(t, f); return ok })
	f.dropDatabase()
	if _, ok := ttlOf(t, f); ok {
		t.Fatal("the fake kept the index after dropDatabase")
	}
	// A real server closes the cursor after the invalidate: the next getMore
	// answers cursor id 0.
	n := len(f.commands("getMore"))
	waitFor(t, "the invalidate to pass", func() bool { return len(f.commands("getMore")) > n+1 })
	f.fail(fakeFail{cmd: "getMore", reply: ok(bson.E{Key: "cursor", Value: bson.D{{Key: "id", Value: int64(0)}, {Key: "ns", Value: "airlay.$cmd.aggregate"}, {Key: "nextBatch", Value: bson.A{}}}})})
	waitFor(t, "the TTL index created again", func() bool { n, ok := ttlOf(t, f); return ok && n == 3600 })
	waitFor(t, "the stream open again", func() bool { return len(f.commands("aggregate")) == 2 && e.mg.Ready() == nil })
}
