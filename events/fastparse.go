package events

// A fast path for the common request: {"auth":"...","action":"...",
// "event":{"type":"...","id":"..."}} with plain ASCII strings. encoding/json
// spends ~8 us on a request with an RS256 token, most of it validating and
// copying the token; this scanner does it in one pass. Anything it does not
// fully understand (escapes, non-ASCII, other or repeated keys, other value
// types) makes it give up, and ParseRequest falls back to encoding/json, which
// stays the definition of what a request means. FuzzFastRequest checks that
// both agree.

type fastRequest struct {
	auth, action, typ, id, since, data string
	hasEvent, hasSince, hasData        bool
}

type scanner struct {
	b   []byte
	pos int
}

func (s *scanner) space() {
	for s.pos < len(s.b) {
		switch s.b[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// byte consumes c (after white space).
func (s *scanner) byte(c byte) bool {
	s.space()
	if s.pos < len(s.b) && s.b[s.pos] == c {
		s.pos++
		return true
	}
	return false
}

// raw reads a string of printable ASCII without escapes and returns its
// bytes, which alias the frame.
func (s *scanner) raw() ([]byte, bool) {
	if !s.byte('"') {
		return nil, false
	}
	start := s.pos
	for s.pos < len(s.b) {
		c := s.b[s.pos]
		if c == '"' {
			s.pos++
			return s.b[start : s.pos-1], true
		}
		if c < 0x20 || c >= 0x7f || c == '\\' {
			return nil, false
		}
		s.pos++
	}
	return nil, false
}

// str reads a string like raw and copies it.
func (s *scanner) str() (string, bool) {
	b, ok := s.raw()
	return string(b), ok
}

// known reads a string like raw; one of the known values costs no copy.
func (s *scanner) known(values ...string) (string, bool) {
	b, ok := s.raw()
	for _, v := range values {
		if string(b) == v {
			return v, ok
		}
	}
	return string(b), ok
}

// next moves to the next key of an object: after '{' (first) or after a
// value. It reports the key, or done at '}'; ok is false on anything else.
func (s *scanner) next(first bool) (key []byte, done, ok bool) {
	if s.byte('}') {
		return nil, true, true
	}
	if !first && !s.byte(',') {
		return nil, false, false
	}
	key, ok = s.raw()
	if !ok || !s.byte(':') {
		return nil, false, false
	}
	return key, false, true
}

// parseFast parses frame on the fast path; ok is false when it gives up.
func parseFast(frame []byte) (r fastRequest, ok bool) {
	s := scanner{b: frame}
	if !s.byte('{') {
		return r, false
	}
	var seen uint8 // auth, action, event, type, id, since
	for first := true; ; first = false {
		key, done, ok := s.next(first)
		if !ok {
			return r, false
		}
		if done {
			break
		}
		var bit uint8
		switch string(key) {
		case "auth":
			bit = 1
			r.auth, ok = s.str()
		case "action":
			bit = 2
			r.action, ok = s.known("attach", "detach")
		case "event":
			bit = 4
			r.hasEvent = true
			ok = s.byte('{') && s.eventFields(&r, &seen)
		case "since":
			bit = 32
			r.hasSince = true
			r.since, ok = s.str()
		}
		if bit == 0 || !ok || seen&bit != 0 {
			return r, false
		}
		seen |= bit
	}
	s.space()
	return r, s.pos == len(s.b)
}

// eventFields reads the fields of "event" after its '{'.
func (s *scanner) eventFields(r *fastRequest, seen *uint8) bool {
	for first := true; ; first = false {
		key, done, ok := s.next(first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		var bit uint8
		switch string(key) {
		case "type":
			bit = 8
			r.typ, ok = s.known(typeNames[1:]...)
		case "id":
			bit = 16
			r.id, ok = s.str()
		}
		if bit == 0 || !ok || *seen&bit != 0 {
			return false
		}
		*seen |= bit
	}
}
