package events

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// Subscriber receives deliveries. Send must not block: it queues the frame
// and returns. A Subscriber that cannot queue must drop its connection, not
// wait.
type Subscriber interface {
	Send(d *Delivery)
}

const shardCount = 64

// Hub is the subscription index and the fan-out. Subscriptions are kept per
// Key in sharded maps; each key caches its subscriber list so that a publish
// to a busy key copies nothing. Publishing is serialised, so every subscriber
// sees events in the order the hub accepted them, but no lock is held while
// a subscriber writes to its socket: Send only queues.
//
// The hub is where order is decided and so where positions are given: in
// its own count of events (a new epoch per hub), or, for a broker that
// orders events itself (MongoDB's change stream), from the Stamp that
// broker hands to Deliver (an epoch the broker names, the same on every
// instance). Each event is encoded once, its position included, and the
// same frame goes to every subscriber and into the history.
type Hub struct {
	seed    maphash.Seed
	shards  [shardCount]shard
	pubMu   sync.Mutex
	batch   uint64 // the latest Publish's Delivery.Batch; under pubMu
	last    Pos    // the latest position given; under pubMu
	epoch   string
	stamped bool
	hist    *History // nil: no history
	onReq   func(ev *Event, n int)
	count   atomic.Int64
	now     func() time.Time

	// lastPublish is when the latest Publish ended, in nanoseconds after
	// epoch (monotonic).
	lastPublish atomic.Int64
}

// epoch is the origin of Hub.lastPublish.
var epoch = time.Now()

// SincePublish returns how long ago the latest Publish ended; writers use
// it to tell whether more frames are likely to come right away.
func (h *Hub) SincePublish() time.Duration {
	return time.Since(epoch) - time.Duration(h.lastPublish.Load())
}

type shard struct {
	mu     sync.RWMutex
	topics map[Key]*topic
}

// topic is one key's subscribers. Most keys have one (an object open in one
// browser tab), so that one is held in a field and the map is made only for
// a second: a new key costs one allocation.
type topic struct {
	one  Subscriber              // the subscriber while there is one; nil once subs is made
	subs map[Subscriber]struct{} // two or more (or fewer again, once made)
	// list is the subscribers as a slice, rebuilt on the first publish after
	// a change; nil when stale. A built list is never modified, so a
	// publisher may range over it without a lock.
	list []Subscriber
}

// holds reports whether s subscribes to t.
func (t *topic) holds(s Subscriber) bool {
	if t.subs == nil {
		return t.one == s
	}
	_, ok := t.subs[s]
	return ok
}

// add adds s, which t does not hold.
func (t *topic) add(s Subscriber) {
	t.list = nil
	if t.subs == nil {
		if t.one == nil {
			t.one = s
			return
		}
		t.subs = map[Subscriber]struct{}{t.one: {}}
		t.one = nil
	}
	t.subs[s] = struct{}{}
}

// remove removes s, which t holds, and reports whether t is now empty.
func (t *topic) remove(s Subscriber) (empty bool) {
	t.list = nil
	if t.subs == nil {
		t.one = nil
		return true
	}
	delete(t.subs, s)
	return len(t.subs) == 0
}

// build returns the subscribers as a new slice.
func (t *topic) build() []Subscriber {
	if t.subs == nil {
		return []Subscriber{t.one}
	}
	list := make([]Subscriber, 0, len(t.subs))
	for s := range t.subs {
		list = append(list, s)
	}
	return list
}

// HubOptions shape a Hub's positions and history.
type HubOptions struct {
	// Epoch names the hub's positions; "" takes a new random one (see
	// NewEpoch), so that positions of an earlier process answer
	// recovered:false. A broker that orders events itself names its own.
	Epoch string
	// Stamped: positions come from the Stamp given to Deliver (the
	// "epoch:T.I.N" form) rather than from the hub's count ("epoch:N").
	Stamped bool
	// History keeps recent events for resuming; nil keeps none.
	History *History
	// Requests, when set, is told of every request event (POST /api/ask)
	// the hub handed out, with the number of this hub's subscribers that
	// got it (0 included). It runs under the publish lock: it must not
	// block.
	Requests func(ev *Event, n int)
}

// NewHub returns an empty Hub with a new epoch and no history.
func NewHub() *Hub { return NewHubWith(HubOptions{}) }

