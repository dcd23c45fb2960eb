package events

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"
)

// Asking a frontend (POST /api/ask): the server opens an Ask in its Asks,
// sends the request event to the user's request subscribers through its
// broker, and waits for the first reply or the timeout. Asks is this
// instance's registry of open requests; the broker carries the request to
// the connections and a reply back to the Asks of the instance that
// asked.

// AskBroker is a Broker that carries requests and their replies itself
// (across instances: the request reaches the user's connections on every
// instance, a reply taken on any instance reaches the one that asked, the
// first reply wins everywhere). The server uses it for POST /api/ask and
// for reply frames; MemoryBroker is one for a single instance.
type AskBroker interface {
	Broker
	// Ask sends ev (Type RequestType, ID the request id, User the user,
	// Data the question) to every connection of ev.User that holds a
	// request subscription, on every instance, each at most once. It
	// reports how many connections it reached; 0 means none holds one
	// (the backend gets 409 code 8). asks is this instance's registry,
	// where the request is open already (so that a reply may come before
	// Ask returns).
	Ask(ctx context.Context, asks *Asks, ev Event) (reached int, err error)
	// Reply offers the reply r of a connection of user (on this instance)
	// to the request id. taken reports whether it was the first reply to
	// an open request of that user, everywhere; it is then handed to the
	// Asks of the instance that asked. false: unknown, answered already,
	// timed out, or a request of another user (the connection gets code 5).
	Reply(ctx context.Context, asks *Asks, user, id string, r AskReply) (taken bool, err error)
}

// AskCounter is an AskBroker whose requests travel to other instances
// (through the broker's Run): the server tells it, for each request event
// its hub delivered, how many connections of this instance got it (0
// included), so that the asking instance learns whether anyone was
// reached. It must not block.
type AskCounter interface {
	AskBroker
	Delivered(ev *Event, n int)
}

// AskCloser is an AskBroker that must settle a request that timed out
// with every instance: Expire makes sure no reply is taken for it from
// now on, anywhere, unless one was taken already; then it hands that
// reply to asks (Take) so that it stands. The server calls it before it
// answers 504.
type AskCloser interface {
	AskBroker
	Expire(ctx context.Context, asks *Asks, a *Ask) error
}

// AskReply is a frontend's reply to a request.
type AskReply struct {
	Data json.RawMessage // a compact JSON array
	Conn string          // the connection that replied, as presence names it
}

// Ask is one open request of this instance.
type Ask struct {
	ID   string
	User string
	done chan struct{}
	r    AskReply // set before done is closed
}

// Done is closed when the request was answered.
func (a *Ask) Done() <-chan struct{} { return a.done }

// Reply returns the reply; only after Done is closed.
func (a *Ask) Reply() AskReply { return a.r }

// Limits of open requests past which Asks.Open refuses.
var (
	ErrTooManyAsksUser = errors.New("too many open requests for this user")
	ErrTooManyAsks     = errors.New("too many open requests on this instance")
)

// Asks is the registry of the open requests of one instance, bounded per
// user and in all. An answered or closed request is forgotten at once.
type Asks struct {
	perUser, total int
	mu             sync.Mutex
	open           map[string]*Ask
	users          map[string]int
}

// NewAsks returns an empty registry that holds at most perUser open
// requests of one user and total in all.
func NewAsks(perUser, total int) *Asks {
	return &Asks{perUser: perUser, total: total, open: make(map[string]*Ask), users: make(map[string]int)}
}

// NewAskID returns a new request id: 128 random bits, 32 hex digits (it
// cannot be guessed, and is unique across instances).
func NewAskID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Open opens a request of user with a new id, unless a limit is reached
// (ErrTooManyAsksUser, ErrTooManyAsks).
func (s *Asks) Open(user string) (*Ask, error) {
	a := &Ask{ID: NewAskID(), User: user, done: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case len(s.open) >= s.total:
		return nil, ErrTooManyAsks
	case s.users[user] >= s.perUser:
		return nil, ErrTooManyAsksUser
	}
	s.open[a.ID] = a
	s.users[user]++
	return a, nil
}

// forget removes a; under mu.
func (s *Asks) forget(a *Ask) {
	delete(s.open, a.ID)
	if s.users[a.User]--; s.users[a.User] <= 0 {
		delete(s.users, a.User)
	}
}

// Take hands r to the open request id of user: true when it was open (the
// first reply wins; the request is forgotten). A request of another user
// is never answered.
func (s *Asks) Take(user, id string, r AskReply) bool {
	s.mu.Lock()
	a := s.open[id]
	if a == nil || a.User != user {
		s.mu.Unlock()
		return false
	}
	s.forget(a)
	s.mu.Unlock()
	a.r = r
	close(a.done)
	return true
}

// IsOpen reports whether id is an open request of user on this instance.
func (s *Asks) IsOpen(user, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.open[id]
	return a != nil && a.User == user
}

// Close forgets a (timed out, nobody reached, the backend went away). It
// reports false when a was answered first: then its reply stands.
func (s *Asks) Close(a *Ask) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[a.ID] != a {
		return false
	}
	s.forget(a)
	return true
}

// Len returns the number of open requests.
func (s *Asks) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

var _ AskBroker = (*MemoryBroker)(nil)

// Ask delivers ev to this process's request subscribers of ev.User.
func (b *MemoryBroker) Ask(ctx context.Context, _ *Asks, ev Event) (int, error) {
	select {
	case <-b.ready:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return b.hub.Publish([]Event{ev}, nil), nil
}

// Reply takes r for an open request of user in this process.
func (b *MemoryBroker) Reply(_ context.Context, asks *Asks, user, id string, r AskReply) (bool, error) {
	return asks.Take(user, id, r), nil
}

type wireAsk struct {
	User *string         `json:"user"`
	Data json.RawMessage `json:"data"`
}

// ParseAsk parses a POST /api/ask body {"user": ObjectId, "data": [...]}:
// the user (lower case) and data, a compact JSON array ("[]" when absent).
func ParseAsk(body []byte) (user string, data json.RawMessage, err error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return "", nil, fmt.Errorf("%w: empty body", ErrInvalidRequest)
	}
	if !utf8.Valid(body) {
		return "", nil, fmt.Errorf("%w: body is not UTF-8", ErrInvalidRequest)
	}
	if body[0] != '{' {
		return "", nil, fmt.Errorf("%w: the body is one object {\"user\", \"data\"}", ErrInvalidRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var w wireAsk
	if err := dec.Decode(&w); err != nil {
		return "", nil, fmt.Errorf("%w: %s", ErrInvalidRequest, jsonError(err))
	}
	if len(bytes.TrimSpace(body[dec.InputOffset():])) != 0 {
		return "", nil, fmt.Errorf("%w: the body goes on after its first JSON value", ErrInvalidRequest)
	}
	if w.User == nil {
		return "", nil, fmt.Errorf("%w: user is required", ErrInvalidRequest)
	}
	user, ok := NormalizeID(*w.User)
	if !ok {
		return "", nil, fmt.Errorf("%w: user %s is not an ObjectId (24 hex digits)", ErrInvalidRequest, quoteShort(*w.User))
	}
	data = json.RawMessage("[]")
	if w.Data != nil {
		if w.Data[0] != '[' {
			return "", nil, fmt.Errorf("%w: data must be a JSON array", ErrInvalidRequest)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, w.Data); err != nil {
			return "", nil, fmt.Errorf("%w: %v", ErrInvalidRequest, err)
		}
		data = compact.Bytes()
	}
	return user, data, nil
}
