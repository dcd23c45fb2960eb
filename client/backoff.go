package client

import (
	"math/rand/v2"
	"time"
)

// Default reconnect bounds.
const (
	DefaultBackoffMin = 500 * time.Millisecond
	DefaultBackoffMax = 30 * time.Second
)

// Backoff chooses the wait before each reconnect attempt: exponential
// backoff with full jitter above a floor. The n-th attempt in a row (n = 0
// after a connection that worked) waits a uniformly random time in
//
//	[Min, min(Max, Min·2^(n+1))]
//
// so every wait lies within [Min, Max], and clients dropped together (a
// server restart) spread their attempts over the whole window instead of
// coming back in step. Backoff is not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration  // zero: DefaultBackoffMin, DefaultBackoffMax
	Rand     func() float64 // a number in [0, 1); nil: math/rand/v2.Float64

	attempt int
}

// Next returns the wait before the next attempt and counts the attempt.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.bounds()
	ceil := hi
	if b.attempt < 62 {
		if c := lo << (b.attempt + 1); c > 0 && c < hi {
			ceil = c
		}
	}
	b.attempt++
	r := rand.Float64
	if b.Rand != nil {
		r = b.Rand
	}
	f := r()
	if f < 0 || f >= 1 {
		f = 0
	}
	return lo + time.Duration(f*float64(ceil-lo+1))
}

// Reset starts again from the first attempt (after a connection that
// worked).
func (b *Backoff) Reset() { b.attempt = 0 }

func (b *Backoff) bounds() (lo, hi time.Duration) {
	lo, hi = b.Min, b.Max
	if lo <= 0 {
		lo = DefaultBackoffMin
	}
	if hi <= 0 {
		hi = DefaultBackoffMax
	}
	if hi < lo {
		hi = lo
	}
	return lo, hi
}
