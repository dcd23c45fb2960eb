package mongodb

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.mongodb.org/mongo-driver/bson"
)

func storeFake(t *testing.T) *fakeMongo {
	f := newFakeMongo(t)
	f.insertDocs("users", bson.D{{Key: "_id", Value: userA}, {Key: "name", Value: "a"}}, bson.D{{Key: "_id", Value: userB}})
	f.insertDocs("datasets",
		bson.D{{Key: "_id", Value: dataset1}, {Key: "owner", Value: userA}, {Key: "members", Value: bson.A{userB.Hex()}}},
		bson.D{{Key: "_id", Value: dataset2}, {Key: "owner", Value: userB}, {Key: "members", Value: bson.A{}},
			{Key: "editors", Value: bson.A{bson.D{{Key: "user", Value: userA}, {Key: "role", Value: "w"}}}}},
	)
	return f
}

func TestStoreUsers(t *testing.T) {
	f := storeFake(t)
	mg, _ := connect(t, f, testConfig())
	ctx := context.Background()
	for _, tc := range []struct {
		user string
		want bool
	}{
		{userA.Hex(), true}, {userB.Hex(), true}, {dataset1.Hex(), false}, {"not an id", false},
	} {
		got, err := mg.Store.UserExists(ctx, tc.user)
		if err != nil || got != tc.want {
			t.Errorf("UserExists(%s) = %v, %v; want %v", tc.user, got, err, tc.want)
		}
	}
	finds := f.commands("find")
	if len(finds) != 3 {
		t.Fatalf("%d finds, want 3 (none for a malformed id)", len(finds))
	}
	if got, want := extJSON(t, finds[0].Doc.Lookup("filter").Document()), `{"_id":{"$oid":"`+userA.Hex()+`"}}`; got != want {
		t.Errorf("filter %s, want %s", got, want)
	}
	if got := extJSON(t, finds[0].Doc.Lookup("projection").Document()); got != `{"_id":1}` {
		t.Errorf("projection %s", got)
	}
	if coll, _ := finds[0].Doc.Lookup("find").StringValueOK(); coll != "users" {
		t.Errorf("find on %q", coll)
	}
	// Cached, both answers.
	for i := 0; i < 3; i++ {
		_, _ = mg.Store.UserExists(ctx, userA.Hex())
		_, _ = mg.Store.UserExists(ctx, dataset1.Hex())
	}
	if n := len(f.commands("find")); n != 3 {
		t.Errorf("%d finds after repeated checks, want 3 (cached)", n)
	}
	if h := testutil.ToFloat64(mg.metrics.cache.WithLabelValues("user", "hit")); h != 6 {
		t.Errorf("hits %v, want 6", h)
	}
	if m := testutil.ToFloat64(mg.metrics.cache.WithLabelValues("user", "miss")); m != 4 {
		t.Errorf("misses %v, want 4", m)
	}
}

