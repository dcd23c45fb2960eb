package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// ErrInvalidRequest is wrapped by every parse error; the server answers it
// with code 5.
var ErrInvalidRequest = errors.New("invalid request")

// Action is what a request asks for.
type Action uint8

// The actions of the contract.
const (
	Attach Action = iota + 1
	Detach
	// Reply answers a request of POST /api/ask: Key is {RequestType, the
	// request id} and Data the reply.
	Reply
)

// Request is a parsed /ws request. For notification Key.ID is empty: the
// subscription is always for the connection's own user.
type Request struct {
	Token  string
	Action Action
	Key    Key
	// Since is the position an attach resumes after (its "since"), as the
	// client sent it; HasSince tells an absent one from any other. The
	// hub judges it (Hub.ParseSince); for detach it is ignored.
	Since    string
	HasSince bool
	// Data is a reply's "data": a compact JSON array ("[]" when absent);
	// empty for other actions.
	Data string
}

type wireRequest struct {
	Auth   string          `json:"auth"`
	Action string          `json:"action"`
	Event  *wireEventRef   `json:"event"`
	Since  *string         `json:"since"`
	Data   json.RawMessage `json:"data"`
}

type wireEventRef struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

func (w *wireRequest) fast() fastRequest {
	f := fastRequest{auth: w.Auth, action: w.Action, hasEvent: w.Event != nil, hasSince: w.Since != nil}
	if w.Event != nil {
		f.typ, f.id = w.Event.Type, w.Event.ID
	}
	if w.Since != nil {
		f.since = *w.Since
	}
	if w.Data != nil {
		f.data, f.hasData = string(w.Data), true
	}
	return f
}

// Parse errors of a request's shape; each wraps ErrInvalidRequest.
var (
	errUnknownAction = fmt.Errorf("%w: unknown action", ErrInvalidRequest)
	errNoEvent       = fmt.Errorf("%w: no event", ErrInvalidRequest)
	errUnknownType   = fmt.Errorf("%w: unknown event type", ErrInvalidRequest)
	errNotObjectID   = fmt.Errorf("%w: event.id is not an ObjectId", ErrInvalidRequest)
	errBadSince      = fmt.Errorf("%w: since is not a position of this server", ErrInvalidRequest)
	errBadReply      = fmt.Errorf("%w: a reply names a request (event.type request and its id) and has a JSON array as data", ErrInvalidRequest)
)

// MaxRequestIDLen bounds the id of a request (POST /api/ask) in a reply.
const MaxRequestIDLen = 64

// ParseRequest parses one client frame. It checks only the shape (code 5);
// the token is returned unverified and may be empty.
//
// It runs on every connection's reader goroutine, whose stack stays at the
// size its deepest call needed: so its frame is kept small (the
// encoding/json fallback and the error texts live elsewhere), which keeps
// an idle connection's reader at 4 KiB of stack instead of 8.
func ParseRequest(frame []byte) (Request, error) {
	w, ok := parseFast(frame)
	if !ok {
		var err error
		if w, err = parseSlow(frame); err != nil {
			return Request{}, err
		}
	}
	var r Request
	switch w.action {
	case "attach":
		r.Action = Attach
	case "detach":
		r.Action = Detach
	case "reply":
		if err := parseReply(&w, &r); err != nil {
			return Request{}, err
		}
		return r, nil
	default:
		return Request{}, errUnknownAction
	}
	if !w.hasEvent {
		return Request{}, errNoEvent
	}
	t, ok := ParseType(w.typ)
	if !ok {
		return Request{}, errUnknownType
	}
	r.Key.Type = t
	if t.PerUser() {
		// An id is allowed but ignored; when given it must still be an ObjectId.
		if w.id != "" {
			if _, ok := NormalizeID(w.id); !ok {
				return Request{}, errNotObjectID
			}
		}
	} else {
		id, ok := NormalizeID(w.id)
		if !ok {
			return Request{}, errNotObjectID
		}
		r.Key.ID = id
	}
	r.Token = w.auth
	if w.hasSince && r.Action == Attach {
		if _, _, _, ok := ParsePos(w.since); !ok {
			return Request{}, errBadSince
		}
		r.Since, r.HasSince = w.since, true
	}
	return r, nil
}

