package iniconf

import (
	"strings"
	"testing"
	"time"
)

func TestMaskURI(t *testing.T) {
	for in, want := range map[string]string{
		"":                            "",
		"mongodb://db:27017/":         "mongodb://db:27017/",
		"mongodb://u:p@db/":           "mongodb://u:****@db/",
		"mongodb://u:p@ss@db1,db2/x":  "mongodb://u:****@db1,db2/x",
		"mongodb+srv://u:p@c.net/x?a": "mongodb+srv://u:****@c.net/x?a",
		"mongodb://u@db/":             "mongodb://u@db/",
		"mongodb://db/?authMechanismProperties=AWS_SESSION_TOKEN:x&tlsCertificateKeyFilePassword=y&w=1": "mongodb://db/?authMechanismProperties=AWS_SESSION_TOKEN:x&tlsCertificateKeyFilePassword=****&w=1",
		"not a uri with secret": "****",
	} {
		if got := MaskURI(in); got != want {
			t.Errorf("MaskURI(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFormat(t *testing.T) {
	for d, want := range map[time.Duration]string{time.Hour: "1h", 5 * time.Minute: "5m", 90 * time.Second: "1m30s", 1500 * time.Millisecond: "1.5s", 0: "0s", 2*time.Hour + 3*time.Minute: "2h3m"} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[int64]string{1 << 20: "1048576 (1MiB)", 4096: "4096 (4KiB)", 1000: "1000", 3 << 30: "3221225472 (3GiB)"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

// A setting read from the environment keeps its variable in errors raised
// after Read (cross-key checks).
func TestSectionErrorNamesOrigin(t *testing.T) {
	f, err := Parse("c.ini", []byte("[s]\na = 1\n\nb = 2\n"), []string{"AIRLAY_S_B=3"}, "s")
	if err != nil {
		t.Fatal(err)
	}
	var a, b int
	sec := f.Section("s")
	if err := sec.Read([]Key{{Name: "a", Value: Int(&a, 0)}, {Name: "b", Value: Int(&b, 0)}}); err != nil {
		t.Fatal(err)
	}
	if a != 1 || b != 3 {
		t.Errorf("a %d b %d", a, b)
	}
	if msg := sec.Errorf("b", "too big").Error(); msg != "c.ini: [s] b (from environment variable AIRLAY_S_B): too big" {
		t.Errorf("%q", msg)
	}
	if msg := sec.Errorf("a", "too small").Error(); msg != "c.ini:2: [s] a: too small" {
		t.Errorf("%q", msg)
	}
	if !strings.Contains(EnvName("webSocketEvents", "publish_token"), "AIRLAY_WEBSOCKETEVENTS_PUBLISH_TOKEN") {
		t.Error(EnvName("webSocketEvents", "publish_token"))
	}
}