func TestStoreDatasets(t *testing.T) {
	f := storeFake(t)
	cfg := testConfig()
	mg, _ := connect(t, f, cfg)
	ctx := context.Background()
	cases := []struct {
		name          string
		user, dataset string
		want          bool
	}{
		{"owner", userA.Hex(), dataset1.Hex(), true},
		{"member (stored as a hex string)", userB.Hex(), dataset1.Hex(), true},
		{"owner of the other", userB.Hex(), dataset2.Hex(), true},
		{"editor is not in the default rule", userA.Hex(), dataset2.Hex(), false},
		{"no such dataset", userA.Hex(), issue1.Hex(), false},
	}
	for _, tc := range cases {
		got, err := mg.Store.CanSeeDataset(ctx, tc.user, tc.dataset)
		if err != nil || got != tc.want {
			t.Errorf("%s: CanSeeDataset = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	want := `{"_id":{"$oid":"` + dataset1.Hex() + `"},"$or":[` +
		`{"owner":{"$in":[{"$oid":"` + userA.Hex() + `"},"` + userA.Hex() + `"]}},` +
		`{"members":{"$in":[{"$oid":"` + userA.Hex() + `"},"` + userA.Hex() + `"]}}]}`
	if got := extJSON(t, f.commands("find")[0].Doc.Lookup("filter").Document()); got != want {
		t.Errorf("filter\n got %s\nwant %s", got, want)
	}

	// A configured rule: dotted paths into arrays of documents.
	cfg.DatasetAccess = []string{"owner", "editors.user"}
	mg2, _ := connect(t, f, cfg)
	if ok, err := mg2.Store.CanSeeDataset(ctx, userA.Hex(), dataset2.Hex()); err != nil || !ok {
		t.Errorf("editors.user: %v, %v; want true", ok, err)
	}
	if ok, err := mg2.Store.CanSeeDataset(ctx, userB.Hex(), dataset1.Hex()); err != nil || ok {
		t.Errorf("member with rule owner,editors.user: %v, %v; want false", ok, err)
	}
}

// TestStoreRevocation: a revoked access (or a deleted user) stops within
// cache_ttl, and not before the cached answer expires.
func TestStoreRevocation(t *testing.T) {
	f := storeFake(t)
	mg, _ := connect(t, f, testConfig())
	now := time.Now()
	clock := func() time.Time { return now }
	mg.Store.userC.now, mg.Store.dsC.now = clock, clock
	ctx := context.Background()
	if ok, _ := mg.Store.CanSeeDataset(ctx, userB.Hex(), dataset1.Hex()); !ok {
		t.Fatal("member cannot see")
	}
	if ok, _ := mg.Store.UserExists(ctx, userB.Hex()); !ok {
		t.Fatal("user missing")
	}
	f.removeDocs("datasets", bson.D{{Key: "_id", Value: dataset1}})
	f.insertDocs("datasets", bson.D{{Key: "_id", Value: dataset1}, {Key: "owner", Value: userA}, {Key: "members", Value: bson.A{}}})
	f.removeDocs("users", bson.D{{Key: "_id", Value: userB}})
	now = now.Add(4 * time.Second)
	if ok, _ := mg.Store.CanSeeDataset(ctx, userB.Hex(), dataset1.Hex()); !ok {
		t.Error("within cache_ttl the cached answer holds")
	}
	now = now.Add(1001 * time.Millisecond)
	if ok, err := mg.Store.CanSeeDataset(ctx, userB.Hex(), dataset1.Hex()); ok || err != nil {
		t.Errorf("after cache_ttl: %v, %v; want false (revoked)", ok, err)
	}
	if ok, err := mg.Store.UserExists(ctx, userB.Hex()); ok || err != nil {
		t.Errorf("deleted user after cache_ttl: %v, %v; want false", ok, err)
	}
}

// TestStoreConcurrentMisses: a storm of checks of the same user or dataset
// while nothing is cached makes one query per key.
func TestStoreConcurrentMisses(t *testing.T) {
	f := storeFake(t)
	mg, _ := connect(t, f, testConfig())
	gate := make(chan struct{})
	f.mu.Lock()
	f.gate = gate
	f.mu.Unlock()
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for i := 0; i < n; i++ {
		wg.Add(3)
		go func() {
			defer wg.Done()
			if ok, err := mg.Store.UserExists(context.Background(), userA.Hex()); !ok || err != nil {
				errs <- fmt.Errorf("user: %v %v", ok, err)
			}
		}()
		go func() {
			defer wg.Done()
			if ok, err := mg.Store.CanSeeDataset(context.Background(), userA.Hex(), dataset1.Hex()); !ok || err != nil {
				errs <- fmt.Errorf("dataset: %v %v", ok, err)
			}
		}()
		go func() {
			defer wg.Done()
			if ok, err := mg.Store.UserExists(context.Background(), userB.Hex()); !ok || err != nil {
				errs <- fmt.Errorf("user B: %v %v", ok, err)
			}
		}()
	}
	waitFor(t, "the queries to start", func() bool { return len(f.commands("find")) == 3 })
	time.Sleep(20 * time.Millisecond) // every caller is waiting
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(f.commands("find")); got != 3 {
		t.Errorf("%d finds for %d concurrent checks of 3 keys, want 3", got, 3*n)
	}
	// A caller that gives up does not fail the others.
	gate2 := make(chan struct{})
	f.mu.Lock()
	f.gate = gate2
	f.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		_, err := mg.Store.CanSeeDataset(context.Background(), userB.Hex(), dataset2.Hex())
		res <- err
	}()
	waitFor(t, "the query", func() bool { return len(f.commands("find")) == 4 })
	go func() { _, _ = mg.Store.CanSeeDataset(ctx, userB.Hex(), dataset2.Hex()) }()
	cancel()
	close(gate2)
	if err := <-res; err != nil {
		t.Errorf("the other caller got %v", err)
	}
}

// TestStoreOutage: MongoDB unreachable: an error (the server answers code 7),
// not cached, and counted.
func TestStoreOutage(t *testing.T) {
	f := storeFake(t)
	cfg := testConfig()
	cfg.QueryTimeout = 200 * time.Millisecond
	mg, _ := connect(t, f, cfg)
	f.setDown(true)
	if _, err := mg.Store.UserExists(context.Background(), userA.Hex()); err == nil {
		t.Error("UserExists: no error while MongoDB is down")
	}
	if _, err := mg.Store.CanSeeDataset(context.Background(), userA.Hex(), dataset1.Hex()); err == nil {
		t.Error("CanSeeDataset: no error while MongoDB is down")
	}
	f.fail(fakeFail{cmd: "find", reply: serverError(13, "Unauthorized")})
	f.setDown(false)
	if _, err := mg.Store.UserExists(context.Background(), userA.Hex()); err == nil {
		t.Error("UserExists: no error on a server error")
	}
	if ok, err := mg.Store.UserExists(context.Background(), userA.Hex()); !ok || err != nil {
		t.Errorf("after the outage: %v, %v (errors must not be cached)", ok, err)
	}
	if v := testutil.ToFloat64(mg.metrics.errors.WithLabelValues("find_user")); v < 2 {
		t.Errorf("find_user errors %v", v)
	}
}

// TestCacheBounded: the cache never holds more than its size.
func TestCacheBounded(t *testing.T) {
	mg, _ := connect(t, storeFake(t), func() Config { c := testConfig(); c.CacheSize = 10; return c }())
	for i := 0; i < 100; i++ {
		_, _ = mg.Store.UserExists(context.Background(), fmt.Sprintf("%024x", i))
	}
	if n := mg.Store.userC.len(); n > 10 {
		t.Errorf("cache holds %d answers, size 10", n)
	}
}