// parseReply checks a reply: event {"type":"request","id":"<request id>"}
// and data, a JSON array (absent: []); no since.
//
//go:noinline
func parseReply(w *fastRequest, r *Request) error {
	if !w.hasEvent || w.typ != "request" || w.id == "" || len(w.id) > MaxRequestIDLen || w.hasSince {
		return errBadReply
	}
	*r = Request{Token: w.auth, Action: Reply, Key: Key{Type: RequestType, ID: w.id}, Data: "[]"}
	if w.hasData {
		var buf bytes.Buffer
		if err := json.Compact(&buf, []byte(w.data)); err != nil || buf.Len() == 0 || buf.Bytes()[0] != '[' {
			return errBadReply
		}
		r.Data = buf.String()
	}
	return nil
}

// parseSlow parses a request that the fast path gave up on with
// encoding/json, the definition of the shape.
//
//go:noinline
func parseSlow(frame []byte) (fastRequest, error) {
	var slow wireRequest
	if err := json.Unmarshal(frame, &slow); err != nil {
		return fastRequest{}, fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	return slow.fast(), nil
}

// Event is one published event.
type Event struct {
	Type Type
	// ID is the object's ObjectId (lower case); for notification, the
	// notification's own id as given by the publisher, possibly empty.
	ID string
	// User is the recipient of a notification (lower case); empty otherwise.
	User string
	// Data is a JSON array; nil stands for [].
	Data json.RawMessage
}

// Key returns the subscription key that receives e.
func (e *Event) Key() Key {
	if e.Type.PerUser() {
		return Key{Type: e.Type, ID: e.User}
	}
	return Key{Type: e.Type, ID: e.ID}
}

// FrameSize returns an upper bound of the length of e's frame, its
// position included.
func (e *Event) FrameSize() int {
	id := len(e.ID) // an ObjectId needs no escapes
	if e.Type.PerUser() {
		id *= 6 // a notification's own id may need \u00XX for every byte
	}
	return len(`{"type":"","id":,"data":[],"pos":""}`) + len(e.Type.String()) + id + 2 + len(e.Data) + MaxPosLen
}

// AppendFrame appends the server message {"type","id","data","pos"} for e
// at the position whose text is pos.
func (e *Event) AppendFrame(b []byte, pos string) []byte {
	b = e.appendFrameHead(b)
	b = append(b, posMember...)
	b = append(b, pos...)
	return append(b, '"', '}')
}

// posMember starts the last member of a frame.
const posMember = `,"pos":"`

// appendFrameTail ends a frame begun by appendFrameHead with the position.
func appendFrameTail(b []byte, epoch string, stamped bool, p Pos) []byte {
	b = append(b, posMember...)
	b = AppendPos(b, epoch, stamped, p)
	return append(b, '"', '}')
}

// appendFrameHead appends the frame of e up to its position:
// {"type","id","data" without the closing brace.
func (e *Event) appendFrameHead(b []byte) []byte {
	b = append(b, `{"type":"`...)
	b = append(b, e.Type.String()...)
	b = append(b, `","id":`...)
	b = appendString(b, e.ID)
	b = append(b, `,"data":`...)
	if e.Data == nil {
		b = append(b, "[]"...)
	} else {
		b = append(b, e.Data...)
	}
	return b
}

type wireEvent struct {
	Type string          `json:"type"`
	ID   *string         `json:"id"`
	User *string         `json:"user"`
	Data json.RawMessage `json:"data"`
}

// ParsePublish parses a POST /api/events body: one event object or an array
// of at most maxEvents events. Any malformed event fails the whole body.
func ParsePublish(body []byte, maxEvents int) ([]Event, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, fmt.Errorf("%w: empty body", ErrInvalidRequest)
	}
	if !utf8.Valid(body) {
		// encoding/json would pass invalid bytes inside strings through to
		// the frames, and a text frame must be UTF-8.
		return nil, fmt.Errorf("%w: body is not UTF-8", ErrInvalidRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var ws []wireEvent
	switch body[0] {
	case '[':
		if err := dec.Decode(&ws); err != nil {
			return nil, fmt.Errorf("%w: %s", ErrInvalidRequest, jsonError(err))
		}
		if len(ws) == 0 {
			return nil, fmt.Errorf("%w: no events", ErrInvalidRequest)
		}
		if len(ws) > maxEvents {
			return nil, fmt.Errorf("%w: more than %d events", ErrInvalidRequest, maxEvents)
		}
	case '{':
		ws = make([]wireEvent, 1)
		if err := dec.Decode(&ws[0]); err != nil {
			return nil, fmt.Errorf("%w: %s", ErrInvalidRequest, jsonError(err))
		}
	default:
		return nil, fmt.Errorf("%w: the body is an event object or an array of them", ErrInvalidRequest)
	}
	if len(bytes.TrimSpace(body[dec.InputOffset():])) != 0 {
		return nil, fmt.Errorf("%w: the body goes on after its first JSON value (several events go in one JSON array)", ErrInvalidRequest)
	}
	evs := make([]Event, len(ws))
	for i := range ws {
		if err := ws[i].event(&evs[i]); err != nil {
			if len(ws) > 1 {
				return nil, fmt.Errorf("event %d (counting from 0): %w", i, err)
			}
			return nil, err
		}
	}
	return evs, nil
}

// event checks w and fills e.
func (w *wireEvent) event(e *Event) error {
	t, ok := ParseType(w.Type)
	if !ok {
		if w.Type == "" {
			return fmt.Errorf("%w: type is missing", ErrInvalidRequest)
		}
		return fmt.Errorf("%w: unknown event type %s", ErrInvalidRequest, quoteShort(w.Type))
	}
	if t == RequestType {
		return fmt.Errorf("%w: a request is sent with POST /api/ask, not published", ErrInvalidRequest)
	}
	e.Type = t
	if t.PerUser() {
		if w.User == nil {
			return fmt.Errorf("%w: notification needs user", ErrInvalidRequest)
		}
		if e.User, ok = NormalizeID(*w.User); !ok {
			return fmt.Errorf("%w: user %s is not an ObjectId (24 hex digits)", ErrInvalidRequest, quoteShort(*w.User))
		}
		if w.ID != nil {
			e.ID = *w.ID
		}
	} else {
		if w.User != nil {
			return fmt.Errorf("%w: user is only allowed for notification, not for %s", ErrInvalidRequest, w.Type)
		}
		if w.ID == nil {
			return fmt.Errorf("%w: id is required for %s", ErrInvalidRequest, w.Type)
		}
		if e.ID, ok = NormalizeID(*w.ID); !ok {
			return fmt.Errorf("%w: id %s of %s is not an ObjectId (24 hex digits)", ErrInvalidRequest, quoteShort(*w.ID), w.Type)
		}
	}
	if w.Data != nil {
		if w.Data[0] != '[' {
			return fmt.Errorf("%w: data must be a JSON array", ErrInvalidRequest)
		}
		e.Data = w.Data
		if bytes.ContainsAny(w.Data, " \t\r\n") {
			var compact bytes.Buffer
			if err := json.Compact(&compact, w.Data); err != nil {
				return fmt.Errorf("%w: %v", ErrInvalidRequest, err)
			}
			e.Data = compact.Bytes()
		}
	}
	return nil
}

// jsonError words a decoding error of a publish body for its caller:
// where the JSON is broken, or which field has the wrong kind of value
// (without encoding/json's Go type names).
func jsonError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d: %s", syn.Offset, strings.TrimPrefix(syn.Error(), "json: "))
	case errors.As(err, &typ):
		want := map[string]string{"string": "a string", "[]events.wireEvent": "an array of events", "events.wireEvent": "an event object"}[typ.Type.String()]
		if want == "" {
			want = "another kind of value"
		}
		if typ.Field == "" {
			return fmt.Sprintf("a JSON %s where %s belongs", typ.Value, want)
		}
		return fmt.Sprintf("%s must be %s, not a JSON %s", typ.Field, want, typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON ends too early"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// quoteShort quotes s for an error text, cut to 40 bytes.
func quoteShort(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%q...", s[:40])
	}
	return fmt.Sprintf("%q", s)
}

// appendString appends s as a JSON string. s must be valid UTF-8.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
