package mongodb

import (
	"errors"
	"fmt"
	"os"
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

// Config holds the [mongodb] settings of config.ini (ReadConfig reads them;
// each field names its key) and a few that are not in the file. A zero
// field takes the default named beside it; setDefaults fills them, so a
// Config written in Go needs only what differs.
type Config struct {
	// URI: uri, the connection string; "" runs airlay without MongoDB
	// (cmd does not call Connect).
	URI string
	// Database: database, with the users, datasets and watched
	// collections; zero: airlay.
	Database string
	// Instance: instance, the name under which this instance keeps its
	// resume token; instances sharing a database need distinct names. Zero:
	// the host name (cmd gives hostname:port).
	Instance string
	// Sources: one line per event type (issueUpdate = collection=issues
	// ...), how changes of a collection become events of that type. Nil:
	// DefaultSources(); a type whose line is "off" is left out.
	Sources []Mapping

	Users         string        // users_collection: where a token's data.id must exist (code 3); zero: users
	Datasets      string        // datasets_collection: for the access check (code 4); zero: datasets
	DatasetAccess []string      // dataset_access: fields of a dataset holding the users who may see it; zero: owner, members
	CacheTTL      time.Duration // cache_ttl: how long a user or access answer is reused; zero: 5s; negative: not kept (cache_ttl = 0)
	CacheSize     int           // cache_size: answers kept per cache; zero: 100000
	QueryTimeout  time.Duration // query_timeout: longest one query or write may take (then code 7, 503); zero: 3s

	Events    string        // events_collection: where POST /api/events writes and every instance watches; zero: airlay_events
	EventsTTL time.Duration // events_ttl: how long published events stay there (a TTL index); zero: 1h
	Resume    string        // resume_collection: one document per instance holding its resume token; zero: airlay_resume_tokens
	// FilesBucket: files_bucket, the GridFS bucket of the temporary download
	// files (package files; cmd opens the store); zero: airlay_files.
	FilesBucket string

	Instances         string        // instances_collection: one heartbeat document per live instance; zero: airlay_instances
	Messages          string        // messages_collection: asks and replies between instances (?wait counts, presence); zero: airlay_messages
	InstanceTTL       time.Duration // instance_ttl: an instance without a heartbeat for this long has dropped out; zero: 30s
	HeartbeatInterval time.Duration // heartbeat_interval: how often each instance writes its heartbeat; zero: 5s, and at most instance_ttl/2

	// IdempotencyWindow: how long an Idempotency-Key of a publish is
	// remembered ([webSocketEvents] idempotency_window, which cmd copies
	// here); at most EventsTTL. Zero: 10m.
	IdempotencyWindow time.Duration

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

// Defaults of the [mongodb] keys.
const (
	DefaultDatabase          = "airlay"
	DefaultUsers             = "users"
	DefaultDatasets          = "datasets"
	DefaultCacheTTL          = 5 * time.Second
	DefaultCacheSize         = 100000
	DefaultQueryTimeout      = 3 * time.Second
	DefaultEvents            = "airlay_events"
	DefaultEventsTTL         = time.Hour
	DefaultResume            = "airlay_resume_tokens"
	DefaultFilesBucket       = "airlay_files"
	DefaultIdempotencyWindow = 10 * time.Minute
	DefaultInstances         = "airlay_instances"
	DefaultMessages          = "airlay_messages"
	DefaultInstanceTTL       = 30 * time.Second
	DefaultHeartbeatInterval = 5 * time.Second
)

// DefaultDatasetAccess is the default of dataset_access.
func DefaultDatasetAccess() []string { return []string{"owner", "members"} }

// setDefaults fills every zero field with its default.
func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	str := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	str(&c.Database, DefaultDatabase)
	if c.Instance == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "airlay"
		}
		c.Instance = host
	}
	if c.Sources == nil {
		c.Sources = DefaultSources()
	}
	str(&c.Users, DefaultUsers)
	str(&c.Datasets, DefaultDatasets)
	if len(c.DatasetAccess) == 0 {
		c.DatasetAccess = DefaultDatasetAccess()
	}
	def(&c.CacheTTL, DefaultCacheTTL)
	if c.CacheSize <= 0 {
		c.CacheSize = DefaultCacheSize
	}
	def(&c.QueryTimeout, DefaultQueryTimeout)
	str(&c.Events, DefaultEvents)
	def(&c.EventsTTL, DefaultEventsTTL)
	str(&c.Resume, DefaultResume)
	str(&c.FilesBucket, DefaultFilesBucket)
	def(&c.IdempotencyWindow, DefaultIdempotencyWindow)
	str(&c.Instances, DefaultInstances)
	str(&c.Messages, DefaultMessages)
	def(&c.InstanceTTL, DefaultInstanceTTL)
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = min(DefaultHeartbeatInterval, c.InstanceTTL/2)
	}
	def(&c.MaxAwait, time.Second)
	def(&c.RetryMin, 100*time.Millisecond)
	def(&c.RetryMax, 10*time.Second)
	def(&c.SaveInterval, time.Second)
	def(&c.PendingTTL, 70*time.Second)
	if c.PendingMax <= 0 {
		c.PendingMax = 10000
	}
}

func (c *Config) validate() error {
	if c.Database == "" {
		return errors.New("database not set")
	}
	for name, v := range map[string]string{"users": c.Users, "datasets": c.Datasets, "events": c.Events, "resume": c.Resume, "instance": c.Instance, "instances": c.Instances, "messages": c.Messages} {
		if v == "" {
			return fmt.Errorf("%s not set", name)
		}
	}
	if len(c.DatasetAccess) == 0 {
		return errors.New("dataset access fields not set")
	}
	if c.HeartbeatInterval <= 0 || c.HeartbeatInterval > c.InstanceTTL/2 {
		return fmt.Errorf("heartbeat_interval %v must be at most half of instance_ttl %v", c.HeartbeatInterval, c.InstanceTTL)
	}
	if c.IdempotencyWindow > c.EventsTTL {
		return fmt.Errorf("events_ttl %v is shorter than idempotency_window %v: a published event must stay as long as its key is remembered", c.EventsTTL, c.IdempotencyWindow)
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
