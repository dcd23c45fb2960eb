package events

import (
	"net/http"
	"strconv"
)

// Code is a result code of the contract, sent in every response.
type Code uint8

// The codes of the /ws table in PROTOCOL.md.
const (
	OK                  Code = 0
	TokenNotSet         Code = 1
	InvalidToken        Code = 2
	UserNotExists       Code = 3
	NoDatasetAccess     Code = 4
	InvalidRequest      Code = 5
	TooManySubscription Code = 6
	Unavailable         Code = 7
	// NotConnected and NoReply are answers of POST /api/ask only.
	NotConnected Code = 8
	NoReply      Code = 9
)

var codeMessages = [...]string{
	OK:                  "Ok",
	TokenNotSet:         "Token not set",
	InvalidToken:        "Invalid token",
	UserNotExists:       "User not exists",
	NoDatasetAccess:     "Not access for dataset",
	InvalidRequest:      "Invalid request",
	TooManySubscription: "Too many subscriptions",
	Unavailable:         "Service unavailable",
	NotConnected:        "User not connected",
	NoReply:             "No reply",
}

// codeFrames holds the response frame of each code, encoded once.
var codeFrames = func() [][]byte {
	frames := make([][]byte, len(codeMessages))
	for c := range codeMessages {
		frames[c] = AppendAnswer(nil, Code(c).Status(), codeMessages[c], Code(c))
	}
	return frames
}()

// Message returns the contract's message for c.
func (c Code) Message() string { return codeMessages[c] }

// Status returns the status of a /ws response with this code: 200 for OK,
// 400 for every other code.
func (c Code) Status() int {
	if c == OK {
		return http.StatusOK
	}
	return http.StatusBadRequest
}

// Frame returns the encoded /ws response for c. The bytes are shared: never
// modify them.
func (c Code) Frame() []byte { return codeFrames[c] }

// AppendAnswer appends the answer object {"status":S,"message":M,"code":C}
// to b, the shape of every /ws response and /api/* answer.
func AppendAnswer(b []byte, status int, message string, code Code) []byte {
	b = append(b, `{"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"message":`...)
	b = appendString(b, message)
	b = append(b, `,"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	return append(b, '}')
}
