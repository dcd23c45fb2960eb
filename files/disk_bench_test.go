package files

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"
)

// The lookup of a link in the disk store: a hit, and the three kinds of
// miss, which must cost the same (one SHA-256 of key/name and one map
// lookup). The figures are in BENCHMARKS.md:
//
//	go test -run x -bench DiskLookup ./files/
func BenchmarkDiskLookup(b *testing.B) {
	st, err := OpenDisk(b.TempDir(), Options{TTL: time.Hour, MaxFile: 1 << 20, MaxBytes: 1 << 20, MaxFiles: 10, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	ctx := context.Background()
	p, err := st.Put(ctx, "report.xlsx", bytes.NewReader([]byte("x")), 1)
	if err != nil {
		b.Fatal(err)
	}
	old, err := st.Put(ctx, "report.xlsx", bytes.NewReader([]byte("x")), 1)
	if err != nil {
		b.Fatal(err)
	}
	st.mu.Lock()
	st.index[ID(old.Key, "report.xlsx")].expires = time.Now().Add(-time.Second) // expired, not yet removed (the loop waits an hour)
	st.mu.Unlock()
	other := p.Key[:len(p.Key)-1] + map[bool]string{true: "B", false: "A"}[p.Key[len(p.Key)-1] == 'A']
	for _, tc := range []struct {
		name, key, file string
		hit             bool
	}{
		{"hit", p.Key, "report.xlsx", true},
		{"unknown-key", other, "report.xlsx", false},
		{"wrong-name", p.Key, "report.xlsy", false},
		{"expired", old.Key, "report.xlsx", false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				f, err := st.Open(ctx, tc.key, tc.file)
				if (err == nil) != tc.hit {
					b.Fatal("wrong answer")
				}
				if f != nil {
					f.Content.Close()
				}
			}
		})
	}
}
