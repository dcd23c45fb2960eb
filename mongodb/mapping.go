package mongodb

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/airlay/airlay/events"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
)

// change is the part of a change event the mappings read.
type change struct {
	op, coll string
	at       time.Time    // wallTime, or clusterTime to the second
	st       events.Stamp // clusterTime: the change's place in the order of every instance
	key      bson.RawValue
	doc      bson.Raw // fullDocument; nil when absent
	updated  bson.Raw // updateDescription.updatedFields
	removed  []string
	trunc    []string
}

func parseChange(raw bson.Raw) (*change, error) {
	c := &change{}
	var ok bool
	if c.op, ok = raw.Lookup("operationType").StringValueOK(); !ok {
		return nil, fmt.Errorf("change without operationType")
	}
	c.coll, _ = raw.Lookup("ns", "coll").StringValueOK()
	if t, i, ok := raw.Lookup("clusterTime").TimestampOK(); ok {
		c.st = events.Stamp{T: t, I: i}
	}
	if wt, ok := raw.Lookup("wallTime").DateTimeOK(); ok {
		c.at = time.UnixMilli(wt)
	} else if t, _, ok := raw.Lookup("clusterTime").TimestampOK(); ok {
		c.at = time.Unix(int64(t), 0)
	}
	c.key = raw.Lookup("documentKey", "_id")
	if d, ok := raw.Lookup("fullDocument").DocumentOK(); ok {
		c.doc = d
	}
	if ud, ok := raw.Lookup("updateDescription").DocumentOK(); ok {
		c.updated, _ = ud.Lookup("updatedFields").DocumentOK()
		if arr, ok := ud.Lookup("removedFields").ArrayOK(); ok {
			vals, _ := arr.Values()
			for _, v := range vals {
				if s, ok := v.StringValueOK(); ok {
					c.removed = append(c.removed, s)
				}
			}
		}
		if arr, ok := ud.Lookup("truncatedArrays").ArrayOK(); ok {
			vals, _ := arr.Values()
			for _, v := range vals {
				if d, ok := v.DocumentOK(); ok {
					if s, ok := d.Lookup("field").StringValueOK(); ok {
						c.trunc = append(c.trunc, s)
					}
				}
			}
		}
	}
	return c, nil
}

// lookupPath finds a dotted path in doc.
func lookupPath(doc bson.Raw, path string) (bson.RawValue, bool) {
	if doc == nil {
		return bson.RawValue{}, false
	}
	v, err := doc.LookupErr(strings.Split(path, ".")...)
	return v, err == nil
}

// updatedValue finds field among an update's updatedFields in every shape
// MongoDB reports it: for field a.b.c, the key "a.b.c" (the update set that
// path and a.b existed), "a.b" holding {c: ...} or "a" holding {b: {c: ...}}
// (the update set or created a subdocument).
func updatedValue(updated bson.Raw, field string) (bson.RawValue, bool) {
	if updated == nil {
		return bson.RawValue{}, false
	}
	parts := strings.Split(field, ".")
	for i := len(parts); i >= 1; i-- {
		v, err := updated.LookupErr(strings.Join(parts[:i], "."))
		if err != nil {
			continue
		}
		if i == len(parts) {
			return v, true
		}
		if d, ok := v.DocumentOK(); ok {
			if v, err := d.LookupErr(parts[i:]...); err == nil {
				return v, true
			}
		}
	}
	return bson.RawValue{}, false
}

// Reasons a change makes no event (the label of
// airlay_mongodb_changes_without_event_total).
const (
	whyNotSelected  = "not_selected"  // the mapping does not select this operation
	whyNotFinished  = "not_finished"  // the finished field is not set to its value
	whyBadID        = "bad_id"        // the id field is missing or not an ObjectId
	whyBadUser      = "bad_user"      // the user field is missing or not an ObjectId
	whyDocumentGone = "document_gone" // the document was deleted before its lookup
	whyNotPublish   = "not_a_publish" // a document of the events collection that breaks the rules
	whyUndecodable  = "undecodable"   // a change event without the fields of one
	whyTooLarge     = "too_large"     // a change event over 16 MB that could not be read, skipped
)

var noEventReasons = []string{whyNotSelected, whyNotFinished, whyBadID, whyBadUser, whyDocumentGone, whyNotPublish, whyUndecodable, whyTooLarge}

// selects reports whether c passes m's operations and finished condition
// (the parts that do not read the current document of an update).
func (m *Mapping) selects(c *change, finished any) (ok bool, why string) {
	if !m.has(c.op) {
		return false, whyNotSelected
	}
	if m.FinishedField != "" {
		var v bson.RawValue
		var found bool
		if c.op == OpUpdate {
			v, found = updatedValue(c.updated, m.FinishedField)
		} else {
			v, found = lookupPath(c.doc, m.FinishedField)
		}
		if !found || !sameValue(v, finished) {
			return false, whyNotFinished
		}
	}
	return true, ""
}

