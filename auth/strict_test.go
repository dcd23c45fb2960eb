package auth

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// signRaw signs a header and a payload given as JSON text with the test
// key, so that the tests control every byte the claims and header hold.
func signRaw(t *testing.T, header, payload string) string {
	t.Helper()
	priv, _ := keys(t)
	enc := base64.RawURLEncoding
	input := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	sig, err := jwt.SigningMethodRS256.Sign(input, priv)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + enc.EncodeToString(sig)
}

// The contract's strict rules: dates are JSON numbers, a crit header is
// invalid, a signature has one spelling. Each refusal costs no RSA
// verification where the rule can be checked before the signature.
func TestVerifyStrict(t *testing.T) {
	priv, _ := keys(t)
	const hdr = `{"alg":"RS256","typ":"JWT"}`
	exp, iat := unix(t0.Add(time.Hour)), unix(t0)
	payload := func(dates string) string {
		return `{` + dates + `,"data":{"id":"` + userID + `","name":"Ann"}}`
	}
	num := func(n int64) string { return strconv.FormatInt(n, 10) }
	tests := []struct {
		name   string
		token  string
		err    error // nil: valid
		noRSA  bool  // refused before the signature check
		cached bool  // a valid token lands in the cache
	}{
		{name: "numbers", token: signRaw(t, hdr, payload(`"exp":`+num(exp)+`,"iat":`+num(iat))), cached: true},
		{name: "fractional exp", token: signRaw(t, hdr, payload(`"exp":`+num(exp)+`.5`)), cached: true},
		{name: "exp as a string of digits", token: signRaw(t, hdr, payload(`"exp":"`+num(exp)+`"`)), err: errDateNotNumber, noRSA: true},
		{name: "exp null", token: signRaw(t, hdr, payload(`"exp":null`)), err: errDateNotNumber, noRSA: true},
		{name: "exp true", token: signRaw(t, hdr, payload(`"exp":true`)), err: errDateNotNumber, noRSA: true},
		{name: "nbf as a string", token: signRaw(t, hdr, payload(`"exp":`+num(exp)+`,"nbf":"`+num(iat)+`"`)), err: errDateNotNumber, noRSA: true},
		{name: "iat as a string", token: signRaw(t, hdr, payload(`"exp":`+num(exp)+`,"iat":"`+num(iat)+`"`)), err: errDateNotNumber, noRSA: true},
		{name: "iat as an object", token: signRaw(t, hdr, payload(`"exp":`+num(exp)+`,"iat":{}`)), err: errDateNotNumber, noRSA: true},
		{name: "crit naming an extension", token: signRaw(t, `{"alg":"RS256","crit":["exp"],"exp":1}`, payload(`"exp":`+num(exp))), err: errCrit, noRSA: true},
		{name: "crit empty", token: signRaw(t, `{"alg":"RS256","crit":[]}`, payload(`"exp":`+num(exp))), err: errCrit, noRSA: true},
		{name: "expired: no RSA spent", token: signRaw(t, hdr, payload(`"exp":`+num(unix(t0.Add(-time.Hour))))), err: errExpired, noRSA: true},
		{name: "not yet valid: no RSA spent", token: signRaw(t, hdr, payload(`"exp":`+num(exp)+`,"nbf":`+num(unix(t0.Add(time.Minute))))), err: errNotYetValid, noRSA: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVerifier(&priv.PublicKey, newClock(t0).options())
			_, err := v.Verify(tc.token)
			if tc.err == nil && err != nil || tc.err != nil && !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if got := v.rsaVerifies.Load(); tc.noRSA && got != 0 {
				t.Fatalf("%d RSA verifications for a token refused before its signature", got)
			}
			if want := map[bool]int{true: 1, false: 0}[tc.cached]; v.cache.len() != want {
				t.Fatalf("cache holds %d tokens, want %d", v.cache.len(), want)
			}
		})
	}
}

// A 2048-bit signature is 342 base64url characters whose last one carries
// 4 unused bits: 16 spellings decode to the same bytes. Only the one with
// the bits zero (RFC 7515, RFC 4648 3.5) is valid, so a signature takes one
// cache entry.
func TestVerifyCanonicalSignature(t *testing.T) {
	priv, _ := keys(t)
	v := NewVerifier(&priv.PublicKey, newClock(t0).options())
	tok := sign(t, jwt.SigningMethodRS256, priv, claimsAt(t0))
	if _, err := v.Verify(tok); err != nil {
		t.Fatal(err)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	if last&0x0f != 0 {
		t.Fatalf("canonical last character %q has unused bits set", tok[len(tok)-1])
	}
	for bits := 1; bits < 16; bits++ {
		alt := tok[:len(tok)-1] + string(alphabet[last|bits])
		if _, err := v.Verify(alt); !errors.Is(err, errMalformed) {
			t.Fatalf("spelling with unused bits %x: err %v, want malformed", bits, err)
		}
	}
	if n := v.cache.len(); n != 1 {
		t.Fatalf("cache holds %d entries for one signature", n)
	}
	// Padding is not base64url either.
	if _, err := v.Verify(tok + "=="); err == nil {
		t.Fatal("a padded signature was accepted")
	}
}
