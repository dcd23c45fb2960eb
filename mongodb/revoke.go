package mongodb

// Revocation: access taken away in MongoDB is taken from the connections
// already attached. Every instance's change stream sees the datasets
// collection's updates, replaces and deletes, and the users collection's
// deletes (a narrow branch of the $match); for each, the caches are
// invalidated at once, and then, off the stream's loop:
//
//   - a dataset D that changed in an access field (an updated, removed or
//     truncated field under one of dataset_access, or a replace): when this
//     instance holds subscriptions to datasetUpdate D or uploadFile D, one
//     find of D (the access fields only) decides, for each user holding
//     them, whether the user still may see D; those who may not lose both
//     subscriptions with the contract's detached message. A deleted D
//     detaches every holder without a query.
//   - a deleted user: every connection of the user is closed with 4004.

import (
	"context"
	"errors"
	"strings"

	"github.com/airlay/airlay/events"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// revocation is one change that may take access away.
type revocation struct {
	dataset string // hex; "" for a user
	user    string // hex, a deleted user
	deleted bool   // the dataset was deleted
	st      events.Stamp
}

// revokeQueue bounds the revocations waiting for the worker; past it the
// stream's loop waits (a revocation is never dropped).
const revokeQueue = 1024

// touchesAccess reports whether change c of a dataset may have changed who
// may see it.
func (s *Source) touchesAccess(c *change) bool {
	switch c.op {
	case OpReplace, OpDelete:
		return true
	case OpUpdate:
	default:
		return false
	}
	under := func(path string) bool {
		for _, f := range s.cfg.DatasetAccess {
			root := f
			if i := strings.IndexByte(f, '.'); i >= 0 {
				root = f[:i]
			}
			if path == root || strings.HasPrefix(path, root+".") || path == f || strings.HasPrefix(f, path+".") {
				return true
			}
		}
		return false
	}
	if elems, err := c.updated.Elements(); err == nil {
		for _, e := range elems {
			if under(e.Key()) {
				return true
			}
		}
	}
	for _, p := range c.removed {
		if under(p) {
			return true
		}
	}
	for _, p := range c.trunc {
		if under(p) {
			return true
		}
	}
	return false
}

// noteRevocation runs in the stream's loop: it invalidates the caches
// and queues the work.
func (s *Source) noteRevocation(c *change) {
	if s.store == nil {
		return
	}
	var r revocation
	switch {
	case c.coll == s.cfg.Users && c.op == OpDelete:
		oid, ok := c.key.ObjectIDOK()
		if !ok {
			return
		}
		r.user = oid.Hex()
		s.store.userC.drop(r.user)
	case c.coll == s.cfg.Datasets && s.touchesAccess(c):
		oid, ok := c.key.ObjectIDOK()
		if !ok {
			return
		}
		r.dataset, r.deleted = oid.Hex(), c.op == OpDelete
		s.store.dsC.dropGroup(r.dataset)
	default:
		return
	}
	r.st = c.st
	if s.broker == nil || s.broker.cl == nil || s.broker.cl.local == nil {
		return
	}
	s.revokeOnce.Do(func() {
		s.revokes = make(chan revocation, revokeQueue)
		go s.revokeLoop(s.runCtx)
	})
	select {
	case s.revokes <- r:
	case <-s.runCtx.Done():
	}
}

// revokeLoop withdraws access, one revocation at a time.
func (s *Source) revokeLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-s.revokes:
			s.revoke(ctx, r)
		}
	}
}

