package mongodb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/airlay/airlay/events"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/mongo/readconcern"
)

// Source is the change stream of one instance: one stream over the whole
// database, filtered on the server to the configured collections and
// operations, feeding the hub.
//
// Position. It keeps the resume token of the last change it read and saves
// it under the instance's name, so that a restart continues there: after a
// change that passed the filter (at most every SaveInterval), every
// TokenRefresh when only the stream's position moved (other writes of the
// database, other instances' saves: the saved token stays inside the
// oplog), and when it stops. An idle database costs no writes.
//
// Failures. A resumable error is resumed once by the driver; if that fails
// too, the Source reopens the stream after the same token, with backoff
// from RetryMin to RetryMax that is reset only by a successful read, so no
// change is skipped or delivered twice. An event the server cannot send
// (over 16 MB, BSONObjectTooLarge) comes in fragments that the Source
// reassembles where the server can split it ($changeStreamSplitLargeEvent,
// MongoDB 6.0.9+ and 7.0+); where it cannot, the event is skipped after
// PoisonTries failed reads at the same position, logged and counted. When
// the token is older than the oplog (history lost), it logs an error,
// counts it and starts from now.
//
// Lookups. The stream does not ask for fullDocument: updateLookup; an
// update that a mapping turns into an event and whose mapping reads the
// document makes one find by its documentKey (Source.lookup).
type Source struct {
	db     *mongo.Database
	cfg    *Config
	log    *slog.Logger
	m      *metrics
	broker *Broker
	tokens *mongo.Collection
	rules  map[string][]rule // by collection
	now    func() time.Time

	split atomic.Bool // ask the server to split events over 16 MB (until it refuses the stage)

	state   atomic.Pointer[error] // nil: up
	started atomic.Bool

	// rebuilding: the stream reads the history_ttl before the start (see
	// rebuild) and has not caught up yet; Ready reports it.
	rebuilding atomic.Bool
	// live is the cluster time at the start: changes at or before it go
	// into the history only (no connection of this process attached
	// before them); later ones are delivered.
	live events.Stamp

	store      *Store // for revocation (the caches, the datasets collection); nil in some tests
	runCtx     context.Context
	revokeOnce sync.Once
	revokes    chan revocation
}

// ErrRebuilding is the readiness of a starting instance that is still
// reading the history of the last history_ttl from the change stream.
var ErrRebuilding = errors.New("change stream: rebuilding the history of recent events (history_ttl back), not caught up yet")

// rule is a Mapping with its finished value parsed.
type rule struct {
	*Mapping
	finished any
}

func newSource(db *mongo.Database, cfg *Config, m *metrics, b *Broker, log *slog.Logger) *Source {
	s := &Source{db: db, cfg: cfg, log: log, m: m, broker: b, tokens: db.Collection(cfg.Resume), rules: make(map[string][]rule), now: time.Now, runCtx: context.Background()}
	for i := range cfg.Sources {
		mp := &cfg.Sources[i]
		s.rules[mp.Collection] = append(s.rules[mp.Collection], rule{Mapping: mp, finished: mp.finishedValue()})
	}
	if cfg.TokenRefresh <= 0 {
		cfg.TokenRefresh = 5 * time.Minute
	}
	if cfg.PoisonTries <= 0 {
		cfg.PoisonTries = 3
	}
	s.split.Store(true)
	s.setDown(ErrNotStarted)
	return s
}

// Ready returns nil while the stream is open and answering, and caught up
// with the history it rebuilds at start-up; why not otherwise.
func (s *Source) Ready() error {
	if p := s.state.Load(); p != nil {
		return *p
	}
	if s.rebuilding.Load() {
		return ErrRebuilding
	}
	return nil
}

func (s *Source) setDown(err error) {
	s.state.Store(&err)
	s.m.streamUp.Set(0)
}

func (s *Source) setUp() {
	if s.state.Swap(nil) != nil {
		s.m.streamUp.Set(1)
	}
}

