package auth

import (
	"crypto/rsa"
	"errors"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/airlay/airlay/events"
)

// What the zero fields of [Options] mean.
const (
	defaultLeeway    = 5 * time.Second
	defaultCacheSize = 10000
)

// Claims is what the server uses of a verified token.
type Claims struct {
	UserID    string    // data.id, a lower-case 24-hex ObjectId
	Name      string    // data.name; empty when absent or not a string
	ExpiresAt time.Time // exp
}

// Options tune a [Verifier]. The zero value is ready to use.
type Options struct {
	// Issuer, when set, must equal the token's "iss"; a token without "iss"
	// is then invalid. Empty: "iss" is not checked.
	Issuer string
	// Leeway is the clock skew allowed for exp, nbf and iat, on cached and
	// uncached tokens alike. Zero means 5s; negative means none.
	Leeway time.Duration
	// CacheSize is how many verified tokens are kept so that a repeated token
	// costs no RSA verification. Zero means 10000; negative disables the
	// cache.
	CacheSize int
	// Now returns the current time. Nil means time.Now; tests move the clock.
	Now func() time.Time
}

// Verifier checks RS256 access tokens against one public key and caches the
// ones that passed. It is safe for concurrent use.
type Verifier struct {
	key       *rsa.PublicKey
	parser    *jwt.Parser
	validator *jwt.Validator
	leeway    time.Duration
	now       func() time.Time
	cache     *cache // nil: disabled
	keyFn     jwt.Keyfunc

	rsaVerifies atomic.Int64 // signatures checked
}

// RSAVerifications returns how many signatures the verifier has checked:
// the CPU that tokens cost (a cache hit or a token refused before its
// signature costs none).
func (v *Verifier) RSAVerifications() int64 { return v.rsaVerifies.Load() }

// NewVerifier returns a Verifier for tokens signed by the private half of key.
// It panics if key is nil.
func NewVerifier(key *rsa.PublicKey, opts Options) *Verifier {
	if key == nil {
		panic("auth: NewVerifier with a nil key")
	}
	v := &Verifier{key: key, leeway: opts.Leeway, now: opts.Now}
	switch {
	case v.leeway == 0:
		v.leeway = defaultLeeway
	case v.leeway < 0:
		v.leeway = 0
	}
	if v.now == nil {
		v.now = time.Now
	}
	switch {
	case opts.CacheSize == 0:
		v.cache = newCache(defaultCacheSize)
	case opts.CacheSize > 0:
		v.cache = newCache(opts.CacheSize)
	}
	v.keyFn = v.keyFor
	// The claims are checked before the signature (in keyFor), so that an
	// expired or otherwise unusable token costs no RSA verification.
	vopts := []jwt.ParserOption{
		jwt.WithLeeway(v.leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(v.now),
	}
	if opts.Issuer != "" {
		vopts = append(vopts, jwt.WithIssuer(opts.Issuer))
	}
	v.validator = jwt.NewValidator(vopts...)
	v.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
		// RFC 7515: base64url without padding and with the unused bits of
		// the last character zero, so that a signature has one spelling
		// (and one cache entry).
		jwt.WithStrictDecoding(),
		jwt.WithoutClaimsValidation(),
	)
	return v
}

// Verify checks token and returns its claims. An empty token is ErrNoToken;
// every other failure wraps ErrInvalidToken with the reason: a signature that
// is bad, not RS256 or not canonical base64url, a crit header, exp missing
// or past, exp, nbf or iat not a JSON number, nbf or iat in the future, a
// wrong or missing iss (when Options.Issuer is set), data.id missing or not
// an ObjectId. The error never contains the token.
//
// A token seen before comes from the cache without RSA work, but is checked
// against its exp again, with the same leeway.
func (v *Verifier) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, ErrNoToken
	}
	if v.cache != nil {
		if c, ok := v.cache.get(token); ok {
			if !v.now().Before(c.ExpiresAt.Add(v.leeway)) {
				v.cache.remove(token)
				return Claims{}, errExpired
			}
			return c, nil
		}
	}
	return v.verifyAndCache(token)
}

