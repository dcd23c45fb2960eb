package events

import "context"

// Broker takes published events and brings them to the hubs that deliver
// them. The in-memory broker hands them to one Hub; a broker shared by
// several server instances (through MongoDB) hands them to all.
type Broker interface {
	// Publish accepts evs, in order. tr, when not nil, counts the writes of
	// this instance's connections.
	Publish(ctx context.Context, evs []Event, tr *Tracker) error
}

// MemoryBroker delivers to one Hub in this process.
type MemoryBroker struct{ Hub *Hub }

var _ Broker = MemoryBroker{}

// Publish hands evs to the hub.
func (b MemoryBroker) Publish(_ context.Context, evs []Event, tr *Tracker) error {
	b.Hub.Publish(evs, tr)
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
