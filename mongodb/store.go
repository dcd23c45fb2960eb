package mongodb

import (
	"context"
	"errors"
	"fmt"

	"github.com/airlay/airlay/auth"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// Store answers the user (code 3) and dataset-access (code 4) checks from
// MongoDB, through a short cache. An error (MongoDB unreachable, a timeout)
// makes the server answer code 7.
type Store struct {
	users    *mongo.Collection
	datasets *mongo.Collection
	access   []string
	userC    *cache
	dsC      *cache
	m        *metrics
}

var _ auth.Store = (*Store)(nil)

func newStore(db *mongo.Database, cfg *Config, m *metrics) *Store {
	return &Store{
		users:    db.Collection(cfg.Users),
		datasets: db.Collection(cfg.Datasets),
		access:   cfg.DatasetAccess,
		userC:    newCache(cfg.CacheTTL, cfg.CacheSize, cfg.QueryTimeout, m.cache.WithLabelValues("user", "hit"), m.cache.WithLabelValues("user", "miss")),
		dsC:      newCache(cfg.CacheTTL, cfg.CacheSize, cfg.QueryTimeout, m.cache.WithLabelValues("dataset", "hit"), m.cache.WithLabelValues("dataset", "miss")),
		m:        m,
	}
}

// UserExists reports whether the users collection holds a document with
// _id ObjectId(userID).
func (s *Store) UserExists(ctx context.Context, userID string) (bool, error) {
	return s.userC.get(ctx, userID, func(ctx context.Context) (bool, error) {
		oid, err := primitive.ObjectIDFromHex(userID)
		if err != nil {
			return false, nil
		}
		err = s.users.FindOne(ctx, bson.D{{Key: "_id", Value: oid}}, options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})).Err()
		if errors.Is(err, mongo.ErrNoDocuments) {
			return false, nil
		}
		if err != nil {
			s.m.errors.WithLabelValues("find_user").Inc()
			return false, fmt.Errorf("find user in %s: %w", s.users.Name(), err)
		}
		return true, nil
	})
}

// CanSeeDataset reports whether the dataset exists and one of the access
// fields holds the user: the user's ObjectId (or its hex string), alone or
// in an array. With the default fields: the owner or a member.
func (s *Store) CanSeeDataset(ctx context.Context, userID, datasetID string) (bool, error) {
	return s.dsC.get(ctx, userID+"/"+datasetID, func(ctx context.Context) (bool, error) {
		uid, err1 := primitive.ObjectIDFromHex(userID)
		did, err2 := primitive.ObjectIDFromHex(datasetID)
		if err1 != nil || err2 != nil {
			return false, nil
		}
		err := s.datasets.FindOne(ctx, s.accessFilter(uid, did), options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})).Err()
		if errors.Is(err, mongo.ErrNoDocuments) {
			return false, nil
		}
		if err != nil {
			s.m.errors.WithLabelValues("find_dataset").Inc()
			return false, fmt.Errorf("find dataset in %s: %w", s.datasets.Name(), err)
		}
		return true, nil
	})
}

// accessFilter is {_id: dataset, $or: [{field: {$in: [user, "user"]}}, ...]}.
func (s *Store) accessFilter(user, dataset primitive.ObjectID) bson.D {
	or := make(bson.A, len(s.access))
	for i, f := range s.access {
		or[i] = bson.D{{Key: f, Value: bson.D{{Key: "$in", Value: bson.A{user, user.Hex()}}}}}
	}
	return bson.D{{Key: "_id", Value: dataset}, {Key: "$or", Value: or}}
}
