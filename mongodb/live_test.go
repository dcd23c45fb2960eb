package mongodb

// Tests of the change stream against a server that behaves like MongoDB:
// each scenario runs against a mongosim of its own (TestStream*), and,
// when AIRLAY_TEST_MONGODB_URI is set, against that replica set
// (TestIntegration*; CI points it at a mongosim too). The changes are
// made by writes through the driver; the server derives the change events.

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/airlay/airlay/events"
	"github.com/airlay/airlay/internal/testkit"
	"github.com/prometheus/client_golang/prometheus"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/event"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// live is a MongoDB to run a scenario against.
type live struct {
	t      *testing.T
	uri    string
	db     string
	client *mongo.Client
	sim    *simProc // nil: a real server (AIRLAY_TEST_MONGODB_URI)
}

func simLive(t *testing.T, args ...string) *live {
	p := startSim(t, args...)
	return &live{t: t, uri: p.uri, db: "airlay", client: p.client(), sim: p}
}

func realLive(t *testing.T) *live {
	client, uri, db := integration(t)
	return &live{t: t, uri: uri, db: db, client: client}
}

func (l *live) coll(name string) *mongo.Collection { return l.client.Database(l.db).Collection(name) }

func (l *live) config(instance string) Config {
	cfg := integrationConfig(l.db, instance)
	cfg.SaveInterval = 50 * time.Millisecond
	return cfg
}

// must fails the test on err.
func (l *live) must(err error) {
	l.t.Helper()
	if err != nil {
		l.t.Fatal(err)
	}
}

// cmdLog records the commands airlay's client sends.
type cmdLog struct {
	mu   sync.Mutex
	cmds []sentCmd
}

type sentCmd struct {
	name, coll string
	doc        bson.Raw
}

func (c *cmdLog) monitor() *event.CommandMonitor {
	return &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		coll, _ := e.Command.Lookup(e.CommandName).StringValueOK()
		c.mu.Lock()
		c.cmds = append(c.cmds, sentCmd{e.CommandName, coll, append(bson.Raw(nil), e.Command...)})
		c.mu.Unlock()
	}}
}

func (c *cmdLog) count(name, coll string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, x := range c.cmds {
		if x.name == name && (coll == "" || x.coll == coll) {
			n++
		}
	}
	return n
}

// changeStreams returns the $changeStream stages of the aggregates sent.
func (c *cmdLog) changeStreams() []bson.Raw {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []bson.Raw
	for _, x := range c.cmds {
		if x.name == "aggregate" {
			if cs, ok := x.doc.Lookup("pipeline", "0", "$changeStream").DocumentOK(); ok {
				out = append(out, cs)
			}
		}
	}
	return out
}

// liveSource is a Mongo on l, its source running into a hub.
type liveSource struct {
	t    *testing.T
	mg   *Mongo
	hub  *events.Hub
	logs *testkit.Buffer
	cmds *cmdLog
	stop func()
}

// start connects and runs the source until the test ends (or stop);
// recorders are subscribed first.
func (l *live) start(cfg Config, recs ...*recorder) *liveSource {
	l.t.Helper()
	cmds := &cmdLog{}
	co := options.Client().ApplyURI(l.uri).SetMonitor(cmds.monitor())
	logs := &testkit.Buffer{}
	mg, err := Connect(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), co)
	if err != nil {
		l.t.Fatal(err)
	}
	s := &liveSource{t: l.t, mg: mg, hub: events.NewHub(), logs: logs, cmds: cmds}
	for _, r := range recs {
		r.subscribe(s.hub)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mg.Broker.Run(ctx, s.hub) }()
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				l.t.Error("Source.Run did not return after cancel")
			}
			_ = mg.Close(context.Background())
		})
	}
	l.t.Cleanup(func() {
		s.stop()
		if l.t.Failed() {
			l.t.Logf("log of %s:\n%s", cfg.Instance, logs.String())
		}
	})
	waitFor(l.t, "the change stream to open", func() bool { return mg.Ready() == nil })
	return s
}

// metric returns the value of a series of the package's metrics (0 when it
// does not exist).
func (s *liveSource) metric(name string, labels ...string) float64 {
	s.t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.mg.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		s.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	return 0
}
