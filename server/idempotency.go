package server

// Idempotency-Key of POST /api/events: a retry of a publish with the same
// key within idempotency_window is answered 200 and delivers nothing again.
// With a broker that keeps keys itself (events.KeyedBroker: MongoDB, across
// instances) it decides; otherwise this instance remembers keys in memory,
// at most idempotency_keys at once.

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/airlay/airlay/events"
)

// errKeysFull: idempotency_keys keys are remembered; a publish with a new key
// is refused (503) rather than forgetting a key early, which would let a
// retry deliver twice.
var errKeysFull = errors.New("idempotency keys: idempotency_keys are remembered; a publish with a new key is refused until some expire")

// publish hands evs to the broker, once per key when key is not empty. dup
// reports a key seen within the window: nothing was published.
func (s *Server) publish(ctx context.Context, key string, evs []events.Event, tr *events.Tracker) (dup bool, err error) {
	if key == "" {
		return false, s.broker.Publish(ctx, evs, tr)
	}
	if kb, ok := s.broker.(events.KeyedBroker); ok {
		return kb.PublishKeyed(ctx, key, evs, tr)
	}
	switch s.keys.reserve(key) {
	case keyDuplicate:
		return true, nil
	case keyFull:
		return false, errKeysFull
	}
	if err := s.broker.Publish(ctx, evs, tr); err != nil {
		s.keys.release(key) // nothing was published: a retry must publish
		return false, err
	}
	return false, nil
}

// keySet remembers keys for a fixed window, at most max of them. The window
// is the same for every key, so keys expire in the order they came: a FIFO
// queue finds the expired ones without a scan.
type keySet struct {
	window time.Duration
	max    int
	now    func() time.Time

	mu    sync.Mutex
	keys  map[string]time.Time // key -> when it expires
	queue []keyEntry           // in order of arrival; queue[head:] is live
	head  int
}

type keyEntry struct {
	key string
	exp time.Time
}

type keyResult int

const (
	keyNew keyResult = iota
	keyDuplicate
	keyFull
)

func newKeySet(window time.Duration, max int) *keySet {
	if window <= 0 {
		window = 10 * time.Minute
	}
	if max <= 0 {
		max = 100000
	}
	return &keySet{window: window, max: max, now: time.Now, keys: make(map[string]time.Time)}
}

// reserve records key unless it is remembered (keyDuplicate) or the set is
// full (keyFull).
func (k *keySet) reserve(key string) keyResult {
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	k.expire(now)
	if _, ok := k.keys[key]; ok {
		return keyDuplicate
	}
	if len(k.keys) >= k.max {
		return keyFull
	}
	if len(k.queue)-k.head >= 2*k.max { // released keys' entries: drop them
		live := k.queue[:0:0]
		for _, e := range k.queue[k.head:] {
			if exp, ok := k.keys[e.key]; ok && exp.Equal(e.exp) {
				live = append(live, e)
			}
		}
		k.queue, k.head = live, 0
	}
	exp := now.Add(k.window)
	k.keys[key] = exp
	k.queue = append(k.queue, keyEntry{key: key, exp: exp})
	return keyNew
}

// release forgets key (its publish failed).
func (k *keySet) release(key string) {
	k.mu.Lock()
	delete(k.keys, key)
	k.mu.Unlock()
}

// expire drops the keys whose window ended; k.mu is held.
func (k *keySet) expire(now time.Time) {
	for k.head < len(k.queue) && !now.Before(k.queue[k.head].exp) {
		e := k.queue[k.head]
		if exp, ok := k.keys[e.key]; ok && exp.Equal(e.exp) {
			delete(k.keys, e.key)
		}
		k.queue[k.head] = keyEntry{}
		k.head++
	}
	// Entries of released keys stay queued until their time; compact when
	// the dead head is the larger part.
	if k.head > 1024 && k.head*2 > len(k.queue) {
		k.queue = append(k.queue[:0:0], k.queue[k.head:]...)
		k.head = 0
	}
}

// len returns the number of keys remembered.
func (k *keySet) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.expire(k.now())
	return len(k.keys)
}
