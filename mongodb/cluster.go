package mongodb

// Instances that know each other, through two collections:
//
//	instances_collection (airlay_instances): one heartbeat document per
//	  live instance, {_id: name, seen: Date, started: Date, beat: N,
//	  connections: N, subscriptions: N}, rewritten every
//	  heartbeat_interval; an instance whose seen is older than
//	  instance_ttl has dropped out. A stopping instance deletes its own.
//	messages_collection (airlay_messages): what instances tell each other,
//	  one inserted document per message, read by every instance's change
//	  stream (the $match passes asks, to: "*", and the replies addressed
//	  to this instance only):
//	  {_id: ObjectId, kind: "ask", to: "*", from: name, topic, body, createdAt}
//	  {_id: ObjectId, kind: "reply", to: asker, from: name, ask: id, topic, body, createdAt}
//	  removed by a TTL index after 10 minutes.
//
// Ask is the reusable piece: send a body on a topic to every other live
// instance and gather their replies (presence uses it, /api/ask can). The
// ?wait counts of a publish travel the same way: the published document
// carries wait (milliseconds), and every other instance that delivers it
// replies on topic "wait" with its counts.

import (
	"context"
	"encoding/json"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/airlay/airlay/events"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// Message kinds and the topic of ?wait reports.
const (
	kindAsk   = "ask"
	kindReply = "reply"
	topicWait = "wait"
	toAll     = "*"
	// messagesTTL is how long a message document is kept (a TTL index).
	messagesTTL = 10 * time.Minute
	// maxHandlers bounds the asks answered at once (each in a goroutine);
	// past it an ask is not answered (the asker's wait ends at its
	// deadline) and a warning is logged.
	maxHandlers = 256
	// maxReports bounds the ?wait reports being prepared at once.
	maxReports = 4096
)

// cluster is this instance's side of the instances' coordination.
type cluster struct {
	cfg     *Config
	self    string
	started time.Time
	beats   *mongo.Collection
	msgs    *mongo.Collection
	db      *mongo.Database
	log     *slog.Logger
	m       *metrics
	now     func() time.Time

	local    events.Local
	handlers map[string]events.AskHandler
	sem      chan struct{}
	reports  chan struct{}

	mu    sync.Mutex
	live  map[string]events.Instance // other live instances, as of the latest read
	read  bool                       // the live set was read at least once
	asks  map[primitive.ObjectID]*asking
	waits map[primitive.ObjectID]*waiting

	ctx context.Context // Run's, for handlers
}

// asking is an Ask waiting for its replies.
type asking struct {
	want map[string]bool
	ch   chan events.InstanceReply
	gone chan string // instances that dropped out
}

// waiting is a publish with ?wait whose other instances' reports are
// expected.
type waiting struct {
	tr  *events.Tracker
	exp time.Time
}

func newCluster(db *mongo.Database, cfg *Config, m *metrics, log *slog.Logger) *cluster {
	return &cluster{
		cfg: cfg, self: cfg.Instance, started: time.Now(), db: db,
		beats: db.Collection(cfg.Instances), msgs: db.Collection(cfg.Messages),
		log: log, m: m, now: time.Now,
		handlers: make(map[string]events.AskHandler),
		sem:      make(chan struct{}, maxHandlers),
		reports:  make(chan struct{}, maxReports),
		live:     make(map[string]events.Instance),
		asks:     make(map[primitive.ObjectID]*asking),
		waits:    make(map[primitive.ObjectID]*waiting),
		ctx:      context.Background(),
	}
}

// run keeps the heartbeat and the live set until ctx ends; then it deletes
// this instance's heartbeat, so that it drops out at once.
func (c *cluster) run(ctx context.Context) {
	c.mu.Lock()
	c.ctx = ctx
	c.mu.Unlock()
	c.ensureIndex(ctx)
	c.beat(ctx)
	t := time.NewTicker(c.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.QueryTimeout)
			_, err := c.beats.DeleteOne(dctx, bson.D{{Key: "_id", Value: c.self}})
			cancel()
			if err != nil {
				c.log.Warn("instances: removing this instance's heartbeat failed; it drops out after instance_ttl", "err", err)
			}
			return
		case <-t.C:
			c.beat(ctx)
		}
	}
}