// event maps c to an event of m; ok is false when c makes none, and why
// says why (one of the reasons above). For an update, c.doc is the
// document looked up when m needs it.
func (m *Mapping) event(c *change, finished any) (ev events.Event, ok bool, why string) {
	if ok, why := m.selects(c, finished); !ok {
		return ev, false, why
	}
	return m.build(c)
}

// build makes the event of a change that m selects.
func (m *Mapping) build(c *change) (ev events.Event, ok bool, why string) {
	ev.Type = m.Type
	if m.IDField == "_id" && !m.Type.PerUser() {
		id, ok := objectIDHex(c.key)
		if !ok {
			return ev, false, whyBadID
		}
		ev.ID = id
	} else if m.Type.PerUser() {
		if m.IDField == "_id" {
			ev.ID = idText(c.key)
		} else if v, found := lookupPath(c.doc, m.IDField); found {
			ev.ID = idText(v)
		}
	} else {
		v, found := lookupPath(c.doc, m.IDField)
		id, ok := objectIDHex(v)
		if !found || !ok {
			return ev, false, whyBadID
		}
		ev.ID = id
	}
	if m.Type.PerUser() {
		v, found := lookupPath(c.doc, m.UserField)
		user, ok := objectIDHex(v)
		if !found || !ok {
			return ev, false, whyBadUser
		}
		ev.User = user
	}
	ev.Data = m.data(c)
	return ev, true, ""
}

// data builds the data array of m for c; nil stands for [].
func (m *Mapping) data(c *change) json.RawMessage {
	switch m.Data {
	case DataChanged:
		if c.op != OpUpdate {
			return nil
		}
		var names []string
		add := func(path string) {
			top, _, _ := strings.Cut(path, ".")
			if !slices.Contains(names, top) {
				names = append(names, top)
			}
		}
		if elems, err := c.updated.Elements(); err == nil {
			for _, e := range elems {
				add(e.Key())
			}
		}
		for _, f := range c.removed {
			add(f)
		}
		for _, f := range c.trunc {
			add(f)
		}
		b, _ := json.Marshal(names)
		if names == nil {
			return nil
		}
		return b
	case DataDocument:
		if c.doc == nil {
			return nil
		}
		b := append(make([]byte, 0, len(c.doc)+16), '[')
		b = appendJSON(b, bson.RawValue{Type: bson.TypeEmbeddedDocument, Value: c.doc})
		return append(b, ']')
	case DataFields:
		if c.doc == nil {
			return nil
		}
		b := []byte(`[{`)
		n := 0
		for _, f := range m.DataFields {
			v, found := lookupPath(c.doc, f)
			if !found {
				continue
			}
			if n > 0 {
				b = append(b, ',')
			}
			n++
			b = appendJSONString(b, f)
			b = append(b, ':')
			b = appendJSON(b, v)
		}
		return append(b, `}]`...)
	}
	return nil
}

// objectIDHex returns an ObjectId, or a string of 24 hex digits, as lower
// case hex.
func objectIDHex(v bson.RawValue) (string, bool) {
	switch v.Type {
	case bson.TypeObjectID:
		return v.ObjectID().Hex(), true
	case bson.TypeString:
		return events.NormalizeID(v.StringValue())
	}
	return "", false
}

// idText is a notification's own id as text: an ObjectId in hex, a string
// as it is, anything else as JSON.
func idText(v bson.RawValue) string {
	switch v.Type {
	case bson.TypeObjectID:
		return v.ObjectID().Hex()
	case bson.TypeString:
		return v.StringValue()
	case 0:
		return ""
	}
	return string(appendJSON(nil, v))
}

// sameValue compares a document's value with a finished value: strings and
// booleans exactly, numbers by value whatever their BSON type.
func sameValue(v bson.RawValue, want any) bool {
	switch w := want.(type) {
	case string:
		s, ok := v.StringValueOK()
		return ok && s == w
	case bool:
		b, ok := v.BooleanOK()
		return ok && b == w
	case int64:
		f, ok := number(v)
		return ok && f == float64(w)
	case float64:
		f, ok := number(v)
		return ok && f == w
	}
	return false
}

func number(v bson.RawValue) (float64, bool) {
	switch v.Type {
	case bson.TypeInt32:
		return float64(v.Int32()), true
	case bson.TypeInt64:
		return float64(v.Int64()), true
	case bson.TypeDouble:
		f := v.Double()
		return f, !math.IsNaN(f)
	case bson.TypeDecimal128:
		f, err := strconvDecimal(v.Decimal128())
		return f, err == nil
	}
	return 0, false
}

func strconvDecimal(d primitive.Decimal128) (float64, error) {
	var f float64
	_, err := fmt.Sscan(d.String(), &f)
	return f, err
}

