package server

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/airlay/airlay/events"
	"gopkg.in/ini.v1"
)

// Section names in config.ini.
const (
	SectionServer = "webSocketEvents"
	SectionMongo  = "mongodb"
)

// Config holds every setting of the server. LoadConfig fills it from
// config.ini; Defaults gives the value of every key that is not set. A zero
// field never means "unlimited": every limit has a default.
type Config struct {
	// File is the config file the settings came from (for messages).
	File string

	Address string // address: listen address; default 0.0.0.0
	Port    int    // port: listen port; default 8081

	JWTPublicKey string // jwt_public_key: PEM file, relative to the config file; required
	JWTIssuer    string // jwt_issuer: when set, tokens must carry this "iss"
	PublishToken string // publish_token: bearer for POST /api/events; empty disables it

	// AllowedOrigins: allowed_origins, comma-separated; "*" allows any.
	// Default "*".
	AllowedOrigins []string

	MaxSubscriptions int   // max_subscriptions: per connection (code 6); default 100
	MaxMessageBytes  int64 // max_message_bytes: largest client frame (1009); default 4096
	MaxPublishBytes  int64 // max_publish_bytes: largest POST /api/events body (413); default 1MiB
	MaxPublishEvents int   // max_publish_events: events per publish (400); default 1000

	FilesDir     string        // files_dir: temporary download files; default under the temp dir
	FileTTL      time.Duration // file_ttl: lifetime of a download link; default 5m
	MaxFileBytes int64         // max_file_bytes: largest POST /api/files body; default 100MiB
	// MaxFilesBytes: max_files_bytes, bytes of all temporary download files
	// on disk, uploads in progress included (507 past it); default 1GiB,
	// at least max_file_bytes.
	MaxFilesBytes int64
	// MaxFiles: max_files, temporary download files on disk at once, uploads
	// in progress included (507 past it); default 1000.
	MaxFiles int

	// SendQueue: send_queue, frames queued per connection before it counts
	// as a slow consumer and is closed with 4008; default 256. Only 16 are
	// preallocated; the rest grows during a burst and is freed after it.
	SendQueue int
	// SendQueueBytes: send_queue_bytes, bytes of frames queued per
	// connection before it counts as a slow consumer; default 4MiB.
	SendQueueBytes int64
	// WriteTimeout: write_timeout, longest time one frame may take to write;
	// default 10s.
	WriteTimeout time.Duration
	// PingInterval: ping_interval, time between pings; default 25s, below
	// the 60 s idle timeout of common proxies.
	PingInterval time.Duration
	// PongTimeout: pong_timeout, a connection with no pong (or other frame)
	// for this long is dropped; default 60s, must exceed ping_interval.
	PongTimeout time.Duration
	// MaxConnections: max_connections, open WebSocket connections; past it
	// /ws answers 503. Default 10000.
	MaxConnections int
	// AuthTimeout: auth_timeout, a connection that has presented no valid
	// token this long after it opened is closed with 4002; default 10s.
	AuthTimeout time.Duration
	// MaxTokenFailures: max_token_failures, code-2 answers in a row after
	// which a connection is closed with 4003; default 5.
	MaxTokenFailures int
	// BodyTimeout: body_timeout, the longest the body of a POST /api/events
	// may take to arrive (400 past it); default 30s.
	BodyTimeout time.Duration
	// UploadTimeout: upload_timeout, the longest the body of a POST
	// /api/files may take to arrive, besides the minute of silence that
	// cuts an upload off; default 10m.
	UploadTimeout time.Duration
	// MetricsToken: metrics_token, when set /metrics answers only requests
	// with "Authorization: Bearer <metrics_token>" (401 otherwise); empty:
	// /metrics is open to anyone who reaches the listener.
	MetricsToken string
	// TokenLeeway: token_leeway, clock skew allowed on exp, nbf and iat;
	// default 5s.
	TokenLeeway time.Duration
	// TokenCacheSize: token_cache_size, verified tokens kept so that a
	// repeated token costs no RSA check; default 10000, 0 disables.
	TokenCacheSize int
	// ShutdownTimeout: shutdown_timeout, the longest a graceful shutdown
	// waits for publishes and closes; default 10s.
	ShutdownTimeout time.Duration
	// LogFormat: log_format, "text" or "json"; default text.
	LogFormat string
	// LogLevel: log_level, debug, info, warn or error; default info.
	LogLevel slog.Level
	// LivePage: live_page, serve the live page at /live (paste a token,
	// attach, watch events); default false.
	LivePage bool

	MongoURI      string // [mongodb] uri: empty runs without MongoDB
	MongoDatabase string // [mongodb] database; default airlay

	// MongoInstance: [mongodb] instance, the name under which this instance
	// keeps its change stream resume token; empty: hostname:port.
	MongoInstance string
	// MongoUsers: users_collection, where a token's data.id must exist
	// (code 3); default users.
	MongoUsers string
	// MongoDatasets: datasets_collection; default datasets.
	MongoDatasets string
	// MongoDatasetAccess: dataset_access, fields of a dataset document that
	// hold the users who may see it (an id, or an array of ids; dotted paths
	// reach into arrays of documents). Default owner,members.
	MongoDatasetAccess []string
	// MongoCacheTTL: cache_ttl, how long a user or dataset-access answer is
	// reused; a revoked access stops within it. Default 5s, 0 disables.
	MongoCacheTTL time.Duration
	// MongoCacheSize: cache_size, answers kept per cache; default 100000.
	MongoCacheSize int
	// MongoQueryTimeout: query_timeout, the longest one MongoDB query or
	// write may take before the request answers code 7 (503); default 3s.
	MongoQueryTimeout time.Duration
	// MongoEvents: events_collection, where POST /api/events writes and
	// every instance watches; default airlay_events.
	MongoEvents string
	// MongoEventsTTL: events_ttl, how long published events stay in
	// events_collection (a TTL index); default 1h.
	MongoEventsTTL time.Duration
	// MongoResume: resume_collection, one document per instance holding its
	// latest resume token; default airlay_resume_tokens.
	MongoResume string

	// Event sources, one per event type: which collection feeds the type
	// and how a change becomes an event (see MongoSource). A zero
	// Collection turns the source off.
	MongoIssueUpdate   MongoSource // issueUpdate
	MongoNotification  MongoSource // notification
	MongoDatasetUpdate MongoSource // datasetUpdate
	MongoUploadFile    MongoSource // uploadFile
	MongoDownloadFile  MongoSource // downloadFile
}

