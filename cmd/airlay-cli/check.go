package main

// checkconfig and checktoken: what an operator runs when the server does
// not start, or when a frontend's token is refused.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/airlay/airlay/auth"
	"github.com/airlay/airlay/internal/iniconf"
	"github.com/airlay/airlay/server"
	"github.com/golang-jwt/jwt/v5"
)

// cmdCheckConfig validates the configuration as the server would (file,
// environment, the public key) and prints every setting's effective value,
// secrets masked, with where it came from.
func cmdCheckConfig(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("checkconfig", "[--config PATH]", stdout)
	path := fs.String("config", "config.ini", "config file")
	if err := noArgs(fs, args, stdout); err != nil {
		return err
	}
	cfg, _, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if _, err := auth.LoadPublicKey(cfg.JWTPublicKey); err != nil {
		return &server.ConfigError{File: cfg.File, Section: server.SectionServer, Key: "jwt_public_key", Err: err}
	}
	fmt.Fprintf(stdout, "%s: valid\n", cfg.File)
	fmt.Fprintln(stdout, "; effective settings (secrets masked); origin: default, file (line), or environment (variable)")
	// Align the origins, but not behind the few long lines (source lines).
	width := 0
	for _, st := range cfg.Settings() {
		if n := len(st.Key) + 3 + len(st.Value()); n <= 48 {
			width = max(width, n)
		}
	}
	section := ""
	for _, st := range cfg.Settings() {
		if st.Section != section {
			section = st.Section
			fmt.Fprintf(stdout, "\n[%s]\n", section)
		}
		line := st.Key + " = " + st.Value()
		fmt.Fprintf(stdout, "%-*s ; %s\n", width, line, origin(st))
	}
	return nil
}

func origin(st *iniconf.Setting) string {
	switch st.Origin {
	case iniconf.FromEnv:
		return "environment " + st.Env
	case iniconf.FromFile:
		return fmt.Sprintf("file, line %d", st.Line)
	}
	return "default"
}

// cmdCheckToken verifies a token as the server would, against the
// configuration's key, issuer and leeway, and says exactly why it is
// refused. It never prints the token.
func cmdCheckToken(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("checktoken", "[--config PATH] (TOKEN | FILE | -)", stdout)
	path := fs.String("config", "config.ini", "config file")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return &usageError{"checktoken needs one token, a file holding it, or - (standard input)", usageOf(fs)}
	}
	token, err := readToken(fs.Arg(0))
	if err != nil {
		return err
	}
	cfg, mc, err := loadConfig(*path)
	if err != nil {
		return err
	}
	key, err := auth.LoadPublicKey(cfg.JWTPublicKey)
	if err != nil {
		return &server.ConfigError{File: cfg.File, Section: server.SectionServer, Key: "jwt_public_key", Err: err}
	}
	leeway := cfg.TokenLeeway
	if leeway == 0 {
		leeway = -1 // auth: zero means the default, negative none
	}
	now := time.Now()
	v := auth.NewVerifier(key, auth.Options{Issuer: cfg.JWTIssuer, Leeway: leeway, CacheSize: -1, Now: func() time.Time { return now }})
	claims, verr := v.Verify(token)
	facts := tokenFacts(token, now)
	if verr != nil {
		why := explain(verr, facts, cfg, now)
		return fmt.Errorf("token refused (code %d on /ws): %v%s", wireCode(verr), verr, why)
	}
	fmt.Fprintf(stdout, "token valid for %s (key %s", cfg.File, cfg.JWTPublicKey)
	if cfg.JWTIssuer != "" {
		fmt.Fprintf(stdout, ", issuer %q", cfg.JWTIssuer)
	}
	fmt.Fprintf(stdout, ", leeway %v)\n", cfg.TokenLeeway)
	fmt.Fprintf(stdout, "user (data.id): %s\n", claims.UserID)
	if claims.Name != "" {
		fmt.Fprintf(stdout, "name (data.name): %s\n", claims.Name)
	}
	fmt.Fprintf(stdout, "expires: %s (in %v)\n", claims.ExpiresAt.UTC().Format(time.RFC3339), claims.ExpiresAt.Sub(now).Round(time.Second))
	if mc.URI != "" {
		fmt.Fprintf(stdout, "with MongoDB the server also checks that %s exists in %s.%s (code 3 if not); this command does not connect\n", claims.UserID, mc.Database, mc.Users)
	}
	return nil
}

