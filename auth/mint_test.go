package auth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestMintRoundTrip(t *testing.T) {
	priv, _ := keys(t)
	tok, err := Mint(priv, MintOptions{UserID: userID, Name: "Ann", Issuer: "dev.airlay.ru", TTL: 10 * time.Minute, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(&priv.PublicKey, Options{Issuer: "dev.airlay.ru", Now: newClock(t0).now})
	got, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Claims{UserID: userID, Name: "Ann", ExpiresAt: t0.Add(10 * time.Minute)}); got.UserID != want.UserID ||
		got.Name != want.Name || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	// What is in it, exactly.
	var mc jwt.MapClaims
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, &mc)
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Method.Alg() != "RS256" || mc["iat"] != float64(t0.Unix()) || mc["iss"] != "dev.airlay.ru" ||
		mc["data"].(map[string]any)["name"] != "Ann" {
		t.Fatalf("alg %s, claims %v", parsed.Method.Alg(), mc)
	}
}

func TestMintDefaults(t *testing.T) {
	priv, _ := keys(t)
	// TTL zero: 1h. No issuer: no iss claim.
	tok, err := Mint(priv, MintOptions{UserID: strings.ToUpper(userID), Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	got, err := NewVerifier(&priv.PublicKey, Options{Now: newClock(t0).now}).Verify(tok)
	if err != nil || !got.ExpiresAt.Equal(t0.Add(time.Hour)) || got.UserID != userID || got.Name != "" {
		t.Fatalf("%+v, %v", got, err)
	}
	var mc jwt.MapClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &mc); err != nil {
		t.Fatal(err)
	}
	if _, ok := mc["iss"]; ok {
		t.Fatalf("iss present: %v", mc)
	}
	// Now zero: the real clock.
	before := time.Now().Truncate(time.Second)
	tok, err = Mint(priv, MintOptions{UserID: userID})
	if err != nil {
		t.Fatal(err)
	}
	got, err = NewVerifier(&priv.PublicKey, Options{}).Verify(tok)
	if err != nil || got.ExpiresAt.Before(before.Add(time.Hour)) || got.ExpiresAt.After(time.Now().Add(time.Hour)) {
		t.Fatalf("%+v, %v", got, err)
	}
	// A negative TTL gives an expired token.
	tok, err = Mint(priv, MintOptions{UserID: userID, TTL: -time.Minute, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewVerifier(&priv.PublicKey, Options{Now: newClock(t0).now}).Verify(tok); !errors.Is(err, errExpired) {
		t.Fatalf("negative TTL: %v", err)
	}
}

func TestMintErrors(t *testing.T) {
	priv, _ := keys(t)
	for _, id := range []string{"", "42", userID[:23], "610217e481f6fc54736209ez"} {
		if _, err := Mint(priv, MintOptions{UserID: id}); err == nil {
			t.Errorf("user id %q: no error", id)
		}
	}
	if _, err := Mint(nil, MintOptions{UserID: userID}); err == nil {
		t.Error("nil key: no error")
	}
}
