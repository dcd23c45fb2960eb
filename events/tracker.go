package events

import (
	"sync"
	"sync/atomic"
	"time"
)

// Delivery is one accepted event on its way to its subscribers: the frame is
// encoded once and the same bytes go to every subscriber.
type Delivery struct {
	Frame    []byte
	Accepted time.Time
	// Tracker counts the writes of this event when a publisher waits for
	// them; nil otherwise.
	Tracker *Tracker
	// Batch numbers the Hub.Publish call the event came in (from 1); the
	// events of one publish share it. A send queue judges a subscriber by
	// what it still holds of earlier batches, never by the frames of the
	// batch being handed out. 0: not an event (an answer).
	Batch uint64
}

// Tracker counts (subscriber, event) pairs of one publish request: how many
// were handed to subscribers, how many were written, how many were dropped
// because the subscriber went away first.
type Tracker struct {
	expected  atomic.Int64
	delivered atomic.Int64
	dropped   atomic.Int64
	sealed    atomic.Bool
	once      sync.Once
	done      chan struct{}
}

// NewTracker returns a Tracker with nothing counted.
func NewTracker() *Tracker { return &Tracker{done: make(chan struct{})} }

// Delivered counts one pair written to its connection.
func (t *Tracker) Delivered() {
	t.delivered.Add(1)
	t.check()
}

// Dropped counts one pair whose connection closed before the write.
func (t *Tracker) Dropped() {
	t.dropped.Add(1)
	t.check()
}

// Done is closed once every pair handed out was written or dropped.
func (t *Tracker) Done() <-chan struct{} { return t.done }

// Counts returns pairs written and pairs still pending.
func (t *Tracker) Counts() (delivered, pending int64) {
	d := t.delivered.Load()
	return d, t.expected.Load() - d - t.dropped.Load()
}

func (t *Tracker) add(n int) { t.expected.Add(int64(n)) }

// seal marks the end of dispatch: no more pairs will be added.
func (t *Tracker) seal() {
	t.sealed.Store(true)
	t.check()
}

func (t *Tracker) check() {
	if t.sealed.Load() && t.delivered.Load()+t.dropped.Load() >= t.expected.Load() {
		t.once.Do(func() { close(t.done) })
	}
}