// MongoSource says how changes to one collection become events of one type.
// In config.ini it is one line of name=value pairs, for example
//
//	uploadFile = collection=uploads operations=insert,update,replace id=dataset finished=status:finished data=fields:_id,name
//
// A pair that is left out keeps the type's default; "off" turns the source
// off.
type MongoSource struct {
	Collection string   // collection: the watched collection; "" when off
	Operations []string // operations: insert, update, replace, delete
	// IDField: id, the field holding the event's id: _id (the document's
	// own) or another field of the document holding an ObjectId.
	IDField string
	// UserField: user (notification only), the field holding the
	// recipient's ObjectId.
	UserField string
	// FinishedField and FinishedValue: finished=FIELD:VALUE, an event only
	// when a change leaves FIELD equal to VALUE (an insert or replace with
	// that value, an update that sets it). VALUE true/false is a boolean, a
	// number is a number, anything else a string. Empty: every change.
	FinishedField, FinishedValue string
	// Data: data, what goes into the event's data array: changed (updates:
	// the changed top-level field names), none, document (the document), or
	// fields:A,B (an object with those fields of the document).
	Data       string
	DataFields []string // the fields of data=fields:A,B
}

// Source operations and data modes of a MongoSource.
var (
	MongoOperations = []string{"insert", "update", "replace", "delete"}
	MongoDataModes  = []string{"changed", "none", "document", "fields"}
)

