package mongodb

import (
	"context"
	"errors"
	"time"

	"github.com/airlay/airlay/events"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// Asking a frontend across instances (POST /api/ask). The request travels
// as a publish through the events collection, so every instance's change
// stream hands it to its own request subscribers; each instance adds what
// it delivered to the request's document in <events>_asks. A reply on any
// instance is inserted into <events>_replies under the request id: the
// unique _id makes the first reply win everywhere. The asking instance
// reads the reply there (or takes it at once when the reply came to one
// of its own connections).
//
// Not built yet (it needs the instance heartbeats of issue 14): ending the
// wait for deliveries as soon as every live instance has reported. Until
// then the asking instance answers 409 when no instance reported a
// delivery within askReachWindow.

// askReachWindow bounds how long the asking instance waits for some
// instance to report a delivery before it answers 409.
const askReachWindow = 2 * time.Second

// askPoll is how often the asking instance reads the reply and delivery
// counts of its open requests.
const askPoll = 10 * time.Millisecond

var _ events.AskCounter = (*Broker)(nil)

func (b *Broker) asksColl() *mongo.Collection {
	return b.coll.Database().Collection(b.coll.Name() + "_asks")
}
func (b *Broker) repliesColl() *mongo.Collection {
	return b.coll.Database().Collection(b.coll.Name() + "_replies")
}

// Ask writes the request's document, publishes the request event and
// waits until some instance reports that it delivered it (reached), at
// most askReachWindow and ctx's deadline; then it watches for the reply in
// the background until ctx's deadline.
func (b *Broker) Ask(ctx context.Context, asks *events.Asks, ev events.Event) (int, error) {
	b.askIndexes.Do(b.ensureAskIndexes)
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = b.now().Add(time.Minute)
	}
	wctx, cancel := context.WithTimeout(ctx, b.timeout)
	_, err := b.asksColl().InsertOne(wctx, bson.D{{Key: "_id", Value: ev.ID}, {Key: "user", Value: ev.User}, {Key: "instance", Value: b.instance},
		{Key: "reached", Value: 0}, {Key: "expires", Value: deadline}})
	cancel()
	if err != nil {
		b.m.errors.WithLabelValues("insert_ask").Inc()
		return 0, err
	}
	if err := b.Publish(ctx, []events.Event{ev}, nil); err != nil {
		return 0, err
	}
	reachBy := b.now().Add(askReachWindow)
	if deadline.Before(reachBy) {
		reachBy = deadline
	}
	reached := 0
	for {
		var doc struct {
			Reached int `bson:"reached"`
		}
		rctx, cancel := context.WithTimeout(ctx, b.timeout)
		err := b.asksColl().FindOne(rctx, bson.D{{Key: "_id", Value: ev.ID}}).Decode(&doc)
		cancel()
		if err == nil && doc.Reached > 0 {
			reached = doc.Reached
			break
		}
		if !b.now().Before(reachBy) || ctx.Err() != nil {
			break
		}
		time.Sleep(askPoll)
	}
	if reached == 0 {
		b.forgetAsk(ev.ID)
		return 0, nil
	}
	go b.watchReply(asks, ev, deadline)
	return reached, nil
}

// watchReply reads the reply of ev until deadline and hands it to asks;
// then it forgets the request's document.
func (b *Broker) watchReply(asks *events.Asks, ev events.Event, deadline time.Time) {
	defer b.forgetAsk(ev.ID)
	for b.now().Before(deadline) && asks.IsOpen(ev.User, ev.ID) {
		var doc struct {
			Data string `bson:"data"`
			Conn string `bson:"conn"`
		}
		ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
		err := b.repliesColl().FindOne(ctx, bson.D{{Key: "_id", Value: ev.ID}}).Decode(&doc)
		cancel()
		if err == nil {
			asks.Take(ev.User, ev.ID, events.AskReply{Data: []byte(doc.Data), Conn: doc.Conn})
			return
		}
		time.Sleep(askPoll)
	}
}