// verifyAndCache checks a token the cache does not hold. It is kept out of
// Verify so that the cache hit, which runs on every connection's reader,
// has a small stack frame.
//
//go:noinline
func (v *Verifier) verifyAndCache(token string) (Claims, error) {
	c, err := v.verify(token)
	if err != nil {
		return Claims{}, err
	}
	if v.cache != nil {
		v.cache.put(token, c)
	}
	return c, nil
}

// tokenClaims is the payload as issued at login. The data fields are `any`
// so that a wrongly typed id is reported as such and a wrongly typed name
// is ignored. The dates are JSON numbers only (jwt's own type also takes a
// string holding a number).
type tokenClaims struct {
	Issuer    string           `json:"iss"`
	Subject   string           `json:"sub"`
	Audience  jwt.ClaimStrings `json:"aud"`
	ExpiresAt numericDate      `json:"exp"`
	NotBefore numericDate      `json:"nbf"`
	IssuedAt  numericDate      `json:"iat"`
	Data      *struct {
		ID   any `json:"id"`
		Name any `json:"name"`
	} `json:"data"`
}

var _ jwt.Claims = (*tokenClaims)(nil)

func (c *tokenClaims) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt.get(), nil }
func (c *tokenClaims) GetNotBefore() (*jwt.NumericDate, error)      { return c.NotBefore.get(), nil }
func (c *tokenClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.IssuedAt.get(), nil }
func (c *tokenClaims) GetIssuer() (string, error)                   { return c.Issuer, nil }
func (c *tokenClaims) GetSubject() (string, error)                  { return c.Subject, nil }
func (c *tokenClaims) GetAudience() (jwt.ClaimStrings, error)       { return c.Audience, nil }

// numericDate is a date claim that must be a JSON number when present
// (null included: it is not a number).
type numericDate struct {
	jwt.NumericDate
	set bool
}

func (d *numericDate) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '-' && (b[0] < '0' || b[0] > '9') {
		return errDateNotNumber
	}
	d.set = true
	return d.NumericDate.UnmarshalJSON(b)
}

func (d *numericDate) get() *jwt.NumericDate {
	if !d.set {
		return nil
	}
	return &d.NumericDate
}

// verify is the uncached path: signature and claims.
func (v *Verifier) verify(token string) (Claims, error) {
	var tc tokenClaims
	t, err := v.parser.ParseWithClaims(token, &tc, v.keyFn)
	if err != nil {
		return Claims{}, reason(t, &tc, err)
	}
	if tc.Data == nil || tc.Data.ID == nil {
		return Claims{}, errNoUserID
	}
	raw, _ := tc.Data.ID.(string)
	id, ok := events.NormalizeID(raw)
	if !ok {
		return Claims{}, errBadUserID
	}
	name, _ := tc.Data.Name.(string)
	return Claims{UserID: id, Name: name, ExpiresAt: tc.ExpiresAt.Time}, nil
}

// keyFor hands the key to the parser, which then checks the signature:
// only once the header and the claims passed, so that a token refused for
// them costs no RSA verification. The parser already refused every
// algorithm but RS256; this checks it again.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	if t.Method != jwt.SigningMethodRS256 {
		return nil, errAlgorithm
	}
	if _, ok := t.Header["crit"]; ok {
		// RFC 7515 4.1.11: extensions named there must be understood,
		// and this verifier understands none.
		return nil, errCrit
	}
	tc := t.Claims.(*tokenClaims)
	if err := v.validator.Validate(tc); err != nil {
		return nil, reason(t, tc, err)
	}
	v.rsaVerifies.Add(1)
	return v.key, nil
}

// reason maps a jwt error to one of ours (or passes ours on).
func reason(t *jwt.Token, tc *tokenClaims, err error) error {
	var ours *reasonError
	switch {
	case errors.As(err, &ours):
		return ours
	case errors.Is(err, jwt.ErrTokenMalformed):
		return errMalformed
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return errAlgorithm
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if t == nil || t.Method != jwt.SigningMethodRS256 {
			return errAlgorithm
		}
		return errSignature
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		if !tc.ExpiresAt.set {
			return errExpMissing
		}
		return errIssMissing
	case errors.Is(err, jwt.ErrTokenExpired):
		return errExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return errNotYetValid
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return errIssuedInFuture
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return errIssuer
	}
	return errRejected
}
