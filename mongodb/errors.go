package mongodb

import (
	"errors"

	"go.mongodb.org/mongo-driver/mongo"
)

// Errors of the package.
var (
	// ErrNotStarted: Ready before the change stream was first opened.
	ErrNotStarted = errors.New("change stream not started")
	// ErrBadPublished: a document of the events collection that is not a
	// publish (someone else wrote it); it is logged and skipped.
	ErrBadPublished = errors.New("not a published event")
)

// MongoDB error codes the package acts on.
const (
	codeChangeStreamFatal       = 280     // the stream cannot resume from its token (older servers: history lost)
	codeChangeStreamHistoryLost = 286     // the token is older than the oplog
	codeTooLarge                = 10334   // BSONObjectTooLarge: a change event over 16 MB
	codeSplitFailed             = 7182500 // $changeStreamSplitLargeEvent: one field of the event is over 16 MB
	codeUnrecognizedStage       = 40324   // the server does not know a stage ($changeStreamSplitLargeEvent before 6.0.9)
)

// hasCode reports whether err is a server error with one of the codes.
func hasCode(err error, codes ...int) bool {
	var se mongo.ServerError
	if !errors.As(err, &se) {
		return false
	}
	for _, c := range codes {
		if se.HasErrorCode(c) {
			return true
		}
	}
	return false
}

// historyLost reports whether err says the change stream cannot resume from
// its token: the oplog no longer holds it.
func historyLost(err error) bool {
	var se mongo.ServerError
	if errors.As(err, &se) {
		return se.HasErrorCode(codeChangeStreamHistoryLost) || se.HasErrorCode(codeChangeStreamFatal)
	}
	return false
}