// position is where the stream is: the token of the last change read (or
// of the last batch, which moves with every oplog entry), and what was
// saved.
type position struct {
	token      bson.Raw
	startAfter bool // token is an invalidate's: reopen with startAfter
	saved      bson.Raw
	savedAt    time.Time
	changed    bool // a change that passed the filter was read since the last save
	readOK     bool // a read succeeded since the stream was last opened
	careful    bool // read one event per batch, to find the one that fails
	// startAt opens a stream with no token at this cluster time (the
	// rebuild of the history); nil: from now.
	startAt *primitive.Timestamp
}

// errCaughtUp ends a careful stream once it has read everything: the
// event that failed was read after all, reopen with full batches.
var errCaughtUp = errors.New("caught up")

// poisoned counts failed reads at one position with an error that the
// event itself causes (too large), to skip it after PoisonTries.
type poisoned struct {
	at    bson.Raw
	tries int
}

// Run delivers changes to hub until ctx ends; then it saves the token and
// returns ctx's error.
func (s *Source) Run(ctx context.Context, hub *events.Hub) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("mongodb: Source.Run called twice")
	}
	s.runCtx = ctx
	var pos position
	if ttl := hub.History().TTL(); ttl > 0 {
		s.startRebuild(ctx, hub, &pos, ttl)
	}
	wait := s.cfg.RetryMin
	for pos.startAt == nil {
		tok, after, err := s.loadToken(ctx)
		if err == nil {
			pos.token, pos.startAfter, pos.saved, pos.savedAt = tok, after, tok, s.now()
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.fail("load_token", fmt.Errorf("read resume token from %s: %w", s.cfg.Resume, err), wait)
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
		wait = min(2*wait, s.cfg.RetryMax)
	}
	switch {
	case pos.startAt != nil:
		s.log.Info("change stream: rebuilding the history from the stream", "instance", s.cfg.Instance, "from_cluster_time", pos.startAt.T, "back", time.Duration(s.live.T-pos.startAt.T)*time.Second)
	case pos.token != nil:
		// Without history there is nothing to prove; the gap says so for
		// any since all the same.
		hub.Gap(s.nowStamp())
		s.log.Info("change stream: resuming after the saved token", "instance", s.cfg.Instance)
	default:
		hub.Gap(s.nowStamp())
		s.log.Info("change stream: no saved token, starting from now", "instance", s.cfg.Instance)
	}
	s.ensureIndex(ctx)
	wait = s.cfg.RetryMin
	var bad poisoned
	for first := true; ; first = false {
		if !first {
			s.m.reopens.Inc()
		}
		pos.readOK = false
		err := s.watch(ctx, hub, &pos)
		if ctx.Err() != nil {
			s.setDown(errors.New("stopped"))
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.QueryTimeout)
			if !bytes.Equal(pos.token, pos.saved) {
				s.save(sctx, &pos)
			}
			cancel()
			return ctx.Err()
		}
		if pos.readOK {
			wait = s.cfg.RetryMin
		}
		switch {
		case err == nil: // the server closed the stream (invalidate): reopen
			s.log.Info("change stream invalidated; reopening after it")
			s.ensureIndex(ctx) // the database was dropped, and the index with it
			continue
		case historyLost(err) && pos.token == nil && pos.startAt != nil:
			// The oplog does not reach history_ttl back: rebuild from
			// its oldest entry (or, unknown, from half as far back).
			s.laterStart(ctx, hub, &pos)
			continue
		case historyLost(err):
			s.setDown(err) // until the stream is open again, from now
			s.m.historyLost.Inc()
			s.log.Error("change stream history lost: the resume token is older than the oplog; changes since then are lost; starting from now", "err", err)
			hub.Gap(s.nowStamp()) // every since before now may have missed an event
			pos = position{}
			s.save(ctx, &pos)
			continue
		case s.split.Load() && hasCode(err, codeUnrecognizedStage):
			s.split.Store(false)
			s.log.Info("change stream: the server cannot split large events ($changeStreamSplitLargeEvent needs MongoDB 6.0.9+ or 7.0+); an event over 16 MB will be skipped", "err", err)
			continue
		case errors.Is(err, errCaughtUp):
			pos.careful = false
			continue
		case hasCode(err, codeTooLarge, codeSplitFailed):
			// A batch fails as a whole: read one event per batch from now
			// on, so that the changes before the one that fails are
			// delivered and the position stops right before it.
			if bad.at == nil || !bytes.Equal(bad.at, pos.token) {
				bad = poisoned{at: bytes.Clone(pos.token)}
			}
			pos.careful = true
			bad.tries++
			if bad.tries >= s.cfg.PoisonTries {
				serr := s.skipEvent(ctx, hub, &pos, err)
				if serr == nil {
					pos.careful, bad = false, poisoned{}
					continue
				}
				err = fmt.Errorf("%w (and skipping the event failed: %v)", err, serr)
			}
		}
		s.fail("watch", err, wait)
		if !sleep(ctx, wait) {
			continue // ctx ended: save and return above
		}
		wait = min(2*wait, s.cfg.RetryMax)
	}
}

