package mongodb

// fakeMongo: just enough of a MongoDB replica set behind fakeDeployment for
// airlay's queries, writes and change stream. The oplog is a list of change
// events; a change stream cursor is a position in it; a getMore blocks until
// changes come or maxTimeMS passes. The pipeline is applied as MongoDB
// would ($match with equality, $in, $or and dotted paths; the $addFields
// stage that drops fullDocument), so tests see what the server would send.
// Failures are scripted per command; every command is recorded.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo/options"
)

type fakeMongo struct {
	t  testing.TB
	db string

	mu       sync.Mutex
	wake     chan struct{} // closed and replaced when something a waiter may want changes
	oplog    []bson.Raw
	oldest   int // changes before this position are gone from the oplog (history lost)
	cursors  map[int64]*fakeCursor
	cursorID int64
	cmds     []fakeCmd
	fails    []fakeFail
	colls    map[string][]bson.Raw
	down     bool          // every command fails as a network error
	hang     bool          // every command waits until its caller gives up
	gate     chan struct{} // when set, find waits for it to close
	batch    int           // most changes per batch

	indexes map[string][]bson.Raw // by collection: index specs {key, name, expireAfterSeconds}
}

type fakeCursor struct {
	pos      int
	lookup   bool
	pipeline bson.Raw
}

type fakeCmd struct {
	Name string
	Doc  bson.Raw
}

// fakeFail answers the next command named cmd with reply (a server error)
// or err (a network error). With apply, the command runs first (its write
// is applied, with its change event) and reply's fields are added to its
// answer: a writeConcernError after the write, as a real server gives it.
type fakeFail struct {
	cmd   string
	reply bson.D
	err   error
	apply bool
}

// wcError is a fakeFail that applies cmd and then answers with a write
// concern error (64 WriteConcernFailed, as after wtimeout).
func wcError(cmd string) fakeFail {
	return fakeFail{cmd: cmd, apply: true, reply: bson.D{{Key: "writeConcernError", Value: bson.D{
		{Key: "code", Value: int32(64)}, {Key: "codeName", Value: "WriteConcernFailed"}, {Key: "errmsg", Value: "waiting for replication timed out"},
		{Key: "errInfo", Value: bson.D{{Key: "wtimeout", Value: true}}}}}}}
}

func newFakeMongo(t testing.TB) *fakeMongo {
	return &fakeMongo{t: t, db: "airlay", wake: make(chan struct{}), cursors: map[int64]*fakeCursor{}, colls: map[string][]bson.Raw{}, batch: 100}
}

// clientOptions returns client options that reach f.
func (f *fakeMongo) clientOptions() *options.ClientOptions {
	co := options.Client()
	co.Deployment = newFakeDeployment(f.handle)
	return co
}

func (f *fakeMongo) broadcast() {
	close(f.wake)
	f.wake = make(chan struct{})
}

// fail scripts failures.
func (f *fakeMongo) fail(fs ...fakeFail) {
	f.mu.Lock()
	f.fails = append(f.fails, fs...)
	f.broadcast()
	f.mu.Unlock()
}

func (f *fakeMongo) setHang(hang bool) {
	f.mu.Lock()
	f.hang = hang
	f.broadcast()
	f.mu.Unlock()
}

func (f *fakeMongo) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.broadcast()
	f.mu.Unlock()
}

// serverError is a command error reply.
func serverError(code int32, name string, labels ...string) bson.D {
	d := bson.D{{Key: "ok", Value: 0.0}, {Key: "code", Value: code}, {Key: "codeName", Value: name}, {Key: "errmsg", Value: "fake: " + name}}
	if len(labels) > 0 {
		d = append(d, bson.E{Key: "errorLabels", Value: labels})
	}
	return d
}

// commands returns the recorded commands named name (all with "").
func (f *fakeMongo) commands(name string) []fakeCmd {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeCmd
	for _, c := range f.cmds {
		if name == "" || c.Name == name {
			out = append(out, c)
		}
	}
	return out
}

