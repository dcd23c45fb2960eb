package mongodb

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/bson"
)

// appendJSON appends v as JSON for an event's data: ObjectIds as hex
// strings, dates as RFC 3339 strings (UTC), binary as base64, decimals as
// strings; the output is always valid UTF-8 JSON.
func appendJSON(b []byte, v bson.RawValue) []byte {
	switch v.Type {
	case bson.TypeDouble:
		f := v.Double()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return append(b, "null"...)
		}
		return strconv.AppendFloat(b, f, 'g', -1, 64)
	case bson.TypeString:
		return appendJSONString(b, v.StringValue())
	case bson.TypeEmbeddedDocument:
		elems, _ := v.Document().Elements()
		b = append(b, '{')
		for i, e := range elems {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, e.Key())
			b = append(b, ':')
			b = appendJSON(b, e.Value())
		}
		return append(b, '}')
	case bson.TypeArray:
		vals, _ := v.Array().Values()
		b = append(b, '[')
		for i, e := range vals {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSON(b, e)
		}
		return append(b, ']')
	case bson.TypeBinary:
		_, data := v.Binary()
		return appendJSONString(b, base64.StdEncoding.EncodeToString(data))
	case bson.TypeObjectID:
		return appendJSONString(b, v.ObjectID().Hex())
	case bson.TypeBoolean:
		return strconv.AppendBool(b, v.Boolean())
	case bson.TypeDateTime:
		return appendJSONString(b, time.UnixMilli(v.DateTime()).UTC().Format(time.RFC3339Nano))
	case bson.TypeNull, bson.TypeUndefined:
		return append(b, "null"...)
	case bson.TypeInt32:
		return strconv.AppendInt(b, int64(v.Int32()), 10)
	case bson.TypeInt64:
		return strconv.AppendInt(b, v.Int64(), 10)
	case bson.TypeDecimal128:
		return appendJSONString(b, v.Decimal128().String())
	case bson.TypeTimestamp:
		t, i := v.Timestamp()
		b = append(b, `{"t":`...)
		b = strconv.AppendUint(b, uint64(t), 10)
		b = append(b, `,"i":`...)
		b = strconv.AppendUint(b, uint64(i), 10)
		return append(b, '}')
	}
	return appendJSONString(b, v.String())
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s)
	return append(b, q...)
}
