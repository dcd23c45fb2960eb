package events

// NormalizeID reports whether s is a MongoDB ObjectId in hex (24 hex digits,
// either case) and returns it in lower case, the form every key uses, so that
// "610217E4..." and "610217e4..." name the same object.
func NormalizeID(s string) (string, bool) {
	if len(s) != 24 {
		return "", false
	}
	lower := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			lower = false
		default:
			return "", false
		}
	}
	if lower {
		return s, true
	}
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'F' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b), true
}
