package mongodb

import (
	"context"
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
}

type cacheEntry struct {
	val bool
	exp time.Time
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
		v, err := load(lctx)
		if err == nil && c.ttl > 0 {
			c.put(key, v)
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

func (c *cache) put(key string, v bool) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
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
	c.m[key] = cacheEntry{val: v, exp: now.Add(c.ttl)}
}

// len returns the number of answers kept.
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
