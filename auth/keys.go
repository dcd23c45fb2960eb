package auth

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// File names GenerateKeyPair writes; jwt.pem is what config.ini's
// jwt_public_key names by default.
const (
	publicKeyFile  = "jwt.pem"
	privateKeyFile = "jwt-private.pem"
	keyBits        = 2048
)

// keyError says which key file failed and what is wrong with it, and keeps
// the cause for errors.Is (fs.ErrNotExist for a missing file).
type keyError struct {
	what, path, problem string
	err                 error
}

func (e *keyError) Error() string { return e.what + " " + e.path + ": " + e.problem }
func (e *keyError) Unwrap() error { return e.err }

// LoadPublicKey reads an RSA public key from a PEM file: a "PUBLIC KEY" block
// (PKIX, what openssl writes) or an "RSA PUBLIC KEY" block (PKCS #1).
func LoadPublicKey(path string) (*rsa.PublicKey, error) {
	const what = "public key"
	block, err := readPEM(what, path, "PUBLIC KEY", "RSA PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	parsePKIX := func() (any, error) { return x509.ParsePKIXPublicKey(block.Bytes) }
	parsePKCS1 := func() (any, error) { return x509.ParsePKCS1PublicKey(block.Bytes) }
	var key any
	if block.Type == "PUBLIC KEY" {
		key, err = parseEither(parsePKIX, parsePKCS1)
	} else {
		key, err = parseEither(parsePKCS1, parsePKIX)
	}
	if err != nil {
		return nil, &keyError{what, path, "bad " + block.Type + " block: " + err.Error(), err}
	}
	rk, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, &keyError{what, path, "not an RSA key (" + keyKind(key) + ")", nil}
	}
	return rk, nil
}

// LoadPrivateKey reads an RSA private key from a PEM file: a "PRIVATE KEY"
// block (PKCS #8, what GenerateKeyPair writes) or an "RSA PRIVATE KEY" block
// (PKCS #1). Encrypted keys are not supported.
func LoadPrivateKey(path string) (*rsa.PrivateKey, error) {
	const what = "private key"
	block, err := readPEM(what, path, "PRIVATE KEY", "RSA PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	if strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") {
		return nil, &keyError{what, path, "encrypted keys are not supported", nil}
	}
	parsePKCS8 := func() (any, error) { return x509.ParsePKCS8PrivateKey(block.Bytes) }
	parsePKCS1 := func() (any, error) { return x509.ParsePKCS1PrivateKey(block.Bytes) }
	var key any
	if block.Type == "PRIVATE KEY" {
		key, err = parseEither(parsePKCS8, parsePKCS1)
	} else {
		key, err = parseEither(parsePKCS1, parsePKCS8)
	}
	if err != nil {
		return nil, &keyError{what, path, "bad " + block.Type + " block: " + err.Error(), err}
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, &keyError{what, path, "not an RSA key (" + keyKind(key) + ")", nil}
	}
	return rk, nil
}

// parseEither tries the format the PEM type names, then the other one (some
// tools label one as the other), and reports the first one's error.
func parseEither(first, second func() (any, error)) (any, error) {
	key, err := first()
	if err == nil {
		return key, nil
	}
	if key, err2 := second(); err2 == nil {
		return key, nil
	}
	return nil, err
}

// readPEM returns the first PEM block of one of the given types in the file.
func readPEM(what, path string, types ...string) (*pem.Block, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &keyError{what, path, "not found", err}
		}
		problem := err.Error()
		if pe, ok := errors.AsType[*fs.PathError](err); ok {
			problem = pe.Err.Error()
		}
		return nil, &keyError{what, path, problem, err}
	}
	want := strings.Join(types, " or ")
	other := ""
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		for _, t := range types {
			if block.Type == t {
				return block, nil
			}
		}
		if other == "" {
			other = block.Type
		}
	}
	switch {
	case other == "":
		return nil, &keyError{what, path, "no PEM block (want " + want + ")", nil}
	case strings.Contains(other, "ENCRYPTED"):
		return nil, &keyError{what, path, "encrypted keys are not supported", nil}
	case what == "public key" && strings.Contains(other, "PRIVATE KEY"):
		return nil, &keyError{what, path, fmt.Sprintf("PEM block %q is a private key; give the public one (want %s)", other, want), nil}
	}
	return nil, &keyError{what, path, fmt.Sprintf("PEM block %q is not a %s (want %s)", other, what, want), nil}
}

func keyKind(key any) string {
	switch key.(type) {
	case *ecdsa.PublicKey, *ecdsa.PrivateKey:
		return "ECDSA"
	case ed25519.PublicKey, ed25519.PrivateKey:
		return "Ed25519"
	case *ecdh.PublicKey, *ecdh.PrivateKey:
		return "ECDH"
	}
	return fmt.Sprintf("%T", key)
}

// GenerateKeyPair writes a new RSA 2048 key pair for development: DIR/jwt.pem
// (public, PKIX, mode 0644) and DIR/jwt-private.pem (PKCS #8, mode 0600),
// creating DIR if needed. When both files exist it leaves them untouched and
// returns their paths with an error wrapping ErrKeysExist; when only one
// exists it writes nothing and returns an error naming it.
func GenerateKeyPair(dir string) (pubPath, privPath string, err error) {
	pubPath = filepath.Join(dir, publicKeyFile)
	privPath = filepath.Join(dir, privateKeyFile)
	havePub, err := exists(pubPath)
	if err != nil {
		return "", "", err
	}
	havePriv, err := exists(privPath)
	if err != nil {
		return "", "", err
	}
	switch {
	case havePub && havePriv:
		return pubPath, privPath, fmt.Errorf("%s and %s: %w", pubPath, privPath, ErrKeysExist)
	case havePub:
		return "", "", fmt.Errorf("generate key pair: %s exists without %s; remove it or restore its private key", pubPath, privPath)
	case havePriv:
		return "", "", fmt.Errorf("generate key pair: %s exists without %s; remove it or restore its public key", privPath, pubPath)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("generate key pair: %w", err)
	}
	key, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return "", "", fmt.Errorf("generate key pair: %w", err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("generate key pair: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", "", fmt.Errorf("generate key pair: %w", err)
	}
	if err := writeNew(privPath, &pem.Block{Type: "PRIVATE KEY", Bytes: privDER}, 0o600); err != nil {
		return "", "", err
	}
	if err := writeNew(pubPath, &pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}, 0o644); err != nil {
		os.Remove(privPath)
		return "", "", err
	}
	return pubPath, privPath, nil
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("generate key pair: %w", err)
}

// writeNew creates path (never replacing a file that appeared meanwhile) with
// exactly perm, whatever the umask, and removes it again if writing fails.
func writeNew(path string, block *pem.Block, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("generate key pair: %w", err)
	}
	err = pem.Encode(f, block)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("generate key pair: write %s: %w", path, err)
	}
	return nil
}
