package events

// Tables for the wire shapes of PROTOCOL.md: the /ws request, the
// POST /api/events body, the server message and the response frames.

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// ObjectIds of the tests.
const (
	wireIssue   = "610217e481f6fc54736209e0"
	wireDataset = "620217e481f6fc54736209e0"
	wireExport  = "630217e481f6fc54736209e0"
	wireUser    = "5dad615eae019570fb4647ed"
	wireNotif   = "6a0000000000000000000001"
	wireToken   = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln"
)

// request builds a /ws request frame; an empty id leaves "id" out.
func request(auth, action, typ, id string) []byte {
	ev := map[string]string{"type": typ}
	if id != "" {
		ev["id"] = id
	}
	b, err := json.Marshal(map[string]any{"auth": auth, "action": action, "event": ev})
	if err != nil {
		panic(err)
	}
	return b
}

func TestParseRequestValid(t *testing.T) {
	objectTypes := map[string]Type{
		"issueUpdate":   IssueUpdate,
		"datasetUpdate": DatasetUpdate,
		"uploadFile":    UploadFile,
		"downloadFile":  DownloadFile,
	}
	ids := map[Type]string{IssueUpdate: wireIssue, DatasetUpdate: wireDataset, UploadFile: wireDataset, DownloadFile: wireExport}
	type tc struct {
		name  string
		frame []byte
		want  Request
	}
	var tests []tc
	for _, action := range []struct {
		wire string
		a    Action
	}{{"attach", Attach}, {"detach", Detach}} {
		for name, typ := range objectTypes {
			tests = append(tests, tc{
				name:  action.wire + " " + name,
				frame: request(wireToken, action.wire, name, ids[typ]),
				want:  Request{Token: wireToken, Action: action.a, Key: Key{Type: typ, ID: ids[typ]}},
			})
			tests = append(tests, tc{
				name:  action.wire + " " + name + " upper-case id",
				frame: request(wireToken, action.wire, name, strings.ToUpper(ids[typ])),
				want:  Request{Token: wireToken, Action: action.a, Key: Key{Type: typ, ID: ids[typ]}},
			})
		}
		tests = append(tests,
			tc{
				name:  action.wire + " notification without id",
				frame: request(wireToken, action.wire, "notification", ""),
				want:  Request{Token: wireToken, Action: action.a, Key: Key{Type: Notification}},
			},
			tc{
				name:  action.wire + " notification with id",
				frame: request(wireToken, action.wire, "notification", wireUser),
				want:  Request{Token: wireToken, Action: action.a, Key: Key{Type: Notification}},
			},
			tc{
				name:  action.wire + " notification with upper-case id",
				frame: request(wireToken, action.wire, "notification", strings.ToUpper(wireNotif)),
				want:  Request{Token: wireToken, Action: action.a, Key: Key{Type: Notification}},
			},
		)
	}
	tests = append(tests,
		tc{
			name:  "contract example",
			frame: []byte(`{"auth": "<access_token>", "action": "attach", "event": {"type": "issueUpdate", "id": "610217e481f6fc54736209e0"}}`),
			want:  Request{Token: "<access_token>", Action: Attach, Key: Key{Type: IssueUpdate, ID: wireIssue}},
		},
		tc{
			name:  "mixed-case id",
			frame: []byte(`{"auth":"t","action":"attach","event":{"type":"issueUpdate","id":"610217E481f6Fc54736209e0"}}`),
			want:  Request{Token: "t", Action: Attach, Key: Key{Type: IssueUpdate, ID: wireIssue}},
		},
		// The shape check does not look at the token: codes 1 and 2 are the
		// server's, after the shape.
		tc{
			name:  "no auth",
			frame: []byte(`{"action":"attach","event":{"type":"issueUpdate","id":"610217e481f6fc54736209e0"}}`),
			want:  Request{Action: Attach, Key: Key{Type: IssueUpdate, ID: wireIssue}},
		},
		tc{
			name:  "empty auth",
			frame: []byte(`{"auth":"","action":"detach","event":{"type":"issueUpdate","id":"610217e481f6fc54736209e0"}}`),
			want:  Request{Action: Detach, Key: Key{Type: IssueUpdate, ID: wireIssue}},
		},
		tc{
			name:  "whitespace around",
			frame: []byte(" \n\t{\"auth\":\"t\",\"action\":\"attach\",\"event\":{\"type\":\"downloadFile\",\"id\":\"630217e481f6fc54736209e0\"}}\r\n "),
			want:  Request{Token: "t", Action: Attach, Key: Key{Type: DownloadFile, ID: wireExport}},
		},
		tc{
			name:  "keys in another order",
			frame: []byte(`{"event":{"id":"610217e481f6fc54736209e0","type":"issueUpdate"},"action":"attach","auth":"t"}`),
			want:  Request{Token: "t", Action: Attach, Key: Key{Type: IssueUpdate, ID: wireIssue}},
		},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRequest(tt.frame)
			if err != nil {
				t.Fatalf("ParseRequest(%s): %v", tt.frame, err)
			}
			if got != tt.want {
				t.Fatalf("ParseRequest(%s) = %+v, want %+v", tt.frame, got, tt.want)
			}
		})
	}
}

