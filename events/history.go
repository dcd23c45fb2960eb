package events

import (
	"sync/atomic"
	"time"
)

// The counters are written under the hub's publish lock and read by
// metrics from anywhere: atomics, but only one write of each per event.

// EntryOverhead is what the history counts for one retained event besides
// its frame's allocation: the entry, its slot in the key's index and a
// share of the index's map (measured: see TestHistoryMemoryPerEvent).
const EntryOverhead = 240

// History is the bounded store of recent events for resuming ("since"):
// one for the whole server, at most ttl old and at most maxBytes in all
// (each frame's allocation plus EntryOverhead), oldest dropped first. It holds the same
// frame bytes that live delivery sent, so an event is encoded once.
//
// Every event is kept in one queue in delivery order, and a per-key index
// lists the key's events in that queue, so that recovering one
// subscription costs in proportion to what it replays, not to the size of
// the history.
//
// What it can prove: every event of a key after a position p is held when
// p is at or after the newest event dropped (of any key; of that key,
// while the key is indexed: see keyLog.floor) and at or after the latest
// gap.
//
// A History is not safe for concurrent use: the hub uses it under its
// publish lock, which is also what makes a replay and the subscription
// that follows it one step.
type History struct {
	ttl      time.Duration
	maxBytes int64

	queue deque[entry]
	first uint64 // sequence number of queue's first entry
	keys  map[Key]*keyLog

	dropped  Pos // the newest position dropped
	gap      Pos // nothing at or before gap can be proven (a stream gap)
	hasGap   bool
	bytes    atomic.Int64
	length   atomic.Int64
	evicted  atomic.Int64 // entries dropped for room or age, for metrics
	replayed atomic.Int64
}

type entry struct {
	log   *keyLog // the index of the event's key
	pos   Pos
	at    int64 // accepted, Unix nanoseconds
	frame []byte
}

// keyLog is the index of one key: the sequence numbers of its entries, and
// the newest position of that key that was dropped (at least the history's
// newest dropped position when the key was first indexed, since older
// events of the key may have gone before).
type keyLog struct {
	key   Key
	seqs  deque[uint64]
	floor Pos
}

// NewHistory returns a History keeping ttl and maxBytes; ttl <= 0 keeps
// nothing (and proves nothing).
func NewHistory(ttl time.Duration, maxBytes int64) *History {
	return &History{ttl: ttl, maxBytes: maxBytes, keys: make(map[Key]*keyLog)}
}

// Enabled reports whether the history keeps events.
func (h *History) Enabled() bool { return h != nil && h.ttl > 0 }

// TTL returns how long events are kept.
func (h *History) TTL() time.Duration {
	if h == nil {
		return 0
	}
	return h.ttl
}

// Bytes returns the memory counted for the events held.
func (h *History) Bytes() int64 { return h.bytes.Load() }

// Len returns the number of events held.
func (h *History) Len() int64 { return h.length.Load() }

// Evicted returns the number of events dropped for room or age.
func (h *History) Evicted() int64 { return h.evicted.Load() }

// Replayed returns the number of events replayed to a subscription.
func (h *History) Replayed() int64 { return h.replayed.Load() }

// entrySize is what one retained event counts: the frame's allocation and
// EntryOverhead.
func entrySize(frame []byte) int64 { return int64(cap(frame)) + EntryOverhead }

// add keeps one delivered event; now is its acceptance time.
func (h *History) add(k Key, p Pos, now time.Time, frame []byte) {
	size := entrySize(frame)
	if size > h.maxBytes {
		// Larger than the whole history: keeping it would drop
		// everything else and then itself.
		h.dropAll(p)
		return
	}
	seq := h.first + uint64(h.queue.len())
	kl := h.keys[k]
	if kl == nil {
		kl = &keyLog{key: k, floor: h.dropped}
		h.keys[k] = kl
	}
	h.queue.push(entry{log: kl, pos: p, at: now.UnixNano(), frame: frame})
	kl.seqs.push(seq)
	bytes, n, dropped := h.bytes.Load()+size, h.length.Load()+1, int64(0)
	for bytes > h.maxBytes {
		bytes -= h.dropOldest()
		n--
		dropped++
	}
	limit := now.Add(-h.ttl).UnixNano()
	for h.queue.len() > 0 && h.queue.at(0).at < limit {
		bytes -= h.dropOldest()
		n--
		dropped++
	}
	h.bytes.Store(bytes)
	h.length.Store(n)
	if dropped > 0 {
		h.evicted.Add(dropped)
	}
}