// match builds the $match of the change stream: the configured sources
// and the events collection, nothing else (not the resume-token collection:
// its writes never reach the client, see Source.maybeSave). Its conditions
// read what the oplog entry holds (fullDocument only of inserts and
// replaces), so that the server can apply the filter to the oplog before
// it builds an event.
//
// A finished field with a dot (job.status) may come back in updatedFields
// as the key "job.status" (the update set that path), which no $match path
// reaches, or as job: {status: ...} (the update set the subdocument): the
// first shape is matched with $expr over $objectToArray (MongoDB 3.4.4+); the
// server then cannot narrow that branch in the oplog beyond the collection
// and the operation, and Mapping.selects decides.
func match(cfg *Config) bson.D {
	var or bson.A
	for i := range cfg.Sources {
		m := &cfg.Sources[i]
		if m.FinishedField == "" {
			or = append(or, bson.D{{Key: "ns.coll", Value: m.Collection}, {Key: "operationType", Value: bson.D{{Key: "$in", Value: stringsA(m.Operations)}}}})
			continue
		}
		var whole []string
		for _, op := range m.Operations {
			if op == OpInsert || op == OpReplace {
				whole = append(whole, op)
			}
		}
		val := m.finishedValue()
		if len(whole) > 0 {
			or = append(or, bson.D{{Key: "ns.coll", Value: m.Collection}, {Key: "operationType", Value: bson.D{{Key: "$in", Value: stringsA(whole)}}}, {Key: "fullDocument." + m.FinishedField, Value: val}})
		}
		if m.has(OpUpdate) {
			cond := bson.D{{Key: "updateDescription.updatedFields." + m.FinishedField, Value: val}}
			if strings.Contains(m.FinishedField, ".") {
				cond = bson.D{{Key: "$or", Value: bson.A{cond, dottedKeyIs(m.FinishedField, val)}}}
			}
			or = append(or, append(bson.D{{Key: "ns.coll", Value: m.Collection}, {Key: "operationType", Value: "update"}}, cond...))
		}
	}
	or = append(or,
		bson.D{{Key: "ns.coll", Value: cfg.Events}, {Key: "operationType", Value: "insert"}},
		// Instances' messages: asks to all, and replies to this one only.
		bson.D{{Key: "ns.coll", Value: cfg.Messages}, {Key: "operationType", Value: "insert"}, {Key: "fullDocument.to", Value: bson.D{{Key: "$in", Value: bson.A{toAll, cfg.Instance}}}}},
		// Revocation: a deleted user, a changed or deleted dataset.
		bson.D{{Key: "ns.coll", Value: cfg.Users}, {Key: "operationType", Value: "delete"}},
		bson.D{{Key: "ns.coll", Value: cfg.Datasets}, {Key: "operationType", Value: bson.D{{Key: "$in", Value: bson.A{"update", "replace", "delete"}}}}},
		bson.D{{Key: "operationType", Value: "invalidate"}},
	)
	return bson.D{{Key: "$match", Value: bson.D{{Key: "$or", Value: or}}}}
}

// dottedKeyIs is a $match condition: updatedFields has the key field (a
// dotted path as one key) with value val (numbers by value).
func dottedKeyIs(field string, val any) bson.D {
	fields := bson.D{{Key: "$objectToArray", Value: bson.D{{Key: "$ifNull", Value: bson.A{"$updateDescription.updatedFields", bson.D{}}}}}}
	return bson.D{{Key: "$expr", Value: bson.D{{Key: "$in", Value: bson.A{
		bson.D{{Key: "$literal", Value: bson.D{{Key: "k", Value: field}, {Key: "v", Value: val}}}},
		fields,
	}}}}}
}

// pipeline builds the change stream pipeline: the $match, then a stage that
// keeps fullDocument (sent with inserts and replaces) only for the
// collections whose mappings read it, and, when split is set, the stage
// that splits an event over 16 MB into fragments. The stream never asks
// for fullDocument: updateLookup: an update whose mapping reads the
// document makes the Source look it up itself, once the update is known to
// make an event (Source.lookup).
func pipeline(cfg *Config, split bool) bson.A {
	keep := []string{cfg.Events, cfg.Messages}
	for i := range cfg.Sources {
		m := &cfg.Sources[i]
		if m.needsDocument() && !slices.Contains(keep, m.Collection) {
			keep = append(keep, m.Collection)
		}
	}
	p := bson.A{
		match(cfg),
		bson.D{{Key: "$addFields", Value: bson.D{{Key: "fullDocument", Value: bson.D{{Key: "$cond", Value: bson.D{
			{Key: "if", Value: bson.D{{Key: "$in", Value: bson.A{"$ns.coll", stringsA(keep)}}}},
			{Key: "then", Value: "$fullDocument"},
			{Key: "else", Value: "$$REMOVE"},
		}}}}}}},
	}
	if split {
		p = append(p, bson.D{{Key: "$changeStreamSplitLargeEvent", Value: bson.D{}}})
	}
	return p
}

func stringsA(s []string) bson.A {
	a := make(bson.A, len(s))
	for i, v := range s {
		a[i] = v
	}
	return a
}
