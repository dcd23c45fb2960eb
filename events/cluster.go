package events

import (
	"context"
	"time"
)

// Instance is one live instance of those sharing a ClusterBroker.
type Instance struct {
	Name          string    `json:"name"`
	Started       time.Time `json:"started"`
	Seen          time.Time `json:"seen"` // its latest heartbeat
	Connections   int64     `json:"connections"`
	Subscriptions int64     `json:"subscriptions"`
	Self          bool      `json:"self,omitempty"`
}

// InstanceReply is one other instance's answer to ClusterBroker.AskInstances.
type InstanceReply struct {
	Instance string
	Body     []byte
}

// Presence is one open connection as GET /api/presence lists it.
type Presence struct {
	Instance      string    `json:"instance"`
	Conn          string    `json:"conn"`
	Opened        time.Time `json:"opened"`
	Subscriptions int       `json:"subscriptions"`
}

// Local is what a ClusterBroker asks of the server it runs in: what this
// instance holds, and the withdrawal of access that was revoked in the
// broker's database. The server implements it.
type Local interface {
	// Counts: open connections and subscriptions, for the heartbeat.
	Counts() (connections, subscriptions int64)
	// SubscribedUsers returns the users holding a subscription to k on
	// this instance, each once.
	SubscribedUsers(k Key) []string
	// Detach removes the subscription to k from every connection of user
	// and sends each such connection frame(pos) (the contract's "detached"
	// message) in its place, after what it was sent before; pos is the
	// hub's latest position, at least floor (Hub.Withdraw).
	Detach(k Key, user string, floor Pos, frame func(pos string) []byte) int
	// UserGone closes every connection of user with 4004.
	UserGone(user string) int
}

// AskHandler answers an Ask of another instance (from: its name) on the
// instance that received it; the answer goes back to the asker. It runs in
// a goroutine of its own and must end when ctx does.
type AskHandler func(ctx context.Context, from string, body []byte) []byte

// ClusterBroker is a Broker shared by several instances that know each
// other (MongoDB's: each keeps a heartbeat; one that stops drops out
// within instance_ttl). Its Publish, given a Tracker with a wait
// (Tracker.SetWait), makes every other live instance report its writes of
// the events back into that Tracker.
type ClusterBroker interface {
	Broker
	// Instance is this instance's name.
	Instance() string
	// Instances returns the live instances, this one included (Self), as
	// of the latest heartbeat read.
	Instances() []Instance
	// SetLocal gives the broker the server's side; called before Run.
	SetLocal(l Local)
	// Handle registers the handler of asks on topic (before Run).
	Handle(topic string, h AskHandler)
	// AskInstances sends body on topic to every other live instance and calls each
	// for every reply, until every instance that was live when it was
	// asked has replied or dropped out of the live set, each returns
	// false, or ctx ends. It returns the number of instances asked (0:
	// none other is live; nothing was written). This instance is not
	// asked: the caller answers for it itself.
	AskInstances(ctx context.Context, topic string, body []byte, each func(InstanceReply) bool) (asked int, err error)
}
