package mongodb

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/airlay/airlay/events"
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
// MongoDB acknowledged the write (majority); an error means nothing was
// written. A TTL index on createdAt removes old documents.
//
// ?wait counts: the instance that accepted the publish keeps the request's
// Tracker under the document's _id until its own change stream delivers the
// document (at most PendingTTL, at most PendingMax requests).
type Broker struct {
	coll     *mongo.Collection
	instance string
	timeout  time.Duration
	m        *metrics
	log      *slog.Logger

	mu      sync.Mutex
	pending map[primitive.ObjectID]pendingPublish
	max     int
	ttl     time.Duration
	now     func() time.Time
}

type pendingPublish struct {
	tr  *events.Tracker
	exp time.Time
}

var _ events.Broker = (*Broker)(nil)

func newBroker(db *mongo.Database, cfg *Config, m *metrics, log *slog.Logger) *Broker {
	wc := options.Collection().SetWriteConcern(writeconcern.Majority())
	return &Broker{
		coll:     db.Collection(cfg.Events, wc),
		instance: cfg.Instance,
		timeout:  cfg.QueryTimeout,
		m:        m,
		log:      log,
		pending:  make(map[primitive.ObjectID]pendingPublish),
		max:      cfg.PendingMax,
		ttl:      cfg.PendingTTL,
		now:      time.Now,
	}
}

// Publish writes evs as one document.
func (b *Broker) Publish(ctx context.Context, evs []events.Event, tr *events.Tracker) error {
	id := primitive.NewObjectID()
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
	doc := bson.D{{Key: "_id", Value: id}, {Key: "events", Value: list}, {Key: "createdAt", Value: primitive.NewDateTimeFromTime(b.now())}, {Key: "instance", Value: b.instance}}
	if tr != nil {
		b.hold(id, tr)
	}
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
		}
		b.m.errors.WithLabelValues("insert_event").Inc()
		return fmt.Errorf("insert into %s: %w", b.coll.Name(), err)
	}
	return nil
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