func (s *Source) revoke(ctx context.Context, r revocation) {
	local := s.broker.cl.local
	if r.user != "" {
		if n := local.UserGone(r.user); n > 0 {
			s.m.revoked.WithLabelValues("connection").Add(float64(n))
			s.log.Info("user deleted: its connections closed (4004)", "user", r.user, "connections", n)
		}
		return
	}
	keys := []events.Key{{Type: events.DatasetUpdate, ID: r.dataset}, {Type: events.UploadFile, ID: r.dataset}}
	holders := map[string][]events.Key{}
	for _, k := range keys {
		for _, u := range local.SubscribedUsers(k) {
			holders[u] = append(holders[u], k)
		}
	}
	if len(holders) == 0 {
		return // nobody here holds it: no query
	}
	allowed := func(string) bool { return false }
	if !r.deleted {
		doc, err := s.accessDoc(ctx, r.dataset)
		if err != nil {
			s.m.errors.WithLabelValues("revoke").Inc()
			s.log.Warn("revocation: reading the dataset failed; the subscriptions stay until the next change", "dataset", r.dataset, "err", err)
			return
		}
		allowed = func(u string) bool { return doc != nil && s.store.grants(doc, u) }
	}
	for u, ks := range holders {
		if allowed(u) {
			continue
		}
		for _, k := range ks {
			s.detach(local, r, k, u)
		}
	}
	// A holder that attached while the dataset was read (its check may
	// have used an answer from before the change) is decided by the same
	// read.
	// (Detach of a subscription no longer held does nothing.)
	for _, k := range keys {
		for _, u := range local.SubscribedUsers(k) {
			if !allowed(u) {
				s.detach(local, r, k, u)
			}
		}
	}
}

// detach withdraws k from every connection of user u on this instance.
func (s *Source) detach(local events.Local, r revocation, k events.Key, u string) {
	frame := func(pos string) []byte { return detachedFrame(k, pos) }
	if n := local.Detach(k, u, r.st.Pos(0), frame); n > 0 {
		s.m.revoked.WithLabelValues("subscription").Add(float64(n))
		s.log.Info("access revoked: subscription detached", "type", k.Type.String(), "dataset", r.dataset, "user", u, "connections", n)
	}
}

// accessDoc reads the access fields of a dataset; nil when it is gone.
func (s *Source) accessDoc(ctx context.Context, id string) (bson.Raw, error) {
	oid, _ := primitive.ObjectIDFromHex(id)
	proj := bson.D{}
	for _, f := range s.cfg.DatasetAccess {
		proj = append(proj, bson.E{Key: f, Value: 1})
	}
	fctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	raw, err := s.store.datasets.FindOne(fctx, bson.D{{Key: "_id", Value: oid}}, options.FindOne().SetProjection(proj)).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	return raw, err
}

// detachedFrame is the contract's message for a subscription withdrawn.
func detachedFrame(k events.Key, pos string) []byte {
	b := []byte(`{"type":"`)
	b = append(b, k.Type.String()...)
	b = append(b, `","id":"`...)
	b = append(b, k.ID...)
	b = append(b, `","data":[],"pos":"`...)
	b = append(b, pos...)
	b = append(b, `","detached":{"code":4,"message":"Not access for dataset"}}`...)
	return b
}

// grants reports whether dataset document doc names user in one of the
// access fields, as the query of CanSeeDataset decides: the ObjectId or
// its hex string, alone or in an array, a dotted path reaching into
// arrays of documents.
func (s *Store) grants(doc bson.Raw, user string) bool {
	uid, err := primitive.ObjectIDFromHex(user)
	if err != nil {
		return false
	}
	for _, f := range s.access {
		for _, v := range accessValues(bson.RawValue{Type: bson.TypeEmbeddedDocument, Value: doc}, strings.Split(f, ".")) {
			if names(v, uid) {
				return true
			}
		}
	}
	return false
}

func names(v bson.RawValue, uid primitive.ObjectID) bool {
	switch v.Type {
	case bson.TypeObjectID:
		return v.ObjectID() == uid
	case bson.TypeString:
		return v.StringValue() == uid.Hex()
	case bson.TypeArray:
		vals, _ := v.Array().Values()
		for _, e := range vals {
			if (e.Type == bson.TypeObjectID || e.Type == bson.TypeString) && names(e, uid) {
				return true
			}
		}
	}
	return false
}

// accessValues returns the values at a dotted path, descending into arrays
// of documents as a query does.
func accessValues(v bson.RawValue, path []string) []bson.RawValue {
	if len(path) == 0 {
		return []bson.RawValue{v}
	}
	switch v.Type {
	case bson.TypeEmbeddedDocument:
		next, err := v.Document().LookupErr(path[0])
		if err != nil {
			return nil
		}
		return accessValues(next, path[1:])
	case bson.TypeArray:
		vals, _ := v.Array().Values()
		var out []bson.RawValue
		for _, e := range vals {
			if e.Type == bson.TypeEmbeddedDocument {
				out = append(out, accessValues(e, path)...)
			}
		}
		return out
	}
	return nil
}
