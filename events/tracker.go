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

	wait time.Duration // how long the publisher waits (SetWait)
	// Reports of other instances (a ClusterBroker's): whose are still
	// expected, and what came in.
	mu          sync.Mutex
	expecting   map[string]bool
	remoteDel   atomic.Int64
	remotePend  atomic.Int64
	remoteCount atomic.Int32 // instances that reported
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

// Done is closed once every pair handed out was written or dropped, and
// every other instance expected (Expect) reported or was forgotten.
func (t *Tracker) Done() <-chan struct{} { return t.done }

// Counts returns pairs written and pairs still pending: this instance's,
// plus what other instances reported (an instance expected but not
// reported counts in neither).
func (t *Tracker) Counts() (delivered, pending int64) {
	d := t.delivered.Load()
	return d + t.remoteDel.Load(), t.expected.Load() - d - t.dropped.Load() + t.remotePend.Load()
}

// SetWait records how long the publisher waits for the writes (what a
// ClusterBroker tells the other instances); call it before Publish.
func (t *Tracker) SetWait(d time.Duration) { t.wait = d }

// Wait returns what SetWait recorded.
func (t *Tracker) Wait() time.Duration { return t.wait }

// Expect makes Done wait for a report (Report) of each named instance as
// well, or for it to be forgotten (Forget). Call it before the events can
// be delivered.
func (t *Tracker) Expect(instances []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.expecting == nil {
		t.expecting = make(map[string]bool, len(instances))
	}
	for _, n := range instances {
		t.expecting[n] = true
	}
}

// Report adds the counts of an expected instance, once; it reports whether
// they were taken.
func (t *Tracker) Report(instance string, delivered, pending int64) bool {
	t.mu.Lock()
	if !t.expecting[instance] {
		t.mu.Unlock()
		return false
	}
	delete(t.expecting, instance)
	t.remoteDel.Add(delivered)
	t.remotePend.Add(pending)
	t.remoteCount.Add(1)
	t.mu.Unlock()
	t.check()
	return true
}

// Forget stops waiting for the report of instance (it dropped out of the
// live set): what it wrote counts in neither delivered nor pending.
func (t *Tracker) Forget(instance string) {
	t.mu.Lock()
	_, was := t.expecting[instance]
	delete(t.expecting, instance)
	t.mu.Unlock()
	if was {
		t.check()
	}
}

// Reported returns the number of other instances that reported.
func (t *Tracker) Reported() int { return int(t.remoteCount.Load()) }

// localDone reports whether this instance's own pairs are all written or
// dropped.
func (t *Tracker) localDone() bool {
	return t.sealed.Load() && t.delivered.Load()+t.dropped.Load() >= t.expected.Load()
}

func (t *Tracker) add(n int) { t.expected.Add(int64(n)) }

// seal marks the end of dispatch: no more pairs will be added.
func (t *Tracker) seal() {
	t.sealed.Store(true)
	t.check()
}

func (t *Tracker) check() {
	if !t.localDone() {
		return
	}
	t.mu.Lock()
	waiting := len(t.expecting)
	t.mu.Unlock()
	if waiting == 0 {
		t.once.Do(func() { close(t.done) })
	}
}

// LocalDone reports whether this instance's own pairs are all written or
// dropped (reports of other instances aside).
func (t *Tracker) LocalDone() bool { return t.localDone() }
