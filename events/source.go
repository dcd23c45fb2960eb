package events

import "context"

// Source brings events from outside the process to a Hub: the MongoDB
// package's change stream is one. The server does not run sources; the
// command that wires the server starts them beside it.
type Source interface {
	// Run publishes to hub until ctx ends, then returns ctx's error. It
	// returns earlier only when it cannot go on.
	Run(ctx context.Context, hub *Hub) error
}