func (c *cluster) ensureIndex(ctx context.Context) {
	ictx, cancel := context.WithTimeout(ctx, c.cfg.QueryTimeout)
	defer cancel()
	if _, err := ensureTTLIndex(ictx, c.db, c.cfg.Messages, messagesTTL); err != nil {
		c.m.errors.WithLabelValues("create_index").Inc()
		c.log.Warn("messages collection: the TTL index could not be created", "collection", c.cfg.Messages, "err", err)
	}
	// Heartbeats of instances gone for a day (a crash leaves one behind).
	if _, err := c.beats.DeleteMany(ictx, bson.D{{Key: "seen", Value: bson.D{{Key: "$lt", Value: primitive.NewDateTimeFromTime(c.now().Add(-24 * time.Hour))}}}}); err != nil {
		c.log.Debug("instances: removing old heartbeats failed", "err", err)
	}
}

// beat writes this instance's heartbeat and reads the live set: two
// operations per heartbeat_interval.
func (c *cluster) beat(ctx context.Context) {
	var conns, subs int64
	if c.local != nil {
		conns, subs = c.local.Counts()
	}
	now := c.now()
	bctx, cancel := context.WithTimeout(ctx, c.cfg.QueryTimeout)
	defer cancel()
	_, err := c.beats.UpdateOne(bctx, bson.D{{Key: "_id", Value: c.self}}, bson.D{
		{Key: "$set", Value: bson.D{
			{Key: "seen", Value: primitive.NewDateTimeFromTime(now)},
			{Key: "started", Value: primitive.NewDateTimeFromTime(c.started)},
			{Key: "connections", Value: conns},
			{Key: "subscriptions", Value: subs},
		}},
		{Key: "$inc", Value: bson.D{{Key: "beat", Value: int64(1)}}},
	}, options.Update().SetUpsert(true))
	if err != nil {
		if ctx.Err() == nil {
			c.m.errors.WithLabelValues("heartbeat").Inc()
			c.log.Warn("instances: heartbeat failed", "err", err)
		}
	} else {
		c.m.heartbeats.Inc()
	}
	cur, err := c.beats.Find(bctx, bson.D{{Key: "seen", Value: bson.D{{Key: "$gt", Value: primitive.NewDateTimeFromTime(now.Add(-c.cfg.InstanceTTL))}}}})
	if err != nil {
		if ctx.Err() == nil {
			c.m.errors.WithLabelValues("read_instances").Inc()
			c.log.Warn("instances: reading the live instances failed", "err", err)
		}
		c.expire(now)
		return
	}
	var docs []struct {
		Name          string    `bson:"_id"`
		Seen          time.Time `bson:"seen"`
		Started       time.Time `bson:"started"`
		Connections   int64     `bson:"connections"`
		Subscriptions int64     `bson:"subscriptions"`
	}
	if err := cur.All(bctx, &docs); err != nil {
		c.log.Warn("instances: reading the live instances failed", "err", err)
		c.expire(now)
		return
	}
	live := make(map[string]events.Instance, len(docs))
	for _, d := range docs {
		if d.Name == c.self || now.Sub(d.Seen) > c.cfg.InstanceTTL {
			continue
		}
		live[d.Name] = events.Instance{Name: d.Name, Seen: d.Seen, Started: d.Started, Connections: d.Connections, Subscriptions: d.Subscriptions}
	}
	c.setLive(live, now)
}

// expire drops, from the live set kept, the instances whose latest
// heartbeat read is older than instance_ttl (the set could not be read).
func (c *cluster) expire(now time.Time) {
	c.mu.Lock()
	live := make(map[string]events.Instance, len(c.live))
	for n, in := range c.live {
		if now.Sub(in.Seen) <= c.cfg.InstanceTTL {
			live[n] = in
		}
	}
	c.mu.Unlock()
	c.setLive(live, now)
}