// Defaults returns a Config with the default of every setting.
func Defaults() Config {
	return Config{
		Address:          "0.0.0.0",
		Port:             8081,
		AllowedOrigins:   []string{"*"},
		MaxSubscriptions: 100,
		MaxMessageBytes:  4096,
		MaxPublishBytes:  1 << 20,
		MaxPublishEvents: 1000,
		FileTTL:          5 * time.Minute,
		MaxFileBytes:     100 << 20,
		MaxFilesBytes:    1 << 30,
		MaxFiles:         1000,
		SendQueue:        256,
		SendQueueBytes:   4 << 20,
		WriteTimeout:     10 * time.Second,
		PingInterval:     25 * time.Second,
		PongTimeout:      60 * time.Second,
		MaxConnections:   10000,
		AuthTimeout:      10 * time.Second,
		MaxTokenFailures: 5,
		BodyTimeout:      30 * time.Second,
		UploadTimeout:    10 * time.Minute,
		TokenLeeway:      5 * time.Second,
		TokenCacheSize:   10000,
		ShutdownTimeout:  10 * time.Second,
		LogFormat:        "text",
		LogLevel:         slog.LevelInfo,
		MongoDatabase:    "airlay",

		MongoUsers:         "users",
		MongoDatasets:      "datasets",
		MongoDatasetAccess: []string{"owner", "members"},
		MongoCacheTTL:      5 * time.Second,
		MongoCacheSize:     100000,
		MongoQueryTimeout:  3 * time.Second,
		MongoEvents:        "airlay_events",
		MongoEventsTTL:     time.Hour,
		MongoResume:        "airlay_resume_tokens",
		MongoIssueUpdate:   defaultSource(events.IssueUpdate),
		MongoNotification:  defaultSource(events.Notification),
		MongoDatasetUpdate: defaultSource(events.DatasetUpdate),
		MongoUploadFile:    defaultSource(events.UploadFile),
		MongoDownloadFile:  defaultSource(events.DownloadFile),
	}
}

// defaultSource returns the default source of an event type: they fit the
// airlay database (issues, datasets, uploads, exports, notifications).
func defaultSource(t events.Type) MongoSource {
	all := []string{"insert", "update", "replace", "delete"}
	switch t {
	case events.IssueUpdate:
		return MongoSource{Collection: "issues", Operations: all, IDField: "_id", Data: "changed"}
	case events.DatasetUpdate:
		return MongoSource{Collection: "datasets", Operations: all, IDField: "_id", Data: "changed"}
	case events.UploadFile:
		return MongoSource{Collection: "uploads", Operations: []string{"insert", "update", "replace"}, IDField: "dataset",
			FinishedField: "status", FinishedValue: "finished", Data: "fields", DataFields: []string{"_id", "name"}}
	case events.DownloadFile:
		return MongoSource{Collection: "exports", Operations: []string{"insert", "update", "replace"}, IDField: "_id",
			FinishedField: "status", FinishedValue: "finished", Data: "fields", DataFields: []string{"url", "name"}}
	case events.Notification:
		return MongoSource{Collection: "notifications", Operations: []string{"insert"}, IDField: "_id", UserField: "user", Data: "document"}
	}
	return MongoSource{}
}

// MongoSources returns the configured sources by event type, in the order
// of events.Types; a source that is off is left out.
func (c *Config) MongoSources() map[events.Type]MongoSource {
	out := make(map[events.Type]MongoSource)
	for _, t := range events.Types {
		if src := *c.mongoSource(t); src.Collection != "" {
			out[t] = src
		}
	}
	return out
}

