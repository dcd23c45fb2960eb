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
