package client

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed: the client was closed, or stopped after a drop with
	// NoReconnect.
	ErrClosed = errors.New("client closed")
	// errLost: the connection went before the answer came; requests are
	// sent again on the next connection.
	errLost = errors.New("connection lost")
)

// RefusedError is a request the server answered with a code other than 0.
// OnError receives it for a re-attach (after a reconnect), a token refresh
// or a reply of OnRequest that the server refused.
type RefusedError struct {
	Action string // "attach", "detach" or "reply"
	Sub    Sub
	Answer Answer
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s %s: %s (code %d)", e.Action, e.Sub, e.Answer.Message, e.Answer.Code)
}

// DropError is why a client with NoReconnect stopped: the server or the
// network ended the connection.
type DropError struct {
	Code int    // the close code the server sent; 0 when it sent none
	Text string // its close reason
	Err  error  // the read error
}

func (e *DropError) Error() string {
	if e.Code != 0 {
		return fmt.Sprintf("connection closed by the server: %d %s", e.Code, e.Text)
	}
	return fmt.Sprintf("connection lost: %v", e.Err)
}

func (e *DropError) Unwrap() error { return e.Err }