func (c *Config) mongoSource(t events.Type) *MongoSource {
	switch t {
	case events.IssueUpdate:
		return &c.MongoIssueUpdate
	case events.Notification:
		return &c.MongoNotification
	case events.DatasetUpdate:
		return &c.MongoDatasetUpdate
	case events.UploadFile:
		return &c.MongoUploadFile
	case events.DownloadFile:
		return &c.MongoDownloadFile
	}
	return nil
}

// ConfigError is a bad setting: it names the file, the section and the key.
type ConfigError struct {
	File, Section, Key string
	Err                error
}

func (e *ConfigError) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("%s: %v", e.File, e.Err)
	}
	return fmt.Sprintf("%s: [%s] %s: %v", e.File, e.Section, e.Key, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// LoadConfig reads path. Only [webSocketEvents] and [mongodb] are read; other
// sections belong to other parts of airlay. An unknown key in those two
// sections is an error (it is most likely a typo).
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = errors.New("no such file")
		} else {
			err = errors.Unwrap(err)
		}
		return nil, &ConfigError{File: path, Err: err}
	}
	return ParseConfig(path, data)
}

// ParseConfig parses the contents of a config file; path names it in errors
// and anchors relative paths.
func ParseConfig(path string, data []byte) (*Config, error) {
	f, err := ini.LoadSources(ini.LoadOptions{SpaceBeforeInlineComment: true}, data)
	if err != nil {
		return nil, &ConfigError{File: path, Err: err}
	}
	c := Defaults()
	c.File = path
	p := parser{file: path, dir: filepath.Dir(path)}

	p.section(f, SectionServer, map[string]func(string) error{
		"address":            p.str(&c.Address),
		"port":               p.port(&c.Port),
		"jwt_public_key":     p.path(&c.JWTPublicKey),
		"jwt_issuer":         p.str(&c.JWTIssuer),
		"publish_token":      p.str(&c.PublishToken),
		"allowed_origins":    p.origins(&c.AllowedOrigins),
		"max_subscriptions":  p.count(&c.MaxSubscriptions, 1),
		"max_message_bytes":  p.size(&c.MaxMessageBytes, 256),
		"max_publish_bytes":  p.size(&c.MaxPublishBytes, 64),
		"max_publish_events": p.count(&c.MaxPublishEvents, 1),
		"files_dir":          p.path(&c.FilesDir),
		"file_ttl":           p.duration(&c.FileTTL, time.Second),
		"max_file_bytes":     p.size(&c.MaxFileBytes, 1),
		"max_files_bytes":    p.size(&c.MaxFilesBytes, 1),
		"max_files":          p.count(&c.MaxFiles, 1),
		"send_queue":         p.count(&c.SendQueue, 1),
		"send_queue_bytes":   p.size(&c.SendQueueBytes, 1024),
		"write_timeout":      p.duration(&c.WriteTimeout, 10*time.Millisecond),
		"ping_interval":      p.duration(&c.PingInterval, 10*time.Millisecond),
		"pong_timeout":       p.duration(&c.PongTimeout, 10*time.Millisecond),
		"max_connections":    p.count(&c.MaxConnections, 1),
		"auth_timeout":       p.duration(&c.AuthTimeout, 10*time.Millisecond),
		"max_token_failures": p.count(&c.MaxTokenFailures, 1),
		"body_timeout":       p.duration(&c.BodyTimeout, 10*time.Millisecond),
		"upload_timeout":     p.duration(&c.UploadTimeout, 10*time.Millisecond),
		"metrics_token":      p.str(&c.MetricsToken),
		"token_leeway":       p.duration(&c.TokenLeeway, 0),
		"token_cache_size":   p.count(&c.TokenCacheSize, 0),
		"shutdown_timeout":   p.duration(&c.ShutdownTimeout, 10*time.Millisecond),
		"log_format":         p.oneOf(&c.LogFormat, "text", "json"),
		"log_level":          p.level(&c.LogLevel),
		"live_page":          p.boolean(&c.LivePage),
	})
	mongoKeys := map[string]func(string) error{
		"uri":                 p.str(&c.MongoURI),
		"database":            p.str(&c.MongoDatabase),
		"instance":            p.str(&c.MongoInstance),
		"users_collection":    p.name(&c.MongoUsers),
		"datasets_collection": p.name(&c.MongoDatasets),
		"dataset_access":      p.list(&c.MongoDatasetAccess),
		"cache_ttl":           p.duration(&c.MongoCacheTTL, 0),
		"cache_size":          p.count(&c.MongoCacheSize, 1),
		"query_timeout":       p.duration(&c.MongoQueryTimeout, 10*time.Millisecond),
		"events_collection":   p.name(&c.MongoEvents),
		"events_ttl":          p.duration(&c.MongoEventsTTL, time.Second),
		"resume_collection":   p.name(&c.MongoResume),
	}
	for _, t := range events.Types {
		mongoKeys[t.String()] = p.source(t, c.mongoSource(t))
	}
	p.section(f, SectionMongo, mongoKeys)
	if p.err != nil {
		return nil, p.err
	}
	if c.JWTPublicKey == "" {
		return nil, &ConfigError{File: path, Section: SectionServer, Key: "jwt_public_key", Err: errors.New("required: the RSA public key (PEM) that verifies access tokens")}
	}
	if c.PongTimeout <= c.PingInterval {
		return nil, &ConfigError{File: path, Section: SectionServer, Key: "pong_timeout", Err: fmt.Errorf("%v must be longer than ping_interval (%v)", c.PongTimeout, c.PingInterval)}
	}
	if c.MaxFilesBytes < c.MaxFileBytes {
		return nil, &ConfigError{File: path, Section: SectionServer, Key: "max_files_bytes", Err: fmt.Errorf("%d bytes is less than max_file_bytes (%d bytes)", c.MaxFilesBytes, c.MaxFileBytes)}
	}
	if c.MongoURI != "" && c.MongoDatabase == "" {
		return nil, &ConfigError{File: path, Section: SectionMongo, Key: "database", Err: errors.New("required when uri is set")}
	}
	for _, t := range events.Types {
		if src := c.mongoSource(t); src.Collection != "" && src.Collection == c.MongoEvents {
			return nil, &ConfigError{File: path, Section: SectionMongo, Key: "events_collection", Err: fmt.Errorf("%q is also the collection of %s", c.MongoEvents, t)}
		}
	}
	if c.MongoURI != "" && c.MaxPublishBytes > MaxMongoPublishBytes {
		return nil, &ConfigError{File: path, Section: SectionServer, Key: "max_publish_bytes", Err: fmt.Errorf("at most %d bytes (8MiB) with MongoDB: one publish is one document, and a document holds at most 16MiB", int64(MaxMongoPublishBytes))}
	}
	return &c, nil
}

