package auth

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestCacheRepeatCostsNoRSA(t *testing.T) {
	priv, _ := keys(t)
	tok := sign(t, jwt.SigningMethodRS256, priv, claimsAt(t0))
	for _, tc := range []struct {
		size int
		want int64
	}{{0, 1}, {1, 1}, {-1, 100}} {
		opts := newClock(t0).options()
		opts.CacheSize = tc.size
		v := NewVerifier(&priv.PublicKey, opts)
		for range 100 {
			if _, err := v.Verify(tok); err != nil {
				t.Fatal(err)
			}
		}
		if got := v.rsaVerifies.Load(); got != tc.want {
			t.Errorf("CacheSize %d: %d RSA verifications for 100 calls, want %d", tc.size, got, tc.want)
		}
	}
}

func TestCacheKeepsOnlyValidTokens(t *testing.T) {
	priv, other := keys(t)
	v := NewVerifier(&priv.PublicKey, newClock(t0).options())
	bad := sign(t, jwt.SigningMethodRS256, other, claimsAt(t0))
	for range 3 {
		if _, err := v.Verify(bad); !errors.Is(err, errSignature) {
			t.Fatal(err)
		}
	}
	if n, calls := v.cache.len(), v.rsaVerifies.Load(); n != 0 || calls != 3 {
		t.Fatalf("cache holds %d, %d RSA verifications; want 0 and 3", n, calls)
	}
}

// A cached token expires exactly when an uncached one does: same leeway.
func TestCachedTokenExpiresWithTheClock(t *testing.T) {
	priv, _ := keys(t)
	exp := t0.Add(time.Minute)
	tok := sign(t, jwt.SigningMethodRS256, priv, with(jwt.MapClaims{"exp": exp.Unix()}))
	for _, leeway := range []time.Duration{0, -1, 30 * time.Second} {
		clk := newClock(t0)
		cached := NewVerifier(&priv.PublicKey, Options{Now: clk.now, Leeway: leeway})
		uncached := NewVerifier(&priv.PublicKey, Options{Now: clk.now, Leeway: leeway, CacheSize: -1})
		if _, err := cached.Verify(tok); err != nil {
			t.Fatal(err)
		}
		l := cached.leeway
		times := []time.Time{exp.Add(-time.Second), exp, exp.Add(l - time.Nanosecond), exp.Add(l), exp.Add(l + time.Hour)}
		slices.SortFunc(times, time.Time.Compare) // the clock only moves forward here
		for _, at := range times {
			clk.set(at)
			_, errC := cached.Verify(tok)
			_, errU := uncached.Verify(tok)
			wantValid := at.Before(exp.Add(l))
			if (errC == nil) != wantValid || (errU == nil) != wantValid {
				t.Fatalf("leeway %v, at exp%+v: cached %v, uncached %v, want valid=%v", l, at.Sub(exp), errC, errU, wantValid)
			}
			if !wantValid && (!errors.Is(errC, errExpired) || !errors.Is(errU, errExpired)) {
				t.Fatalf("errors %v / %v, want %v", errC, errU, errExpired)
			}
			// Every valid answer came from the cache; the first expired
			// one removed the token.
			if n := cached.rsaVerifies.Load(); wantValid && n != 1 {
				t.Fatalf("%d RSA verifications, want 1", n)
			}
			if n := cached.cache.len(); !wantValid && n != 0 {
				t.Fatalf("expired token still cached (%d entries)", n)
			}
		}
		// Back in time the token is verified afresh (it was removed).
		clk.set(t0)
		before := cached.rsaVerifies.Load()
		if _, err := cached.Verify(tok); err != nil || cached.rsaVerifies.Load() != before+1 {
			t.Fatalf("after rewinding: %v, %d RSA verifications", err, cached.rsaVerifies.Load()-before)
		}
	}
}

