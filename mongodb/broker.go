package mongodb

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/airlay/airlay/events"
	"github.com/prometheus/client_golang/prometheus"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/mongo/writeconcern"
)

// Broker publishes by writing to the events collection, which the change
// stream of every instance watches: one document per publish request,
//
//	{_id: ObjectId, events: [{type, id, user, data}], createdAt: Date, instance: "name"}
//
// where data is the JSON text of the data array. Publish returns once
// MongoDB acknowledged the write (majority). An error does NOT mean that
// nothing was written: after a timeout or a write-concern error the insert
// may have been applied, and the change stream then delivers it. A TTL
// index on createdAt removes old documents.
//
// A publish with an Idempotency-Key (PublishKeyed) is written with the key
// as its _id and a fresh ObjectId as attempt:
//
//	{_id: "key", attempt: ObjectId, events: [...], createdAt: Date, instance: "name"}
//
// so that the unique _id makes a second insert of the same key fail on
// every instance: a retry after an error delivers once. The key is
// remembered as long as the document lives (events_ttl, at least the
// idempotency window); a key older than the window is published again.
//
// ?wait counts: the instance that accepted the publish keeps the request's
// Tracker under the document's attempt (or _id) until its own change stream
// delivers the document (at most PendingTTL, at most PendingMax requests).
//
// The Broker is the server's one broker with MongoDB (events.Broker): it
// publishes as above and runs the change stream (Source) that delivers
// every instance's publishes and the configured collections' changes to
// the hub, at positions made of each change's cluster time and the event's
// index in it (events.OrderedBroker), the same on every instance. Its
// readiness is the stream's, its metrics the package's.
type Broker struct {
	src      *Source
	cl       *cluster
	epoch    string
	metrics  *metrics
	coll     *mongo.Collection
	instance string
	timeout  time.Duration
	window   time.Duration
	m        *metrics
	log      *slog.Logger

	mu      sync.Mutex
	pending map[primitive.ObjectID]pendingPublish
	max     int
	ttl     time.Duration
	now     func() time.Time

	askIndexes sync.Once // TTL indexes of the asks and replies collections (ask.go)
}

type pendingPublish struct {
	tr  *events.Tracker
	exp time.Time
}

var (
	_ events.Broker        = (*Broker)(nil)
	_ events.KeyedBroker   = (*Broker)(nil)
	_ events.ReadyBroker   = (*Broker)(nil)
	_ events.MetricsBroker = (*Broker)(nil)
	_ events.OrderedBroker = (*Broker)(nil)
	_ events.ClusterBroker = (*Broker)(nil)
)

// Run runs the change stream, delivering to hub until ctx ends, and the
// heartbeat; then it saves the resume token, removes the heartbeat and
// returns ctx's error.
func (b *Broker) Run(ctx context.Context, hub *events.Hub) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.cl.run(ctx)
	}()
	err := b.src.Run(ctx, hub)
	<-done
	return err
}

// Instance is this instance's name ([mongodb] instance).
func (b *Broker) Instance() string { return b.instance }

// Instances returns the live instances sharing the database, this one
// first, as of the latest heartbeat read.
func (b *Broker) Instances() []events.Instance { return b.cl.instances() }

// SetLocal gives the broker the server's connections (heartbeat counts,
// revocation); the server calls it before Run.
func (b *Broker) SetLocal(l events.Local) { b.cl.local = l }

// Handle registers the answer of this instance to asks on topic.
func (b *Broker) Handle(topic string, h events.AskHandler) { b.cl.handlers[topic] = h }

// AskInstances sends body on topic to every other live instance through
// messages_collection and gathers their replies (see events.ClusterBroker).
func (b *Broker) AskInstances(ctx context.Context, topic string, body []byte, each func(events.InstanceReply) bool) (int, error) {
	return b.cl.ask(ctx, topic, body, each)
}

// Ready returns nil while the change stream is open and answering, and
// why not otherwise.
func (b *Broker) Ready() error { return b.src.Ready() }

// Collectors returns the package's metrics.
func (b *Broker) Collectors() []prometheus.Collector { return b.metrics.collectors() }

// Epoch names the positions of this database's events: the same for every
// instance sharing it and across restarts (derived from the database
// name).
func (b *Broker) Epoch() string { return b.epoch }

// epochOf derives the epoch of a database's positions.
func epochOf(database string) string {
	sum := sha256.Sum256([]byte("airlay positions\x00" + database))
	return hex.EncodeToString(sum[:events.EpochLen/2])
}