// readToken takes the argument as a token, a file holding one, or "-" for
// standard input.
func readToken(arg string) (string, error) {
	var data []byte
	switch {
	case arg == "-":
		b, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
		if err != nil {
			return "", fmt.Errorf("read the token from standard input: %w", err)
		}
		data = b
	case strings.Count(arg, ".") == 2 && !strings.ContainsAny(arg, "/\\ "):
		data = []byte(arg)
	default:
		b, err := os.ReadFile(arg)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return "", fmt.Errorf("%s: neither a token (header.payload.signature) nor a file", arg)
			}
			return "", err
		}
		data = b
	}
	tok := strings.TrimSpace(string(data))
	tok = strings.TrimPrefix(tok, "Bearer ")
	return tok, nil
}

func wireCode(err error) int {
	if errors.Is(err, auth.ErrNoToken) {
		return 1
	}
	return 2
}

// facts are what an unverified token says (for explanations only: nothing
// here is trusted).
type facts struct {
	ok       bool
	alg      string
	iss      string
	hasIss   bool
	exp, nbf *time.Time
	iat      *time.Time
	dataID   any
}

func tokenFacts(token string, now time.Time) facts {
	var c struct {
		jwt.RegisteredClaims
		Data *struct {
			ID any `json:"id"`
		} `json:"data"`
	}
	t, _, err := jwt.NewParser().ParseUnverified(token, &c)
	if err != nil {
		return facts{}
	}
	f := facts{ok: true, iss: c.Issuer, hasIss: c.Issuer != ""}
	if a, ok := t.Header["alg"].(string); ok {
		f.alg = a
	}
	if c.ExpiresAt != nil {
		f.exp = &c.ExpiresAt.Time
	}
	if c.NotBefore != nil {
		f.nbf = &c.NotBefore.Time
	}
	if c.IssuedAt != nil {
		f.iat = &c.IssuedAt.Time
	}
	if c.Data != nil {
		f.dataID = c.Data.ID
	}
	return f
}

// explain adds what the token says to the verifier's reason.
func explain(err error, f facts, cfg *server.Config, now time.Time) string {
	if !f.ok {
		if errors.Is(err, auth.ErrNoToken) {
			return ""
		}
		return ": not a JWT (three base64url parts: header.payload.signature)"
	}
	at := func(t *time.Time) string { return t.UTC().Format(time.RFC3339) }
	msg := err.Error()
	switch {
	case strings.Contains(msg, "algorithm"):
		return fmt.Sprintf(": the token is signed with %q; the server takes only RS256", f.alg)
	case strings.Contains(msg, "signature"):
		return fmt.Sprintf(": not signed by the private key of %s (another key pair, or an altered token)", cfg.JWTPublicKey)
	case strings.Contains(msg, "exp missing"):
		return ": the token has no exp claim; the server requires one"
	case strings.Contains(msg, "expired") && f.exp != nil:
		return fmt.Sprintf(": exp %s was %v ago (leeway %v)", at(f.exp), now.Sub(*f.exp).Round(time.Second), cfg.TokenLeeway)
	case strings.Contains(msg, "nbf") && f.nbf != nil:
		return fmt.Sprintf(": nbf %s is %v from now (leeway %v; check the clocks)", at(f.nbf), f.nbf.Sub(now).Round(time.Second), cfg.TokenLeeway)
	case strings.Contains(msg, "iat") && f.iat != nil:
		return fmt.Sprintf(": iat %s is %v from now (leeway %v; check the clocks)", at(f.iat), f.iat.Sub(now).Round(time.Second), cfg.TokenLeeway)
	case strings.Contains(msg, "iss missing"):
		return fmt.Sprintf(": the token has no iss; jwt_issuer is %q", cfg.JWTIssuer)
	case strings.Contains(msg, "wrong issuer"):
		return fmt.Sprintf(": the token's iss is %q; jwt_issuer is %q", f.iss, cfg.JWTIssuer)
	case strings.Contains(msg, "data.id missing"):
		return ": the payload needs data.id, the user's ObjectId ({\"data\": {\"id\": \"<24 hex digits>\"}})"
	case strings.Contains(msg, "data.id"):
		return fmt.Sprintf(": data.id is %#v; it must be 24 hex digits (an ObjectId)", f.dataID)
	}
	return ""
}