// NewHubWith returns an empty Hub shaped by o.
func NewHubWith(o HubOptions) *Hub {
	if o.Epoch == "" {
		o.Epoch = NewEpoch()
	}
	h := &Hub{seed: maphash.MakeSeed(), now: time.Now, epoch: o.Epoch, stamped: o.Stamped, hist: o.History, onReq: o.Requests}
	for i := range h.shards {
		h.shards[i].topics = make(map[Key]*topic)
	}
	return h
}

// Epoch returns the epoch of the hub's positions.
func (h *Hub) Epoch() string { return h.epoch }

// History returns the hub's history, nil when it keeps none.
func (h *Hub) History() *History { return h.hist }

func (h *Hub) shard(k Key) *shard {
	return &h.shards[maphash.String(h.seed, k.ID)%shardCount]
}

// Subscribe adds s to k. It reports false when s already held k.
func (h *Hub) Subscribe(k Key, s Subscriber) bool {
	sh := h.shard(k)
	sh.mu.Lock()
	t := sh.topics[k]
	if t == nil {
		t = &topic{}
		sh.topics[k] = t
	}
	held := t.holds(s)
	if !held {
		t.add(s)
	}
	sh.mu.Unlock()
	if !held {
		h.count.Add(1)
	}
	return !held
}

// Unsubscribe removes s from k. It reports false when s did not hold k.
func (h *Hub) Unsubscribe(k Key, s Subscriber) bool {
	sh := h.shard(k)
	sh.mu.Lock()
	t := sh.topics[k]
	held := false
	if t != nil {
		if held = t.holds(s); held && t.remove(s) {
			delete(sh.topics, k)
		}
	}
	sh.mu.Unlock()
	if held {
		h.count.Add(-1)
	}
	return held
}

// Withdraw removes s from k and, when s held it, calls then (which queues
// the subscriber's last frame of k) in the same step of the hub's order:
// every event of k accepted before reaches s before that frame, none
// accepted after reaches it. then gets a position for that frame: the
// latest the hub has given, or floor when that is later, so that the
// positions s sees for k only grow. It reports whether s held k.
func (h *Hub) Withdraw(k Key, s Subscriber, floor Pos, then func(pos string)) bool {
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	held := h.Unsubscribe(k, s)
	if held && then != nil {
		p := h.last
		if p.Less(floor) {
			p = floor
		}
		then(FormatPos(h.epoch, h.stamped, p))
	}
	return held
}

// Subscriptions returns the number of (key, subscriber) pairs held.
func (h *Hub) Subscriptions() int64 { return h.count.Load() }

// Subscribers returns the current subscribers of k; the slice must not be
// modified.
func (h *Hub) Subscribers(k Key) []Subscriber { return h.subscribers(k) }

// subscribers returns the current subscribers of k; the slice must not be
// modified.
func (h *Hub) subscribers(k Key) []Subscriber {
	sh := h.shard(k)
	sh.mu.RLock()
	t := sh.topics[k]
	if t == nil {
		sh.mu.RUnlock()
		return nil
	}
	list := t.list
	sh.mu.RUnlock()
	if list != nil {
		return list
	}
	sh.mu.Lock()
	if t = sh.topics[k]; t != nil {
		if t.list == nil {
			t.list = t.build()
		}
		list = t.list
	}
	sh.mu.Unlock()
	return list
}

// Publish hands evs to every subscriber of their keys, in order, at
// positions the hub counts itself (the in-memory broker's order). When tr
// is not nil it counts the pairs handed out and is sealed at the end.
// Publish returns the number of pairs handed out.
func (h *Hub) Publish(evs []Event, tr *Tracker) int { return h.publish(evs, tr, nil) }

// Deliver is Publish for a broker that decided the order itself: the
// events of one change at st, each at st.Pos(its index). On a hub that is
// not Stamped the stamp is ignored and the hub counts.
func (h *Hub) Deliver(evs []Event, tr *Tracker, st Stamp) int { return h.publish(evs, tr, &st) }