func newBroker(db *mongo.Database, cfg *Config, m *metrics, log *slog.Logger) *Broker {
	wc := options.Collection().SetWriteConcern(writeconcern.Majority())
	return &Broker{
		epoch:    epochOf(cfg.Database),
		metrics:  m,
		coll:     db.Collection(cfg.Events, wc),
		instance: cfg.Instance,
		timeout:  cfg.QueryTimeout,
		window:   cfg.IdempotencyWindow,
		m:        m,
		log:      log,
		pending:  make(map[primitive.ObjectID]pendingPublish),
		max:      cfg.PendingMax,
		ttl:      cfg.PendingTTL,
		now:      time.Now,
	}
}

// document builds the document of a publish.
func (b *Broker) document(id any, attempt primitive.ObjectID, evs []events.Event, wait time.Duration) bson.D {
	list := make(bson.A, len(evs))
	for i := range evs {
		e := &evs[i]
		d := bson.D{{Key: "type", Value: e.Type.String()}, {Key: "id", Value: e.ID}}
		if e.User != "" {
			d = append(d, bson.E{Key: "user", Value: e.User})
		}
		data := "[]"
		if e.Data != nil {
			data = string(e.Data)
		}
		d = append(d, bson.E{Key: "data", Value: data})
		list[i] = d
	}
	doc := bson.D{{Key: "_id", Value: id}}
	if id != attempt {
		doc = append(doc, bson.E{Key: "attempt", Value: attempt})
	}
	doc = append(doc, bson.E{Key: "events", Value: list}, bson.E{Key: "createdAt", Value: primitive.NewDateTimeFromTime(b.now())}, bson.E{Key: "instance", Value: b.instance})
	if wait > 0 {
		// The other live instances report their writes back (cluster.go).
		doc = append(doc, bson.E{Key: "wait", Value: wait.Milliseconds()})
	}
	return doc
}

// Publish writes evs as one document.
func (b *Broker) Publish(ctx context.Context, evs []events.Event, tr *events.Tracker) error {
	id := primitive.NewObjectID()
	var wait time.Duration
	if tr != nil {
		b.hold(id, tr)
		wait = b.cl.expectWait(id, tr)
	}
	doc := b.document(id, id, evs, wait)
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	_, err := b.coll.InsertOne(ctx, doc)
	if err != nil && mongo.IsDuplicateKeyError(err) {
		// The driver retried a write whose first try did succeed: the
		// document with our own _id is there.
		err = nil
	}
	if err != nil {
		if tr != nil {
			b.take(id)
			b.cl.dropWait(id)
		}
		b.m.errors.WithLabelValues("insert_event").Inc()
		return fmt.Errorf("insert into %s: %w", b.coll.Name(), err)
	}
	return nil
}

// PublishKeyed writes evs under key unless a document with that key, less
// than the idempotency window old, is there already (dup). An error means
// the document may or may not have been written; a retry with the same key
// writes it at most once.
func (b *Broker) PublishKeyed(ctx context.Context, key string, evs []events.Event, tr *events.Tracker) (dup bool, err error) {
	attempt := primitive.NewObjectID()
	var wait time.Duration
	if tr != nil {
		b.hold(attempt, tr)
		wait = b.cl.expectWait(attempt, tr)
	}
	doc := b.document(key, attempt, evs, wait)
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	dup, err = b.insertKeyed(ctx, key, attempt, doc)
	if err != nil || dup {
		if tr != nil {
			b.take(attempt)
			b.cl.dropWait(attempt)
		}
	}
	if err != nil {
		b.m.errors.WithLabelValues("insert_event").Inc()
		return false, fmt.Errorf("insert into %s: %w", b.coll.Name(), err)
	}
	return dup, nil
}

func (b *Broker) insertKeyed(ctx context.Context, key string, attempt primitive.ObjectID, doc bson.D) (dup bool, err error) {
	// Two rounds at most: the second after an expired key was removed (or
	// vanished by TTL) between the insert and the read.
	for round := 0; ; round++ {
		_, err := b.coll.InsertOne(ctx, doc)
		if err == nil {
			return false, nil
		}
		if !mongo.IsDuplicateKeyError(err) || round == 2 {
			return false, err
		}
		var prev struct {
			Attempt   primitive.ObjectID `bson:"attempt"`
			CreatedAt time.Time          `bson:"createdAt"`
		}
		ferr := b.coll.FindOne(ctx, bson.D{{Key: "_id", Value: key}}).Decode(&prev)
		switch {
		case errors.Is(ferr, mongo.ErrNoDocuments):
			continue // removed by TTL meanwhile: insert again
		case ferr != nil:
			return false, ferr
		case prev.Attempt == attempt:
			return false, nil // the driver retried our own insert, which had succeeded
		case b.now().Sub(prev.CreatedAt) < b.window:
			return true, nil
		}
		// The key's window is over but its document is still kept
		// (events_ttl): the key is free again. Remove exactly that
		// document (another instance may be doing the same) and insert.
		if _, err := b.coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: key}, {Key: "attempt", Value: prev.Attempt}}); err != nil {
			return false, err
		}
	}
}

