package events

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
)

// Pos is the position of an event in the order its hub delivered it.
// Positions of one hub only grow, so for one key they grow in delivery
// order. Without MongoDB Hi is the hub's own count of events and Lo is 0;
// with MongoDB Hi is the change's cluster time (seconds << 32 | increment)
// and Lo the event's index among the events of that change, so that every
// instance gives an event the same position.
type Pos struct {
	Hi uint64
	Lo uint32
}

// Less reports whether p comes before q.
func (p Pos) Less(q Pos) bool { return p.Hi < q.Hi || p.Hi == q.Hi && p.Lo < q.Lo }

// IsZero reports whether p is the zero Pos, which comes before every event.
func (p Pos) IsZero() bool { return p == Pos{} }

// Stamp is where an event's order was decided outside the hub: the cluster
// time of a MongoDB change (seconds and increment). The events of one
// change share it and take their index as Pos.Lo.
type Stamp struct{ T, I uint32 }

// Less reports whether s comes before t.
func (s Stamp) Less(t Stamp) bool { return s.T < t.T || s.T == t.T && s.I < t.I }

// Pos returns the position of the index-th event of the change at s.
func (s Stamp) Pos(index int) Pos { return Pos{Hi: uint64(s.T)<<32 | uint64(s.I), Lo: uint32(index)} }

// EpochLen is the length of an epoch: 16 lower-case hex digits.
const EpochLen = 16

// NewEpoch returns a random epoch, for a hub whose positions do not outlive
// the process.
func NewEpoch() string {
	var b [EpochLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported systems
	}
	return hex.EncodeToString(b[:])
}

// ValidEpoch reports whether e is an epoch as positions carry them.
func ValidEpoch(e string) bool {
	if len(e) != EpochLen {
		return false
	}
	for i := 0; i < len(e); i++ {
		if c := e[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// MaxPosLen bounds the text of a position: "epoch:" and three numbers.
const MaxPosLen = EpochLen + 1 + 20 + 1 + 10 + 1 + 10

// AppendPos appends the text of p: "epoch:N" for a position the hub
// counted itself, "epoch:T.I.N" for a stamped one (MongoDB's cluster time
// T.I and the index N).
func AppendPos(b []byte, epoch string, stamped bool, p Pos) []byte {
	b = append(b, epoch...)
	b = append(b, ':')
	if !stamped {
		return strconv.AppendUint(b, p.Hi, 10)
	}
	b = strconv.AppendUint(b, p.Hi>>32, 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, p.Hi&0xffffffff, 10)
	b = append(b, '.')
	return strconv.AppendUint(b, uint64(p.Lo), 10)
}

// FormatPos returns the text of p (see AppendPos).
func FormatPos(epoch string, stamped bool, p Pos) string {
	return string(AppendPos(make([]byte, 0, MaxPosLen), epoch, stamped, p))
}

// ParsePos reads a position as AppendPos writes it. ok is false for a text
// that no server writes (the request is then malformed, code 5); a
// well-formed position of another epoch or form parses, and the hub
// answers it recovered:false.
func ParsePos(s string) (epoch string, stamped bool, p Pos, ok bool) {
	if len(s) > MaxPosLen || len(s) < EpochLen+2 || s[EpochLen] != ':' || !ValidEpoch(s[:EpochLen]) {
		return "", false, Pos{}, false
	}
	epoch, rest := s[:EpochLen], s[EpochLen+1:]
	var nums [3]uint64
	n := 0
	for start := 0; ; n++ {
		end := start
		for end < len(rest) && rest[end] != '.' {
			end++
		}
		if n == 3 {
			return "", false, Pos{}, false
		}
		v, good := parseDecimal(rest[start:end])
		if !good {
			return "", false, Pos{}, false
		}
		nums[n] = v
		if end == len(rest) {
			n++
			break
		}
		start = end + 1
	}
	switch n {
	case 1:
		return epoch, false, Pos{Hi: nums[0]}, true
	case 3:
		if nums[0] > 0xffffffff || nums[1] > 0xffffffff || nums[2] > 0xffffffff {
			return "", false, Pos{}, false
		}
		return epoch, true, Pos{Hi: nums[0]<<32 | nums[1], Lo: uint32(nums[2])}, true
	}
	return "", false, Pos{}, false
}

// parseDecimal reads a decimal number as strconv.AppendUint writes it: no
// sign, no leading zero, no other characters.
func parseDecimal(s string) (uint64, bool) {
	if s == "" || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil
}
