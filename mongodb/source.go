package mongodb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/airlay/airlay/events"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// Source is the change stream of one instance: one stream over the whole
// database, filtered on the server to the configured collections and
// operations, feeding the hub. It keeps the resume token of the last change
// it delivered and saves it (at most every SaveInterval, and when it
// stops) under the instance's name, so that a restart continues there.
//
// A resumable error is resumed once by the driver; if that fails too, the
// Source reopens the stream after the same token, with backoff from
// RetryMin to RetryMax, so no change is skipped or delivered twice. When
// the token is older than the oplog (history lost), it logs an error,
// counts it and starts from now.
type Source struct {
	db       *mongo.Database
	cfg      *Config
	log      *slog.Logger
	m        *metrics
	broker   *Broker
	tokens   *mongo.Collection
	rules    map[string][]rule // by collection
	pipeline bson.A
	lookup   bool
	now      func() time.Time

	state   atomic.Pointer[error] // nil: up
	started atomic.Bool
}

// rule is a Mapping with its finished value parsed.
type rule struct {
	*Mapping
	finished any
}

var _ events.Source = (*Source)(nil)

func newSource(db *mongo.Database, cfg *Config, m *metrics, b *Broker, log *slog.Logger) *Source {
	s := &Source{db: db, cfg: cfg, log: log, m: m, broker: b, tokens: db.Collection(cfg.Resume), rules: make(map[string][]rule), now: time.Now}
	for i := range cfg.Sources {
		mp := &cfg.Sources[i]
		s.rules[mp.Collection] = append(s.rules[mp.Collection], rule{Mapping: mp, finished: mp.finishedValue()})
	}
	s.pipeline, s.lookup = pipeline(cfg)
	s.setDown(ErrNotStarted)
	return s
}

