package events

import (
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Broker is the server's one seam to where events travel: the server owns
// it, starts it (Run) and stops it (by ending Run's context). Events go in
// through Publish and come out, in the broker's order, to the hub that Run
// was given; what a broker needs besides (readiness, metrics, an order and
// history of its own, idempotency keys) it offers through the capability
// interfaces below. The in-memory broker (MemoryBroker) and MongoDB's
// (package mongodb) are siblings; another transport is one more.
type Broker interface {
	// Publish accepts evs, in order. tr, when not nil, counts the writes of
	// this instance's connections. It may wait for Run to have started.
	Publish(ctx context.Context, evs []Event, tr *Tracker) error
	// Run delivers accepted events to hub (Hub.Publish, or Hub.Deliver
	// with the broker's own order) until ctx ends, then returns ctx's
	// error. It returns earlier only when it cannot go on.
	Run(ctx context.Context, hub *Hub) error
}

// ReadyBroker is a Broker with a dependency: Ready returns nil while it is
// usable and why not otherwise (/readyz answers 503 meanwhile).
type ReadyBroker interface {
	Broker
	Ready() error
}

// MetricsBroker is a Broker with metrics of its own, served on /metrics.
type MetricsBroker interface {
	Broker
	Collectors() []prometheus.Collector
}

// OrderedBroker is a Broker that decides the order of events itself and
// gives every instance sharing it the same positions: it delivers with
// Hub.Deliver and a Stamp, names the epoch of those positions (the same
// across restarts and instances), and reports gaps with Hub.Gap. The
// server then makes its hub Stamped with that epoch.
type OrderedBroker interface {
	Broker
	Epoch() string
}

// MemoryBroker delivers to the hub it runs with, in this process: the
// hub's publish order is the order, and the hub counts positions.
type MemoryBroker struct {
	once  sync.Once
	ready chan struct{}
	hub   *Hub
}

var _ Broker = (*MemoryBroker)(nil)

// NewMemoryBroker returns a MemoryBroker; it delivers once Run started.
func NewMemoryBroker() *MemoryBroker { return &MemoryBroker{ready: make(chan struct{})} }

// Run makes hub the destination of Publish until ctx ends.
func (b *MemoryBroker) Run(ctx context.Context, hub *Hub) error {
	b.once.Do(func() {
		b.hub = hub
		close(b.ready)
	})
	<-ctx.Done()
	return ctx.Err()
}

// Publish hands evs to the hub, waiting for Run to have started.
func (b *MemoryBroker) Publish(ctx context.Context, evs []Event, tr *Tracker) error {
	select {
	case <-b.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	b.hub.Publish(evs, tr)
	return nil
}

// KeyedBroker is a Broker that remembers idempotency keys itself, for every
// instance that shares it (through MongoDB). The server uses it for a
// publish with an Idempotency-Key; with a Broker that is not one, the server
// remembers keys in memory.
type KeyedBroker interface {
	Broker
	// PublishKeyed accepts evs unless key was accepted before within the
	// broker's window: then it accepts nothing and reports dup. An error
	// means the events may or may not have been accepted; a retry with the
	// same key accepts them at most once.
	PublishKeyed(ctx context.Context, key string, evs []Event, tr *Tracker) (dup bool, err error)
}

// ValidIdempotencyKey reports whether key is an Idempotency-Key of the
// contract: 1 to 128 printable ASCII characters (space included, as a
// header value's inner space; no control characters).
func ValidIdempotencyKey(key string) bool {
	if len(key) == 0 || len(key) > 128 {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return false
		}
	}
	return true
}