// trackerOf returns and forgets the Tracker of a published document (by its
// attempt, else its ObjectId _id); nil when this instance holds none.
func (b *Broker) trackerOf(id bson.RawValue, doc bson.Raw) *events.Tracker {
	if oid, ok := doc.Lookup("attempt").ObjectIDOK(); ok {
		return b.take(oid)
	}
	if oid, ok := id.ObjectIDOK(); ok {
		return b.take(oid)
	}
	return nil
}

// remoteWait returns, for a document another instance published with
// ?wait, a Tracker that counts this instance's writes of it and the
// function that reports them back once the hub has them (nil, nil for a
// document without wait, or this instance's own).
func (b *Broker) remoteWait(ctx context.Context, id bson.RawValue, doc bson.Raw) (func(), *events.Tracker) {
	if b.cl == nil {
		return nil, nil
	}
	ms, ok := doc.Lookup("wait").AsInt64OK()
	from, _ := doc.Lookup("instance").StringValueOK()
	if !ok || ms <= 0 || from == "" || from == b.instance {
		return nil, nil
	}
	oid, ok := doc.Lookup("attempt").ObjectIDOK()
	if !ok {
		if oid, ok = id.ObjectIDOK(); !ok {
			return nil, nil
		}
	}
	tr := events.NewTracker()
	return func() { b.cl.reportWait(ctx, oid, from, tr, time.Duration(ms)*time.Millisecond) }, tr
}

// hold keeps tr until the change stream brings document id.
func (b *Broker) hold(id primitive.ObjectID, tr *events.Tracker) {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.pending) >= b.max {
		for k, p := range b.pending {
			if now.After(p.exp) {
				delete(b.pending, k)
			}
		}
		if len(b.pending) >= b.max {
			b.log.Warn("too many publishes waiting for their change event; this one will not be counted", "pending", len(b.pending))
			return
		}
	}
	b.pending[id] = pendingPublish{tr: tr, exp: now.Add(b.ttl)}
}

// take returns and forgets the Tracker of document id, nil when none.
func (b *Broker) take(id primitive.ObjectID) *events.Tracker {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.pending[id]
	if !ok {
		return nil
	}
	delete(b.pending, id)
	return p.tr
}

// waiting returns the number of publishes waiting for their change event.
func (b *Broker) waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

// decodePublished reads the events of a document of the events collection.
// It applies the rules of POST /api/events, so that a document written by
// another program (mongosh, a backend writing directly) cannot send
// malformed events; data may be JSON text or a BSON array.
func decodePublished(doc bson.Raw) ([]events.Event, error) {
	arr, ok := doc.Lookup("events").ArrayOK()
	if !ok {
		return nil, fmt.Errorf("%w: no events array", ErrBadPublished)
	}
	vals, err := arr.Values()
	if err != nil || len(vals) == 0 {
		return nil, fmt.Errorf("%w: empty or malformed events array", ErrBadPublished)
	}
	evs := make([]events.Event, 0, len(vals))
	for i, v := range vals {
		d, ok := v.DocumentOK()
		if !ok {
			return nil, fmt.Errorf("%w: event %d is not a document", ErrBadPublished, i)
		}
		ev, err := decodeEvent(d)
		if err != nil {
			return nil, fmt.Errorf("%w: event %d: %v", ErrBadPublished, i, err)
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

func decodeEvent(d bson.Raw) (events.Event, error) {
	var ev events.Event
	name, _ := d.Lookup("type").StringValueOK()
	t, ok := events.ParseType(name)
	if !ok {
		return ev, fmt.Errorf("unknown type %q", name)
	}
	ev.Type = t
	id, user := d.Lookup("id"), d.Lookup("user")
	if t.PerUser() {
		if ev.User, ok = objectIDHex(user); !ok {
			return ev, fmt.Errorf("user is not an ObjectId")
		}
		ev.ID = idText(id)
	} else {
		if user.Type != 0 {
			return ev, fmt.Errorf("user is only for notification")
		}
		if ev.ID, ok = objectIDHex(id); !ok {
			return ev, fmt.Errorf("id is not an ObjectId")
		}
	}
	switch data := d.Lookup("data"); data.Type {
	case 0:
	case bson.TypeString:
		var buf bytes.Buffer
		if err := json.Compact(&buf, []byte(data.StringValue())); err != nil || buf.Len() == 0 || buf.Bytes()[0] != '[' || !utf8.Valid(buf.Bytes()) {
			return ev, fmt.Errorf("data is not a JSON array")
		}
		if buf.String() != "[]" {
			ev.Data = json.RawMessage(buf.Bytes())
		}
	case bson.TypeArray:
		if vals, _ := data.Array().Values(); len(vals) > 0 {
			ev.Data = appendJSON(nil, data)
		}
	default:
		return ev, fmt.Errorf("data is not an array")
	}
	return ev, nil
}