// dropAll forgets everything up to p (an event too large to keep).
func (h *History) dropAll(p Pos) {
	n := h.length.Load()
	for h.queue.len() > 0 {
		h.dropOldest()
	}
	h.dropped = p
	h.bytes.Store(0)
	h.length.Store(0)
	h.evicted.Add(n + 1)
}

// expire drops the events older than ttl.
func (h *History) expire(now time.Time) {
	limit := now.Add(-h.ttl).UnixNano()
	var bytes, n int64
	for h.queue.len() > 0 && h.queue.at(0).at < limit {
		bytes += h.dropOldest()
		n++
	}
	if n > 0 {
		h.bytes.Add(-bytes)
		h.length.Add(-n)
		h.evicted.Add(n)
	}
}

// dropOldest drops the oldest event and returns its size; the caller
// counts it.
func (h *History) dropOldest() int64 {
	e := h.queue.pop()
	h.first++
	kl := e.log
	kl.seqs.pop()
	kl.floor = e.pos
	if kl.seqs.len() == 0 {
		delete(h.keys, kl.key)
	}
	h.dropped = e.pos
	return entrySize(e.frame)
}

// setGap records that events at or before p may be missing (a change
// stream gap): a since before or at p is not provable.
func (h *History) setGap(p Pos) {
	if !h.hasGap || h.gap.Less(p) {
		h.gap, h.hasGap = p, true
	}
}

// after returns the frames of k's events after since, in order, when the
// history proves it has every one of them and there are at most max;
// otherwise ok is false. now drops what expired first.
func (h *History) after(k Key, since Pos, now time.Time, max int, frames [][]byte) (_ [][]byte, ok bool) {
	if !h.Enabled() {
		return frames, false
	}
	h.expire(now)
	if h.hasGap && !h.gap.Less(since) {
		return frames, false
	}
	kl := h.keys[k]
	if since.Less(h.dropped) && (kl == nil || since.Less(kl.floor)) {
		return frames, false
	}
	if kl == nil {
		return frames, true
	}
	// The first of k's entries after since: positions grow along seqs.
	lo, hi := 0, kl.seqs.len()
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if !since.Less(h.queue.at(int(*kl.seqs.at(mid) - h.first)).pos) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if kl.seqs.len()-lo > max {
		return frames, false
	}
	for i := lo; i < kl.seqs.len(); i++ {
		frames = append(frames, h.queue.at(int(*kl.seqs.at(i)-h.first)).frame)
	}
	h.replayed.Add(int64(kl.seqs.len() - lo))
	return frames, true
}

// deque is a FIFO on a ring buffer whose size is a power of two.
type deque[T any] struct {
	buf  []T
	head int
	n    int
}

func (d *deque[T]) len() int { return d.n }

func (d *deque[T]) at(i int) *T { return &d.buf[(d.head+i)&(len(d.buf)-1)] }

func (d *deque[T]) push(v T) {
	if d.n == len(d.buf) {
		d.resize(max(1, 2*len(d.buf)))
	}
	d.buf[(d.head+d.n)&(len(d.buf)-1)] = v
	d.n++
}

func (d *deque[T]) pop() T {
	var zero T
	v := d.buf[d.head]
	d.buf[d.head] = zero
	d.head = (d.head + 1) & (len(d.buf) - 1)
	d.n--
	if len(d.buf) > 64 && d.n < len(d.buf)/4 {
		d.resize(len(d.buf) / 2) // let a burst's memory go
	}
	return v
}

func (d *deque[T]) resize(size int) {
	buf := make([]T, size)
	for i := 0; i < d.n; i++ {
		buf[i] = *d.at(i)
	}
	d.buf, d.head = buf, 0
}
