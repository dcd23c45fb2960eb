package mongodb

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.mongodb.org/mongo-driver/bson"
)

// grants (the revocation's check of a dataset document read once) agrees
// with the query of CanSeeDataset: ObjectId or hex string, alone or in an
// array, dotted paths into arrays of documents.
func TestGrants(t *testing.T) {
	doc := mustRaw(bson.D{
		{Key: "_id", Value: dataset1},
		{Key: "owner", Value: userA},
		{Key: "members", Value: bson.A{"x", userB.Hex()}},
		{Key: "editors", Value: bson.A{bson.D{{Key: "user", Value: userB}}, bson.D{{Key: "user", Value: "y"}}}},
		{Key: "reviewer", Value: userB.Hex()},
	})
	for _, tc := range []struct {
		access []string
		user   string
		want   bool
	}{
		{[]string{"owner", "members"}, userA.Hex(), true},
		{[]string{"owner", "members"}, userB.Hex(), true}, // a hex string in an array
		{[]string{"owner"}, userB.Hex(), false},
		{[]string{"editors.user"}, userB.Hex(), true}, // into an array of documents
		{[]string{"editors.user"}, userA.Hex(), false},
		{[]string{"reviewer"}, userB.Hex(), true}, // a hex string alone
		{[]string{"missing"}, userA.Hex(), false},
		{[]string{"owner"}, "not an id", false},
	} {
		s := &Store{access: tc.access}
		if got := s.grants(doc, tc.user); got != tc.want {
			t.Errorf("access %v user %s: %v, want %v", tc.access, tc.user, got, tc.want)
		}
	}
}

// A change of the datasets collection revokes only when it may touch an
// access field.
func TestTouchesAccess(t *testing.T) {
	cfg := testConfig()
	cfg.DatasetAccess = []string{"owner", "members", "editors.user"}
	s := &Source{cfg: &cfg}
	upd := func(set bson.D, removed, trunc []string) *change {
		return &change{op: OpUpdate, coll: "datasets", updated: mustRaw(set), removed: removed, trunc: trunc}
	}
	for _, tc := range []struct {
		name string
		c    *change
		want bool
	}{
		{"a name", upd(bson.D{{Key: "name", Value: "x"}}, nil, nil), false},
		{"members set", upd(bson.D{{Key: "members", Value: bson.A{}}}, nil, nil), true},
		{"one member", upd(bson.D{{Key: "members.3", Value: "x"}}, nil, nil), true},
		{"membersCount is another field", upd(bson.D{{Key: "membersCount", Value: 3}}, nil, nil), false},
		{"owner removed", upd(bson.D{}, []string{"owner"}, nil), true},
		{"editors truncated", upd(bson.D{}, nil, []string{"editors"}), true},
		{"an editor's user", upd(bson.D{{Key: "editors.0.user", Value: "x"}}, nil, nil), true},
		{"replace", &change{op: OpReplace}, true},
		{"delete", &change{op: OpDelete}, true},
		{"insert", &change{op: OpInsert}, false},
	} {
		if got := s.touchesAccess(tc.c); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// The cache's invalidation: a dropped group or key is queried again, and
// an answer whose query started before the invalidation is not kept.
func TestCacheInvalidation(t *testing.T) {
	c := newCache(time.Minute, 100, time.Second, prometheus.NewCounter(prometheus.CounterOpts{Name: "h"}), prometheus.NewCounter(prometheus.CounterOpts{Name: "m"}))
	ctx := context.Background()
	loads := 0
	yes := func(context.Context) (bool, error) { loads++; return true, nil }
	key := userB.Hex() + "/" + dataset1.Hex()
	for range 2 {
		if ok, _ := c.get(ctx, key, yes); !ok {
			t.Fatal("want true")
		}
	}
	if loads != 1 {
		t.Fatalf("%d loads, want 1 (cached)", loads)
	}
	c.dropGroup(dataset1.Hex())
	_, _ = c.get(ctx, key, yes)
	if loads != 2 {
		t.Fatalf("%d loads after dropGroup, want 2", loads)
	}
	_, _ = c.get(ctx, userB.Hex()+"/"+dataset2.Hex(), yes) // another dataset
	_, _ = c.get(ctx, userB.Hex()+"/"+dataset2.Hex(), yes)
	if loads != 3 {
		t.Fatalf("%d loads, want 3 (the other dataset cached once)", loads)
	}
	// A query under way when the group is dropped: its answer is returned
	// but not kept.
	racing := func(context.Context) (bool, error) {
		loads++
		time.Sleep(time.Millisecond)
		c.dropGroup(dataset1.Hex())
		return true, nil
	}
	c.dropGroup(dataset1.Hex())
	time.Sleep(time.Millisecond) // the clock moves past the drop
	_, _ = c.get(ctx, key, racing)
	_, _ = c.get(ctx, key, yes)
	if loads != 5 {
		t.Fatalf("%d loads, want 5 (the answer of the racing query not kept)", loads)
	}
	// A key: a deleted user.
	_, _ = c.get(ctx, userA.Hex(), yes)
	c.drop(userA.Hex())
	_, _ = c.get(ctx, userA.Hex(), yes)
	if loads != 7 {
		t.Fatalf("%d loads, want 7 (the user queried again after drop)", loads)
	}
}
