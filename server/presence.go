package server

// Presence and the server's side of many instances: a per-user index of
// connections (GET /api/presence, revocation, the heartbeat's counts),
// and events.Local for a ClusterBroker.

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/airlay/airlay/events"
)

// TopicPresence is the ask by which an instance collects the other live
// instances' connections of a user (body {"user": ID}; reply: a JSON array
// of events.Presence).
const TopicPresence = "presence"

// presenceTimeout bounds how long GET /api/presence waits for the other
// instances' answers; an instance that has not answered by then is left
// out of the list.
const presenceTimeout = 2 * time.Second

// userIndex keeps the open connections of each user: presence, revocation
// and a deleted user's closes find them without walking every connection.
type userIndex struct {
	mu sync.Mutex
	m  map[string]map[*conn]struct{}
}

func (x *userIndex) add(user string, c *conn) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m == nil {
		x.m = make(map[string]map[*conn]struct{})
	}
	set := x.m[user]
	if set == nil {
		set = make(map[*conn]struct{}, 1)
		x.m[user] = set
	}
	set[c] = struct{}{}
}

func (x *userIndex) remove(user string, c *conn) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if set := x.m[user]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(x.m, user)
		}
	}
}

// of returns the open connections of user.
func (x *userIndex) of(user string) []*conn {
	x.mu.Lock()
	defer x.mu.Unlock()
	set := x.m[user]
	out := make([]*conn, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	return out
}

// instanceName names this instance in presence: the ClusterBroker's name,
// or the host name without one.
func (s *Server) instanceName() string {
	if cb, ok := s.broker.(events.ClusterBroker); ok {
		return cb.Instance()
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "airlay"
	}
	return host
}

// localPresence lists this instance's connections of user, oldest first.
func (s *Server) localPresence(user string) []events.Presence {
	name := s.instanceName()
	out := []events.Presence{}
	for _, c := range s.users.of(user) {
		c.mu.Lock()
		n, gone := len(c.subs), c.gone
		c.mu.Unlock()
		if gone || c.closing.Load() {
			continue
		}
		out = append(out, events.Presence{Instance: name, Conn: strconv.FormatUint(c.id, 10), Opened: c.opened.UTC().Truncate(time.Second), Subscriptions: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Opened.Before(out[j].Opened) })
	return out
}

type presenceAnswer struct {
	Status      int               `json:"status"`
	Message     string            `json:"message"`
	Code        int               `json:"code"`
	Connections []events.Presence `json:"connections"`
}

// handlePresence is GET /api/presence?user=ID.
func (s *Server) handlePresence(w http.ResponseWriter, r *http.Request) {
	if s.cfg.PublishToken == "" {
		writeError(w, http.StatusNotFound, "Not found", events.InvalidRequest, "publish_token is empty in the server's configuration: this endpoint is off")
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writeError(w, http.StatusMethodNotAllowed, "Method not allowed", events.InvalidRequest, r.Method+" is not allowed here: use GET")
		return
	}
	if !s.checkBearer(w, r) {
		return
	}
	user, ok := events.NormalizeID(r.URL.Query().Get("user"))
	if !ok {
		writeError(w, http.StatusBadRequest, events.InvalidRequest.Message(), events.InvalidRequest, "user must be an ObjectId (24 hex digits)")
		return
	}
	list := s.localPresence(user)
	if cb, ok := s.broker.(events.ClusterBroker); ok {
		body, _ := json.Marshal(struct {
			User string `json:"user"`
		}{user})
		ctx, cancel := context.WithTimeout(r.Context(), presenceTimeout)
		_, err := cb.AskInstances(ctx, TopicPresence, body, func(rep events.InstanceReply) bool {
			var more []events.Presence
			if json.Unmarshal(rep.Body, &more) == nil {
				for _, p := range more {
					p.Instance = rep.Instance // an instance answers for itself only
					list = append(list, p)
				}
			}
			return true
		})
		cancel()
		if err != nil {
			s.log.Warn("presence: asking the other instances failed; answering with this instance's connections", "err", err)
		}
	}
	writeJSON(w, presenceAnswer{Status: http.StatusOK, Message: events.OK.Message(), Connections: list})
}

// answerPresence answers another instance's presence ask.
func (s *Server) answerPresence(_ context.Context, _ string, body []byte) []byte {
	var q struct {
		User string `json:"user"`
	}
	if json.Unmarshal(body, &q) != nil {
		return []byte("[]")
	}
	user, ok := events.NormalizeID(q.User)
	if !ok {
		return []byte("[]")
	}
	b, _ := json.Marshal(s.localPresence(user))
	return b
}

// local is the server's side for a ClusterBroker (events.Local).
type local struct{ s *Server }

var _ events.Local = local{}

func (l local) Counts() (int64, int64) {
	l.s.connsMu.Lock()
	n := len(l.s.conns)
	l.s.connsMu.Unlock()
	return int64(n), l.s.hub.Subscriptions()
}

func (l local) SubscribedUsers(k events.Key) []string {
	seen := map[string]bool{}
	var out []string
	for _, sub := range l.s.hub.Subscribers(k) {
		c, ok := sub.(*conn)
		if !ok {
			continue
		}
		if u := c.owner(); u != "" && !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out
}

func (l local) Detach(k events.Key, user string, floor events.Pos, frame func(pos string) []byte) int {
	n := 0
	for _, c := range l.s.users.of(user) {
		if c.withdraw(k, floor, frame) {
			n++
		}
	}
	return n
}

func (l local) UserGone(user string) int {
	n := 0
	for _, c := range l.s.users.of(user) {
		if !c.closing.Load() {
			c.closeAfterQueue(events.UserGone)
			n++
		}
	}
	return n
}
