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
	at       time.Time // wallTime, or clusterTime to the second
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

// updatedValue finds field among an update's updatedFields: as a key of its
// own ("a.b" when the update set a.b) or as a path.
func updatedValue(updated bson.Raw, field string) (bson.RawValue, bool) {
	if updated == nil {
		return bson.RawValue{}, false
	}
	if v, err := updated.LookupErr(field); err == nil {
		return v, true
	}
	return lookupPath(updated, field)
}

// event maps c to an event of m; ok is false when c makes none, and why
// says so (for debug logs).
func (m *Mapping) event(c *change, finished any) (ev events.Event, ok bool, why string) {
	if !m.has(c.op) {
		return ev, false, "operation not selected"
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
			return ev, false, "not finished"
		}
	}
	ev.Type = m.Type
	if m.IDField == "_id" && !m.Type.PerUser() {
		id, ok := objectIDHex(c.key)
		if !ok {
			return ev, false, "_id is not an ObjectId"
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
			return ev, false, m.IDField + " is missing or not an ObjectId"
		}
		ev.ID = id
	}
	if m.Type.PerUser() {
		v, found := lookupPath(c.doc, m.UserField)
		user, ok := objectIDHex(v)
		if !found || !ok {
			return ev, false, m.UserField + " is missing or not an ObjectId"
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

// pipeline builds the change stream pipeline: one $match for every source
// and the events collection, then a stage that keeps fullDocument only for
// the collections whose mappings read it. lookup reports whether some
// mapping needs the current document of updates (fullDocument:
// updateLookup).
func pipeline(cfg *Config) (p bson.A, lookup bool) {
	var or bson.A
	keep := []string{cfg.Events}
	for i := range cfg.Sources {
		m := &cfg.Sources[i]
		if m.needsDocument() || m.needsLookup() {
			if !slices.Contains(keep, m.Collection) {
				keep = append(keep, m.Collection)
			}
		}
		lookup = lookup || m.needsLookup()
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
			or = append(or, bson.D{{Key: "ns.coll", Value: m.Collection}, {Key: "operationType", Value: "update"}, {Key: "updateDescription.updatedFields." + m.FinishedField, Value: val}})
		}
	}
	or = append(or,
		bson.D{{Key: "ns.coll", Value: cfg.Events}, {Key: "operationType", Value: "insert"}},
		bson.D{{Key: "operationType", Value: "invalidate"}},
	)
	p = bson.A{
		bson.D{{Key: "$match", Value: bson.D{{Key: "$or", Value: or}}}},
		bson.D{{Key: "$addFields", Value: bson.D{{Key: "fullDocument", Value: bson.D{{Key: "$cond", Value: bson.D{
			{Key: "if", Value: bson.D{{Key: "$in", Value: bson.A{"$ns.coll", stringsA(keep)}}}},
			{Key: "then", Value: "$fullDocument"},
			{Key: "else", Value: "$$REMOVE"},
		}}}}}}},
	}
	return p, lookup
}

func stringsA(s []string) bson.A {
	a := make(bson.A, len(s))
	for i, v := range s {
		a[i] = v
	}
	return a
}