// setLive replaces the live set; asks and waits stop waiting for the
// instances that dropped out.
func (c *cluster) setLive(live map[string]events.Instance, now time.Time) {
	c.mu.Lock()
	var gone []string
	for n := range c.live {
		if _, ok := live[n]; !ok {
			gone = append(gone, n)
		}
	}
	c.live, c.read = live, true
	var trs []*events.Tracker
	for id, w := range c.waits {
		if now.After(w.exp) {
			delete(c.waits, id)
			continue
		}
		trs = append(trs, w.tr)
	}
	var asks []*asking
	for _, a := range c.asks {
		asks = append(asks, a)
	}
	c.mu.Unlock()
	c.m.instances.Set(float64(len(live) + 1))
	for _, n := range gone {
		c.log.Info("instances: an instance dropped out (no heartbeat within instance_ttl, or it stopped)", "instance", n)
		for _, tr := range trs {
			tr.Forget(n)
		}
		for _, a := range asks {
			select {
			case a.gone <- n:
			default:
			}
		}
	}
}

// others returns the names of the other live instances.
func (c *cluster) others() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.live))
	for n := range c.live {
		out = append(out, n)
	}
	return out
}

// instances returns the live instances, this one first.
func (c *cluster) instances() []events.Instance {
	var conns, subs int64
	if c.local != nil {
		conns, subs = c.local.Counts()
	}
	out := []events.Instance{{Name: c.self, Started: c.started, Seen: c.now(), Connections: conns, Subscriptions: subs, Self: true}}
	c.mu.Lock()
	for _, in := range c.live {
		out = append(out, in)
	}
	c.mu.Unlock()
	sort.Slice(out[1:], func(i, j int) bool { return out[1+i].Name < out[1+j].Name })
	return out
}

// expectWait registers a publish's Tracker for the reports of the other
// live instances; it returns the wait to write into the document (0: no
// other instance, nothing to ask).
func (c *cluster) expectWait(id primitive.ObjectID, tr *events.Tracker) time.Duration {
	wait := tr.Wait()
	if wait <= 0 {
		return 0
	}
	others := c.others()
	if len(others) == 0 {
		return 0
	}
	tr.Expect(others)
	c.mu.Lock()
	if len(c.waits) >= c.cfg.PendingMax {
		c.mu.Unlock()
		for _, n := range others {
			tr.Forget(n)
		}
		c.log.Warn("too many publishes waiting for other instances' counts; this one counts this instance only")
		return 0
	}
	c.waits[id] = &waiting{tr: tr, exp: c.now().Add(wait + c.cfg.InstanceTTL)}
	c.mu.Unlock()
	return wait
}

// dropWait forgets a publish's registration (its insert failed).
func (c *cluster) dropWait(id primitive.ObjectID) {
	c.mu.Lock()
	delete(c.waits, id)
	c.mu.Unlock()
}

// reportWait runs on an instance that delivered another instance's
// publish with wait: it replies with its counts once its writes are done,
// or a little before the publisher's wait ends (margin: a fifth of the
// wait, at most a second), with what is pending then.
func (c *cluster) reportWait(ctx context.Context, id primitive.ObjectID, to string, tr *events.Tracker, wait time.Duration) {
	select {
	case c.reports <- struct{}{}:
	default:
		c.log.Warn("too many ?wait reports under way; one is not sent (the publisher counts this instance in neither delivered nor pending)")
		return
	}
	go func() {
		defer func() { <-c.reports }()
		margin := min(wait/5, time.Second)
		t := time.NewTimer(max(wait-margin, 0))
		select {
		case <-tr.Done():
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		d, p := tr.Counts()
		body, _ := json.Marshal(waitReport{Delivered: d, Pending: p})
		c.send(ctx, kindReply, to, topicWait, id, body)
	}()
}

type waitReport struct {
	Delivered int64 `json:"delivered"`
	Pending   int64 `json:"pending"`
}

// send inserts one message.
func (c *cluster) send(ctx context.Context, kind, to, topic string, ask primitive.ObjectID, body []byte) (primitive.ObjectID, error) {
	id := primitive.NewObjectID()
	doc := bson.D{{Key: "_id", Value: id}, {Key: "kind", Value: kind}, {Key: "to", Value: to}, {Key: "from", Value: c.self}, {Key: "topic", Value: topic}}
	if kind == kindReply {
		doc = append(doc, bson.E{Key: "ask", Value: ask})
	}
	doc = append(doc, bson.E{Key: "body", Value: string(body)}, bson.E{Key: "createdAt", Value: primitive.NewDateTimeFromTime(c.now())})
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.QueryTimeout)
	defer cancel()
	if _, err := c.msgs.InsertOne(sctx, doc); err != nil {
		c.m.errors.WithLabelValues("insert_message").Inc()
		c.log.Warn("instances: sending a message failed", "kind", kind, "topic", topic, "to", to, "err", err)
		return id, err
	}
	c.m.messages.WithLabelValues(kind).Inc()
	return id, nil
}

