package mongodb

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/airlay/airlay/events"
)

// Operations of a change event that a Mapping may select.
const (
	OpInsert  = "insert"
	OpUpdate  = "update"
	OpReplace = "replace"
	OpDelete  = "delete"
)

// Data modes of a Mapping: what goes into an event's data array.
const (
	// DataChanged: for an update, the names of the changed top-level fields
	// (set, removed or truncated); [] for other operations.
	DataChanged = "changed"
	// DataNone: always [].
	DataNone = "none"
	// DataDocument: [document], the whole document as JSON (ObjectIds as
	// hex strings, dates as RFC 3339 strings); [] for a delete.
	DataDocument = "document"
	// DataFields: [{field: value, ...}] with the listed fields that the
	// document has; [] for a delete.
	DataFields = "fields"
)

// Mapping says how changes to one collection become events of one type.
type Mapping struct {
	Type       events.Type
	Collection string
	Operations []string // OpInsert, OpUpdate, OpReplace, OpDelete
	// IDField holds the event's id: "_id" (the document key) or a field of
	// the document holding an ObjectId (as an ObjectId or 24 hex digits).
	IDField string
	// UserField (notification): the field holding the recipient's ObjectId.
	UserField string
	// FinishedField and FinishedValue: when set, a change makes an event
	// only when it leaves the field equal to the value: an insert or replace
	// with it, an update that sets it. FinishedValue "true"/"false" is a
	// boolean, a decimal number is a number, anything else a string.
	FinishedField, FinishedValue string
	Data                         string   // DataChanged, DataNone, DataDocument or DataFields
	DataFields                   []string // for DataFields
}

// Config is what the package needs; cmd/airlay-cli fills it from config.ini
// (see server.Config for each key and its default).
type Config struct {
	Database string
	// Instance names this instance's resume token; instances sharing a
	// database need distinct names.
	Instance string
	Sources  []Mapping

	Users         string   // users collection (code 3)
	Datasets      string   // datasets collection (code 4)
	DatasetAccess []string // fields of a dataset holding the users who may see it
	CacheTTL      time.Duration
	CacheSize     int
	QueryTimeout  time.Duration

	Events    string // the collection POST /api/events writes and every instance watches
	EventsTTL time.Duration
	Resume    string // the collection of resume tokens, one document per instance

	// Not in config.ini; zero takes the default in brackets.
	MaxAwait     time.Duration // longest a getMore waits for changes [1s]
	RetryMin     time.Duration // first wait before reopening a failed stream [100ms]
	RetryMax     time.Duration // longest wait between reopenings [10s]
	SaveInterval time.Duration // least time between two saves of the resume token after changes [1s]
	TokenRefresh time.Duration // save the stream's position at least this often when it moved without changes [5m]
	PoisonTries  int           // failed reads of one too-large event before it is skipped [3]
	PendingMax   int           // publishes waiting (?wait) for their change event [10000]
	PendingTTL   time.Duration // how long a waiting publish is remembered [70s]
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.MaxAwait, time.Second)
	def(&c.RetryMin, 100*time.Millisecond)
	def(&c.RetryMax, 10*time.Second)
	def(&c.SaveInterval, time.Second)
	def(&c.PendingTTL, 70*time.Second)
	def(&c.QueryTimeout, 3*time.Second)
	def(&c.EventsTTL, time.Hour)
	if c.PendingMax <= 0 {
		c.PendingMax = 10000
	}
	if c.CacheSize <= 0 {
		c.CacheSize = 100000
	}
}

func (c *Config) validate() error {
	if c.Database == "" {
		return errors.New("database not set")
	}
	for name, v := range map[string]string{"users": c.Users, "datasets": c.Datasets, "events": c.Events, "resume": c.Resume, "instance": c.Instance} {
		if v == "" {
			return fmt.Errorf("%s not set", name)
		}
	}
	if len(c.DatasetAccess) == 0 {
		return errors.New("dataset access fields not set")
	}
	for _, m := range c.Sources {
		if err := m.validate(); err != nil {
			return fmt.Errorf("source %s: %w", m.Type, err)
		}
		if m.Collection == c.Events {
			return fmt.Errorf("source %s: collection %q is the events collection", m.Type, m.Collection)
		}
	}
	return nil
}

func (m *Mapping) validate() error {
	if m.Type.String() == "" {
		return errors.New("no event type")
	}
	if m.Collection == "" || m.IDField == "" || len(m.Operations) == 0 {
		return errors.New("collection, id field and operations are required")
	}
	for _, op := range m.Operations {
		if !slices.Contains([]string{OpInsert, OpUpdate, OpReplace, OpDelete}, op) {
			return fmt.Errorf("unknown operation %q", op)
		}
	}
	if m.Type.PerUser() != (m.UserField != "") {
		return errors.New("a user field is required for notification and only for it")
	}
	if slices.Contains(m.Operations, OpDelete) && (m.IDField != "_id" || m.FinishedField != "" || m.Type.PerUser()) {
		return errors.New("delete needs id _id, no finished condition, and is not for notification")
	}
	switch m.Data {
	case DataChanged, DataNone, DataDocument:
	case DataFields:
		if len(m.DataFields) == 0 {
			return errors.New("data fields without fields")
		}
	default:
		return fmt.Errorf("unknown data %q", m.Data)
	}
	if (m.FinishedField == "") != (m.FinishedValue == "") {
		return errors.New("finished needs a field and a value")
	}
	return nil
}

// finishedValue returns FinishedValue as the BSON value it stands for.
func (m *Mapping) finishedValue() any {
	v := m.FinishedValue
	switch v {
	case "true":
		return true
	case "false":
		return false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return n
	}
	if isDecimal(v) {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return f
		}
	}
	return v
}

// isDecimal reports whether v looks like -12.5: digits with at most one dot
// (not "NaN", "Inf" or "1e3", which ParseFloat also takes).
func isDecimal(v string) bool {
	if v != "" && v[0] == '-' {
		v = v[1:]
	}
	dot, digits := false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && !dot:
			dot = true
		default:
			return false
		}
	}
	return digits > 0
}

// has reports whether m selects operation op.
func (m *Mapping) has(op string) bool { return slices.Contains(m.Operations, op) }

// needsDocument reports whether m reads the document of an insert or
// replace (always sent by MongoDB for those).
func (m *Mapping) needsDocument() bool {
	return m.IDField != "_id" || m.UserField != "" || m.FinishedField != "" || m.Data == DataDocument || m.Data == DataFields
}

// needsLookup reports whether m needs the current document of an update
// (Source.lookup reads it); its finished condition reads the update itself.
func (m *Mapping) needsLookup() bool {
	return m.has(OpUpdate) && (m.IDField != "_id" || m.UserField != "" || m.Data == DataDocument || m.Data == DataFields)
}
