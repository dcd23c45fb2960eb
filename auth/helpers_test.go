package auth

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Keys are generated once per test binary: RSA generation costs far more
// than everything else here.
var (
	keysOnce sync.Once
	key      *rsa.PrivateKey // signs the tokens under test
	otherKey *rsa.PrivateKey // a stranger's key
)

func keys(tb testing.TB) (*rsa.PrivateKey, *rsa.PrivateKey) {
	tb.Helper()
	keysOnce.Do(func() {
		var err error
		if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if otherKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return key, otherKey
}

// t0 is the tests' "now": whole seconds, as JWT times are.
var t0 = time.Unix(1_800_000_000, 0)

const userID = "610217e481f6fc54736209e0"

// clock is a movable Options.Now, safe for concurrent use.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.set(t)
	return c
}

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }
func (c *clock) options() Options    { return Options{Now: c.now} }
func unix(t time.Time) int64         { return t.Unix() }
func claimsAt(t time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"exp":  t.Add(time.Hour).Unix(),
		"iat":  t.Unix(),
		"data": map[string]any{"id": userID, "name": "Ann"},
	}
}

// sign signs claims with any method and key, failing the test on error.
func sign(tb testing.TB, m jwt.SigningMethod, k any, claims jwt.MapClaims) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(k)
	if err != nil {
		tb.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

func publicPEM(tb testing.TB, pub *rsa.PublicKey) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