// ensureAskIndexes makes MongoDB remove request and reply documents at
// their "expires" (what an instance that stopped left behind).
func (b *Broker) ensureAskIndexes() {
	for _, c := range []*mongo.Collection{b.asksColl(), b.repliesColl()} {
		ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
		_, err := c.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "expires", Value: 1}}, Options: options.Index().SetExpireAfterSeconds(0).SetName("expires_ttl")})
		cancel()
		if err != nil {
			b.log.Warn("could not create the TTL index", "collection", c.Name(), "err", err)
		}
	}
}

var _ events.AskCloser = (*Broker)(nil)

// Expire settles a request that timed out: a tombstone under its id in
// the replies collection makes every later reply a duplicate (code 5);
// when a reply is there already, it is handed to asks and stands.
func (b *Broker) Expire(ctx context.Context, asks *events.Asks, a *events.Ask) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	_, err := b.repliesColl().InsertOne(ctx, bson.D{{Key: "_id", Value: a.ID}, {Key: "timedOut", Value: true},
		{Key: "instance", Value: b.instance}, {Key: "expires", Value: b.now().Add(time.Minute)}})
	if err == nil {
		return nil
	}
	if !mongo.IsDuplicateKeyError(err) {
		b.m.errors.WithLabelValues("insert_reply").Inc()
		return err
	}
	var doc struct {
		Data     string `bson:"data"`
		Conn     string `bson:"conn"`
		TimedOut bool   `bson:"timedOut"`
	}
	if err := b.repliesColl().FindOne(ctx, bson.D{{Key: "_id", Value: a.ID}}).Decode(&doc); err != nil {
		return err
	}
	if !doc.TimedOut {
		asks.Take(a.User, a.ID, events.AskReply{Data: []byte(doc.Data), Conn: doc.Conn})
	}
	return nil
}

// forgetAsk deletes the request's document: no reply is taken for it any
// more.
func (b *Broker) forgetAsk(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	if _, err := b.asksColl().DeleteOne(ctx, bson.D{{Key: "_id", Value: id}}); err != nil {
		b.m.errors.WithLabelValues("delete_ask").Inc()
	}
}

// Delivered adds what this instance delivered of a request to its
// document (in the background: it runs under the hub's lock).
func (b *Broker) Delivered(ev *events.Event, n int) {
	if n == 0 {
		return
	}
	id := ev.ID
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
		defer cancel()
		if _, err := b.asksColl().UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "reached", Value: n}}}}); err != nil {
			b.m.errors.WithLabelValues("update_ask").Inc()
		}
	}()
}

// Reply takes r when id is an open request of user (its document is there
// and not expired) and no reply was inserted for it before (the unique
// _id of the replies collection: the first reply wins everywhere).
func (b *Broker) Reply(ctx context.Context, asks *events.Asks, user, id string, r events.AskReply) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	var ask struct {
		Instance string    `bson:"instance"`
		Expires  time.Time `bson:"expires"`
	}
	err := b.asksColl().FindOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "user", Value: user}}).Decode(&ask)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return false, nil
	}
	if err != nil {
		b.m.errors.WithLabelValues("find_ask").Inc()
		return false, err
	}
	if !b.now().Before(ask.Expires) {
		return false, nil
	}
	_, err = b.repliesColl().InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "user", Value: user}, {Key: "data", Value: string(r.Data)},
		{Key: "conn", Value: r.Conn}, {Key: "instance", Value: b.instance}, {Key: "expires", Value: ask.Expires.Add(time.Minute)}})
	if mongo.IsDuplicateKeyError(err) {
		return false, nil
	}
	if err != nil {
		b.m.errors.WithLabelValues("insert_reply").Inc()
		return false, err
	}
	if ask.Instance == b.instance {
		asks.Take(user, id, r) // this instance asked: at once, not at the next read
	}
	return true, nil
}
