package mongodb

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"go.mongodb.org/mongo-driver/event"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// Mongo is airlay's MongoDB side: give Store and Broker to the server,
// which runs the Broker (its change stream) and serves its metrics.
type Mongo struct {
	Store  *Store
	Broker *Broker

	client  *mongo.Client
	metrics *metrics
}

// Connect builds the client from clientOpts (options.Client().ApplyURI(uri);
// tests give a fake deployment) without waiting for MongoDB: an unreachable
// server makes queries fail (code 7, 503) and the source retry, while the
// server starts and serves. An error here is a bad configuration.
func Connect(cfg Config, log *slog.Logger, clientOpts *options.ClientOptions) (*Mongo, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	m := newMetrics(&cfg)
	clientOpts.SetMonitor(resumeMonitor(m, clientOpts.Monitor))
	client, err := mongo.Connect(context.Background(), clientOpts)
	if err != nil {
		return nil, fmt.Errorf("mongodb client: %w", err)
	}
	db := client.Database(cfg.Database)
	mg := &Mongo{client: client, metrics: m}
	mg.Store = newStore(db, &cfg, m)
	mg.Broker = newBroker(db, &cfg, m, log)
	mg.Broker.cl = newCluster(db, &cfg, m, log)
	mg.Broker.src = newSource(db, &cfg, m, mg.Broker, log)
	mg.Broker.src.store = mg.Store
	return mg, nil
}

// Ready returns nil while MongoDB is usable (the change stream is open and
// answering), and why not otherwise; it is the server's readiness hook.
func (mg *Mongo) Ready() error { return mg.Broker.Ready() }

// Collectors returns the package's metrics.
func (mg *Mongo) Collectors() []prometheus.Collector { return mg.metrics.collectors() }

// Close disconnects; run it after Broker.Run returned.
func (mg *Mongo) Close(ctx context.Context) error { return mg.client.Disconnect(ctx) }

// resumeMonitor counts change streams opened after a token, including the
// driver's own resume after a resumable error, which is otherwise unseen.
func resumeMonitor(m *metrics, next *event.CommandMonitor) *event.CommandMonitor {
	return &event.CommandMonitor{
		Started: func(ctx context.Context, e *event.CommandStartedEvent) {
			if e.CommandName == "aggregate" {
				cs := e.Command.Lookup("pipeline", "0", "$changeStream")
				if doc, ok := cs.DocumentOK(); ok {
					if _, err := doc.LookupErr("resumeAfter"); err == nil {
						m.resumes.Inc()
					} else if _, err := doc.LookupErr("startAfter"); err == nil {
						m.resumes.Inc()
					}
				}
			}
			if next != nil && next.Started != nil {
				next.Started(ctx, e)
			}
		},
		Succeeded: func(ctx context.Context, e *event.CommandSucceededEvent) {
			if next != nil && next.Succeeded != nil {
				next.Succeeded(ctx, e)
			}
		},
		Failed: func(ctx context.Context, e *event.CommandFailedEvent) {
			if next != nil && next.Failed != nil {
				next.Failed(ctx, e)
			}
		},
	}
}
