package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"
)

// TokenProvider returns an access token (the JWT the login service issued).
// The client calls it whenever it needs a token: for the first request, when
// the token it holds is near its expiry (RefreshBefore), after the server
// closed the connection with 4001 (token expired) and after an answer with
// code 1 or 2. It is never called concurrently with itself.
type TokenProvider func(ctx context.Context) (string, error)

// DefaultRefreshBefore is how long before its exp a token is replaced.
const DefaultRefreshBefore = 30 * time.Second

// tokens caches the provider's token and knows when to replace it. The
// token's exp is read from its payload without verifying it: it only
// decides when to ask again; the server does the checking.
type tokens struct {
	provider TokenProvider
	before   time.Duration // < 0: never refresh ahead of expiry
	now      func() time.Time

	mu        sync.Mutex
	tok       string
	refreshAt time.Time // zero with tok set: keep until invalidated
	stale     bool
}

var errNoProvider = errors.New("no token provider (Options.Token)")

// get returns a token, calling the provider when the cached one is missing,
// stale or due for refresh. fresh reports whether the provider was called.
func (t *tokens) get(ctx context.Context) (tok string, fresh bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if t.tok != "" && !t.stale && (t.refreshAt.IsZero() || now.Before(t.refreshAt)) {
		return t.tok, false, nil
	}
	if t.provider == nil {
		return "", false, errNoProvider
	}
	tok, err = t.provider(ctx)
	if err != nil {
		return "", false, err
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", false, errors.New("the token provider returned an empty token")
	}
	same := tok == t.tok
	t.tok, t.stale = tok, false
	t.refreshAt = time.Time{}
	if exp, ok := tokenExpiry(tok); ok && t.before >= 0 && !same {
		// Replace it RefreshBefore ahead of exp, but not before three
		// quarters of its remaining life: a short-lived token must not
		// make the client ask again at once. A provider that hands back
		// the same token is not asked again until the token is
		// invalidated (4001, code 2).
		at := exp.Add(-t.before)
		if q := now.Add(exp.Sub(now) * 3 / 4); q.After(at) {
			at = q
		}
		t.refreshAt = at
	}
	return tok, true, nil
}

// due returns when the cached token should be replaced (zero: no refresh is
// planned).
func (t *tokens) due() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tok == "" || t.stale {
		return time.Time{}
	}
	return t.refreshAt
}

// invalidate makes the next get call the provider.
func (t *tokens) invalidate() {
	t.mu.Lock()
	t.stale = true
	t.mu.Unlock()
}

// tokenExpiry reads the exp claim of a JWT without verifying it.
func tokenExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	sec := int64(*claims.Exp)
	return time.Unix(sec, int64((*claims.Exp-float64(sec))*1e9)), true
}
