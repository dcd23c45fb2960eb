package mongodb

// The [mongodb] section of config.ini: its keys, their grammar and the
// event source lines.

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/airlay/airlay/events"
	"github.com/airlay/airlay/internal/iniconf"
)

// Section is the name of the section in config.ini.
const Section = "mongodb"

// MaxPublishBytes is the largest [webSocketEvents] max_publish_bytes with
// MongoDB: a publish is written as one document, and a document holds at
// most 16 MiB.
const MaxPublishBytes = 8 << 20

// ReadConfig reads the [mongodb] section (file and environment) into a
// Config with every default filled. An error is an *iniconf.Error naming
// the file, the section and the key. An empty instance becomes
// defaultInstance (cmd gives hostname:port).
func ReadConfig(sec *iniconf.Section, defaultInstance string) (Config, error) {
	var c Config
	keys := c.keys()
	if err := sec.Read(keys); err != nil {
		return Config{}, err
	}
	if c.Sources == nil {
		c.Sources = DefaultSources()
	}
	srcs := c.Sources[:0:0]
	for _, m := range c.Sources {
		if m.Collection != "" {
			srcs = append(srcs, m)
		}
	}
	c.Sources = srcs
	if c.Instance == "" {
		c.Instance = defaultInstance
	}
	c.setDefaults()
	if c.URI != "" && c.Database == "" {
		return Config{}, sec.Errorf("database", "required when uri is set")
	}
	if c.HeartbeatInterval > c.InstanceTTL/2 {
		return Config{}, sec.Errorf("heartbeat_interval", "%s is more than half of instance_ttl (%s): a live instance could drop out between two heartbeats", iniconf.FormatDuration(c.HeartbeatInterval), iniconf.FormatDuration(c.InstanceTTL))
	}
	for _, m := range c.Sources {
		if m.Collection == c.Events {
			return Config{}, sec.Errorf("events_collection", "%q is also the collection of %s", c.Events, m.Type)
		}
		// What Connect checks, checked here too, so that the error names
		// the source's line.
		if err := m.validate(); err != nil {
			return Config{}, sec.Error(m.Type.String(), err)
		}
	}
	return c, nil
}

// keys declares the keys of [mongodb] over the fields of c. The source
// lines fill c.Sources in the order of events.Types (a line "off" leaves an
// entry with no collection, dropped by ReadConfig).
func (c *Config) keys() []iniconf.Key {
	keys := []iniconf.Key{
		{Name: "uri", Value: iniconf.String(&c.URI), Mask: iniconf.MaskURI},
		{Name: "database", Value: iniconf.String(&c.Database)},
		{Name: "instance", Value: iniconf.String(&c.Instance)},
		{Name: "users_collection", Value: collection(&c.Users)},
		{Name: "datasets_collection", Value: collection(&c.Datasets)},
		{Name: "dataset_access", Value: fieldsValue(&c.DatasetAccess)},
		{Name: "cache_ttl", Value: iniconf.Func{SetFunc: func(v string) error {
			d, err := iniconf.ParseDuration(v, 0)
			if err != nil {
				return err
			}
			if d == 0 {
				d = -1 // 0 in the file: no cache
			}
			c.CacheTTL = d
			return nil
		}, StringFunc: func() string { return iniconf.FormatDuration(max(c.CacheTTL, 0)) }}},
		{Name: "cache_size", Value: iniconf.Int(&c.CacheSize, 1)},
		{Name: "query_timeout", Value: iniconf.Duration(&c.QueryTimeout, 10*time.Millisecond)},
		{Name: "events_collection", Value: collection(&c.Events)},
		{Name: "events_ttl", Value: iniconf.Duration(&c.EventsTTL, time.Second)},
		{Name: "resume_collection", Value: collection(&c.Resume)},
		{Name: "files_bucket", Value: collection(&c.FilesBucket)},
		{Name: "instances_collection", Value: collection(&c.Instances)},
		{Name: "messages_collection", Value: collection(&c.Messages)},
		{Name: "instance_ttl", Value: iniconf.Duration(&c.InstanceTTL, time.Second)},
		{Name: "heartbeat_interval", Value: iniconf.Duration(&c.HeartbeatInterval, 100*time.Millisecond)},
	}
	for _, t := range events.Types {
		keys = append(keys, iniconf.Key{Name: t.String(), Value: sourceValue(c, t)})
	}
	return keys
}

