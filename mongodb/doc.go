// Package mongodb connects airlay to MongoDB: events from change streams
// (a [Source] feeding the hub), users and dataset access (a [Store] with a
// short cache), and publishing through a collection that every instance
// watches (a [Broker]), with resume tokens kept per instance.
//
// One change stream per instance watches the whole database, filtered on the
// server to the configured collections and operations. Its resume token is
// saved in a small collection (one document per instance name) after
// changes and every few minutes, never because of the saves themselves, so
// that a restarted instance continues where it stopped; a resumable error
// is retried with backoff and resumed after the last delivered change. An
// event over 16 MB is split by the server and reassembled, or skipped and
// counted where the server cannot split it. Documents of updates are looked
// up by the source, only where a mapping reads them.
//
// Instances sharing the database know each other (cluster.go): each keeps
// a heartbeat in instances_collection, and they talk through
// messages_collection, which every instance's stream reads (asks to all,
// replies to itself): the Broker is an events.ClusterBroker, whose Ask
// gathers the replies of every live instance (presence), and whose
// ?wait counts come back the same way. Access revoked in the database is
// taken from open connections (revoke.go).
package mongodb