func TestCacheNeverExceedsItsSize(t *testing.T) {
	for _, size := range []int{1, 2, 3, 63, 64, 65, 100, 1000} {
		c := newCache(size)
		total := 0
		for i := range c.shards {
			total += c.shards[i].max
		}
		if total != size {
			t.Fatalf("size %d: shards hold %d", size, total)
		}
		for i := range 20*size + 1000 { // enough that every shard fills up
			c.put(fmt.Sprintf("token-%d", i), Claims{ExpiresAt: t0.Add(time.Duration(i) * time.Second)})
			if i%97 == 0 && c.len() > size {
				t.Fatalf("size %d: %d entries after %d puts", size, c.len(), i+1)
			}
		}
		if n := c.len(); n != size {
			t.Fatalf("size %d: %d entries at the end", size, n)
		}
		// Putting a token already there never evicts.
		for i := range c.shards {
			for k := range c.shards[i].m {
				c.put(k, Claims{})
			}
		}
		if n := c.len(); n != size {
			t.Fatalf("size %d: %d entries after refreshing", size, n)
		}
	}
}

func TestVerifierCacheBounded(t *testing.T) {
	priv, _ := keys(t)
	opts := newClock(t0).options()
	opts.CacheSize = 5
	v := NewVerifier(&priv.PublicKey, opts)
	tokens := make([]string, 40)
	for i := range tokens {
		tokens[i] = sign(t, jwt.SigningMethodRS256, priv, with(jwt.MapClaims{"jti": fmt.Sprint(i)}))
	}
	for range 2 {
		for _, tok := range tokens {
			if _, err := v.Verify(tok); err != nil {
				t.Fatal(err)
			}
			if n := v.cache.len(); n > 5 {
				t.Fatalf("cache holds %d, CacheSize 5", n)
			}
		}
	}
}

func TestEvictionPrefersExpiringFirst(t *testing.T) {
	s := &cacheShard{}
	s.max = 3
	s.m = map[string]Claims{
		"a": {ExpiresAt: t0.Add(time.Hour)},
		"b": {ExpiresAt: t0.Add(-time.Hour)},
		"c": {ExpiresAt: t0.Add(2 * time.Hour)},
	}
	s.evictLocked()
	if _, ok := s.m["b"]; ok || len(s.m) != 2 {
		t.Fatalf("left %v", s.m)
	}
	empty := &cacheShard{}
	empty.m = map[string]Claims{}
	empty.evictLocked() // nothing to do, no panic
}

func TestVerifyConcurrent(t *testing.T) {
	priv, other := keys(t)
	valid := make([]string, 8)
	for i := range valid {
		valid[i] = sign(t, jwt.SigningMethodRS256, priv, with(jwt.MapClaims{"jti": fmt.Sprint(i)}))
	}
	invalid := []string{
		sign(t, jwt.SigningMethodRS256, other, claimsAt(t0)),
		sign(t, jwt.SigningMethodRS256, priv, with(jwt.MapClaims{"exp": t0.Add(-time.Hour).Unix()})),
	}
	for _, size := range []int{0, 3} { // roomy, and churning (constant eviction)
		clk := newClock(t0)
		v := NewVerifier(&priv.PublicKey, Options{Now: clk.now, CacheSize: size})
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for g := range 16 {
			wg.Go(func() {
				for i := range 40 {
					var tok string
					switch {
					case g%4 == 0:
						tok = valid[0] // everyone on the same token
					case i%5 == 0:
						tok = invalid[(g+i)%len(invalid)]
					default:
						tok = valid[(g+i)%len(valid)]
					}
					c, err := v.Verify(tok)
					bad := tok == invalid[0] || tok == invalid[1]
					if bad != (err != nil) || (!bad && c.UserID != userID) {
						errs <- fmt.Errorf("size %d: got %+v, %v", size, c, err)
						return
					}
					if g == 1 && i%10 == 0 {
						clk.add(time.Millisecond) // the clock moves while others read it
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if n := v.cache.len(); size > 0 && n > size {
			t.Fatalf("cache holds %d, CacheSize %d", n, size)
		}
	}
}