// MaxMongoPublishBytes is the largest max_publish_bytes with MongoDB: a
// publish is written as one document (16 MiB at most in MongoDB).
const MaxMongoPublishBytes = 8 << 20

// ListenAddr returns address:port.
func (c *Config) ListenAddr() string {
	return net.JoinHostPort(c.Address, strconv.Itoa(c.Port))
}

// AnyOrigin reports whether allowed_origins is "*".
func (c *Config) AnyOrigin() bool {
	return len(c.AllowedOrigins) == 1 && c.AllowedOrigins[0] == "*"
}

// OriginAllowed reports whether a browser origin may use the server. A
// request without Origin (not from a browser) is allowed.
func (c *Config) OriginAllowed(origin string) bool {
	if origin == "" || c.AnyOrigin() {
		return true
	}
	for _, o := range c.AllowedOrigins {
		if o == origin {
			return true
		}
	}
	return false
}

// parser applies key parsers and keeps the first error.
type parser struct {
	file, dir string
	err       error
}

func (p *parser) section(f *ini.File, name string, keys map[string]func(string) error) {
	sec, err := f.GetSection(name)
	if err != nil {
		return // a missing section leaves every default
	}
	for _, k := range sec.Keys() {
		if p.err != nil {
			return
		}
		set, ok := keys[k.Name()]
		if !ok {
			p.err = &ConfigError{File: p.file, Section: name, Key: k.Name(), Err: errors.New("unknown key")}
			return
		}
		v := strings.TrimSpace(k.Value())
		if strings.HasPrefix(v, ";") || strings.HasPrefix(v, "#") {
			v = "" // "key =   ; comment": ini keeps the comment when no space precedes it
		}
		if err := set(v); err != nil {
			p.err = &ConfigError{File: p.file, Section: name, Key: k.Name(), Err: err}
		}
	}
}