func (s *Source) fail(op string, err error, retry time.Duration) {
	s.setDown(err)
	s.m.errors.WithLabelValues(op).Inc()
	s.log.Warn("change stream down", "err", err, "retry_in", retry)
}

// options returns the change stream options to open after pos.
func (s *Source) options(pos *position) *options.ChangeStreamOptions {
	opts := options.ChangeStream().SetMaxAwaitTime(s.cfg.MaxAwait)
	if pos.careful {
		opts.SetBatchSize(1)
	}
	if pos.token != nil {
		if pos.startAfter {
			opts.SetStartAfter(pos.token)
		} else {
			opts.SetResumeAfter(pos.token)
		}
	} else if pos.startAt != nil {
		opts.SetStartAtOperationTime(pos.startAt)
	}
	return opts
}

// startRebuild makes the stream start history_ttl before now (MongoDB's
// clock), so that the history holds what happened before this instance
// started, as far as the oplog still has it: a client that comes back
// after a restart or from another instance recovers here. The saved
// resume token is not needed for that (no connection of this process
// missed anything before it started). Until the stream has caught up,
// Ready reports ErrRebuilding.
func (s *Source) startRebuild(ctx context.Context, hub *events.Hub, pos *position, ttl time.Duration) {
	s.live = s.clusterNow(ctx)
	back := uint32(max(1, ttl/time.Second))
	from := primitive.Timestamp{T: s.live.T - min(back, s.live.T-1), I: 0}
	pos.startAt = &from
	s.rebuilding.Store(true)
	hub.Gap(before(from)) // a since before the window cannot be proven
}

// laterStart moves the start of the rebuild to the oldest entry of the
// oplog (where a stream can still start), or halfway to now when the
// oplog cannot be read; the history's gap moves with it.
func (s *Source) laterStart(ctx context.Context, hub *events.Hub, pos *position) {
	from := *pos.startAt
	// Just after the oldest entry, which may go any moment.
	if oldest, ok := s.oldestOplog(ctx); ok && (primitive.Timestamp{T: oldest.T, I: oldest.I + 1}).After(from) {
		from = primitive.Timestamp{T: oldest.T, I: oldest.I + 1}
	} else {
		from.T += (s.live.T - from.T + 1) / 2
	}
	if live := (primitive.Timestamp{T: s.live.T, I: s.live.I}); from.After(live) {
		from = live
	}
	s.log.Info("change stream: the oplog does not reach history_ttl back; the rebuilt history starts at its oldest entry", "from_cluster_time", fmt.Sprintf("%d.%d", from.T, from.I))
	pos.startAt = &from
	hub.Gap(before(from))
}