// publish encodes each event once (its position is appended under the
// lock, where the order is decided) and hands it to every subscriber of
// its key, in order; the history keeps the same frame.
func (h *Hub) publish(evs []Event, tr *Tracker, st *Stamp) int {
	ds := make([]Delivery, len(evs))
	for i := range evs {
		ds[i].Frame = evs[i].appendFrameHead(make([]byte, 0, evs[i].FrameSize()))
		ds[i].Tracker = tr
	}
	n := 0
	h.pubMu.Lock()
	now := h.now()
	h.batch++
	for i := range evs {
		d := &ds[i]
		p := h.next(st, i)
		d.Frame = appendFrameTail(d.Frame, h.epoch, h.stamped, p)
		d.Accepted, d.Batch = now, h.batch
		k := evs[i].Key()
		if k.Type != RequestType && h.hist.Enabled() { // a stale request is of no use: never replayed
			h.hist.add(k, p, now, d.Frame)
		}
		subs := h.subscribers(k)
		if tr != nil {
			tr.add(len(subs))
		}
		for _, s := range subs {
			s.Send(d)
		}
		n += len(subs)
		if k.Type == RequestType && h.onReq != nil {
			h.onReq(&evs[i], len(subs))
		}
	}
	h.pubMu.Unlock()
	h.lastPublish.Store(int64(time.Since(epoch)))
	if tr != nil {
		tr.seal()
	}
	return n
}

// Remember keeps the events of a change at st in the history without
// delivering them: a broker that rebuilds the history of what happened
// before this process started (MongoDB's change stream read from
// history_ttl back) hands those changes here. Positions are given as
// Deliver gives them; at is when the change happened (zero: now), from
// which history_ttl counts.
func (h *Hub) Remember(evs []Event, st Stamp, at time.Time) {
	if !h.hist.Enabled() {
		h.pubMu.Lock()
		for i := range evs {
			h.next(&st, i)
		}
		h.pubMu.Unlock()
		return
	}
	frames := make([][]byte, len(evs))
	for i := range evs {
		frames[i] = evs[i].appendFrameHead(make([]byte, 0, evs[i].FrameSize()))
	}
	h.pubMu.Lock()
	if now := h.now(); at.IsZero() || at.After(now) {
		at = now
	}
	for i := range evs {
		p := h.next(&st, i)
		frames[i] = appendFrameTail(frames[i], h.epoch, h.stamped, p)
		if evs[i].Type != RequestType { // never replayed
			h.hist.add(evs[i].Key(), p, at, frames[i])
		}
	}
	h.pubMu.Unlock()
}

// next returns the position of the i-th event of a publish; under pubMu.
// Positions only grow: a stamp at or before the latest position (which a
// stream in order never gives) continues after it.
func (h *Hub) next(st *Stamp, i int) Pos {
	p := Pos{Hi: h.last.Hi + 1}
	if h.stamped {
		p = Pos{Hi: h.last.Hi, Lo: h.last.Lo + 1}
		if st != nil {
			if sp := st.Pos(i); h.last.Less(sp) {
				p = sp
			}
		}
	}
	h.last = p
	return p
}

// Gap records that events at or before the position of st may be missing
// (a change stream that lost history or skipped an event, or the point a
// starting broker's history begins at): a since at or before it answers
// recovered:false.
func (h *Hub) Gap(st Stamp) {
	h.pubMu.Lock()
	if h.hist != nil {
		h.hist.setGap(st.Pos(1<<32 - 1))
	}
	h.pubMu.Unlock()
}

// ErrSince is a since that is not a position as this hub writes them.
var ErrSince = errBadSince

// Resume subscribes s to k and, when s did not hold k, replays k's events
// after since (text of a position) from the history: one step under the
// publish lock, so that no event is lost or doubled between the last
// replayed and the first live one. answer runs first, under the lock (it
// must not block: it queues the answer frame, so that the answer precedes
// the replay): added is whether s was subscribed now, recovered whether
// every event after since is sent (false: none is). A subscription already
// held answers recovered and replays nothing. More than maxReplay events
// to replay answer recovered:false (reloading the object is cheaper).
// The replay is one Delivery.Batch of its own, so that a send queue admits
// it as it admits one publish.
func (h *Hub) Resume(k Key, s Subscriber, since string, maxReplay int, answer func(added, recovered bool)) {
	epoch, stamped, p, ok := ParsePos(since)
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	if !h.Subscribe(k, s) {
		answer(false, true)
		return
	}
	if !ok || epoch != h.epoch || stamped != h.stamped || h.hist == nil {
		answer(true, false)
		return
	}
	now := h.now()
	var buf [8][]byte
	frames, recovered := h.hist.after(k, p, now, maxReplay, buf[:0])
	answer(true, recovered)
	if !recovered || len(frames) == 0 {
		return
	}
	h.batch++
	ds := make([]Delivery, len(frames))
	for i, f := range frames {
		ds[i] = Delivery{Frame: f, Accepted: now, Batch: h.batch}
		s.Send(&ds[i])
	}
}