func (p *parser) str(dst *string) func(string) error {
	return func(v string) error { *dst = v; return nil }
}

// name parses a collection name: not empty, no "$", no NUL, not system.*.
func (p *parser) name(dst *string) func(string) error {
	return func(v string) error {
		if err := checkCollection(v); err != nil {
			return err
		}
		*dst = v
		return nil
	}
}

func checkCollection(v string) error {
	if v == "" || strings.ContainsAny(v, "$\x00") || strings.HasPrefix(v, "system.") || strings.HasPrefix(v, ".") {
		return fmt.Errorf("%q is not a collection name", v)
	}
	return nil
}

// list parses a comma-separated list of field names (at least one).
func (p *parser) list(dst *[]string) func(string) error {
	return func(v string) error {
		out, err := fieldList(v)
		if err != nil {
			return err
		}
		*dst = out
		return nil
	}
}

func fieldList(v string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.HasPrefix(f, "$") || strings.HasPrefix(f, ".") || strings.HasSuffix(f, ".") || strings.Contains(f, "..") || strings.ContainsAny(f, " \x00") {
			return nil, fmt.Errorf("%q is not a field name", f)
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		return nil, errors.New("empty: list at least one field")
	}
	return out, nil
}

// source parses one event source line: name=value pairs over the type's
// default, or "off".
func (p *parser) source(t events.Type, dst *MongoSource) func(string) error {
	return func(v string) error {
		if v == "off" {
			*dst = MongoSource{}
			return nil
		}
		src := defaultSource(t)
		for _, pair := range strings.Fields(v) {
			name, val, ok := strings.Cut(pair, "=")
			if !ok || val == "" {
				return fmt.Errorf("%q is not name=value (names: collection, operations, id, user, finished, data; or the whole value off)", pair)
			}
			switch name {
			case "collection":
				if err := checkCollection(val); err != nil {
					return err
				}
				src.Collection = val
			case "operations":
				var ops []string
				for _, op := range strings.Split(val, ",") {
					if !slices.Contains(MongoOperations, op) {
						return fmt.Errorf("operation %q is not one of %s", op, strings.Join(MongoOperations, ", "))
					}
					if !slices.Contains(ops, op) {
						ops = append(ops, op)
					}
				}
				src.Operations = ops
			case "id":
				f, err := fieldList(val)
				if err != nil || len(f) != 1 {
					return fmt.Errorf("id %q is not one field name", val)
				}
				src.IDField = val
			case "user":
				if !t.PerUser() {
					return fmt.Errorf("user is only for %s", events.Notification)
				}
				f, err := fieldList(val)
				if err != nil || len(f) != 1 {
					return fmt.Errorf("user %q is not one field name", val)
				}
				src.UserField = val
			case "finished":
				field, value, ok := strings.Cut(val, ":")
				if f, err := fieldList(field); !ok || err != nil || len(f) != 1 || value == "" {
					return fmt.Errorf("finished %q is not FIELD:VALUE", val)
				}
				src.FinishedField, src.FinishedValue = field, value
			case "data":
				mode, fields, hasFields := strings.Cut(val, ":")
				if !slices.Contains(MongoDataModes, mode) || hasFields != (mode == "fields") {
					return fmt.Errorf("data %q is not changed, none, document or fields:A,B", val)
				}
				src.Data, src.DataFields = mode, nil
				if hasFields {
					f, err := fieldList(fields)
					if err != nil {
						return fmt.Errorf("data %q: %v", val, err)
					}
					src.DataFields = f
				}
			default:
				return fmt.Errorf("unknown name %q (names: collection, operations, id, user, finished, data)", name)
			}
		}
		if slices.Contains(src.Operations, "delete") {
			if src.IDField != "_id" {
				return fmt.Errorf("operation delete needs id=_id: a deleted document is gone, only its _id is known")
			}
			if src.FinishedField != "" {
				return fmt.Errorf("operation delete cannot be combined with finished: a deleted document has no state")
			}
			if t.PerUser() {
				return fmt.Errorf("operation delete is not for %s: the recipient of a deleted document is unknown", t)
			}
		}
		*dst = src
		return nil
	}
}

