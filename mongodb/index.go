package mongodb

// The TTL index of the events collection, kept in step with events_ttl: it
// is created when missing (at start-up, and again after the database was
// dropped, which the change stream reports as invalidate) and changed in
// place with collMod when events_ttl changed, so no manual step is needed.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// ttlIndexName is the name of the TTL index airlay creates on createdAt.
const ttlIndexName = "airlay_ttl"

// codeNamespaceNotFound: listIndexes of a collection that does not exist.
const codeNamespaceNotFound = 26

// ensureTTLIndex makes the events collection's TTL index on createdAt
// expire documents after ttl (whole seconds, at least 1). It reports what it
// did: "created", "updated" (with the old value), or "" when the index was
// right already.
func ensureTTLIndex(ctx context.Context, db *mongo.Database, coll string, ttl time.Duration) (did string, err error) {
	want := int64(max(ttl/time.Second, 1))
	c := db.Collection(coll)
	cur, err := c.Indexes().List(ctx)
	var se mongo.ServerError
	switch {
	case errors.As(err, &se) && se.HasErrorCode(codeNamespaceNotFound):
		// No collection yet: createIndexes creates it.
	case err != nil:
		return "", fmt.Errorf("list the indexes of %s: %w", coll, err)
	default:
		var specs []bson.Raw
		if err := cur.All(ctx, &specs); err != nil {
			return "", fmt.Errorf("list the indexes of %s: %w", coll, err)
		}
		for _, spec := range specs {
			key, _ := spec.Lookup("key").DocumentOK()
			elems, _ := key.Elements()
			if len(elems) != 1 || elems[0].Key() != "createdAt" {
				continue
			}
			name, _ := spec.Lookup("name").StringValueOK() // for messages
			have, isTTL := spec.Lookup("expireAfterSeconds").AsInt64OK()
			if isTTL && have == want {
				return "", nil
			}
			// collMod changes the index in place (keyPattern: every
			// version; a plain index becomes a TTL index on MongoDB 5.1 and
			// later); documents are not rewritten.
			err := db.RunCommand(ctx, bson.D{{Key: "collMod", Value: coll}, {Key: "index", Value: bson.D{
				{Key: "keyPattern", Value: key}, {Key: "expireAfterSeconds", Value: want}}}}).Err()
			if err != nil {
				return "", fmt.Errorf("collMod %s index %s expireAfterSeconds %d: %w", coll, name, want, err)
			}
			if !isTTL {
				return fmt.Sprintf("updated (index %s had no TTL)", name), nil
			}
			return fmt.Sprintf("updated (was %ds)", have), nil
		}
	}
	_, err = c.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys:    bson.D{{Key: "createdAt", Value: 1}},
		Options: options.Index().SetName(ttlIndexName).SetExpireAfterSeconds(int32(want)),
	})
	if err != nil {
		return "", fmt.Errorf("create the TTL index of %s: %w", coll, err)
	}
	return "created", nil
}