// TestParseRequestInvalid lists every code-5 case of the /ws table.
func TestParseRequestInvalid(t *testing.T) {
	const ev = `"event":{"type":"issueUpdate","id":"610217e481f6fc54736209e0"}`
	tests := []struct{ name, frame string }{
		{"empty", ``},
		{"blank", "  \n"},
		{"not JSON", `attach issueUpdate 610217e481f6fc54736209e0`},
		{"truncated", `{"auth":"t","action":"attach",` + ev},
		{"trailing garbage", `{"auth":"t","action":"attach",` + ev + `}x`},
		{"two objects", `{"auth":"t","action":"attach",` + ev + `}{}`},
		{"array", `[{"auth":"t","action":"attach",` + ev + `}]`},
		{"empty array", `[]`},
		{"number", `5`},
		{"string", `"attach"`},
		{"true", `true`},
		{"null", `null`},
		{"empty object", `{}`},
		{"no action", `{"auth":"t",` + ev + `}`},
		{"empty action", `{"auth":"t","action":"",` + ev + `}`},
		{"unknown action", `{"auth":"t","action":"subscribe",` + ev + `}`},
		{"action upper case", `{"auth":"t","action":"ATTACH",` + ev + `}`},
		{"action not a string", `{"auth":"t","action":1,` + ev + `}`},
		{"missing event", `{"auth":"t","action":"attach"}`},
		{"event null", `{"auth":"t","action":"attach","event":null}`},
		{"event a string", `{"auth":"t","action":"attach","event":"issueUpdate"}`},
		{"event an array", `{"auth":"t","action":"attach","event":[]}`},
		{"event empty", `{"auth":"t","action":"attach","event":{}}`},
		{"no type", `{"auth":"t","action":"attach","event":{"id":"610217e481f6fc54736209e0"}}`},
		{"unknown type", `{"auth":"t","action":"attach","event":{"type":"issueDelete","id":"610217e481f6fc54736209e0"}}`},
		{"type wrong case", `{"auth":"t","action":"attach","event":{"type":"IssueUpdate","id":"610217e481f6fc54736209e0"}}`},
		{"type not a string", `{"auth":"t","action":"attach","event":{"type":1,"id":"610217e481f6fc54736209e0"}}`},
		{"missing id", `{"auth":"t","action":"attach","event":{"type":"issueUpdate"}}`},
		{"empty id", `{"auth":"t","action":"attach","event":{"type":"datasetUpdate","id":""}}`},
		{"null id", `{"auth":"t","action":"attach","event":{"type":"uploadFile","id":null}}`},
		{"id 23 digits", `{"auth":"t","action":"attach","event":{"type":"issueUpdate","id":"610217e481f6fc54736209e"}}`},
		{"id 25 digits", `{"auth":"t","action":"attach","event":{"type":"issueUpdate","id":"610217e481f6fc54736209e00"}}`},
		{"id not hex", `{"auth":"t","action":"attach","event":{"type":"issueUpdate","id":"610217e481f6fc54736209eg"}}`},
		{"id with space", `{"auth":"t","action":"attach","event":{"type":"issueUpdate","id":" 610217e481f6fc54736209e0"}}`},
		{"id ObjectId() form", `{"auth":"t","action":"attach","event":{"type":"issueUpdate","id":"ObjectId(\"610217e481f6fc54736209e0\")"}}`},
		{"id a number", `{"auth":"t","action":"attach","event":{"type":"issueUpdate","id":610217}}`},
		{"id an object", `{"auth":"t","action":"attach","event":{"type":"downloadFile","id":{"$oid":"630217e481f6fc54736209e0"}}}`},
		{"id non-ASCII", `{"auth":"t","action":"attach","event":{"type":"issueUpdate","id":"610217e481f6fc54736209é"}}`},
		{"notification bad id", `{"auth":"t","action":"attach","event":{"type":"notification","id":"42"}}`},
		{"notification id a number", `{"auth":"t","action":"attach","event":{"type":"notification","id":42}}`},
		{"auth a number", `{"auth":5,"action":"attach",` + ev + `}`},
		{"auth an object", `{"auth":{"token":"t"},"action":"attach",` + ev + `}`},
		{"auth an array", `{"auth":["t"],"action":"attach",` + ev + `}`},
		{"auth true", `{"auth":true,"action":"attach",` + ev + `}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRequest([]byte(tt.frame))
			if err == nil {
				t.Fatalf("ParseRequest(%s) = %+v, want an error", tt.frame, r)
			}
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("ParseRequest(%s): %v does not wrap ErrInvalidRequest (code 5)", tt.frame, err)
			}
			if r != (Request{}) {
				t.Fatalf("ParseRequest(%s) returned %+v with its error, want the zero Request", tt.frame, r)
			}
		})
	}
}

// The contract's two publish examples.
const (
	publishIssueExample  = `{"type": "issueUpdate", "id": "610217e481f6fc54736209e0", "data": ["status"]}`
	publishNotifyExample = `{"type": "notification", "user": "5dad615eae019570fb4647ed", "id": "6a0000000000000000000001", "data": [{"text": "hi"}]}`
)

func TestParsePublishValid(t *testing.T) {
	issue := Event{Type: IssueUpdate, ID: wireIssue, Data: json.RawMessage(`["status"]`)}
	notify := Event{Type: Notification, ID: wireNotif, User: wireUser, Data: json.RawMessage(`[{"text":"hi"}]`)}
	tests := []struct {
		name string
		body string
		max  int
		want []Event
	}{
		{"issue example", publishIssueExample, 10, []Event{issue}},
		{"notification example", publishNotifyExample, 10, []Event{notify}},
		{"array of both", "[" + publishIssueExample + ",\n" + publishNotifyExample + "]", 10, []Event{issue, notify}},
		{"array of one", "[" + publishIssueExample + "]", 1, []Event{issue}},
		{"whitespace around", "\n\t " + publishIssueExample + " \r\n", 10, []Event{issue}},
		{"exactly max events", "[" + strings.Repeat(publishIssueExample+",", 4) + publishIssueExample + "]", 5,
			[]Event{issue, issue, issue, issue, issue}},
		{"every object type",
			`[{"type":"issueUpdate","id":"610217e481f6fc54736209e0"},{"type":"datasetUpdate","id":"620217e481f6fc54736209e0"},` +
				`{"type":"uploadFile","id":"620217e481f6fc54736209e0"},{"type":"downloadFile","id":"630217e481f6fc54736209e0"}]`, 10,
			[]Event{{Type: IssueUpdate, ID: wireIssue}, {Type: DatasetUpdate, ID: wireDataset}, {Type: UploadFile, ID: wireDataset}, {Type: DownloadFile, ID: wireExport}}},
		// id rules
		{"upper-case id normalised", `{"type":"issueUpdate","id":"610217E481F6FC54736209E0"}`, 10,
			[]Event{{Type: IssueUpdate, ID: wireIssue}}},
		// notification rules
		{"notification without id", `{"type":"notification","user":"5dad615eae019570fb4647ed"}`, 10,
			[]Event{{Type: Notification, User: wireUser}}},
		{"notification empty id", `{"type":"notification","user":"5dad615eae019570fb4647ed","id":""}`, 10,
			[]Event{{Type: Notification, User: wireUser}}},
		{"notification id delivered as given", `{"type":"notification","user":"5dad615eae019570fb4647ed","id":"Mail #7 \"urgent\""}`, 10,
			[]Event{{Type: Notification, User: wireUser, ID: `Mail #7 "urgent"`}}},
		{"notification id not lower-cased", `{"type":"notification","user":"5dad615eae019570fb4647ed","id":"6A0000000000000000000001"}`, 10,
			[]Event{{Type: Notification, User: wireUser, ID: "6A0000000000000000000001"}}},
		{"notification upper-case user normalised", `{"type":"notification","user":"5DAD615EAE019570FB4647ED"}`, 10,
			[]Event{{Type: Notification, User: wireUser}}},
		// data rules
		{"data absent", `{"type":"issueUpdate","id":"610217e481f6fc54736209e0"}`, 10,
			[]Event{{Type: IssueUpdate, ID: wireIssue}}},
		{"data empty array", `{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":[]}`, 10,
			[]Event{{Type: IssueUpdate, ID: wireIssue, Data: json.RawMessage(`[]`)}}},
		{"data array kept compact", "{\"type\":\"issueUpdate\",\"id\":\"610217e481f6fc54736209e0\",\"data\":[ 1 ,\n {\"a\" : [ true , null ] } , \"x y\" ]}", 10,
			[]Event{{Type: IssueUpdate, ID: wireIssue, Data: json.RawMessage(`[1,{"a":[true,null]},"x y"]`)}}},
		{"data escapes kept", `{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":["a\"b\\c\u0001\n"]}`, 10,
			[]Event{{Type: IssueUpdate, ID: wireIssue, Data: json.RawMessage(`["a\"b\\c\u0001\n"]`)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePublish([]byte(tt.body), tt.max)
			if err != nil {
				t.Fatalf("ParsePublish(%s): %v", tt.body, err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("ParsePublish(%s): %d events, want %d", tt.body, len(got), len(tt.want))
			}
			for i := range got {
				if !sameEvent(got[i], tt.want[i]) {
					t.Errorf("event %d = %s, want %s", i, showEvent(got[i]), showEvent(tt.want[i]))
				}
			}
		})
	}
}

// TestParsePublishDataAbsentIsNil: an absent data is nil (it goes out as []),
// not an empty non-nil slice or "null".
func TestParsePublishDataAbsentIsNil(t *testing.T) {
	evs, err := ParsePublish([]byte(`{"type":"issueUpdate","id":"610217e481f6fc54736209e0"}`), 1)
	if err != nil {
		t.Fatal(err)
	}
	if evs[0].Data != nil {
		t.Fatalf("Data = %q, want nil", evs[0].Data)
	}
}

func TestParsePublishInvalid(t *testing.T) {
	const issue = `{"type":"issueUpdate","id":"610217e481f6fc54736209e0"}`
	tests := []struct {
		name, body string
		max        int
	}{
		{"empty body", ``, 10},
		{"blank body", " \n\t", 10},
		{"not JSON", `issueUpdate 610217e481f6fc54736209e0`, 10},
		{"truncated", `{"type":"issueUpdate","id":"610217e481f6fc54736209e0"`, 10},
		{"null", `null`, 10},
		{"number", `5`, 10},
		{"string", `"issueUpdate"`, 10},
		{"true", `true`, 10},
		{"empty object", `{}`, 10},
		{"empty array", `[]`, 10},
		{"empty array with space", ` [ ] `, 10},
		{"over max events", "[" + issue + "," + issue + "," + issue + "]", 2},
		{"array of arrays", "[[" + issue + "]]", 10},
		{"array with null", "[" + issue + ",null]", 10},
		{"array with a number", "[" + issue + ",1]", 10},
		{"array with a bad event", "[" + issue + `,{"type":"issueUpdate","id":"x"}]`, 10},
		{"array truncated", "[" + issue + ",", 10},
		{"array trailing comma", "[" + issue + ",]", 10},
		{"array then garbage", "[" + issue + "]x", 10},
		{"array then ]", "[" + issue + "]]", 10},
		// trailing garbage after one object
		{"object then garbage", issue + "x", 10},
		{"object then object", issue + issue, 10},
		{"object then comma", issue + ",", 10},
		{"object then }", issue + "}", 10},
		{"object then ]", issue + "]", 10},
		{"object then array", issue + "[]", 10},
		{"object then null", issue + " null", 10},
		// type
		{"no type", `{"id":"610217e481f6fc54736209e0"}`, 10},
		{"unknown type", `{"type":"issueDelete","id":"610217e481f6fc54736209e0"}`, 10},
		{"type wrong case", `{"type":"IssueUpdate","id":"610217e481f6fc54736209e0"}`, 10},
		{"type a number", `{"type":1,"id":"610217e481f6fc54736209e0"}`, 10},
		// id rules
		{"id missing", `{"type":"issueUpdate"}`, 10},
		{"id null", `{"type":"issueUpdate","id":null}`, 10},
		{"id empty", `{"type":"datasetUpdate","id":""}`, 10},
		{"id short", `{"type":"uploadFile","id":"620217e481f6fc54736209e"}`, 10},
		{"id long", `{"type":"downloadFile","id":"630217e481f6fc54736209e00"}`, 10},
		{"id not hex", `{"type":"issueUpdate","id":"610217e481f6fc54736209ez"}`, 10},
		{"id a number", `{"type":"issueUpdate","id":610217}`, 10},
		{"id an object", `{"type":"issueUpdate","id":{"$oid":"610217e481f6fc54736209e0"}}`, 10},
		{"notification id a number", `{"type":"notification","user":"5dad615eae019570fb4647ed","id":1}`, 10},
		// notification user rules
		{"notification without user", `{"type":"notification","id":"6a0000000000000000000001"}`, 10},
		{"notification null user", `{"type":"notification","user":null}`, 10},
		{"notification empty user", `{"type":"notification","user":""}`, 10},
		{"notification bad user", `{"type":"notification","user":"bob"}`, 10},
		{"notification user a number", `{"type":"notification","user":5}`, 10},
		{"user on issueUpdate", `{"type":"issueUpdate","id":"610217e481f6fc54736209e0","user":"5dad615eae019570fb4647ed"}`, 10},
		{"user on datasetUpdate", `{"type":"datasetUpdate","id":"620217e481f6fc54736209e0","user":"5dad615eae019570fb4647ed"}`, 10},
		{"empty user on downloadFile", `{"type":"downloadFile","id":"630217e481f6fc54736209e0","user":""}`, 10},
		// data rules
		{"data null", `{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":null}`, 10},
		{"data object", `{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":{"a":1}}`, 10},
		{"data string", `{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":"status"}`, 10},
		{"data number", `{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":1}`, 10},
		{"data true", `{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":true}`, 10},
		{"data bad array", `{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":[1,]}`, 10},
		// unknown fields
		{"unknown field", `{"type":"issueUpdate","id":"610217e481f6fc54736209e0","extra":1}`, 10},
		{"unknown field null", `{"type":"issueUpdate","id":"610217e481f6fc54736209e0","auth":null}`, 10},
		{"unknown field in array", "[" + issue + `,{"type":"issueUpdate","id":"610217e481f6fc54736209e0","users":[]}]`, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := ParsePublish([]byte(tt.body), tt.max)
			if err == nil {
				t.Fatalf("ParsePublish(%s) = %d events (%s), want an error (code 5)", tt.body, len(evs), showEvents(evs))
			}
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("ParsePublish(%s): %v does not wrap ErrInvalidRequest (code 5)", tt.body, err)
			}
			if evs != nil {
				t.Fatalf("ParsePublish(%s) returned events with its error", tt.body)
			}
		})
	}
}

// TestParsePublishDataNotUTF8: every event goes out as a WebSocket text
// frame, which must be UTF-8 (RFC 6455 5.6; a browser fails the connection
// with 1007 otherwise). JSON text is UTF-8 (RFC 8259 8.1), so a data array
// holding other bytes is not JSON and is code 5, like any malformed event.
func TestParsePublishDataNotUTF8(t *testing.T) {
	bodies := []string{
		"{\"type\":\"issueUpdate\",\"id\":\"610217e481f6fc54736209e0\",\"data\":[\"\xff\"]}",
		"{\"type\":\"issueUpdate\",\"id\":\"610217e481f6fc54736209e0\",\"data\":[\"\xc3\"]}",
		"{\"type\":\"notification\",\"user\":\"5dad615eae019570fb4647ed\",\"data\":[{\"text\":\"\xed\xa0\x80\"}]}",
	}
	for _, body := range bodies {
		evs, err := ParsePublish([]byte(body), 10)
		if err == nil {
			frame := evs[0].AppendFrame(nil, "0123456789abcdef:1")
			t.Errorf("ParsePublish(%q) accepted data that is not UTF-8; the frame %q is not valid UTF-8 (utf8.Valid = %v)", body, frame, utf8.Valid(frame))
		}
	}
}

func TestParsePublishArrayErrorNamesEvent(t *testing.T) {
	body := `[{"type":"issueUpdate","id":"610217e481f6fc54736209e0"},{"type":"issueUpdate","id":"x"}]`
	_, err := ParsePublish([]byte(body), 10)
	if err == nil || !strings.Contains(err.Error(), "event 1") {
		t.Fatalf("ParsePublish: %v, want an error naming event 1", err)
	}
}

func TestEventKey(t *testing.T) {
	tests := []struct {
		e    Event
		want Key
	}{
		{Event{Type: IssueUpdate, ID: wireIssue}, Key{IssueUpdate, wireIssue}},
		{Event{Type: DatasetUpdate, ID: wireDataset}, Key{DatasetUpdate, wireDataset}},
		{Event{Type: UploadFile, ID: wireDataset}, Key{UploadFile, wireDataset}},
		{Event{Type: DownloadFile, ID: wireExport}, Key{DownloadFile, wireExport}},
		{Event{Type: Notification, ID: wireNotif, User: wireUser}, Key{Notification, wireUser}},
		{Event{Type: Notification, User: wireUser}, Key{Notification, wireUser}},
	}
	for _, tt := range tests {
		if got := tt.e.Key(); got != tt.want {
			t.Errorf("%s.Key() = %+v, want %+v", showEvent(tt.e), got, tt.want)
		}
	}
}

func TestAppendFrame(t *testing.T) {
	tests := []struct {
		name string
		e    Event
		want string
	}{
		{"contract example", Event{Type: IssueUpdate, ID: wireIssue, Data: json.RawMessage(`[]`)},
			`{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":[]}`},
		{"nil data is []", Event{Type: IssueUpdate, ID: wireIssue},
			`{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":[]}`},
		{"data", Event{Type: IssueUpdate, ID: wireIssue, Data: json.RawMessage(`["status"]`)},
			`{"type":"issueUpdate","id":"610217e481f6fc54736209e0","data":["status"]}`},
		{"datasetUpdate", Event{Type: DatasetUpdate, ID: wireDataset, Data: json.RawMessage(`[1,2]`)},
			`{"type":"datasetUpdate","id":"620217e481f6fc54736209e0","data":[1,2]}`},
		{"uploadFile", Event{Type: UploadFile, ID: wireDataset},
			`{"type":"uploadFile","id":"620217e481f6fc54736209e0","data":[]}`},
		{"downloadFile", Event{Type: DownloadFile, ID: wireExport, Data: json.RawMessage(`[{"url":"/files/k/r.xlsx"}]`)},
			`{"type":"downloadFile","id":"630217e481f6fc54736209e0","data":[{"url":"/files/k/r.xlsx"}]}`},
		{"notification: id, not user", Event{Type: Notification, ID: wireNotif, User: wireUser, Data: json.RawMessage(`[{"text":"hi"}]`)},
			`{"type":"notification","id":"6a0000000000000000000001","data":[{"text":"hi"}]}`},
		{"notification without id", Event{Type: Notification, User: wireUser},
			`{"type":"notification","id":"","data":[]}`},
		{"notification id escaped", Event{Type: Notification, ID: "a\"b\\c\n\r\t\x00\x1f\x7f/é", User: wireUser},
			`{"type":"notification","id":"a\"b\\c\n\r\t\u0000\u001f` + "\x7f" + `/é","data":[]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := strings.TrimSuffix(tt.want, "}") + `,"pos":"0123456789abcdef:7"}`
			if got := string(tt.e.AppendFrame(nil, "0123456789abcdef:7")); got != want {
				t.Fatalf("AppendFrame = %s\nwant          %s", got, want)
			}
			if n := len(tt.e.AppendFrame(nil, FormatPos("0123456789abcdef", true, Pos{Hi: 1<<64 - 1, Lo: 1<<32 - 1}))); n > tt.e.FrameSize() {
				t.Fatalf("frame of %d bytes, FrameSize %d", n, tt.e.FrameSize())
			}
			// AppendFrame appends.
			prefix := []byte("prefix")
			if got := string(tt.e.AppendFrame(prefix, "0123456789abcdef:7")); got != "prefix"+want {
				t.Fatalf("AppendFrame(prefix) = %s", got)
			}
		})
	}
}

// TestAppendFrameEscapesID: whatever the notification id holds, the frame is
// JSON (and UTF-8) that decodes back to the same id.
func TestAppendFrameEscapesID(t *testing.T) {
	ids := []string{
		"",
		`"`,
		`\`,
		`\"`,
		`"},"data":[1],"x":{"`,
		"\x00",
		"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f",
		"\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f",
		"line\nbreak\r\n\ttab",
		"\x7f",
		"</script><script>alert(1)</script>",
		"\u2028\u2029",
		"é€😀",
		"\ufffd",
		strings.Repeat(`a"\`, 100),
		"6a0000000000000000000001",
	}
	for c := 0; c < 0x80; c++ {
		ids = append(ids, "x"+string(rune(c))+"y")
	}
	for _, id := range ids {
		e := Event{Type: Notification, ID: id, User: wireUser, Data: json.RawMessage(`["d"]`)}
		frame := e.AppendFrame(nil, "0123456789abcdef:1")
		if !utf8.Valid(frame) {
			t.Errorf("id %q: frame %q is not UTF-8", id, frame)
			continue
		}
		var got struct {
			Type string          `json:"type"`
			ID   string          `json:"id"`
			Data json.RawMessage `json:"data"`
			Pos  string          `json:"pos"`
		}
		if err := strictUnmarshal(frame, &got); err != nil {
			t.Errorf("id %q: frame %s is not JSON: %v", id, frame, err)
			continue
		}
		if got.ID != id || got.Type != "notification" || string(got.Data) != `["d"]` {
			t.Errorf("id %q: frame %s decodes to %+v", id, frame, got)
		}
	}
}

// TestPublishFrameRoundTrip: a notification id given with JSON escapes by
// the publisher reaches the frame as the same string.
func TestPublishFrameRoundTrip(t *testing.T) {
	body := `{"type":"notification","user":"5dad615eae019570fb4647ed","id":"q\"b\\s\u0000\u001f\n\u00e9\ud83d\ude00\u2028","data":[{"text":"hi"}]}`
	evs, err := ParsePublish([]byte(body), 1)
	if err != nil {
		t.Fatal(err)
	}
	want := "q\"b\\s\x00\x1f\né😀\u2028"
	if evs[0].ID != want {
		t.Fatalf("ID = %q, want %q", evs[0].ID, want)
	}
	frame := evs[0].AppendFrame(nil, "0123456789abcdef:1")
	var got map[string]any
	if err := strictUnmarshal(frame, &got); err != nil {
		t.Fatalf("frame %s: %v", frame, err)
	}
	if got["id"] != want || got["type"] != "notification" || fmt.Sprint(got["data"]) != "[map[text:hi]]" || len(got) != 4 {
		t.Fatalf("frame %s decodes to %v", frame, got)
	}
}

func TestCodeFrame(t *testing.T) {
	tests := []struct {
		code   Code
		status int
		msg    string
		frame  string
	}{
		{OK, 200, "Ok", `{"status":200,"message":"Ok","code":0}`},
		{TokenNotSet, 400, "Token not set", `{"status":400,"message":"Token not set","code":1}`},
		{InvalidToken, 400, "Invalid token", `{"status":400,"message":"Invalid token","code":2}`},
		{UserNotExists, 400, "User not exists", `{"status":400,"message":"User not exists","code":3}`},
		{NoDatasetAccess, 400, "Not access for dataset", `{"status":400,"message":"Not access for dataset","code":4}`},
		{InvalidRequest, 400, "Invalid request", `{"status":400,"message":"Invalid request","code":5}`},
		{TooManySubscription, 400, "Too many subscriptions", `{"status":400,"message":"Too many subscriptions","code":6}`},
		{Unavailable, 400, "Service unavailable", `{"status":400,"message":"Service unavailable","code":7}`},
	}
	for _, tt := range tests {
		if got := string(tt.code.Frame()); got != tt.frame {
			t.Errorf("Code(%d).Frame() = %s, want %s", tt.code, got, tt.frame)
		}
		if got := tt.code.Status(); got != tt.status {
			t.Errorf("Code(%d).Status() = %d, want %d", tt.code, got, tt.status)
		}
		if got := tt.code.Message(); got != tt.msg {
			t.Errorf("Code(%d).Message() = %q, want %q", tt.code, got, tt.msg)
		}
		var a struct {
			Status  int    `json:"status"`
			Message string `json:"message"`
			Code    int    `json:"code"`
		}
		if err := strictUnmarshal(tt.code.Frame(), &a); err != nil || a.Status != tt.status || a.Message != tt.msg || a.Code != int(tt.code) {
			t.Errorf("Code(%d).Frame() decodes to %+v, %v", tt.code, a, err)
		}
		if got := string(AppendAnswer([]byte("x"), tt.status, tt.msg, tt.code)); got != "x"+tt.frame {
			t.Errorf("AppendAnswer(%d) = %s", tt.code, got)
		}
	}
}

func TestAppendAnswerEscapes(t *testing.T) {
	got := AppendAnswer(nil, 413, `Request "too" large\`, InvalidRequest)
	if want := `{"status":413,"message":"Request \"too\" large\\","code":5}`; string(got) != want {
		t.Fatalf("AppendAnswer = %s, want %s", got, want)
	}
}

func TestTypes(t *testing.T) {
	names := []string{"issueUpdate", "notification", "datasetUpdate", "uploadFile", "downloadFile"}
	if len(Types) != len(names) {
		t.Fatalf("Types has %d entries, want %d", len(Types), len(names))
	}
	for i, name := range names {
		typ, ok := ParseType(name)
		if !ok || typ != Types[i] || typ.String() != name {
			t.Errorf("ParseType(%q) = %v, %v; Types[%d] = %v", name, typ, ok, i, Types[i])
		}
		if typ.PerUser() != (name == "notification") {
			t.Errorf("%s.PerUser() = %v", name, typ.PerUser())
		}
		if typ.NeedsDatasetAccess() != (name == "datasetUpdate" || name == "uploadFile") {
			t.Errorf("%s.NeedsDatasetAccess() = %v", name, typ.NeedsDatasetAccess())
		}
	}
	for _, bad := range []string{"", "IssueUpdate", "issueupdate", "issueUpdate ", "notifications"} {
		if typ, ok := ParseType(bad); ok {
			t.Errorf("ParseType(%q) = %v, want not ok", bad, typ)
		}
	}
	if s := Type(0).String(); s != "" {
		t.Errorf("Type(0).String() = %q, want \"\"", s)
	}
	if s := Type(200).String(); s != "" {
		t.Errorf("Type(200).String() = %q, want \"\"", s)
	}
}

func TestNormalizeID(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{wireIssue, wireIssue, true},
		{strings.ToUpper(wireIssue), wireIssue, true},
		{"0123456789abcdefABCDEF00", "0123456789abcdefabcdef00", true},
		{"", "", false},
		{wireIssue[:23], "", false},
		{wireIssue + "0", "", false},
		{"610217e481f6fc54736209eg", "", false},
		{"610217e481f6fc54736209e-", "", false},
		{"610217e481f6fc5473620\xc3\xa9", "", false}, // 24 bytes, 23 runes
	}
	for _, tt := range tests {
		got, ok := NormalizeID(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("NormalizeID(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// strictUnmarshal decodes exactly one JSON value; encoding/json itself
// rejects trailing data and (with Valid) checks the syntax.
func strictUnmarshal(b []byte, v any) error {
	if !json.Valid(b) {
		return errors.New("not valid JSON")
	}
	return json.Unmarshal(b, v)
}

func sameEvent(a, b Event) bool {
	return a.Type == b.Type && a.ID == b.ID && a.User == b.User && string(a.Data) == string(b.Data) && (a.Data == nil) == (b.Data == nil)
}

func showEvent(e Event) string {
	data := "nil"
	if e.Data != nil {
		data = string(e.Data)
	}
	return fmt.Sprintf("{%v id=%q user=%q data=%s}", e.Type, e.ID, e.User, data)
}

func showEvents(evs []Event) string {
	parts := make([]string, len(evs))
	for i, e := range evs {
		parts[i] = showEvent(e)
	}
	return strings.Join(parts, ", ")
}
