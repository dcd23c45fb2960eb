// Package events holds what the server moves around: event types, subscription
// keys, the wire shapes of requests, responses and events, and the hub that
// fans an event out to its subscribers.
package events

// Type is an event type of the contract.
type Type uint8

// The event types. The zero Type is invalid.
const (
	IssueUpdate Type = iota + 1
	Notification
	DatasetUpdate
	UploadFile
	DownloadFile
	// RequestType is a backend's question to a user's frontend (POST /api/ask):
	// a frontend attaches to it to receive them; it is never published
	// through POST /api/events, has no source in MongoDB and is kept in no
	// history (a stale question is of no use).
	RequestType
)

// Types lists every event type that is published (POST /api/events) or
// comes from a source, in the contract's order.
var Types = []Type{IssueUpdate, Notification, DatasetUpdate, UploadFile, DownloadFile}

// WireTypes lists every event type a frontend may attach to: Types and
// RequestType, as GET /api/config lists them.
var WireTypes = []Type{IssueUpdate, Notification, DatasetUpdate, UploadFile, DownloadFile, RequestType}

var typeNames = [...]string{
	IssueUpdate:   "issueUpdate",
	Notification:  "notification",
	DatasetUpdate: "datasetUpdate",
	UploadFile:    "uploadFile",
	DownloadFile:  "downloadFile",
	RequestType:   "request",
}

// ParseType returns the Type named s (case-sensitive, as on the wire).
func ParseType(s string) (Type, bool) {
	for _, t := range WireTypes {
		if typeNames[t] == s {
			return t, true
		}
	}
	return 0, false
}

// String returns the wire name of t, or "" for an invalid Type.
func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return ""
}

// PerUser reports whether events of this type are addressed to a user
// (notification, request) rather than to an object.
func (t Type) PerUser() bool { return t == Notification || t == RequestType }

// NeedsDatasetAccess reports whether attaching to this type needs access to
// the dataset named by the id.
func (t Type) NeedsDatasetAccess() bool { return t == DatasetUpdate || t == UploadFile }

// Key names what a subscription listens to. For object types ID is the
// object's ObjectId; for notification it is the recipient user's ObjectId.
// IDs are always lower case (see NormalizeID).
type Key struct {
	Type Type
	ID   string
}
