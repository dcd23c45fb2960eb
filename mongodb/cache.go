package mongodb

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// cache keeps yes/no answers for a short time, and makes concurrent misses of
// one key share one query. Errors are not kept.
type cache struct {
	ttl     time.Duration // 0: answers are not kept (misses still share)
	max     int
	timeout time.Duration // of one query
	now     func() time.Time
	hits    prometheus.Counter
	misses  prometheus.Counter

	mu sync.Mutex
	m  map[string]cacheEntry
	sf singleflight.Group
	// dropped: when a key ("k:" key) or a group ("g:" the part of keys
	// after their last "/", a dataset) was invalidated; an answer whose
	// query started before is not used or kept.
	dropped map[string]time.Time
}

type cacheEntry struct {
	val bool
	exp time.Time
	at  time.Time // when its query started
}

func newCache(ttl time.Duration, max int, timeout time.Duration, hits, misses prometheus.Counter) *cache {
	return &cache{ttl: ttl, max: max, timeout: timeout, now: time.Now, hits: hits, misses: misses, m: make(map[string]cacheEntry)}
}

// get answers key from the cache or with load. load runs at most once at a
// time per key, with its own timeout, so that a caller that gives up does
// not fail the others waiting for the same answer.
func (c *cache) get(ctx context.Context, key string, load func(context.Context) (bool, error)) (bool, error) {
	if c.ttl > 0 {
		c.mu.Lock()
		e, ok := c.m[key]
		ok = ok && !c.staleLocked(key, e.at)
		c.mu.Unlock()
		if ok && c.now().Before(e.exp) {
			c.hits.Inc()
			return e.val, nil
		}
	}
	c.misses.Inc()
	ch := c.sf.DoChan(key, func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
		defer cancel()
		start := c.now()
		v, err := load(lctx)
		if err == nil && c.ttl > 0 {
			c.put(key, v, start)
		}
		return v, err
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return false, r.Err
		}
		return r.Val.(bool), nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// staleLocked reports whether an answer to key whose query started at at
// was invalidated since.
func (c *cache) staleLocked(key string, at time.Time) bool {
	if len(c.dropped) == 0 {
		return false
	}
	if t, ok := c.dropped["k:"+key]; ok && !at.After(t) {
		return true
	}
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		if t, ok := c.dropped["g:"+key[i+1:]]; ok && !at.After(t) {
			return true
		}
	}
	return false
}

// drop invalidates the answer of key (a deleted user).
func (c *cache) drop(key string) { c.invalidate("k:" + key) }

// dropGroup invalidates every answer of keys ending in "/"+group (every
// user's access to a dataset that changed).
func (c *cache) dropGroup(group string) { c.invalidate("g:" + group) }

func (c *cache) invalidate(name string) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dropped == nil {
		c.dropped = make(map[string]time.Time)
	}
	if len(c.dropped) >= 10000 {
		// An invalidation matters only while an answer from before it
		// can be kept: ttl, plus a query under way.
		for k, t := range c.dropped {
			if now.Sub(t) > c.ttl+c.timeout {
				delete(c.dropped, k)
			}
		}
	}
	c.dropped[name] = now
	if name[0] == 'k' {
		delete(c.m, name[2:])
	}
}

func (c *cache) put(key string, v bool, start time.Time) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.staleLocked(key, start) {
		return
	}
	if len(c.m) >= c.max {
		for k, e := range c.m {
			if !now.Before(e.exp) {
				delete(c.m, k)
			}
		}
		// Still full of live answers: forget a quarter, at random.
		for k := range c.m {
			if len(c.m) < c.max*3/4 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[key] = cacheEntry{val: v, exp: now.Add(c.ttl), at: start}
}

// len returns the number of answers kept.
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
