package main

// Temporary download links across instances: two airlay-cli processes on
// one mongosim (the GridFS store that cmd wires when [mongodb] uri is set),
// and one of them killed with SIGKILL in the middle of a download and an
// upload.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlay/airlay/internal/mongosim"
	"go.mongodb.org/mongo-driver/bson"
)

// startFileServer starts an instance on uri with its own name and file_ttl.
func startFileServer(t *testing.T, uri, instance string, ttl time.Duration) *serverProc {
	t.Helper()
	p, err := tryStartServerMongo(t, 0, fmt.Sprintf("uri = %s\ninstance = %s\n\n[webSocketEvents]\nfile_ttl = %s\n", uri, instance, ttl))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func placeFile(t *testing.T, p *serverProc, name string, data []byte) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, p.base+"/api/files?name="+url.QueryEscape(name), bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+publishToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m struct{ URL string }
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != 200 || m.URL == "" {
		t.Fatalf("upload %s: %d %v", name, resp.StatusCode, err)
	}
	return m.URL
}

// fetch GETs path on p with an optional Range and returns status and body.
func fetch(t *testing.T, p *serverProc, path, rng string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, p.base+path, nil)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, b
}

func TestFilesAcrossInstances(t *testing.T) {
	t.Parallel()
	sim := mongosim.Start(t)
	a := startFileServer(t, sim.URI, "a", 30*time.Second)
	b := startFileServer(t, sim.URI, "b", 3*time.Second)
	if !strings.Contains(b.stderr.String(), "temporary download files in MongoDB GridFS") || !strings.Contains(b.stderr.String(), "bucket=airlay_files") {
		t.Errorf("the start-up log does not say the files are in GridFS:\n%s", b.stderr.String())
	}
	small := make([]byte, 300_000) // two chunks
	_, _ = rand.NewChaCha8([32]byte{1}).Read(small)

	// Placed on B, served by A: whole, a Range across the chunk boundary,
	// Content-Disposition and Cache-Control as on the instance that has it.
	placedS := time.Now()
	s := placeFile(t, b, "отчёт.csv", small)
	for _, p := range []*serverProc{a, b} {
		if status, got := fetch(t, p, s, ""); status != 200 || !bytes.Equal(got, small) {
			t.Fatalf("GET %s on %s: %d, %d bytes", s, p.base, status, len(got))
		}
		if status, got := fetch(t, p, s, "bytes=261000-262999"); status != 206 || !bytes.Equal(got, small[261000:263000]) {
			t.Errorf("Range on %s: %d, %d bytes", p.base, status, len(got))
		}
	}
	resp, err := http.Head(a.base + s)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cd := resp.Header.Get("Content-Disposition"); !strings.Contains(cd, "filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.csv") || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers on A: %v", resp.Header)
	}

	// Placed on A (file_ttl 30s) while S expires (B's file_ttl, 3s): 404
	// on both instances.
	large := make([]byte, 16<<20)
	_, _ = rand.NewChaCha8([32]byte{2}).Read(large)
	l := placeFile(t, a, "large.bin", large)
	deadline := time.Now().Add(10 * time.Second)
	for {
		sa, _ := fetch(t, a, s, "")
		sb, _ := fetch(t, b, s, "")
		if sa == 404 && sb == 404 {
			if d := time.Since(placedS); d < 3*time.Second {
				t.Errorf("the link ended %v after the upload, before file_ttl", d)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("S after its expiry: %d on A, %d on B, want 404 on both", sa, sb)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// kill -9 of A in the middle of a download of L and of an upload.
	dl, err := http.Get(a.base + l)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Body.Close()
	if _, err := io.ReadFull(dl.Body, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	upDone := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, a.base+"/api/files?name=half.bin", pr)
		req.Header.Set("Authorization", "Bearer "+publishToken)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("the upload was answered %d", resp.StatusCode)
		}
		upDone <- err
	}()
	if _, err := pw.Write(make([]byte, 2<<20)); err != nil {
		t.Fatal(err)
	}
	db := sim.Client().Database("airlay")
	ctx := context.Background()
	waitCount := func(what, coll string, filter bson.D, want int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, err := db.Collection(coll).CountDocuments(ctx, filter)
			if err == nil && n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d documents in %s (%v), want %d", what, n, coll, err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// The half upload's chunks are being written.
	waitCount("the upload in progress", "airlay_files.uploads", bson.D{{Key: "instance", Value: "a"}}, 1)
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.exited
	pw.Close()
	if err := <-upDone; err == nil || strings.Contains(err.Error(), "answered") {
		t.Errorf("the upload to the killed instance: %v", err)
	}
	rest, _ := io.ReadAll(dl.Body)
	if len(rest)+1<<20 >= len(large) {
		t.Errorf("the download from the killed instance went through whole (%d bytes)", len(rest)+1<<20)
	}

	// B serves L whole and in part.
	status, got := fetch(t, b, l, "")
	if status != 200 || sha256.Sum256(got) != sha256.Sum256(large) {
		t.Fatalf("L on B after A was killed: %d, %d bytes", status, len(got))
	}
	if status, got := fetch(t, b, l, "bytes=10000000-10000099"); status != 206 || !bytes.Equal(got, large[10000000:10000100]) {
		t.Errorf("Range of L on B: %d, %d bytes", status, len(got))
	}
	// Nothing half-written is visible: no document for the half upload
	// (only its reservation, which a live instance removes with its chunks
	// once its lease passes), and every chunk belongs to a file or to that
	// reservation.
	waitCount("documents of half.bin", "airlay_files.files", bson.D{{Key: "filename", Value: "half.bin"}}, 0)
	ids, err := db.Collection("airlay_files.chunks").Distinct(ctx, "files_id", bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		nf, _ := db.Collection("airlay_files.files").CountDocuments(ctx, bson.D{{Key: "_id", Value: id}})
		nu, _ := db.Collection("airlay_files.uploads").CountDocuments(ctx, bson.D{{Key: "_id", Value: id}})
		if nf+nu != 1 {
			t.Errorf("chunks of %v: %d file documents, %d reservations", id, nf, nu)
		}
	}
	// B places and serves on.
	u := placeFile(t, b, "after.txt", []byte("after"))
	if status, got := fetch(t, b, u, ""); status != 200 || string(got) != "after" {
		t.Errorf("B after the kill: %d %q", status, got)
	}
}