// insertDocs puts documents into a collection directly (not a command: no
// change event).
func (f *fakeMongo) insertDocs(coll string, docs ...bson.D) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range docs {
		f.colls[coll] = append(f.colls[coll], mustRaw(d))
	}
}

// removeDocs removes documents matching filter.
func (f *fakeMongo) removeDocs(coll string, filter bson.D) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var keep []bson.Raw
	for _, d := range f.colls[coll] {
		if !matches(d, mustRaw(filter)) {
			keep = append(keep, d)
		}
	}
	f.colls[coll] = keep
}

func (f *fakeMongo) docs(coll string) []bson.Raw {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]bson.Raw(nil), f.colls[coll]...)
}

// token is the resume token of oplog position pos (after pos changes).
func fakeToken(pos int) bson.D { return bson.D{{Key: "_data", Value: fmt.Sprintf("82%014X", pos)}} }

func tokenPos(tok bson.Raw) (int, bool) {
	s, ok := tok.Lookup("_data").StringValueOK()
	if !ok || len(s) != 16 || !strings.HasPrefix(s, "82") {
		return 0, false
	}
	n, err := strconv.ParseInt(s[2:], 16, 64)
	return int(n), err == nil
}

// addChanges appends change events to the oplog, giving each its token and
// times.
func (f *fakeMongo) addChanges(changes ...bson.D) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range changes {
		f.appendChangeLocked(c)
	}
	f.broadcast()
}

func (f *fakeMongo) appendChangeLocked(c bson.D) {
	pos := len(f.oplog) + 1
	now := time.Now()
	d := bson.D{{Key: "_id", Value: fakeToken(pos)}}
	d = append(d, c...)
	if !hasKey(c, "clusterTime") {
		d = append(d, bson.E{Key: "clusterTime", Value: primitive.Timestamp{T: uint32(now.Unix()), I: uint32(pos)}})
	}
	if !hasKey(c, "wallTime") {
		d = append(d, bson.E{Key: "wallTime", Value: primitive.NewDateTimeFromTime(now)})
	}
	f.oplog = append(f.oplog, mustRaw(d))
}

// loseHistory drops the oplog before its current end.
func (f *fakeMongo) loseHistory() {
	f.mu.Lock()
	f.oldest = len(f.oplog)
	f.mu.Unlock()
}

func hasKey(d bson.D, k string) bool {
	for _, e := range d {
		if e.Key == k {
			return true
		}
	}
	return false
}

