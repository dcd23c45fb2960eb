package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// with returns claimsAt(t0) changed by edits; a nil value deletes the claim.
func with(edits jwt.MapClaims) jwt.MapClaims {
	c := claimsAt(t0)
	for k, v := range edits {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

func data(d map[string]any) jwt.MapClaims { return with(jwt.MapClaims{"data": d}) }

func TestVerify(t *testing.T) {
	priv, other := keys(t)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rs256 := func(c jwt.MapClaims) func(*testing.T) string {
		return func(t *testing.T) string { return sign(t, jwt.SigningMethodRS256, priv, c) }
	}
	const iss = "dev.airlay.ru"
	ann := Claims{UserID: userID, Name: "Ann", ExpiresAt: t0.Add(time.Hour)}

	tests := []struct {
		name  string
		token func(*testing.T) string
		opts  Options // Now is set by the test
		want  Claims
		err   error // nil: valid
	}{
		{name: "valid", token: rs256(claimsAt(t0)), want: ann},
		{name: "empty", token: func(*testing.T) string { return "" }, err: ErrNoToken},
		{name: "garbage", token: func(*testing.T) string { return "not-a-jwt-at-all" }, err: errMalformed},
		{name: "garbage segments", token: func(*testing.T) string { return "e30K.!!!!.zzzz" }, err: errMalformed},
		{name: "payload not base64", token: func(t *testing.T) string {
			p := strings.Split(rs256(claimsAt(t0))(t), ".")
			return p[0] + ".%%%%." + p[2]
		}, err: errMalformed},
		{name: "wrong signature key", token: func(t *testing.T) string {
			return sign(t, jwt.SigningMethodRS256, other, claimsAt(t0))
		}, err: errSignature},
		{name: "payload swapped", token: func(t *testing.T) string {
			a := strings.Split(rs256(claimsAt(t0))(t), ".")
			b := strings.Split(rs256(data(map[string]any{"id": "5dad615eae019570fb4647ed"}))(t), ".")
			return a[0] + "." + b[1] + "." + a[2]
		}, err: errSignature},
		{name: "signature stripped", token: func(t *testing.T) string {
			p := strings.Split(rs256(claimsAt(t0))(t), ".")
			return p[0] + "." + p[1] + "."
		}, err: errSignature},
		{name: "alg none", token: func(t *testing.T) string {
			return sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claimsAt(t0))
		}, err: errAlgorithm},
		{name: "alg missing", token: func(t *testing.T) string {
			p := strings.Split(rs256(claimsAt(t0))(t), ".")
			return "eyJ0eXAiOiJKV1QifQ." + p[1] + "." + p[2] // {"typ":"JWT"}
		}, err: errAlgorithm},
		{name: "HS256 with the public key PEM as secret", token: func(t *testing.T) string {
			return sign(t, jwt.SigningMethodHS256, publicPEM(t, &priv.PublicKey), claimsAt(t0))
		}, err: errAlgorithm},
		{name: "RS384", token: func(t *testing.T) string {
			return sign(t, jwt.SigningMethodRS384, priv, claimsAt(t0))
		}, err: errAlgorithm},
		{name: "PS256", token: func(t *testing.T) string {
			return sign(t, jwt.SigningMethodPS256, priv, claimsAt(t0))
		}, err: errAlgorithm},
		{name: "ES256", token: func(t *testing.T) string {
			return sign(t, jwt.SigningMethodES256, ec, claimsAt(t0))
		}, err: errAlgorithm},
		{name: "exp missing", token: rs256(with(jwt.MapClaims{"exp": nil})), err: errExpMissing},
		{name: "exp not a number", token: rs256(with(jwt.MapClaims{"exp": "soon"})), err: errDateNotNumber},
		{name: "expired", token: rs256(with(jwt.MapClaims{"exp": t0.Add(-10 * time.Second).Unix()})), err: errExpired},
		{name: "expired by the leeway exactly", token: rs256(with(jwt.MapClaims{"exp": t0.Add(-5 * time.Second).Unix()})), err: errExpired},
		{name: "expired within leeway", token: rs256(with(jwt.MapClaims{"exp": t0.Add(-3 * time.Second).Unix()})),
			want: Claims{UserID: userID, Name: "Ann", ExpiresAt: t0.Add(-3 * time.Second)}},
		{name: "expired, no leeway", opts: Options{Leeway: -1},
			token: rs256(with(jwt.MapClaims{"exp": t0.Add(-time.Second).Unix()})), err: errExpired},
		{name: "expired within a longer leeway", opts: Options{Leeway: time.Minute},
			token: rs256(with(jwt.MapClaims{"exp": t0.Add(-50 * time.Second).Unix()})),
			want:  Claims{UserID: userID, Name: "Ann", ExpiresAt: t0.Add(-50 * time.Second)}},
		{name: "nbf future", token: rs256(with(jwt.MapClaims{"nbf": t0.Add(10 * time.Second).Unix()})), err: errNotYetValid},
		{name: "nbf within leeway", token: rs256(with(jwt.MapClaims{"nbf": t0.Add(3 * time.Second).Unix()})), want: ann},
		{name: "nbf past", token: rs256(with(jwt.MapClaims{"nbf": t0.Add(-time.Hour).Unix()})), want: ann},
		{name: "iat future", token: rs256(with(jwt.MapClaims{"iat": t0.Add(10 * time.Second).Unix()})), err: errIssuedInFuture},
		{name: "iat within leeway", token: rs256(with(jwt.MapClaims{"iat": t0.Add(3 * time.Second).Unix()})), want: ann},
		{name: "iat missing", token: rs256(with(jwt.MapClaims{"iat": nil})), want: ann},
		{name: "issuer match", opts: Options{Issuer: iss}, token: rs256(with(jwt.MapClaims{"iss": iss})), want: ann},
		{name: "issuer mismatch", opts: Options{Issuer: iss}, token: rs256(with(jwt.MapClaims{"iss": "evil.example"})), err: errIssuer},
		{name: "issuer missing when required", opts: Options{Issuer: iss}, token: rs256(claimsAt(t0)), err: errIssMissing},
		{name: "issuer empty when required", opts: Options{Issuer: iss}, token: rs256(with(jwt.MapClaims{"iss": ""})), err: errIssMissing},
		{name: "issuer not checked when not set", token: rs256(with(jwt.MapClaims{"iss": "anyone"})), want: ann},
		{name: "exp and iss missing", opts: Options{Issuer: iss}, token: rs256(with(jwt.MapClaims{"exp": nil})), err: errExpMissing},
		{name: "data missing", token: rs256(with(jwt.MapClaims{"data": nil})), err: errNoUserID},
		{name: "data not an object", token: rs256(with(jwt.MapClaims{"data": "x"})), err: errMalformed},
		{name: "data.id missing", token: rs256(data(map[string]any{"name": "Ann"})), err: errNoUserID},
		{name: "data.id null", token: rs256(data(map[string]any{"id": nil})), err: errNoUserID},
		{name: "data.id empty", token: rs256(data(map[string]any{"id": ""})), err: errBadUserID},
		{name: "data.id short", token: rs256(data(map[string]any{"id": userID[:23]})), err: errBadUserID},
		{name: "data.id long", token: rs256(data(map[string]any{"id": userID + "0"})), err: errBadUserID},
		{name: "data.id non-hex", token: rs256(data(map[string]any{"id": "610217e481f6fc54736209eg"})), err: errBadUserID},
		{name: "data.id number", token: rs256(data(map[string]any{"id": 610217481})), err: errBadUserID},
		{name: "data.id object", token: rs256(data(map[string]any{"id": map[string]any{"$oid": userID}})), err: errBadUserID},
		{name: "upper-case id normalised", token: rs256(data(map[string]any{"id": strings.ToUpper(userID), "name": "Ann"})), want: ann},
		{name: "name missing", token: rs256(data(map[string]any{"id": userID})),
			want: Claims{UserID: userID, ExpiresAt: t0.Add(time.Hour)}},
		{name: "name not a string", token: rs256(data(map[string]any{"id": userID, "name": 7})),
			want: Claims{UserID: userID, ExpiresAt: t0.Add(time.Hour)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			token := tc.token(t)
			for _, cached := range []bool{true, false} {
				opts := tc.opts
				opts.Now = newClock(t0).now
				if !cached {
					opts.CacheSize = -1
				}
				v := NewVerifier(&priv.PublicKey, opts)
				// Twice: the second time a valid token comes from the cache.
				for round := range 2 {
					got, err := v.Verify(token)
					if tc.err == nil {
						if err != nil {
							t.Fatalf("cached=%v round %d: %v, want valid", cached, round, err)
						}
						if !got.ExpiresAt.Equal(tc.want.ExpiresAt) || got.UserID != tc.want.UserID || got.Name != tc.want.Name {
							t.Fatalf("cached=%v round %d: got %+v, want %+v", cached, round, got, tc.want)
						}
						continue
					}
					if !errors.Is(err, tc.err) {
						t.Fatalf("cached=%v round %d: err %v, want %v", cached, round, err, tc.err)
					}
					if tc.err != ErrNoToken && !errors.Is(err, ErrInvalidToken) {
						t.Fatalf("%v does not wrap ErrInvalidToken", err)
					}
					if got != (Claims{}) {
						t.Fatalf("claims %+v returned with an error", got)
					}
					assertNoTokenText(t, err, token)
				}
				if cached && v.cache.len() != map[bool]int{true: 1, false: 0}[tc.err == nil] {
					t.Fatalf("cache holds %d tokens", v.cache.len())
				}
			}
		})
	}
}

// assertNoTokenText fails if err shows the token or any sizeable piece of it.
func assertNoTokenText(t *testing.T, err error, token string) {
	t.Helper()
	msg := err.Error()
	if token != "" && strings.Contains(msg, token) {
		t.Fatalf("error %q contains the token", msg)
	}
	for _, part := range strings.Split(token, ".") {
		if len(part) >= 8 && strings.Contains(msg, part) {
			t.Fatalf("error %q contains a token segment", msg)
		}
	}
}

func TestVerifyErrorsNeverShowTheToken(t *testing.T) {
	priv, _ := keys(t)
	v := NewVerifier(&priv.PublicKey, newClock(t0).options())
	// Tokens built to make a careless error message echo them.
	tokens := []string{
		"a.b.c.d",
		strings.Repeat("A", 100),
		sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, with(jwt.MapClaims{"data": "invalid token: malformed"})),
		sign(t, jwt.SigningMethodRS256, priv, data(map[string]any{"id": "invalid token: data.id is not an ObjectId"})),
		sign(t, jwt.SigningMethodRS256, priv, with(jwt.MapClaims{"iss": strings.Repeat("x", 64), "exp": "never"})),
	}
	for _, tok := range tokens {
		_, err := v.Verify(tok)
		if err == nil {
			t.Fatalf("token %.20q... accepted", tok)
		}
		assertNoTokenText(t, err, tok)
	}
	// The header's alg is the attacker's text too.
	hdr := jwt.NewWithClaims(jwt.SigningMethodRS256, claimsAt(t0))
	hdr.Header["alg"] = "RS256 or anything I like"
	s, err := hdr.SigningString()
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(s + ".c2ln")
	if !errors.Is(err, errAlgorithm) || strings.Contains(err.Error(), "anything") {
		t.Fatalf("err %v", err)
	}
}

func TestNewVerifierNilKeyPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	NewVerifier(nil, Options{})
}

func TestVerifierDefaults(t *testing.T) {
	priv, _ := keys(t)
	v := NewVerifier(&priv.PublicKey, Options{})
	if v.leeway != defaultLeeway || v.cache == nil || v.cache.len() != 0 {
		t.Fatalf("leeway %v cache %v", v.leeway, v.cache)
	}
	total := 0
	for i := range v.cache.shards {
		total += v.cache.shards[i].max
	}
	if total != defaultCacheSize {
		t.Fatalf("cache size %d", total)
	}
	// time.Now by default: a token minted now verifies.
	tok, err := Mint(priv, MintOptions{UserID: userID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok); err != nil {
		t.Fatal(err)
	}
}
