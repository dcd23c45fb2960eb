package mongodb

// Costs of the hot paths. Run
//
//	go test -run x -bench . -benchmem ./mongodb/

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/airlay/airlay/events"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

// BenchmarkMapChange: one change event of the stream to its event (parse,
// the mapping, data).
func BenchmarkMapChange(b *testing.B) {
	cfg := testConfig()
	cases := map[string]bson.D{
		"issueUpdate": chUpdate("issues", issue1, bson.D{{Key: "status", Value: "done"}, {Key: "title", Value: "x"}}, nil, nil),
		"downloadFile": chUpdate("exports", export1, bson.D{{Key: "status", Value: "finished"}}, nil,
			bson.D{{Key: "_id", Value: export1}, {Key: "status", Value: "finished"}, {Key: "url", Value: "/files/k/r.xlsx"}, {Key: "name", Value: "r.xlsx"}}),
	}
	for name, ch := range cases {
		raw := mustRaw(append(bson.D{{Key: "_id", Value: fakeToken(1)}}, ch...))
		coll, _ := raw.Lookup("ns", "coll").StringValueOK()
		var r rule
		for i := range cfg.Sources {
			if cfg.Sources[i].Collection == coll {
				r = rule{Mapping: &cfg.Sources[i], finished: cfg.Sources[i].finishedValue()}
			}
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				c, err := parseChange(raw)
				if err != nil {
					b.Fatal(err)
				}
				if _, ok, why := r.event(c, r.finished); !ok {
					b.Fatal(why)
				}
			}
		})
	}
}

// BenchmarkDeliverChange: what an instance spends on one change event that
// the server's filter let through, up to the hub: decode, the mapping's
// filter (operation, finished value), the event, and the hub's publish to
// no subscriber. A change whose mapping reads the document of an update
// adds a lookup (a round trip), not measured here.
func BenchmarkDeliverChange(b *testing.B) {
	t := &testing.T{}
	f := newFakeMongo(t)
	cfg := testConfig()
	mg, err := Connect(cfg, quiet(), f.clientOptions())
	if err != nil {
		b.Fatal(err)
	}
	defer mg.Close(context.Background())
	hub := events.NewHub()
	cases := []struct {
		name string
		ch   bson.D
	}{
		{"issueUpdate", chUpdate("issues", issue1, bson.D{{Key: "status", Value: "done"}, {Key: "title", Value: "x"}}, nil, nil)},
		{"uploadFile insert", chInsert("uploads", bson.D{{Key: "_id", Value: upload1}, {Key: "dataset", Value: dataset1}, {Key: "status", Value: "finished"}, {Key: "name", Value: "a.csv"}})},
		{"notification", chInsert("notifications", bson.D{{Key: "_id", Value: notif1}, {Key: "user", Value: userA}, {Key: "text", Value: "hello"}, {Key: "at", Value: time.Unix(1, 0)}})},
		{"no event (bad id)", chInsert("issues", bson.D{{Key: "_id", Value: "x"}})},
	}
	for _, c := range cases {
		d := append(bson.D{{Key: "_id", Value: fakeToken(1)}}, c.ch...)
		d = append(d, bson.E{Key: "wallTime", Value: primitive.NewDateTimeFromTime(time.Now())})
		raw := mustRaw(d)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := mg.Broker.src.deliver(context.Background(), hub, raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSelectsDotted: the finished test of an update with a dotted
// finished field, in the two shapes of updatedFields.
func BenchmarkSelectsDotted(b *testing.B) {
	m := Mapping{Type: events.UploadFile, Collection: "uploads", Operations: []string{OpUpdate}, IDField: "dataset", FinishedField: "job.status", FinishedValue: "finished", Data: DataNone}
	for name, set := range map[string]bson.D{
		"key job.status": {{Key: "job.status", Value: "finished"}, {Key: "progress", Value: 100}},
		"key job":        {{Key: "job", Value: bson.D{{Key: "at", Value: 1}, {Key: "status", Value: "finished"}}}},
	} {
		raw := mustRaw(append(bson.D{{Key: "_id", Value: fakeToken(1)}}, chUpdate("uploads", upload1, set, nil, nil)...))
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			fin := m.finishedValue()
			for i := 0; i < b.N; i++ {
				c, err := parseChange(raw)
				if err != nil {
					b.Fatal(err)
				}
				if ok, why := m.selects(c, fin); !ok {
					b.Fatal(why)
				}
			}
		})
	}
}

// BenchmarkUserExistsCached: an attach whose user is in the cache.
func BenchmarkUserExistsCached(b *testing.B) {
	t := &testing.T{}
	f := newFakeMongo(t)
	f.insertDocs("users", bson.D{{Key: "_id", Value: userA}})
	cfg := testConfig()
	mg, err := Connect(cfg, quiet(), f.clientOptions())
	if err != nil {
		b.Fatal(err)
	}
	defer mg.Close(context.Background())
	ctx := context.Background()
	if ok, err := mg.Store.UserExists(ctx, userA.Hex()); !ok || err != nil {
		b.Fatal(ok, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if ok, _ := mg.Store.UserExists(ctx, userA.Hex()); !ok {
				b.Fatal("not cached")
			}
		}
	})
}

// BenchmarkPublishRoundTrip: POST /api/events' broker path on the fake:
// insert, through the change stream, to the hub (one subscriber).
func BenchmarkPublishRoundTrip(b *testing.B) {
	t := &testing.T{}
	f := newFakeMongo(t)
	mg, err := Connect(testConfig(), quiet(), f.clientOptions())
	if err != nil {
		b.Fatal(err)
	}
	hub := events.NewHub()
	rec := newRecorder()
	hub.Subscribe(events.Key{Type: events.IssueUpdate, ID: issue1.Hex()}, rec)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = mg.Broker.Run(ctx, hub); close(done) }()
	defer func() { cancel(); <-done; _ = mg.Close(context.Background()) }()
	for mg.Ready() != nil {
		time.Sleep(time.Millisecond)
	}
	evs := []events.Event{{Type: events.IssueUpdate, ID: issue1.Hex()}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tr := events.NewTracker()
		if err := mg.Broker.Publish(ctx, evs, tr); err != nil {
			b.Fatal(err)
		}
		<-tr.Done()
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