// before is the stamp right before ts: a since at or before it is older
// than a stream that starts at ts.
func before(ts primitive.Timestamp) events.Stamp {
	if ts.I == 0 {
		return events.Stamp{T: ts.T - 1, I: 1<<32 - 1}
	}
	return events.Stamp{T: ts.T, I: ts.I - 1}
}

// oldestOplog reads the time of the oldest oplog entry (local.oplog.rs in
// natural order); ok is false when it cannot be read (no permission).
func (s *Source) oldestOplog(ctx context.Context) (primitive.Timestamp, bool) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	raw, err := s.db.Client().Database("local").Collection("oplog.rs").FindOne(ctx, bson.D{},
		options.FindOne().SetSort(bson.D{{Key: "$natural", Value: 1}}).SetProjection(bson.D{{Key: "ts", Value: 1}})).Raw()
	if err != nil {
		return primitive.Timestamp{}, false
	}
	t, i, ok := raw.Lookup("ts").TimestampOK()
	return primitive.Timestamp{T: t, I: i}, ok
}

// clusterNow is MongoDB's present cluster time (the operationTime of a
// ping), or this machine's clock 5 s back when MongoDB does not say.
func (s *Source) clusterNow(ctx context.Context) events.Stamp {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	if raw, err := s.db.RunCommand(ctx, bson.D{{Key: "ping", Value: 1}}).Raw(); err == nil {
		if t, i, ok := raw.Lookup("operationTime").TimestampOK(); ok {
			return events.Stamp{T: t, I: i}
		}
	}
	return events.Stamp{T: uint32(s.now().Add(-5 * time.Second).Unix())}
}

// watch opens the stream after pos and delivers until it fails or ends
// (nil: the server closed it after an invalidate).
func (s *Source) watch(ctx context.Context, hub *events.Hub, pos *position) error {
	octx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	cs, err := s.db.Watch(octx, pipeline(s.cfg, s.split.Load()), s.options(pos))
	cancel()
	if err != nil {
		return fmt.Errorf("watch %s: %w", s.db.Name(), err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.QueryTimeout)
		_ = cs.Close(cctx)
		cancel()
	}()
	if s.Ready() != nil {
		s.log.Info("change stream open", "database", s.db.Name(), "resumed", pos.token != nil, "split_large_events", s.split.Load())
	}
	if pos.token == nil {
		// Started from now: the stream's first position, so that a
		// failure before the first change reopens here, not later.
		if t := cs.ResumeToken(); t != nil {
			pos.token = bytes.Clone(t)
		}
	}
	s.setUp()
	var frag fragments
	opened := true // the first empty read is the aggregate's empty first batch
	// Each round trip is bounded: a getMore answers within MaxAwait, so a
	// server that stops answering is noticed (not ready, reopened after the
	// token) within MaxAwait+QueryTimeout instead of the driver's
	// server-selection timeout.
	for {
		tctx, cancel := context.WithTimeout(ctx, s.cfg.MaxAwait+s.cfg.QueryTimeout)
		got := cs.TryNext(tctx)
		cancel()
		if got {
			pos.readOK, opened = true, false
			raw, done, err := frag.add(cs.Current)
			if err != nil {
				return err
			}
			if !done {
				continue // the position stays before the event until its last fragment
			}
			op, err := s.deliver(ctx, hub, raw)
			if err != nil {
				return err
			}
			pos.token, pos.startAfter, pos.changed = bytes.Clone(cs.ResumeToken()), op == "invalidate", true
			s.maybeSave(ctx, pos)
			continue
		}
		if err := cs.Err(); err != nil {
			return fmt.Errorf("change stream of %s: %w", s.db.Name(), err)
		}
		if cs.ID() == 0 {
			return nil
		}
		first := opened
		opened = false
		if !first {
			pos.readOK = true
		}
		if frag.pending() {
			continue
		}
		s.m.caughtUp(s.now())
		if !first && s.rebuilding.CompareAndSwap(true, false) {
			s.log.Info("change stream: history rebuilt, caught up", "events", hub.History().Len())
		}
		if pos.careful && !first {
			return errCaughtUp
		}
		if t := cs.ResumeToken(); t != nil && !bytes.Equal(t, pos.token) {
			pos.token, pos.startAfter = bytes.Clone(t), false
		}
		s.setUp()
		s.maybeSave(ctx, pos)
	}
}

