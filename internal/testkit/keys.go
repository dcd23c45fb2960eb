// Package testkit is what the tests of every package share that needs no
// server: a test RSA key, its public key file and tokens signed with it, and
// a buffer that goroutines may write while a test reads it. It does not
// import package server, so that server's own tests can use it;
// internal/servertest builds the in-process server on it.
package testkit

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/airlay/airlay/auth"
)

// key is made once per test binary: an RSA key takes a while under the race
// detector.
var key = sync.OnceValues(func() (*rsa.PrivateKey, error) {
	return rsa.GenerateKey(rand.Reader, 2048)
})

// Key returns the test key, RSA 2048 as `airlay-cli web_socket keygen`
// makes.
func Key(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := key()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// WritePublicKey writes the public half of Key to dir/jwt.pem (PKIX, mode
// 0644, as keygen writes it) and returns its path, for jwt_public_key.
func WritePublicKey(t testing.TB, dir string) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&Key(t).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "jwt.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Mint signs a token described by o with Key.
func Mint(t testing.TB, o auth.MintOptions) string {
	t.Helper()
	tok, err := auth.Mint(Key(t), o)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
