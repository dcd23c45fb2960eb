package auth

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/airlay/airlay/events"
)

// MintOptions describe a development token.
type MintOptions struct {
	UserID string        // data.id; must be an ObjectId (24 hex digits)
	Name   string        // data.name
	Issuer string        // iss; empty: no iss claim
	TTL    time.Duration // exp = Now + TTL; zero means 1h, negative gives an expired token
	Now    time.Time     // iat; zero means time.Now()
}

// defaultTTL is what a zero MintOptions.TTL means.
const defaultTTL = time.Hour

type mintClaims struct {
	jwt.RegisteredClaims
	Data mintData `json:"data"`
}

type mintData struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Mint signs a token like the ones the login service issues (RS256; claims
// exp, iat, iss when set, data {id, name}), for development and tests. Times
// are whole seconds, as JWT has them.
func Mint(key *rsa.PrivateKey, o MintOptions) (string, error) {
	if key == nil {
		return "", errors.New("mint token: no private key")
	}
	if _, ok := events.NormalizeID(o.UserID); !ok {
		return "", fmt.Errorf("mint token: user id %q is not an ObjectId (24 hex digits)", o.UserID)
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	ttl := o.TTL
	if ttl == 0 {
		ttl = defaultTTL
	}
	claims := mintClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    o.Issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Data: mintData{ID: o.UserID, Name: o.Name},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(key)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}