// fragments reassembles an event that the server split
// ($changeStreamSplitLargeEvent): fragment n of m holds some of the
// event's top-level fields; the event is complete with fragment m, and its
// resume token is that fragment's.
type fragments struct {
	next, of int
	fields   bson.D
}

func (f *fragments) pending() bool { return f.of > 0 }

// add takes one document of the stream; it returns the whole event when
// raw is one, or the last fragment of one.
func (f *fragments) add(raw bson.Raw) (bson.Raw, bool, error) {
	se, ok := raw.Lookup("splitEvent").DocumentOK()
	if !ok {
		if f.pending() {
			next, of := f.next, f.of
			*f = fragments{}
			return nil, false, fmt.Errorf("change stream: fragment %d of %d of a split event missing", next, of)
		}
		return raw, true, nil
	}
	n, _ := se.Lookup("fragment").AsInt64OK()
	of, _ := se.Lookup("of").AsInt64OK()
	if n == 1 {
		*f = fragments{next: 1, of: int(of)}
	}
	if int(n) != f.next || int(of) != f.of || of < 1 {
		next, wantOf := f.next, f.of
		*f = fragments{}
		return nil, false, fmt.Errorf("change stream: fragment %d of %d of a split event, want %d of %d", n, of, next, wantOf)
	}
	elems, err := raw.Elements()
	if err != nil {
		*f = fragments{}
		return nil, false, err
	}
	for _, e := range elems {
		switch e.Key() {
		case "splitEvent":
		case "_id":
			if n == of {
				f.fields = append(bson.D{{Key: "_id", Value: e.Value()}}, f.fields...)
			}
		default:
			f.fields = append(f.fields, bson.E{Key: e.Key(), Value: e.Value()})
		}
	}
	f.next++
	if int(n) < f.of {
		return nil, false, nil
	}
	whole, err := bson.Marshal(f.fields)
	*f = fragments{}
	return whole, err == nil, err
}

// skipEvent skips the event after pos that cannot be read (cause): a
// stream with the same filter and a projection small enough to read names
// it; it is logged, counted, and pos moves past it.
func (s *Source) skipEvent(ctx context.Context, hub *events.Hub, pos *position, cause error) error {
	p := bson.A{match(s.cfg), bson.D{{Key: "$project", Value: bson.D{
		{Key: "_id", Value: 1}, {Key: "operationType", Value: 1}, {Key: "ns", Value: 1}, {Key: "clusterTime", Value: 1}, {Key: "documentKey", Value: 1},
	}}}}
	octx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	cs, err := s.db.Watch(octx, p, s.options(pos))
	if err != nil {
		return err
	}
	defer func() { _ = cs.Close(context.WithoutCancel(octx)) }()
	tctx, cancel2 := context.WithTimeout(ctx, s.cfg.MaxAwait+s.cfg.QueryTimeout)
	got := cs.TryNext(tctx)
	cancel2()
	if !got {
		if err := cs.Err(); err != nil {
			return err
		}
		return errors.New("the event that fails is not found after the position")
	}
	ev := cs.Current
	coll, _ := ev.Lookup("ns", "coll").StringValueOK()
	op, _ := ev.Lookup("operationType").StringValueOK()
	t, i, _ := ev.Lookup("clusterTime").TimestampOK()
	s.m.noEvent(coll, whyTooLarge)
	s.log.Error("change stream: skipped a change event that cannot be read (over 16 MB); its event is lost",
		"collection", coll, "op", op, "id", idText(ev.Lookup("documentKey", "_id")), "cluster_time", fmt.Sprintf("%d.%d", t, i), "tries", s.cfg.PoisonTries, "err", cause)
	hub.Gap(events.Stamp{T: t, I: i}) // a since before the skipped event cannot be proven
	pos.token, pos.startAfter, pos.changed = bytes.Clone(cs.ResumeToken()), false, true
	s.save(ctx, pos)
	return nil
}

