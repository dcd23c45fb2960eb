package auth

import "errors"

// Errors returned by [Verifier.Verify]. Every failure other than an empty
// token wraps ErrInvalidToken with a short fixed reason ("invalid token:
// expired"); no error ever carries any part of the token itself, so they are
// safe to log.
var (
	// ErrNoToken: the token string is empty (code 1 on the wire).
	ErrNoToken = errors.New("token not set")
	// ErrInvalidToken: any other failure (code 2 on the wire).
	ErrInvalidToken = errors.New("invalid token")
)

// ErrKeysExist is returned by [GenerateKeyPair] when both key files are
// already there; they are left untouched.
var ErrKeysExist = errors.New("key pair already exists")

// The reasons Verify gives, built once so that a rejection costs no
// allocation and can never echo the token.
var (
	errMalformed      = invalid("malformed")
	errAlgorithm      = invalid("algorithm not allowed (only RS256)")
	errSignature      = invalid("bad signature")
	errExpMissing     = invalid("exp missing")
	errExpired        = invalid("expired")
	errNotYetValid    = invalid("not valid yet (nbf in the future)")
	errIssuedInFuture = invalid("issued in the future (iat)")
	errIssMissing     = invalid("iss missing")
	errIssuer         = invalid("wrong issuer")
	errNoUserID       = invalid("data.id missing")
	errBadUserID      = invalid("data.id is not an ObjectId")
	errRejected       = invalid("rejected")
	errCrit           = invalid("crit header not supported")
	errDateNotNumber  = invalid("exp, nbf or iat is not a JSON number")
)

// reasonError is one of the reasons above.
type reasonError struct{ reason string }

func (e *reasonError) Error() string { return ErrInvalidToken.Error() + ": " + e.reason }
func (e *reasonError) Unwrap() error { return ErrInvalidToken }

func invalid(reason string) error { return &reasonError{reason} }