func mustRaw(v any) bson.Raw {
	b, err := bson.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func ok(extra ...bson.E) bson.D { return append(bson.D(extra), bson.E{Key: "ok", Value: 1.0}) }

func (f *fakeMongo) handle(ctx context.Context, name string, cmd bson.Raw) (bson.D, error) {
	f.mu.Lock()
	f.cmds = append(f.cmds, fakeCmd{name, bytes.Clone(cmd)})
	if f.down {
		f.mu.Unlock()
		return nil, errors.New("fake: connection refused")
	}
	if f.hang {
		f.mu.Unlock()
		<-ctx.Done()
		return nil, ctx.Err()
	}
	for i, fl := range f.fails {
		if fl.cmd == name {
			f.fails = append(f.fails[:i], f.fails[i+1:]...)
			f.mu.Unlock()
			if !fl.apply {
				return fl.reply, fl.err
			}
			reply, err := f.dispatch(ctx, name, cmd)
			if err != nil {
				return nil, err
			}
			return append(reply, fl.reply...), nil
		}
	}
	f.mu.Unlock()
	return f.dispatch(ctx, name, cmd)
}

func (f *fakeMongo) dispatch(ctx context.Context, name string, cmd bson.Raw) (bson.D, error) {
	coll, _ := cmd.Lookup(name).StringValueOK()
	switch name {
	case "aggregate":
		return f.aggregate(cmd)
	case "getMore":
		return f.getMore(ctx, cmd)
	case "killCursors":
		f.mu.Lock()
		var killed bson.A
		vals, _ := cmd.Lookup("cursors").Array().Values()
		for _, v := range vals {
			delete(f.cursors, v.Int64())
			killed = append(killed, v.Int64())
		}
		f.mu.Unlock()
		return ok(bson.E{Key: "cursorsKilled", Value: killed}), nil
	case "find":
		return f.find(ctx, coll, cmd)
	case "insert":
		return f.insert(coll, cmd)
	case "update":
		return f.update(coll, cmd)
	case "delete":
		return f.delete(coll, cmd)
	case "createIndexes":
		return f.createIndexes(coll, cmd)
	case "listIndexes":
		return f.listIndexes(coll)
	case "collMod":
		return f.collMod(coll, cmd)
	case "endSessions", "ping":
		return ok(), nil
	}
	return serverError(59, "CommandNotFound"), nil
}

func (f *fakeMongo) aggregate(cmd bson.Raw) (bson.D, error) {
	cs, isCS := cmd.Lookup("pipeline", "0", "$changeStream").DocumentOK()
	if !isCS {
		return serverError(40324, "UnrecognizedPipelineStage"), nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	pos := len(f.oplog)
	for _, k := range []string{"resumeAfter", "startAfter"} {
		if tok, found := cs.Lookup(k).DocumentOK(); found {
			p, valid := tokenPos(tok)
			if !valid {
				return serverError(260, "InvalidResumeToken"), nil
			}
			if p < f.oldest {
				return serverError(codeChangeStreamHistoryLost, "ChangeStreamHistoryLost"), nil
			}
			pos = p
		}
	}
	mode, _ := cs.Lookup("fullDocument").StringValueOK()
	f.cursorID++
	f.cursors[f.cursorID] = &fakeCursor{pos: pos, lookup: mode == "updateLookup", pipeline: cmd.Lookup("pipeline").Array()}
	return ok(bson.E{Key: "cursor", Value: bson.D{
		{Key: "id", Value: f.cursorID}, {Key: "ns", Value: f.db + ".$cmd.aggregate"},
		{Key: "firstBatch", Value: bson.A{}}, {Key: "postBatchResumeToken", Value: fakeToken(pos)},
	}}), nil
}

func (f *fakeMongo) getMore(ctx context.Context, cmd bson.Raw) (bson.D, error) {
	id := cmd.Lookup("getMore").Int64()
	wait := time.Second
	if ms, found := cmd.Lookup("maxTimeMS").AsInt64OK(); found {
		wait = time.Duration(ms) * time.Millisecond
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		f.mu.Lock()
		if f.down {
			f.mu.Unlock()
			return nil, errors.New("fake: connection reset")
		}
		if f.hang {
			f.mu.Unlock()
			<-ctx.Done()
			return nil, ctx.Err()
		}
		for i, fl := range f.fails {
			if fl.cmd == "getMore" {
				f.fails = append(f.fails[:i], f.fails[i+1:]...)
				f.mu.Unlock()
				return fl.reply, fl.err
			}
		}
		cur := f.cursors[id]
		if cur == nil {
			f.mu.Unlock()
			return serverError(43, "CursorNotFound"), nil
		}
		var batch bson.A
		for cur.pos < len(f.oplog) && len(batch) < f.batch {
			if cur.pos < f.oldest {
				f.mu.Unlock()
				return serverError(codeChangeStreamHistoryLost, "ChangeStreamHistoryLost"), nil
			}
			if out := applyPipeline(f.oplog[cur.pos], cur); out != nil {
				batch = append(batch, out)
			}
			cur.pos++
		}
		if len(batch) > 0 {
			return f.nextBatch(id, cur, batch), nil
		}
		wake := f.wake
		f.mu.Unlock()
		select {
		case <-wake:
		case <-timer.C:
			f.mu.Lock()
			return f.nextBatch(id, cur, bson.A{}), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// nextBatch builds a getMore reply; f.mu is held and released.
func (f *fakeMongo) nextBatch(id int64, cur *fakeCursor, batch bson.A) bson.D {
	pos := cur.pos
	f.mu.Unlock()
	return ok(bson.E{Key: "cursor", Value: bson.D{
		{Key: "id", Value: id}, {Key: "ns", Value: f.db + ".$cmd.aggregate"},
		{Key: "nextBatch", Value: batch}, {Key: "postBatchResumeToken", Value: fakeToken(pos)},
	}})
}

// applyPipeline returns what the server sends for change c, nil when the
// pipeline filters it out: fullDocument of updates only with updateLookup,
// then the $match and $addFields stages.
func applyPipeline(c bson.Raw, cur *fakeCursor) bson.Raw {
	var d bson.D
	if err := bson.Unmarshal(c, &d); err != nil {
		panic(err)
	}
	if op, _ := c.Lookup("operationType").StringValueOK(); op == "update" && !cur.lookup {
		d = without(d, "fullDocument")
	}
	stages, _ := cur.pipeline.Values()
	for _, st := range stages[1:] {
		stage := st.Document()
		raw := mustRaw(d)
		if m, found := stage.Lookup("$match").DocumentOK(); found {
			if !matches(raw, m) {
				return nil
			}
			continue
		}
		if af, found := stage.Lookup("$addFields", "fullDocument", "$cond").DocumentOK(); found {
			keep, _ := af.Lookup("if", "$in", "1").Array().Values()
			coll, _ := raw.Lookup("ns", "coll").StringValueOK()
			kept := false
			for _, k := range keep {
				kept = kept || k.StringValue() == coll
			}
			if !kept {
				d = without(d, "fullDocument")
			}
			continue
		}
		if _, found := stage.Lookup("$changeStreamSplitLargeEvent").DocumentOK(); found {
			continue // no event of the fake is over 16 MB
		}
		panic(fmt.Sprintf("fake: unsupported stage %v", stage))
	}
	return mustRaw(d)
}

func without(d bson.D, key string) bson.D {
	out := d[:0:0]
	for _, e := range d {
		if e.Key != key {
			out = append(out, e)
		}
	}
	return out
}

func (f *fakeMongo) find(ctx context.Context, coll string, cmd bson.Raw) (bson.D, error) {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	filter, _ := cmd.Lookup("filter").DocumentOK()
	f.mu.Lock()
	defer f.mu.Unlock()
	batch := bson.A{}
	for _, d := range f.colls[coll] {
		if matches(d, filter) {
			batch = append(batch, d)
		}
	}
	return ok(bson.E{Key: "cursor", Value: bson.D{{Key: "id", Value: int64(0)}, {Key: "ns", Value: f.db + "." + coll}, {Key: "firstBatch", Value: batch}}}), nil
}

func (f *fakeMongo) insert(coll string, cmd bson.Raw) (bson.D, error) {
	docs, _ := cmd.Lookup("documents").Array().Values()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, v := range docs {
		d := v.Document()
		for _, old := range f.colls[coll] {
			if old.Lookup("_id").Equal(d.Lookup("_id")) {
				return ok(bson.E{Key: "n", Value: int32(i)}, bson.E{Key: "writeErrors", Value: bson.A{bson.D{{Key: "index", Value: int32(i)}, {Key: "code", Value: int32(11000)}, {Key: "errmsg", Value: "E11000 duplicate key"}}}}), nil
			}
		}
		f.colls[coll] = append(f.colls[coll], bytes.Clone(d))
		var full bson.D
		_ = bson.Unmarshal(d, &full)
		f.appendChangeLocked(bson.D{
			{Key: "operationType", Value: "insert"},
			{Key: "ns", Value: bson.D{{Key: "db", Value: f.db}, {Key: "coll", Value: coll}}},
			{Key: "documentKey", Value: bson.D{{Key: "_id", Value: d.Lookup("_id")}}},
			{Key: "fullDocument", Value: full},
		})
	}
	f.broadcast()
	return ok(bson.E{Key: "n", Value: int32(len(docs))}), nil
}

// createIndexes stores index specs as a server does: an index with the
// same key and name and the same options is a no-op; the same key with
// other options is 85 IndexOptionsConflict.
func (f *fakeMongo) createIndexes(coll string, cmd bson.Raw) (bson.D, error) {
	specs, _ := cmd.Lookup("indexes").Array().Values()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.indexes == nil {
		f.indexes = map[string][]bson.Raw{}
	}
	for _, v := range specs {
		spec := v.Document()
		dup := false
		for _, old := range f.indexes[coll] {
			if bytes.Equal(old.Lookup("key").Value, spec.Lookup("key").Value) {
				if !old.Lookup("expireAfterSeconds").Equal(spec.Lookup("expireAfterSeconds")) || !old.Lookup("name").Equal(spec.Lookup("name")) {
					return serverError(85, "IndexOptionsConflict"), nil
				}
				dup = true
			}
		}
		if !dup {
			f.indexes[coll] = append(f.indexes[coll], bytes.Clone(spec))
		}
	}
	return ok(), nil
}

func (f *fakeMongo) listIndexes(coll string) (bson.D, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, exists := f.colls[coll]; !exists && len(f.indexes[coll]) == 0 {
		return serverError(26, "NamespaceNotFound"), nil
	}
	batch := bson.A{bson.D{{Key: "v", Value: int32(2)}, {Key: "key", Value: bson.D{{Key: "_id", Value: int32(1)}}}, {Key: "name", Value: "_id_"}}}
	for _, spec := range f.indexes[coll] {
		batch = append(batch, spec)
	}
	return ok(bson.E{Key: "cursor", Value: bson.D{{Key: "id", Value: int64(0)}, {Key: "ns", Value: f.db + "." + coll}, {Key: "firstBatch", Value: batch}}}), nil
}

// collMod supports index: {keyPattern, expireAfterSeconds}.
func (f *fakeMongo) collMod(coll string, cmd bson.Raw) (bson.D, error) {
	key := cmd.Lookup("index", "keyPattern")
	ttl, isNum := cmd.Lookup("index", "expireAfterSeconds").AsInt64OK()
	if !isNum {
		return serverError(2, "BadValue"), nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, spec := range f.indexes[coll] {
		if bytes.Equal(spec.Lookup("key").Value, key.Value) {
			var d bson.D
			_ = bson.Unmarshal(spec, &d)
			var out bson.D
			for _, e := range d {
				if e.Key != "expireAfterSeconds" {
					out = append(out, e)
				}
			}
			f.indexes[coll][i] = mustRaw(append(out, bson.E{Key: "expireAfterSeconds", Value: ttl}))
			return ok(bson.E{Key: "expireAfterSeconds_new", Value: ttl}), nil
		}
	}
	return serverError(27, "IndexNotFound"), nil
}

// index returns the spec of the index of coll on key, nil when none.
func (f *fakeMongo) index(coll, key string) bson.Raw {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, spec := range f.indexes[coll] {
		if elems, _ := spec.Lookup("key").Document().Elements(); len(elems) == 1 && elems[0].Key() == key {
			return spec
		}
	}
	return nil
}

// dropDatabase forgets every collection and index, and ends every change
// stream with an invalidate, as a real server does for a database-level
// stream (the drop events before it are left out: airlay's pipeline does
// not select them).
func (f *fakeMongo) dropDatabase() {
	f.mu.Lock()
	f.colls = map[string][]bson.Raw{}
	f.indexes = nil
	f.mu.Unlock()
	f.addChanges(bson.D{{Key: "operationType", Value: "invalidate"}})
}

// delete removes the documents matching each statement's q (every one:
// limit is not looked at), each with its change event.
func (f *fakeMongo) delete(coll string, cmd bson.Raw) (bson.D, error) {
	dels, _ := cmd.Lookup("deletes").Array().Values()
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, d := range dels {
		q := d.Document().Lookup("q").Document()
		var kept []bson.Raw
		for _, doc := range f.colls[coll] {
			if !matches(doc, q) {
				kept = append(kept, doc)
				continue
			}
			n++
			f.appendChangeLocked(bson.D{
				{Key: "operationType", Value: "delete"},
				{Key: "ns", Value: bson.D{{Key: "db", Value: f.db}, {Key: "coll", Value: coll}}},
				{Key: "documentKey", Value: bson.D{{Key: "_id", Value: doc.Lookup("_id")}}},
			})
		}
		f.colls[coll] = kept
	}
	f.broadcast()
	return ok(bson.E{Key: "n", Value: int32(n)}), nil
}

// update supports what the Source sends: an upsert of {_id} with $set.
func (f *fakeMongo) update(coll string, cmd bson.Raw) (bson.D, error) {
	ups, _ := cmd.Lookup("updates").Array().Values()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, u := range ups {
		q := u.Document().Lookup("q").Document()
		set := u.Document().Lookup("u", "$set").Document()
		var doc bson.D
		doc = append(doc, bson.E{Key: "_id", Value: q.Lookup("_id")})
		elems, _ := set.Elements()
		for _, e := range elems {
			doc = append(doc, bson.E{Key: e.Key(), Value: e.Value()})
		}
		var kept []bson.Raw
		for _, old := range f.colls[coll] {
			if !old.Lookup("_id").Equal(q.Lookup("_id")) {
				kept = append(kept, old)
			}
		}
		f.colls[coll] = append(kept, mustRaw(doc))
	}
	return ok(bson.E{Key: "n", Value: int32(len(ups))}, bson.E{Key: "nModified", Value: int32(len(ups))}), nil
}

// matches evaluates a query filter: field equality (an array field matches
// when it holds the value), $in, $or, dotted paths through documents and
// arrays.
func matches(doc, filter bson.Raw) bool {
	elems, _ := filter.Elements()
	for _, e := range elems {
		if e.Key() == "$or" {
			alts, _ := e.Value().Array().Values()
			any := false
			for _, a := range alts {
				any = any || matches(doc, a.Document())
			}
			if !any {
				return false
			}
			continue
		}
		vals := pathValues(doc, strings.Split(e.Key(), "."))
		want := e.Value()
		if cond, isDoc := want.DocumentOK(); isDoc {
			if in, found := cond.Lookup("$in").ArrayOK(); found {
				opts, _ := in.Values()
				hit := false
				for _, o := range opts {
					hit = hit || anyEqual(vals, o)
				}
				if !hit {
					return false
				}
				continue
			}
		}
		if !anyEqual(vals, want) {
			return false
		}
	}
	return true
}

// pathValues returns every value at path, descending into arrays.
func pathValues(v bson.Raw, path []string) []bson.RawValue {
	cur := []bson.RawValue{{Type: bson.TypeEmbeddedDocument, Value: v}}
	for _, p := range path {
		var next []bson.RawValue
		for _, c := range cur {
			switch c.Type {
			case bson.TypeEmbeddedDocument:
				if x, err := c.Document().LookupErr(p); err == nil {
					next = append(next, x)
				}
			case bson.TypeArray:
				elems, _ := c.Array().Values()
				for _, el := range elems {
					if d, isDoc := el.DocumentOK(); isDoc {
						if x, err := d.LookupErr(p); err == nil {
							next = append(next, x)
						}
					}
				}
			}
		}
		cur = next
	}
	var out []bson.RawValue
	for _, c := range cur {
		out = append(out, c)
		if arr, isArr := c.ArrayOK(); isArr {
			elems, _ := arr.Values()
			out = append(out, elems...)
		}
	}
	return out
}

func anyEqual(vals []bson.RawValue, want bson.RawValue) bool {
	for _, v := range vals {
		if valueEqual(v, want) {
			return true
		}
	}
	return false
}

func valueEqual(a, b bson.RawValue) bool {
	if fa, okA := fakeNumber(a); okA {
		fb, okB := fakeNumber(b)
		return okB && fa == fb
	}
	return a.Type == b.Type && bytes.Equal(a.Value, b.Value)
}

func fakeNumber(v bson.RawValue) (float64, bool) {
	switch v.Type {
	case bson.TypeInt32:
		return float64(v.Int32()), true
	case bson.TypeInt64:
		return float64(v.Int64()), true
	case bson.TypeDouble:
		return v.Double(), !math.IsNaN(v.Double())
	}
	return 0, false
}