// collection is a collection name: not empty, no "$" or NUL, not system.*.
func collection(p *string) iniconf.Value {
	return iniconf.Func{SetFunc: func(v string) error {
		if err := checkCollection(v); err != nil {
			return err
		}
		*p = v
		return nil
	}, StringFunc: func() string { return *p }}
}

func checkCollection(v string) error {
	if v == "" || strings.ContainsAny(v, "$\x00") || strings.HasPrefix(v, "system.") || strings.HasPrefix(v, ".") {
		return fmt.Errorf("%q is not a collection name", v)
	}
	return nil
}

// fieldsValue is a comma-separated list of field names (at least one).
func fieldsValue(p *[]string) iniconf.Value {
	return iniconf.Func{SetFunc: func(v string) error {
		out, err := fieldList(v)
		if err != nil {
			return err
		}
		*p = out
		return nil
	}, StringFunc: func() string { return strings.Join(*p, ",") }}
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

// DefaultSources returns the default source of every event type, in the
// order of events.Types: they fit the airlay database (issues, datasets,
// uploads, exports, notifications).
func DefaultSources() []Mapping {
	var out []Mapping
	for _, t := range events.Types {
		if m := DefaultMapping(t); m.Collection != "" {
			out = append(out, m)
		}
	}
	return out
}

// DefaultMapping returns the default source of event type t (no collection
// for a type that has none).
func DefaultMapping(t events.Type) Mapping {
	all := []string{OpInsert, OpUpdate, OpReplace, OpDelete}
	switch t {
	case events.IssueUpdate:
		return Mapping{Type: t, Collection: "issues", Operations: all, IDField: "_id", Data: DataChanged}
	case events.DatasetUpdate:
		return Mapping{Type: t, Collection: "datasets", Operations: all, IDField: "_id", Data: DataChanged}
	case events.UploadFile:
		return Mapping{Type: t, Collection: "uploads", Operations: []string{OpInsert, OpUpdate, OpReplace}, IDField: "dataset",
			FinishedField: "status", FinishedValue: "finished", Data: DataFields, DataFields: []string{"_id", "name"}}
	case events.DownloadFile:
		return Mapping{Type: t, Collection: "exports", Operations: []string{OpInsert, OpUpdate, OpReplace}, IDField: "_id",
			FinishedField: "status", FinishedValue: "finished", Data: DataFields, DataFields: []string{"url", "name"}}
	case events.Notification:
		return Mapping{Type: t, Collection: "notifications", Operations: []string{OpInsert}, IDField: "_id", UserField: "user", Data: DataDocument}
	}
	return Mapping{Type: t}
}

// mapping returns the Mapping of type t in c.Sources (filled with the
// defaults on first use), so that each source line changes its own.
func (c *Config) mapping(t events.Type) *Mapping {
	if c.Sources == nil {
		for _, tt := range events.Types {
			c.Sources = append(c.Sources, DefaultMapping(tt))
		}
	}
	for i := range c.Sources {
		if c.Sources[i].Type == t {
			return &c.Sources[i]
		}
	}
	c.Sources = append(c.Sources, DefaultMapping(t))
	return &c.Sources[len(c.Sources)-1]
}

// sourceValue is one event source line: name=value pairs over the type's
// default, or "off".
func sourceValue(c *Config, t events.Type) iniconf.Value {
	return iniconf.Func{SetFunc: func(v string) error {
		m, err := ParseSource(t, v)
		if err != nil {
			return err
		}
		*c.mapping(t) = m
		return nil
	}, StringFunc: func() string {
		for _, m := range c.Sources {
			if m.Type == t && m.Collection != "" {
				return m.String()
			}
		}
		return "off"
	}}
}

// ParseSource parses an event source line of type t: name=value pairs
// (collection, operations, id, user, finished, data) over the type's
// default, or "off" (a Mapping with no collection).
func ParseSource(t events.Type, v string) (Mapping, error) {
	if v == "off" {
		return Mapping{Type: t}, nil
	}
	src := DefaultMapping(t)
	if src.Collection == "" {
		return Mapping{}, fmt.Errorf("%s has no MongoDB source", t)
	}
	ops := []string{OpInsert, OpUpdate, OpReplace, OpDelete}
	for _, pair := range strings.Fields(v) {
		name, val, ok := strings.Cut(pair, "=")
		if !ok || val == "" {
			return Mapping{}, fmt.Errorf("%q is not name=value (names: collection, operations, id, user, finished, data; or the whole value off)", pair)
		}
		switch name {
		case "collection":
			if err := checkCollection(val); err != nil {
				return Mapping{}, err
			}
			src.Collection = val
		case "operations":
			var list []string
			for _, op := range strings.Split(val, ",") {
				if !slices.Contains(ops, op) {
					return Mapping{}, fmt.Errorf("operation %q is not one of %s", op, strings.Join(ops, ", "))
				}
				if !slices.Contains(list, op) {
					list = append(list, op)
				}
			}
			src.Operations = list
		case "id":
			f, err := fieldList(val)
			if err != nil || len(f) != 1 {
				return Mapping{}, fmt.Errorf("id %q is not one field name", val)
			}
			src.IDField = val
		case "user":
			if !t.PerUser() {
				return Mapping{}, fmt.Errorf("user is only for %s", events.Notification)
			}
			f, err := fieldList(val)
			if err != nil || len(f) != 1 {
				return Mapping{}, fmt.Errorf("user %q is not one field name", val)
			}
			src.UserField = val
		case "finished":
			field, value, ok := strings.Cut(val, ":")
			if f, err := fieldList(field); !ok || err != nil || len(f) != 1 || value == "" {
				return Mapping{}, fmt.Errorf("finished %q is not FIELD:VALUE", val)
			}
			src.FinishedField, src.FinishedValue = field, value
		case "data":
			mode, fields, hasFields := strings.Cut(val, ":")
			if !slices.Contains([]string{DataChanged, DataNone, DataDocument, DataFields}, mode) || hasFields != (mode == DataFields) {
				return Mapping{}, fmt.Errorf("data %q is not changed, none, document or fields:A,B", val)
			}
			src.Data, src.DataFields = mode, nil
			if hasFields {
				f, err := fieldList(fields)
				if err != nil {
					return Mapping{}, fmt.Errorf("data %q: %v", val, err)
				}
				src.DataFields = f
			}
		default:
			return Mapping{}, fmt.Errorf("unknown name %q (names: collection, operations, id, user, finished, data)", name)
		}
	}
	if slices.Contains(src.Operations, OpDelete) {
		if src.IDField != "_id" {
			return Mapping{}, errors.New("operation delete needs id=_id: a deleted document is gone, only its _id is known")
		}
		if src.FinishedField != "" {
			return Mapping{}, errors.New("operation delete cannot be combined with finished: a deleted document has no state")
		}
		if t.PerUser() {
			return Mapping{}, fmt.Errorf("operation delete is not for %s: the recipient of a deleted document is unknown", t)
		}
	}
	return src, nil
}

// String writes m as a source line (what ParseSource reads).
func (m Mapping) String() string {
	if m.Collection == "" {
		return "off"
	}
	s := "collection=" + m.Collection + " operations=" + strings.Join(m.Operations, ",") + " id=" + m.IDField
	if m.UserField != "" {
		s += " user=" + m.UserField
	}
	if m.FinishedField != "" {
		s += " finished=" + m.FinishedField + ":" + m.FinishedValue
	}
	s += " data=" + m.Data
	if m.Data == DataFields {
		s += ":" + strings.Join(m.DataFields, ",")
	}
	return s
}
