package auth

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// benchTokens mints n distinct valid tokens for userID.
func benchTokens(b *testing.B, n int) []string {
	b.Helper()
	priv, _ := keys(b)
	toks := make([]string, n)
	for i := range toks {
		var err error
		toks[i], err = Mint(priv, MintOptions{UserID: userID, Name: fmt.Sprint("user ", i), TTL: 24 * time.Hour})
		if err != nil {
			b.Fatal(err)
		}
	}
	return toks
}

func benchVerify(b *testing.B, v *Verifier, tok string) {
	if _, err := v.Verify(tok); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkVerifyUncached: one RSA verification per call.
func BenchmarkVerifyUncached(b *testing.B) {
	priv, _ := keys(b)
	tok := benchTokens(b, 1)[0]
	v := NewVerifier(&priv.PublicKey, Options{CacheSize: -1})
	b.ReportAllocs()
	for b.Loop() {
		benchVerify(b, v, tok)
	}
}

// BenchmarkVerifyCached: a token seen before (a client's every request).
func BenchmarkVerifyCached(b *testing.B) {
	priv, _ := keys(b)
	tok := benchTokens(b, 1)[0]
	v := NewVerifier(&priv.PublicKey, Options{})
	benchVerify(b, v, tok)
	b.ReportAllocs()
	for b.Loop() {
		benchVerify(b, v, tok)
	}
	if n := v.rsaVerifies.Load(); n != 1 {
		b.Fatalf("%d RSA verifications", n)
	}
}

// BenchmarkVerifyCachedParallel: many connections, each repeating its user's
// token, across all shards.
func BenchmarkVerifyCachedParallel(b *testing.B) {
	priv, _ := keys(b)
	toks := benchTokens(b, 64)
	v := NewVerifier(&priv.PublicKey, Options{})
	for _, tok := range toks {
		benchVerify(b, v, tok)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1))
		for pb.Next() {
			if _, err := v.Verify(toks[i%len(toks)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	if n := v.rsaVerifies.Load(); n != int64(len(toks)) {
		b.Fatalf("%d RSA verifications", n)
	}
}