// ask: see events.ClusterBroker.AskInstances.
func (c *cluster) ask(ctx context.Context, topic string, body []byte, each func(events.InstanceReply) bool) (int, error) {
	others := c.others()
	if len(others) == 0 {
		return 0, nil
	}
	a := &asking{want: make(map[string]bool, len(others)), ch: make(chan events.InstanceReply, len(others)), gone: make(chan string, len(others))}
	for _, n := range others {
		a.want[n] = true
	}
	// The id is known only after the insert, but a reply can come back
	// before InsertOne returns: register under a fresh id first.
	id := primitive.NewObjectID()
	c.mu.Lock()
	c.asks[id] = a
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.asks, id)
		c.mu.Unlock()
	}()
	doc := bson.D{{Key: "_id", Value: id}, {Key: "kind", Value: kindAsk}, {Key: "to", Value: toAll}, {Key: "from", Value: c.self},
		{Key: "topic", Value: topic}, {Key: "body", Value: string(body)}, {Key: "createdAt", Value: primitive.NewDateTimeFromTime(c.now())}}
	ictx, cancel := context.WithTimeout(ctx, c.cfg.QueryTimeout)
	_, err := c.msgs.InsertOne(ictx, doc)
	cancel()
	if err != nil {
		c.m.errors.WithLabelValues("insert_message").Inc()
		return len(others), err
	}
	c.m.messages.WithLabelValues(kindAsk).Inc()
	for len(a.want) > 0 {
		select {
		case r := <-a.ch:
			if !a.want[r.Instance] {
				continue
			}
			delete(a.want, r.Instance)
			if !each(r) {
				return len(others), nil
			}
		case n := <-a.gone:
			delete(a.want, n)
		case <-ctx.Done():
			return len(others), nil
		}
	}
	return len(others), nil
}

// receive takes a message document from the change stream. It never
// blocks the stream: handlers run in goroutines of their own.
func (c *cluster) receive(doc bson.Raw, at time.Time) {
	kind, _ := doc.Lookup("kind").StringValueOK()
	from, _ := doc.Lookup("from").StringValueOK()
	topic, _ := doc.Lookup("topic").StringValueOK()
	body, _ := doc.Lookup("body").StringValueOK()
	if from == "" || from == c.self {
		return
	}
	if !at.IsZero() && c.now().Sub(at) > time.Minute {
		return // an old message (a stream that resumed after a while)
	}
	switch kind {
	case kindReply:
		if to, _ := doc.Lookup("to").StringValueOK(); to != c.self {
			return
		}
		ask, ok := doc.Lookup("ask").ObjectIDOK()
		if !ok {
			return
		}
		c.mu.Lock()
		a := c.asks[ask]
		w := c.waits[ask]
		c.mu.Unlock()
		switch {
		case topic == topicWait && w != nil:
			var r waitReport
			if json.Unmarshal([]byte(body), &r) == nil {
				w.tr.Report(from, r.Delivered, r.Pending)
			}
			select {
			case <-w.tr.Done(): // every report in: nothing more to route to it
				c.mu.Lock()
				delete(c.waits, ask)
				c.mu.Unlock()
			default:
			}
		case a != nil:
			select {
			case a.ch <- events.InstanceReply{Instance: from, Body: []byte(body)}:
			default: // more replies than asked instances: not ours
			}
		}
	case kindAsk:
		h := c.handlers[topic]
		if h == nil {
			return
		}
		id, ok := doc.Lookup("_id").ObjectIDOK()
		if !ok {
			return
		}
		select {
		case c.sem <- struct{}{}:
		default:
			c.log.Warn("instances: too many asks being answered; one is not answered", "topic", topic, "from", from)
			return
		}
		c.mu.Lock()
		ctx := c.ctx
		c.mu.Unlock()
		go func() {
			defer func() { <-c.sem }()
			hctx, cancel := context.WithTimeout(ctx, time.Minute)
			out := h(hctx, from, []byte(body))
			cancel()
			_, _ = c.send(ctx, kindReply, from, topic, id, out)
		}()
	}
}