// Ready returns nil while the stream is open and answering, and why not
// otherwise.
func (s *Source) Ready() error {
	if p := s.state.Load(); p != nil {
		return *p
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

// position is where the stream is: the token of the last change delivered
// (or of the last empty batch), and what was saved.
type position struct {
	token      bson.Raw
	startAfter bool // token is an invalidate's: reopen with startAfter
	saved      bson.Raw
	savedAt    time.Time
	dirty      bool // token changed since the last save
}

// Run delivers changes to hub until ctx ends; then it saves the token and
// returns ctx's error.
func (s *Source) Run(ctx context.Context, hub *events.Hub) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("mongodb: Source.Run called twice")
	}
	var pos position
	wait := s.cfg.RetryMin
	for {
		tok, after, err := s.loadToken(ctx)
		if err == nil {
			pos.token, pos.startAfter, pos.saved = tok, after, tok
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
	if pos.token != nil {
		s.log.Info("change stream: resuming after the saved token", "instance", s.cfg.Instance)
	} else {
		s.log.Info("change stream: no saved token, starting from now", "instance", s.cfg.Instance)
	}
	s.ensureIndex(ctx)
	wait = s.cfg.RetryMin
	for {
		opened, err := s.watch(ctx, hub, &pos)
		if ctx.Err() != nil {
			s.setDown(errors.New("stopped"))
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.QueryTimeout)
			s.save(sctx, &pos)
			cancel()
			return ctx.Err()
		}
		switch {
		case err == nil: // the server closed the stream (invalidate): reopen
			s.log.Info("change stream invalidated; reopening after it")
			s.ensureIndex(ctx) // the database was dropped, and the index with it
			continue
		case historyLost(err):
			s.setDown(err) // until the stream is open again, from now
			s.m.historyLost.Inc()
			s.log.Error("change stream history lost: the resume token is older than the oplog; changes since then are lost; starting from now", "err", err)
			pos = position{dirty: true}
			s.save(ctx, &pos)
			continue
		}
		if opened {
			wait = s.cfg.RetryMin
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

// watch opens the stream after pos and delivers until it fails or ends.
// opened reports whether it got as far as an open stream.
func (s *Source) watch(ctx context.Context, hub *events.Hub, pos *position) (opened bool, err error) {
	opts := options.ChangeStream().SetMaxAwaitTime(s.cfg.MaxAwait)
	if s.lookup {
		opts.SetFullDocument(options.UpdateLookup)
	}
	if pos.token != nil {
		if pos.startAfter {
			opts.SetStartAfter(pos.token)
		} else {
			opts.SetResumeAfter(pos.token)
		}
	}
	octx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	cs, err := s.db.Watch(octx, s.pipeline, opts)
	cancel()
	if err != nil {
		return false, fmt.Errorf("watch %s: %w", s.db.Name(), err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.QueryTimeout)
		_ = cs.Close(cctx)
		cancel()
	}()
	if s.Ready() != nil {
		s.log.Info("change stream open", "database", s.db.Name(), "resumed", pos.token != nil)
	}
	s.setUp()
	// Each round trip is bounded: a getMore answers within MaxAwait, so a
	// server that stops answering is noticed (not ready, reopened after the
	// token) within MaxAwait+QueryTimeout instead of the driver's
	// server-selection timeout.
	for {
		tctx, cancel := context.WithTimeout(ctx, s.cfg.MaxAwait+s.cfg.QueryTimeout)
		got := cs.TryNext(tctx)
		cancel()
		if got {
			op := s.deliver(hub, cs.Current)
			pos.token, pos.startAfter, pos.dirty = bytes.Clone(cs.ResumeToken()), op == "invalidate", true
			s.maybeSave(ctx, pos)
			continue
		}
		if err := cs.Err(); err != nil {
			return true, fmt.Errorf("change stream of %s: %w", s.db.Name(), err)
		}
		if cs.ID() == 0 {
			return true, nil
		}
		if t := cs.ResumeToken(); t != nil && !bytes.Equal(t, pos.token) {
			pos.token, pos.startAfter, pos.dirty = bytes.Clone(t), false, true
		}
		s.setUp()
		s.maybeSave(ctx, pos)
	}
}

// deliver maps one change and hands its events to the hub; it returns the
// change's operation type.
func (s *Source) deliver(hub *events.Hub, raw bson.Raw) string {
	c, err := parseChange(raw)
	if err != nil {
		s.m.errors.WithLabelValues("decode").Inc()
		s.log.Warn("change stream: unreadable change skipped", "err", err)
		return ""
	}
	if c.op == "invalidate" {
		return c.op
	}
	s.m.changeRead(c.coll)
	if !c.at.IsZero() {
		s.m.lag.Observe(max(0, s.now().Sub(c.at).Seconds()))
	}
	if c.coll == s.cfg.Events {
		if c.op != OpInsert {
			return c.op
		}
		evs, err := decodePublished(c.doc)
		var tr *events.Tracker
		if s.broker != nil {
			tr = s.broker.trackerOf(c.key, c.doc)
		}
		if err != nil {
			s.m.errors.WithLabelValues("decode").Inc()
			s.log.Warn("change stream: document of the events collection skipped", "id", idText(c.key), "err", err)
			if tr != nil {
				hub.Publish(nil, tr) // seal it: nothing to count
			}
			return c.op
		}
		hub.Publish(evs, tr)
		return c.op
	}
	var evs []events.Event
	for _, r := range s.rules[c.coll] {
		ev, ok, why := r.event(c, r.finished)
		if !ok {
			if s.log.Enabled(context.Background(), slog.LevelDebug) {
				s.log.Debug("change makes no event", "type", r.Type.String(), "collection", c.coll, "op", c.op, "id", idText(c.key), "why", why)
			}
			continue
		}
		evs = append(evs, ev)
	}
	if len(evs) > 0 {
		hub.Publish(evs, nil)
	}
	return c.op
}

func (s *Source) maybeSave(ctx context.Context, pos *position) {
	if !pos.dirty || s.now().Sub(pos.savedAt) < s.cfg.SaveInterval {
		return
	}
	s.save(ctx, pos)
}

// save writes pos.token under the instance's name.
func (s *Source) save(ctx context.Context, pos *position) {
	if !pos.dirty {
		return
	}
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
		pos.saved, pos.dirty = pos.token, false
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
