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
type Hub struct {
	seed   maphash.Seed
	shards [shardCount]shard
	pubMu  sync.Mutex
	batch  uint64 // the latest Publish's Delivery.Batch; under pubMu
	count  atomic.Int64
	now    func() time.Time

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

// NewHub returns an empty Hub.
func NewHub() *Hub {
	h := &Hub{seed: maphash.MakeSeed(), now: time.Now}
	for i := range h.shards {
		h.shards[i].topics = make(map[Key]*topic)
	}
	return h
}

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

// Subscriptions returns the number of (key, subscriber) pairs held.
func (h *Hub) Subscriptions() int64 { return h.count.Load() }

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

// Publish encodes each event once and hands it to every subscriber of its
// key, in order. When tr is not nil it counts the pairs handed out and is
// sealed at the end. Publish returns the number of pairs handed out.
func (h *Hub) Publish(evs []Event, tr *Tracker) int {
	ds := make([]Delivery, len(evs))
	for i := range evs {
		ds[i].Frame = evs[i].AppendFrame(make([]byte, 0, evs[i].FrameSize()))
		ds[i].Tracker = tr
	}
	n := 0
	h.pubMu.Lock()
	now := h.now()
	h.batch++
	for i := range evs {
		d := &ds[i]
		d.Accepted, d.Batch = now, h.batch
		subs := h.subscribers(evs[i].Key())
		if tr != nil {
			tr.add(len(subs))
		}
		for _, s := range subs {
			s.Send(d)
		}
		n += len(subs)
	}
	h.pubMu.Unlock()
	h.lastPublish.Store(int64(time.Since(epoch)))
	if tr != nil {
		tr.seal()
	}
	return n
}