func (p *parser) path(dst *string) func(string) error {
	return func(v string) error {
		if v != "" && !filepath.IsAbs(v) {
			v = filepath.Join(p.dir, v)
		}
		*dst = v
		return nil
	}
}

func (p *parser) port(dst *int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("%q is not a port (0-65535)", v)
		}
		*dst = n
		return nil
	}
}

func (p *parser) count(dst *int, min int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < min {
			return fmt.Errorf("%q is not a whole number >= %d", v, min)
		}
		*dst = n
		return nil
	}
}

func (p *parser) size(dst *int64, min int64) func(string) error {
	return func(v string) error {
		n, err := ParseSize(v)
		if err != nil {
			return err
		}
		if n < min {
			return fmt.Errorf("%q is below the minimum of %d bytes", v, min)
		}
		*dst = n
		return nil
	}
}

func (p *parser) duration(dst *time.Duration, min time.Duration) func(string) error {
	return func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration (such as 90s or 5m)", v)
		}
		if d < min {
			return fmt.Errorf("%q is below the minimum of %v", v, min)
		}
		*dst = d
		return nil
	}
}

func (p *parser) oneOf(dst *string, allowed ...string) func(string) error {
	return func(v string) error {
		for _, a := range allowed {
			if v == a {
				*dst = v
				return nil
			}
		}
		return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
	}
}

func (p *parser) boolean(dst *bool) func(string) error {
	return func(v string) error {
		switch strings.ToLower(v) {
		case "true", "yes", "on", "1":
			*dst = true
		case "false", "no", "off", "0":
			*dst = false
		default:
			return fmt.Errorf("%q is not true or false", v)
		}
		return nil
	}
}

func (p *parser) level(dst *slog.Level) func(string) error {
	return func(v string) error {
		if err := dst.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("%q is not one of debug, info, warn, error", v)
		}
		return nil
	}
}

func (p *parser) origins(dst *[]string) func(string) error {
	return func(v string) error {
		var out []string
		for _, o := range strings.Split(v, ",") {
			o = strings.TrimSpace(o)
			if o == "" {
				continue
			}
			if o == "*" {
				out = append(out, o)
				continue
			}
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
				return fmt.Errorf("%q is not an origin (scheme://host[:port]) or *", o)
			}
			out = append(out, u.Scheme+"://"+u.Host)
		}
		if len(out) == 0 {
			return errors.New("empty: list origins or use *")
		}
		if len(out) > 1 {
			for _, o := range out {
				if o == "*" {
					return errors.New("* cannot be combined with other origins")
				}
			}
		}
		*dst = out
		return nil
	}
}

// ParseSize parses a size: a number of bytes or a number with KiB, MiB or
// GiB (KB, MB, GB are taken as the same binary units).
func ParseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (bytes, or a number with KiB, MiB, GiB)", v)
	}
	return n * mult, nil
}
