package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func writePEM(t *testing.T, name string, blocks ...*pem.Block) string {
	t.Helper()
	var b bytes.Buffer
	for _, bl := range blocks {
		if err := pem.Encode(&b, bl); err != nil {
			t.Fatal(err)
		}
	}
	return writeFile(t, name, b.Bytes())
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// must is for setup steps that cannot fail in a sane test environment.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestLoadPublicKey(t *testing.T) {
	priv, _ := keys(t)
	pkix := must(x509.MarshalPKIXPublicKey(&priv.PublicKey))
	pkcs1 := x509.MarshalPKCS1PublicKey(&priv.PublicKey)
	cert := &pem.Block{Type: "CERTIFICATE", Bytes: []byte("not read")}
	for name, path := range map[string]string{
		"PKIX":                      writePEM(t, "pkix.pem", &pem.Block{Type: "PUBLIC KEY", Bytes: pkix}),
		"PKCS1":                     writePEM(t, "pkcs1.pem", &pem.Block{Type: "RSA PUBLIC KEY", Bytes: pkcs1}),
		"PKIX labelled RSA":         writePEM(t, "mislabelled.pem", &pem.Block{Type: "RSA PUBLIC KEY", Bytes: pkix}),
		"after another block":       writePEM(t, "bundle.pem", cert, &pem.Block{Type: "PUBLIC KEY", Bytes: pkix}),
		"text around the PEM block": writeFile(t, "text.pem", append([]byte("subject: airlay\n"), publicPEM(t, &priv.PublicKey)...)),
	} {
		got, err := LoadPublicKey(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !got.Equal(&priv.PublicKey) {
			t.Fatalf("%s: another key", name)
		}
	}
}

func TestLoadPrivateKey(t *testing.T) {
	priv, _ := keys(t)
	pkcs8 := must(x509.MarshalPKCS8PrivateKey(priv))
	pkcs1 := x509.MarshalPKCS1PrivateKey(priv)
	for name, path := range map[string]string{
		"PKCS8":              writePEM(t, "pkcs8.pem", &pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
		"PKCS1":              writePEM(t, "pkcs1.pem", &pem.Block{Type: "RSA PRIVATE KEY", Bytes: pkcs1}),
		"PKCS8 labelled RSA": writePEM(t, "mislabelled.pem", &pem.Block{Type: "RSA PRIVATE KEY", Bytes: pkcs8}),
	} {
		got, err := LoadPrivateKey(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !got.Equal(priv) {
			t.Fatalf("%s: another key", name)
		}
	}
}

func TestLoadKeyErrors(t *testing.T) {
	priv, _ := keys(t)
	ec := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	ecPub := must(x509.MarshalPKIXPublicKey(&ec.PublicKey))
	ecPriv := must(x509.MarshalPKCS8PrivateKey(ec))
	rsaPriv := must(x509.MarshalPKCS8PrivateKey(priv))
	missing := filepath.Join(t.TempDir(), "nope.pem")

	tests := []struct {
		name    string
		load    func(string) error
		path    string
		problem string // what the error must say besides the path
	}{
		{"public: not found", loadPub, missing, "not found"},
		{"public: a directory", loadPub, t.TempDir(), "directory"},
		{"public: empty file", loadPub, writeFile(t, "empty.pem", nil), "no PEM block"},
		{"public: not PEM", loadPub, writeFile(t, "junk.pem", []byte("ssh-rsa AAAA...")), "no PEM block"},
		{"public: the private key", loadPub, writePEM(t, "priv.pem", &pem.Block{Type: "PRIVATE KEY", Bytes: rsaPriv}), "private key"},
		{"public: a certificate", loadPub, writePEM(t, "cert.pem", &pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), `"CERTIFICATE" is not a public key`},
		{"public: ECDSA", loadPub, writePEM(t, "ec.pem", &pem.Block{Type: "PUBLIC KEY", Bytes: ecPub}), "not an RSA key (ECDSA)"},
		{"public: corrupt", loadPub, writePEM(t, "bad.pem", &pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")}), "bad PUBLIC KEY block"},
		{"public: corrupt PKCS1", loadPub, writePEM(t, "bad1.pem", &pem.Block{Type: "RSA PUBLIC KEY", Bytes: []byte("junk")}), "bad RSA PUBLIC KEY block"},
		{"private: not found", loadPriv, missing, "not found"},
		{"private: not PEM", loadPriv, writeFile(t, "junk.pem", []byte("hello")), "no PEM block"},
		{"private: the public key", loadPriv, writeFile(t, "pub.pem", publicPEM(t, &priv.PublicKey)), `"PUBLIC KEY" is not a private key`},
		{"private: ECDSA", loadPriv, writePEM(t, "ec.pem", &pem.Block{Type: "PRIVATE KEY", Bytes: ecPriv}), "not an RSA key (ECDSA)"},
		{"private: corrupt", loadPriv, writePEM(t, "bad.pem", &pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte("junk")}), "bad RSA PRIVATE KEY block"},
		{"private: PKCS8 encrypted", loadPriv, writePEM(t, "enc.pem", &pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), "encrypted"},
		{"private: legacy encrypted", loadPriv, writePEM(t, "enc1.pem", &pem.Block{Type: "RSA PRIVATE KEY",
			Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1}}), "encrypted"},
	}
	for _, tc := range tests {
		err := tc.load(tc.path)
		if err == nil {
			t.Fatalf("%s: no error", tc.name)
		}
		if msg := err.Error(); !strings.Contains(msg, tc.path) || !strings.Contains(msg, tc.problem) {
			t.Errorf("%s: %q does not name %s and say %q", tc.name, msg, tc.path, tc.problem)
		}
	}
	if err := loadPub(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v is not fs.ErrNotExist", err)
	}
}

func loadPub(p string) error  { _, err := LoadPublicKey(p); return err }
func loadPriv(p string) error { _, err := LoadPrivateKey(p); return err }

func TestGenerateKeyPair(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "keys")
	pubPath, privPath, err := GenerateKeyPair(dir)
	if err != nil {
		t.Fatal(err)
	}
	if pubPath != filepath.Join(dir, "jwt.pem") || privPath != filepath.Join(dir, "jwt-private.pem") {
		t.Fatalf("paths %s, %s", pubPath, privPath)
	}
	if runtime.GOOS != "windows" {
		for path, mode := range map[string]fs.FileMode{pubPath: 0o644, privPath: 0o600} {
			if fi := must(os.Stat(path)); fi.Mode().Perm() != mode {
				t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
			}
		}
	}
	pub, err := LoadPublicKey(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := LoadPrivateKey(privPath)
	if err != nil {
		t.Fatal(err)
	}
	if !priv.PublicKey.Equal(pub) || pub.N.BitLen() != 2048 {
		t.Fatalf("pair does not match or is not RSA 2048 (%d bits)", pub.N.BitLen())
	}
	pubPEM := must(os.ReadFile(pubPath))
	privPEM := must(os.ReadFile(privPath))
	if !bytes.HasPrefix(pubPEM, []byte("-----BEGIN PUBLIC KEY-----")) || !bytes.HasPrefix(privPEM, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Fatal("not PKIX / PKCS8 PEM")
	}

	// Both there: untouched, same paths, ErrKeysExist.
	p2, q2, err := GenerateKeyPair(dir)
	if !errors.Is(err, ErrKeysExist) || p2 != pubPath || q2 != privPath {
		t.Fatalf("second run: %q %q %v", p2, q2, err)
	}
	if !bytes.Equal(must(os.ReadFile(pubPath)), pubPEM) || !bytes.Equal(must(os.ReadFile(privPath)), privPEM) {
		t.Fatal("second run changed the keys")
	}

	// Only one there: refused, naming it, nothing written.
	if err := os.Remove(privPath); err != nil {
		t.Fatal(err)
	}
	if _, _, err := GenerateKeyPair(dir); err == nil || errors.Is(err, ErrKeysExist) || !strings.Contains(err.Error(), pubPath) {
		t.Fatalf("public key alone: %v", err)
	}
	if _, err := os.Stat(privPath); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("private key written beside a lone public key")
	}
	if !bytes.Equal(must(os.ReadFile(pubPath)), pubPEM) {
		t.Fatal("lone public key changed")
	}
	if err := os.Rename(pubPath, privPath); err != nil {
		t.Fatal(err)
	}
	if _, _, err := GenerateKeyPair(dir); err == nil || !strings.Contains(err.Error(), privPath) {
		t.Fatalf("private key alone: %v", err)
	}
	if _, err := os.Stat(pubPath); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("public key written beside a lone private key")
	}
}

func TestGenerateKeyPairUnwritableDir(t *testing.T) {
	file := writeFile(t, "a-file", []byte("x"))
	if _, _, err := GenerateKeyPair(filepath.Join(file, "sub")); err == nil {
		t.Fatal("no error for a directory under a file")
	}
}