// nowStamp is a stamp after every change committed so far (by this
// machine's clock: cluster times are seconds of the servers' clocks).
func (s *Source) nowStamp() events.Stamp {
	return events.Stamp{T: uint32(s.now().Unix()), I: 1<<32 - 1}
}

// deliver maps one change and hands its events to the hub; it returns the
// change's operation type. An error (a lookup that failed) leaves the
// change unread: the stream reopens before it.
func (s *Source) deliver(ctx context.Context, hub *events.Hub, raw bson.Raw) (string, error) {
	c, err := parseChange(raw)
	if err != nil {
		s.m.errors.WithLabelValues("decode").Inc()
		s.m.noEvent("", whyUndecodable)
		s.log.Warn("change stream: unreadable change skipped", "err", err)
		return "", nil
	}
	if c.op == "invalidate" {
		return c.op, nil
	}
	s.m.changeRead(c.coll)
	s.m.seen(c.at)
	if !c.at.IsZero() {
		s.m.lag.Observe(max(0, s.now().Sub(c.at).Seconds()))
	}
	old := s.rebuilding.Load() && !s.live.Less(c.st) // before this instance started
	if c.coll == s.cfg.Messages && s.cfg.Messages != "" {
		if c.op == OpInsert && !old && s.broker != nil && s.broker.cl != nil {
			s.broker.cl.receive(c.doc, c.at)
		}
		return c.op, nil
	}
	if !old && (c.coll == s.cfg.Users || c.coll == s.cfg.Datasets) {
		s.noteRevocation(c)
	}
	if c.coll == s.cfg.Events {
		if c.op != OpInsert {
			s.m.noEvent(c.coll, whyNotSelected)
			return c.op, nil
		}
		evs, err := decodePublished(c.doc)
		var tr *events.Tracker
		var report func()
		if s.broker != nil {
			tr = s.broker.trackerOf(c.key, c.doc)
			if tr == nil && !old && err == nil {
				report, tr = s.broker.remoteWait(ctx, c.key, c.doc)
			}
		}
		if err != nil {
			s.m.errors.WithLabelValues("decode").Inc()
			s.m.noEvent(c.coll, whyNotPublish)
			s.log.Warn("change stream: document of the events collection skipped", "id", idText(c.key), "err", err)
			if tr != nil {
				hub.Deliver(nil, tr, c.st) // seal it: nothing to count
			}
			return c.op, nil
		}
		s.hand(hub, c, evs, tr)
		if report != nil {
			report()
		}
		return c.op, nil
	}
	var evs []events.Event
	why := whyNotSelected
	looked := false
	for _, r := range s.rules[c.coll] {
		ok, w := r.selects(c, r.finished)
		if ok && c.op == OpUpdate && r.needsLookup() {
			if !looked {
				looked = true
				if c.doc, err = s.lookup(ctx, c, raw); err != nil {
					return c.op, err
				}
			}
			if c.doc == nil {
				ok, w = false, whyDocumentGone
				s.log.Warn("change stream: the document of an update was deleted before its lookup; no event", "type", r.Type.String(), "collection", c.coll, "id", idText(c.key))
			}
		}
		var ev events.Event
		if ok {
			ev, ok, w = r.build(c)
		}
		if !ok {
			why = w
			if s.log.Enabled(ctx, slog.LevelDebug) {
				s.log.Debug("change makes no event", "type", r.Type.String(), "collection", c.coll, "op", c.op, "id", idText(c.key), "why", w)
			}
			continue
		}
		evs = append(evs, ev)
	}
	if len(evs) > 0 {
		s.hand(hub, c, evs, nil)
	} else {
		s.m.noEvent(c.coll, why)
	}
	return c.op, nil
}

