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
	go func() { _ = mg.Source.Run(ctx, hub); close(done) }()
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
