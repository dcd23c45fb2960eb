package events

// Fuzz the two parsers that read what strangers send: the /ws request and
// the POST /api/events body. Seeds come from PROTOCOL.md's examples; inputs
// that broke a property are kept in testdata/fuzz/ and run with every
// `go test`.

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"
)

var requestSeeds = []string{
	// the contract's attach request
	`{"auth": "<access_token>", "action": "attach", "event": {"type": "issueUpdate", "id": "610217e481f6fc54736209e0"}}`,
	`{"auth":"t","action":"detach","event":{"type":"issueUpdate","id":"610217e481f6fc54736209e0"}}`,
	`{"auth":"t","action":"attach","event":{"type":"notification"}}`,
	`{"auth":"t","action":"attach","event":{"type":"notification","id":"5DAD615EAE019570FB4647ED"}}`,
	`{"auth":"t","action":"attach","event":{"type":"datasetUpdate","id":"620217E481F6FC54736209E0"}}`,
	`{"auth":"t","action":"attach","event":{"type":"uploadFile","id":"620217e481f6fc54736209e0"}}`,
	`{"auth":"t","action":"attach","event":{"type":"downloadFile","id":"630217e481f6fc54736209e0"}}`,
	`{"auth":"\u0000\"\\","action":"attach","event":{"type":"issueUpdate","id":"610217e481f6fc54736209e0"}}`,
	`{"AUTH":"t","Action":"attach","EVENT":{"TYPE":"issueUpdate","Id":"610217e481f6fc54736209e0"}}`,
	`{"auth":"t","action":"attach","event":{"type":"issueUpdate","id":"610217e481f6fc54736209e0"},"event":null}`,
	`{"auth":"t","action":"attach","event":{"type":"issueUpdate","id":"610217e481f6fc54736209e0"}}}`,
	`{"auth":5,"action":"attach","event":{"type":"issueUpdate","id":"610217e481f6fc54736209e0"}}`,
	`{"auth":"t","action":"attach","event":{"type":"issueUpdate","id":"610217e481f6fc54736209eg"}}`,
	`{"auth":"t","action":"attach","event":{"type":"issueUpdate"}}`,
	`{"auth":"t","action":"subscribe","event":{"type":"issueUpdate","id":"610217e481f6fc54736209e0"}}`,
	`{"auth":"t","action":"attach","event":{"type":"issueDelete","id":"610217e481f6fc54736209e0"}}`,
	"{\"auth\":\"\xff\",\"action\":\"attach\",\"event\":{\"type\":\"issueUpdate\",\"id\":\"610217e481f6fc54736209e0\"}}",
	`{"auth":"t","action":"attach","event":null}`,
	`{}`, `[]`, `null`, `5`, `"x"`, ``, `{`, `[[[[[[[[[[`,
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		r, err := ParseRequest(frame)
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %v does not wrap ErrInvalidRequest", err)
			}
			if r != (Request{}) {
				t.Fatalf("returned %+v with error %v", r, err)
			}
			return
		}
		if !json.Valid(frame) {
			t.Fatalf("accepted a frame that is not JSON: %q", frame)
		}
		if r.Action != Attach && r.Action != Detach {
			t.Fatalf("action %d", r.Action)
		}
		if _, ok := ParseType(r.Key.Type.String()); !ok {
			t.Fatalf("type %d is not a known type", r.Key.Type)
		}
		if r.Key.Type.PerUser() {
			if r.Key.ID != "" {
				t.Fatalf("notification with key id %q, want \"\" (the connection's user)", r.Key.ID)
			}
		} else if !isLowerObjectID(r.Key.ID) {
			t.Fatalf("%v with id %q, want a lower-case ObjectId", r.Key.Type, r.Key.ID)
		}
		// What parsed once parses again, to the same request, from its
		// canonical form.
		action := map[Action]string{Attach: "attach", Detach: "detach"}[r.Action]
		ev := map[string]string{"type": r.Key.Type.String()}
		if r.Key.ID != "" {
			ev["id"] = r.Key.ID
		}
		again, err := json.Marshal(map[string]any{"auth": r.Token, "action": action, "event": ev})
		if err != nil {
			t.Fatal(err)
		}
		r2, err := ParseRequest(again)
		if err != nil || r2 != r {
			t.Fatalf("canonical form %s parses to %+v, %v; want %+v", again, r2, err, r)
		}
	})
}

