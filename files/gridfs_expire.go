package files

// Expiry in GridFS: this instance's files on time, every instance's (and
// abandoned uploads) by the sweep; and the bucket's indexes.

import (
	"context"
	"errors"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// loop keeps the indexes, removes this instance's files as they expire,
// and sweeps the bucket.
func (st *GridFS) loop() {
	defer close(st.done)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	nextSweep := time.Now()
	for {
		now := time.Now()
		if !st.indexed {
			st.indexed = st.ensureIndexes() == nil
		}
		if !now.Before(nextSweep) {
			st.sweep(now)
			nextSweep = now.Add(st.g.Sweep)
		}
		wait := min(st.expire(time.Now()), time.Until(nextSweep))
		if !st.indexed {
			wait = min(wait, time.Second)
		}
		t.Reset(max(wait, time.Millisecond))
		select {
		case <-t.C:
		case <-st.wake:
			t.Stop() // Go 1.23 timers: no stale tick after Stop
		case <-st.ctx.Done():
			return
		}
	}
}

// ensureIndexes makes the bucket's indexes: GridFS's own two, and those the
// lookups of expiry and the sweep use.
func (st *GridFS) ensureIndexes() error {
	ctx, cancel := st.op(st.ctx)
	defer cancel()
	for _, ix := range []struct {
		c *mongo.Collection
		m mongo.IndexModel
	}{
		{st.chunks, mongo.IndexModel{Keys: bson.D{{Key: "files_id", Value: 1}, {Key: "n", Value: 1}}, Options: options.Index().SetUnique(true)}},
		{st.files, mongo.IndexModel{Keys: bson.D{{Key: "filename", Value: 1}, {Key: "uploadDate", Value: 1}}}},
		{st.files, mongo.IndexModel{Keys: bson.D{{Key: "metadata.expires", Value: 1}}}},
		{st.uploads, mongo.IndexModel{Keys: bson.D{{Key: "until", Value: 1}}}},
	} {
		if _, err := ix.c.Indexes().CreateOne(ctx, ix.m); err != nil {
			st.o.Log.Debug("GridFS index", "err", err)
			return err
		}
	}
	return nil
}

// expire updates the gauges for this instance's files whose link expired
// at now, removes those whose grace passed, and returns the time until the
// next of either.
func (st *GridFS) expire(now time.Time) time.Duration {
	st.mu.Lock()
	changed := false
	for len(st.live) > 0 && !now.Before(st.live[0].expires) {
		st.stored -= st.live[0].size
		st.live = st.live[1:]
		changed = true
	}
	if changed {
		st.o.Metrics.files.Set(float64(len(st.live)))
		st.o.Metrics.bytes.Set(float64(st.stored))
	}
	var gone []string
	for len(st.dying) > 0 && !now.Before(st.dying[0].expires.Add(st.g.Grace)) {
		gone = append(gone, st.dying[0].id)
		st.dying = st.dying[1:]
	}
	wait := time.Hour
	if len(st.live) > 0 {
		wait = min(wait, st.live[0].expires.Sub(now))
	}
	if len(st.dying) > 0 {
		wait = min(wait, st.dying[0].expires.Add(st.g.Grace).Sub(now))
	}
	st.mu.Unlock()
	for i, id := range gone {
		if err := st.remove(id); err != nil {
			// Back in the queue's head: tried again in a second (the
			// sweep of any instance also finds it).
			st.mu.Lock()
			back := make([]gridFile, 0, len(gone)-i+len(st.dying))
			for _, id := range gone[i:] {
				back = append(back, gridFile{id: id, expires: now.Add(time.Second - st.g.Grace)})
			}
			st.dying = append(back, st.dying...)
			st.mu.Unlock()
			return time.Second
		}
	}
	return wait
}

// remove deletes an expired file: its chunks first, then its document, so
// that a failure in between leaves the document for the next try.
func (st *GridFS) remove(id string) error {
	ctx, cancel := st.op(st.ctx)
	defer cancel()
	if _, err := st.chunks.DeleteMany(ctx, bson.D{{Key: "files_id", Value: id}}); err != nil {
		st.o.Log.Warn("remove an expired file's chunks", "err", err)
		return err
	}
	res, err := st.files.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}})
	if err != nil {
		st.o.Log.Warn("remove an expired file", "err", err)
		return err
	}
	if res.DeletedCount == 1 {
		st.o.Metrics.expiries.Inc()
	}
	return nil
}

// sweep removes the expired files of every instance (those of instances
// that are gone: a live one removes its own on time) and the reservations
// whose lease passed.
func (st *GridFS) sweep(now time.Time) {
	ctx, cancel := st.op(st.ctx)
	ids, err := findIDs(ctx, st.files, bson.D{{Key: "metadata.expires", Value: bson.D{{Key: "$lte", Value: now.Add(-st.g.Grace)}}}})
	cancel()
	if err != nil {
		st.o.Log.Debug("sweep files", "err", err)
		return
	}
	for _, id := range ids {
		if st.remove(id) != nil {
			return
		}
	}
	ctx, cancel = st.op(st.ctx)
	defer cancel()
	ids, err = findIDs(ctx, st.uploads, bson.D{{Key: "until", Value: bson.D{{Key: "$lte", Value: now}}}})
	if err != nil {
		st.o.Log.Debug("sweep uploads", "err", err)
		return
	}
	for _, id := range ids {
		// An upload that completed but could not remove its reservation
		// has a document: its chunks are the file's and stay.
		err := st.files.FindOne(ctx, bson.D{{Key: "_id", Value: id}}, options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})).Err()
		if errors.Is(err, mongo.ErrNoDocuments) {
			_, err = st.chunks.DeleteMany(ctx, bson.D{{Key: "files_id", Value: id}})
		}
		if err == nil {
			_, err = st.uploads.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}})
		}
		if err != nil {
			st.o.Log.Debug("sweep an abandoned upload", "err", err)
			return
		}
		st.o.Log.Info("removed an upload abandoned by its instance", "file", id)
	}
}

// findIDs returns up to sweepBatch _ids of c matching filter.
func findIDs(ctx context.Context, c *mongo.Collection, filter bson.D) ([]string, error) {
	cur, err := c.Find(ctx, filter, options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}).SetLimit(sweepBatch))
	if err != nil {
		return nil, err
	}
	var docs []struct {
		ID string `bson:"_id"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return nil, err
	}
	ids := make([]string, len(docs))
	for i, d := range docs {
		ids[i] = d.ID
	}
	return ids, nil
}