// hand gives the events of change c to the hub: into the history only
// when c happened before this instance started (the rebuild), delivered
// otherwise.
func (s *Source) hand(hub *events.Hub, c *change, evs []events.Event, tr *events.Tracker) {
	if s.rebuilding.Load() && !s.live.Less(c.st) && tr == nil {
		hub.Remember(evs, c.st, c.at)
		return
	}
	hub.Deliver(evs, tr, c.st)
}

// lookup reads the current document of an update (what updateLookup would
// give): found by its documentKey (which holds the shard key on a sharded
// cluster), read concern majority; nil when it was deleted since.
func (s *Source) lookup(ctx context.Context, c *change, raw bson.Raw) (bson.Raw, error) {
	key, ok := raw.Lookup("documentKey").DocumentOK()
	if !ok {
		return nil, nil
	}
	s.m.lookups.WithLabelValues(c.coll).Inc()
	lctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	coll := s.db.Collection(c.coll, options.Collection().SetReadConcern(readconcern.Majority()))
	doc, err := coll.FindOne(lctx, key).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		s.m.errors.WithLabelValues("lookup").Inc()
		return nil, fmt.Errorf("look up the document of an update in %s: %w", c.coll, err)
	}
	return doc, nil
}

// maybeSave saves the position when a change was read (at most every
// SaveInterval), or when only the stream's position moved, every
// TokenRefresh (so that the saved token never falls out of the oplog).
// Writes that the filter drops (this and other instances' saves, other
// collections) do not trigger a save: they move the position with every
// batch, and saving on them would feed itself.
func (s *Source) maybeSave(ctx context.Context, pos *position) {
	since := s.now().Sub(pos.savedAt)
	switch {
	case pos.changed && since >= s.cfg.SaveInterval:
	case !bytes.Equal(pos.token, pos.saved) && since >= s.cfg.TokenRefresh:
	default:
		return
	}
	s.save(ctx, pos)
}

// save writes pos.token under the instance's name.
func (s *Source) save(ctx context.Context, pos *position) {
	pos.savedAt = s.now()
	sctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	var tok any = pos.token
	if pos.token == nil {
		tok = nil
	}
	_, err := s.tokens.UpdateOne(sctx, bson.D{{Key: "_id", Value: s.cfg.Instance}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "token", Value: tok}, {Key: "startAfter", Value: pos.startAfter}, {Key: "updatedAt", Value: primitive.NewDateTimeFromTime(pos.savedAt)}}}},
		options.Update().SetUpsert(true))
	if err != nil && ctx.Err() == nil { // not merely stopping: the final save follows
		s.m.errors.WithLabelValues("save_token").Inc()
		s.log.Warn("change stream: saving the resume token failed; will retry", "err", err)
	}
	if err == nil {
		s.m.tokenSaves.Inc()
		pos.saved, pos.changed = pos.token, false
	}
}

// loadToken reads the saved token of this instance; nil when there is none.
func (s *Source) loadToken(ctx context.Context) (bson.Raw, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	raw, err := s.tokens.FindOne(ctx, bson.D{{Key: "_id", Value: s.cfg.Instance}}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	tok, _ := raw.Lookup("token").DocumentOK()
	after, _ := raw.Lookup("startAfter").BooleanOK()
	return bytes.Clone(tok), after, nil
}

// ensureIndex keeps the TTL index of the events collection in step with
// events_ttl (see index.go). A failure is logged: publishing works without
// it, the collection only grows.
func (s *Source) ensureIndex(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	did, err := ensureTTLIndex(ctx, s.db, s.cfg.Events, s.cfg.EventsTTL)
	if err != nil {
		s.m.errors.WithLabelValues("create_index").Inc()
		s.log.Warn("events collection: the TTL index could not be created or updated (published events are not removed by age)", "collection", s.cfg.Events, "err", err)
		return
	}
	if did != "" {
		s.log.Info("events collection: TTL index "+did, "collection", s.cfg.Events, "events_ttl", s.cfg.EventsTTL)
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
