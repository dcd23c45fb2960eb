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
	key    *rsa.PublicKey
	parser *jwt.Parser
	leeway time.Duration
	now    func() time.Time
	cache  *cache // nil: disabled
	keyFn  jwt.Keyfunc

	rsaVerifies atomic.Int64 // signatures checked, read by tests
}

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
	popts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
		jwt.WithLeeway(v.leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(v.now),
	}
	if opts.Issuer != "" {
		popts = append(popts, jwt.WithIssuer(opts.Issuer))
	}
	v.parser = jwt.NewParser(popts...)
	return v
}

// Verify checks token and returns its claims. An empty token is ErrNoToken;
// every other failure wraps ErrInvalidToken with the reason: a signature that
// is bad or not RS256, exp missing or past, nbf or iat in the future, a wrong
// or missing iss (when Options.Issuer is set), data.id missing or not an
// ObjectId. The error never contains the token.
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
// is ignored.
type tokenClaims struct {
	jwt.RegisteredClaims
	Data *struct {
		ID   any `json:"id"`
		Name any `json:"name"`
	} `json:"data"`
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

// keyFor hands the key to the parser, which then checks the signature. The
// parser already refused every algorithm but RS256; this checks it again.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	if t.Method != jwt.SigningMethodRS256 {
		return nil, errAlgorithm
	}
	v.rsaVerifies.Add(1)
	return v.key, nil
}

// reason maps a jwt error to one of ours. jwt checks in stages (shape,
// algorithm, signature, claims), so a claim is only blamed once the
// signature held.
func reason(t *jwt.Token, tc *tokenClaims, err error) error {
	switch {
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
		if tc.ExpiresAt == nil {
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
