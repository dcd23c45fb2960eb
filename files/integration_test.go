package files

// Against a real MongoDB when AIRLAY_TEST_MONGODB_URI is set (CI runs it
// against mongosim): two instances share a fresh database; a file placed on
// one is read on the other, whole and in part, the GridFS layout is the
// driver's, and after the expiry it is gone from both, chunks included.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/airlay/airlay/internal/mongosim"
	"go.mongodb.org/mongo-driver/mongo/gridfs"
	"go.mongodb.org/mongo-driver/mongo/options"
)

func integrationURI(t *testing.T) string {
	uri := os.Getenv("AIRLAY_TEST_MONGODB_URI")
	if uri == "" {
		t.Skip("SKIPPED: AIRLAY_TEST_MONGODB_URI is not set (a replica set, or a mongosim: see the README)")
	}
	return uri
}

func TestIntegrationGridFS(t *testing.T) {
	uri := integrationURI(t)
	dbName := fmt.Sprintf("airlay_files_it_%d", time.Now().UnixNano())
	admin := mongosim.Connect(t, uri)
	db := admin.Database(dbName)
	t.Cleanup(func() { _ = db.Drop(context.Background()) })
	o := gridLimits()
	o.TTL = 2 * time.Second
	g := GridFSOptions{Grace: -1, Sweep: 100 * time.Millisecond}
	ga, gb := g, g
	ga.Instance, gb.Instance = "a", "b"
	a := openGrid(t, uri, dbName, o, ga)
	b := openGrid(t, uri, dbName, o, gb)
	data := randomData(2*DefaultChunkSize+5, 9)
	ctx := context.Background()
	p, err := a.Put(ctx, "export.csv", bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	for _, rg := range [][2]int64{{0, -1}, {DefaultChunkSize - 3, DefaultChunkSize + 3}, {int64(len(data)) - 1, -1}} {
		got, err := read(t, b, p.Key, "export.csv", rg[0], rg[1])
		to := rg[1]
		if to < 0 {
			to = int64(len(data))
		}
		if err != nil || !bytes.Equal(got, data[rg[0]:to]) {
			t.Errorf("B reads [%d, %d): %d bytes, %v", rg[0], to, len(got), err)
		}
	}
	bucket, err := gridfs.NewBucket(db, options.GridFSBucket().SetName(DefaultBucket))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := bucket.Find(map[string]any{"filename": "export.csv"})
	if err != nil {
		t.Fatal(err)
	}
	var found []gridfs.File
	if err := cur.All(ctx, &found); err != nil || len(found) != 1 || found[0].Length != int64(len(data)) {
		t.Fatalf("the driver's GridFS finds %v (%v)", found, err)
	}
	ds, err := bucket.OpenDownloadStream(found[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := io.ReadAll(ds)
	ds.Close()
	if err != nil || !bytes.Equal(whole, data) {
		t.Fatalf("the driver's GridFS reads %d bytes, %v", len(whole), err)
	}
	waitUntil(t, "the expiry on both", 10*time.Second, func() bool {
		_, ea := a.Open(ctx, p.Key, "export.csv")
		_, eb := b.Open(ctx, p.Key, "export.csv")
		return errors.Is(ea, ErrNotFound) && errors.Is(eb, ErrNotFound)
	})
	waitUntil(t, "the file and its chunks to go", 10*time.Second, func() bool {
		return count(t, db, DefaultBucket+".files") == 0 && count(t, db, DefaultBucket+".chunks") == 0 && count(t, db, DefaultBucket+".uploads") == 0
	})
}