var publishSeeds = []string{
	// the contract's two publish examples
	`{"type": "issueUpdate", "id": "610217e481f6fc54736209e0", "data": ["status"]}`,
	`{"type": "notification", "user": "5dad615eae019570fb4647ed", "id": "6a0000000000000000000001", "data": [{"text": "hi"}]}`,
	`[{"type": "issueUpdate", "id": "610217e481f6fc54736209e0", "data": ["status"]}, {"type": "notification", "user": "5dad615eae019570fb4647ed", "id": "6a0000000000000000000001", "data": [{"text": "hi"}]}]`,
	`{"type":"notification","user":"5DAD615EAE019570FB4647ED"}`,
	`{"type":"notification","user":"5dad615eae019570fb4647ed","id":"q\"b\\s\u0000\u001f\n\u00e9\ud83d\ude00\u2028\ud800"}`,
	`{"type":"datasetUpdate","id":"620217E481F6FC54736209E0","data":[ 1 , { "a" : [ true , null ] } ]}`,
	`{"type":"uploadFile","id":"620217e481f6fc54736209e0","data":[]}`,
	`{"type":"downloadFile","id":"630217e481f6fc54736209e0","data":[{"url":"/files/3q2x/report.xlsx"}]}`,
	`{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":null}`,
	`{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":{}}`,
	`{"type":"issueUpdate","id":"610217e481f6fc54736209e0","extra":1}`,
	`{"type":"issueUpdate","id":"610217e481f6fc54736209e0","user":"5dad615eae019570fb4647ed"}`,
	`{"type":"issueUpdate","id":"610217e481f6fc54736209e0"} {}`,
	`{"type":"issueUpdate","id":"610217e481f6fc54736209e0"}]`,
	"{\"type\":\"issueUpdate\",\"id\":\"610217e481f6fc54736209e0\",\"data\":[\"\xff\"]}",
	"{\"type\":\"notification\",\"user\":\"5dad615eae019570fb4647ed\",\"id\":\"\xff\"}",
	`[{"type":"issueUpdate","id":"610217e481f6fc54736209e0"},null]`,
	`[{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":[[[[[[[[[[]]]]]]]]]]}]`,
	`[]`, `[ ]`, `{}`, `null`, `5`, `"x"`, ``, ` `, `[`, `{`,
}

func FuzzParsePublish(f *testing.F) {
	for _, s := range publishSeeds {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, body []byte, maxByte uint8) {
		maxEvents := int(maxByte%16) + 1
		evs, err := ParsePublish(body, maxEvents)
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %v does not wrap ErrInvalidRequest", err)
			}
			if evs != nil {
				t.Fatalf("returned %d events with error %v", len(evs), err)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted a body that is not one JSON value: %q", body)
		}
		if len(evs) < 1 || len(evs) > maxEvents {
			t.Fatalf("%d events, max %d", len(evs), maxEvents)
		}
		for i := range evs {
			checkPublished(t, &evs[i])
		}
	})
}

// checkPublished checks one accepted event and that its frame is JSON (and
// UTF-8, as a text frame must be) whose type, id and data round-trip.
func checkPublished(t *testing.T, e *Event) {
	t.Helper()
	if _, ok := ParseType(e.Type.String()); !ok {
		t.Fatalf("type %d is not a known type", e.Type)
	}
	if e.Type.PerUser() {
		if !isLowerObjectID(e.User) {
			t.Fatalf("notification for user %q, want a lower-case ObjectId", e.User)
		}
		if !utf8.ValidString(e.ID) {
			t.Fatalf("notification id %q is not UTF-8", e.ID)
		}
	} else {
		if !isLowerObjectID(e.ID) {
			t.Fatalf("%v with id %q, want a lower-case ObjectId", e.Type, e.ID)
		}
		if e.User != "" {
			t.Fatalf("%v with user %q", e.Type, e.User)
		}
	}
	if e.Data != nil && (len(e.Data) == 0 || e.Data[0] != '[') {
		t.Fatalf("data %q is not an array", e.Data)
	}
	frame := e.AppendFrame(nil, "0123456789abcdef:1")
	if !utf8.Valid(frame) {
		t.Fatalf("frame %q is not UTF-8 (a text frame must be)", frame)
	}
	if !json.Valid(frame) {
		t.Fatalf("frame %q is not JSON", frame)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(frame, &got); err != nil {
		t.Fatalf("frame %q: %v", frame, err)
	}
	if len(got) != 4 {
		t.Fatalf("frame %s has %d keys, want type, id, data", frame, len(got))
	}
	var typ, id string
	if err := json.Unmarshal(got["type"], &typ); err != nil || typ != e.Type.String() {
		t.Fatalf("frame %s: type %q, %v; want %q", frame, typ, err, e.Type)
	}
	if err := json.Unmarshal(got["id"], &id); err != nil || id != e.ID {
		t.Fatalf("frame %s: id %q, %v; want %q", frame, id, err, e.ID)
	}
	want := []byte("[]")
	if e.Data != nil {
		want = e.Data
	}
	if !bytes.Equal(got["data"], want) {
		t.Fatalf("frame %s: data %s, want %s", frame, got["data"], want)
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(got["data"], &arr); err != nil {
		t.Fatalf("frame %s: data is not an array: %v", frame, err)
	}
}

func isLowerObjectID(s string) bool {
	if len(s) != 24 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// FuzzFastRequest checks that the fast request scanner, whenever it accepts
// a frame, reads exactly what encoding/json reads.
func FuzzFastRequest(f *testing.F) {
	f.Add([]byte(`{"auth":"a.b.c","action":"attach","event":{"type":"issueUpdate","id":"610217e481f6fc54736209e0"}}`))
	f.Add([]byte(` { "event" : { "id" : "x" , "type" : "notification" } , "action" : "detach" } `))
	f.Add([]byte(`{"auth":"a","auth":"b"}`))
	f.Add([]byte(`{"event":{"type":"issueUpdate","type":"x"}}`))
	f.Add([]byte(`{"other":1}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"auth":"x"}}`))
	f.Fuzz(func(t *testing.T, frame []byte) {
		fast, ok := parseFast(frame)
		if !ok {
			return
		}
		var w wireRequest
		if err := json.Unmarshal(frame, &w); err != nil {
			t.Fatalf("fast path accepted %q, encoding/json refused it: %v", frame, err)
		}
		if slow := w.fast(); fast != slow {
			t.Fatalf("%q: fast %+v, encoding/json %+v", frame, fast, w.fast())
		}
	})
}
