package auth

import (
	"hash/maphash"
	"sync"
	"unsafe"
)

// cacheShards is how many independently locked maps the cache splits into
// (fewer when the cache holds fewer tokens than this).
const cacheShards = 64

// evictSample is how many entries a full shard looks at to pick the one to
// drop: the one expiring first, so expired tokens go before live ones.
const evictSample = 4

// cache holds the claims of verified tokens, keyed by the token string. It
// never holds more than its size: each shard has a fixed share of it and
// drops an entry before it takes one past that share. It knows nothing of
// time; the Verifier checks exp on every hit.
type cache struct {
	seed   maphash.Seed
	shards []cacheShard
}

type shardData struct {
	mu  sync.RWMutex
	m   map[string]Claims
	max int
}

// cacheShard pads each shard to a multiple of 128 bytes so that the locks of
// neighbouring shards do not share a cache line.
type cacheShard struct {
	shardData
	_ [128 - unsafe.Sizeof(shardData{})%128]byte
}

// newCache returns a cache for at most size tokens; size must be positive.
func newCache(size int) *cache {
	n := min(cacheShards, size)
	c := &cache{seed: maphash.MakeSeed(), shards: make([]cacheShard, n)}
	for i := range c.shards {
		s := &c.shards[i]
		s.max = size / n
		if i < size%n {
			s.max++
		}
		s.m = make(map[string]Claims)
	}
	return c
}

// shardKeyLen is how much of a token's end picks its shard.
const shardKeyLen = 16

// shard picks by the token's last bytes, part of its signature: the map
// hashes the whole token again anyway, and only verified tokens are stored,
// whose signatures nobody without the private key can choose.
func (c *cache) shard(token string) *cacheShard {
	tail := token[max(0, len(token)-shardKeyLen):]
	return &c.shards[maphash.String(c.seed, tail)%uint64(len(c.shards))]
}

func (c *cache) get(token string) (Claims, bool) {
	s := c.shard(token)
	s.mu.RLock()
	cl, ok := s.m[token]
	s.mu.RUnlock()
	return cl, ok
}

func (c *cache) put(token string, cl Claims) {
	s := c.shard(token)
	s.mu.Lock()
	if _, ok := s.m[token]; !ok && len(s.m) >= s.max {
		s.evictLocked()
	}
	s.m[token] = cl
	s.mu.Unlock()
}

func (c *cache) remove(token string) {
	s := c.shard(token)
	s.mu.Lock()
	delete(s.m, token)
	s.mu.Unlock()
}

// len reports how many tokens the cache holds.
func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// evictLocked drops the entry expiring first among a few that map iteration
// (which starts at a random place) yields.
func (s *cacheShard) evictLocked() {
	victim, seen := "", 0
	var exp Claims
	for k, cl := range s.m {
		if seen == 0 || cl.ExpiresAt.Before(exp.ExpiresAt) {
			victim, exp = k, cl
		}
		if seen++; seen == evictSample {
			break
		}
	}
	if seen > 0 {
		delete(s.m, victim)
	}
}
