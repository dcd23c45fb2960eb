package mongodb

// The [mongodb] section: its keys, defaults and errors (one line naming
// file, section and key), read as server hands it over.

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/airlay/airlay/events"
	"github.com/airlay/airlay/internal/iniconf"
	"gopkg.in/ini.v1"
)

func readSection(t *testing.T, text string, environ ...string) (Config, error) {
	t.Helper()
	f, err := iniconf.Parse("/etc/airlay/config.ini", []byte(text), environ, "webSocketEvents", Section)
	if err != nil {
		return Config{}, err
	}
	return ReadConfig(f.Section(Section), "host:8081")
}

// mongoKeys: every key, a value other than the default, and what it gives.
var mongoKeys = []struct {
	key, value, field string
	want              any
}{
	{"uri", "mongodb://db:27017", "URI", "mongodb://db:27017"},
	{"database", "airlay2", "Database", "airlay2"},
	{"instance", "web-1", "Instance", "web-1"},
	{"users_collection", "people", "Users", "people"},
	{"datasets_collection", "sets", "Datasets", "sets"},
	{"dataset_access", "owner, editors.user", "DatasetAccess", []string{"owner", "editors.user"}},
	{"cache_ttl", "0", "CacheTTL", time.Duration(-1)},
	{"cache_size", "50", "CacheSize", 50},
	{"query_timeout", "1500ms", "QueryTimeout", 1500 * time.Millisecond},
	{"events_collection", "events", "Events", "events"},
	{"events_ttl", "10m", "EventsTTL", 10 * time.Minute},
	{"resume_collection", "tokens", "Resume", "tokens"},
}

func TestConfigKeys(t *testing.T) {
	t.Parallel()
	def, err := readSection(t, "")
	if err != nil {
		t.Fatal(err)
	}
	// The defaults, documented in config.ini and the README.
	if def.URI != "" || def.Database != "airlay" || def.Instance != "host:8081" || def.Users != "users" || def.Datasets != "datasets" ||
		!reflect.DeepEqual(def.DatasetAccess, []string{"owner", "members"}) || def.CacheTTL != 5*time.Second || def.CacheSize != 100000 ||
		def.QueryTimeout != 3*time.Second || def.Events != "airlay_events" || def.EventsTTL != time.Hour || def.Resume != "airlay_resume_tokens" {
		t.Errorf("defaults %+v", def)
	}
	if !reflect.DeepEqual(def.Sources, defaultMappings()) {
		t.Errorf("default sources\n got %v\nwant %v", def.Sources, defaultMappings())
	}
	for _, k := range mongoKeys {
		for _, how := range []string{"file", "environment"} {
			text, env := "[mongodb]\n"+k.key+" = "+k.value+"\n", []string(nil)
			if how == "environment" {
				text, env = "", []string{iniconf.EnvName(Section, k.key) + "=" + k.value}
			}
			c, err := readSection(t, text, env...)
			if err != nil {
				t.Errorf("%s %s = %s: %v", how, k.key, k.value, err)
				continue
			}
			if got := reflect.ValueOf(c).FieldByName(k.field).Interface(); !reflect.DeepEqual(got, k.want) {
				t.Errorf("%s %s = %s: %s = %#v, want %#v", how, k.key, k.value, k.field, got, k.want)
			}
		}
	}
	// Source lines: pairs over the type's default, or off.
	c, err := readSection(t, "[mongodb]\nissueUpdate = collection=tickets operations=update data=none\nnotification = user=to\ndatasetUpdate = off\n"+
		"uploadFile = finished=done:true data=changed\n", "AIRLAY_MONGODB_DOWNLOADFILE=collection=jobs id=export data=fields:link")
	if err != nil {
		t.Fatal(err)
	}
	want := []Mapping{
		{Type: events.IssueUpdate, Collection: "tickets", Operations: []string{"update"}, IDField: "_id", Data: "none"},
		{Type: events.Notification, Collection: "notifications", Operations: []string{"insert"}, IDField: "_id", UserField: "to", Data: "document"},
		{Type: events.UploadFile, Collection: "uploads", Operations: []string{"insert", "update", "replace"}, IDField: "dataset", FinishedField: "done", FinishedValue: "true", Data: "changed"},
		{Type: events.DownloadFile, Collection: "jobs", Operations: []string{"insert", "update", "replace"}, IDField: "export", FinishedField: "status", FinishedValue: "finished", Data: "fields", DataFields: []string{"link"}},
	}
	if !reflect.DeepEqual(c.Sources, want) {
		t.Errorf("sources\n got %+v\nwant %+v", c.Sources, want)
	}
	// A source line written back reads as the same source.
	for _, m := range defaultMappings() {
		back, err := ParseSource(m.Type, m.String())
		if err != nil || !reflect.DeepEqual(back, m) {
			t.Errorf("%s: %q reads back as %+v, %v", m.Type, m.String(), back, err)
		}
	}
}

// The committed config.ini: every key it sets in [mongodb] is known (values
// are the user's business); every key is in the README's table.
func TestConfigExampleKeys(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../config.ini")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ini.LoadSources(ini.LoadOptions{SpaceBeforeInlineComment: true}, data)
	if err != nil {
		t.Fatal(err)
	}
	var c Config
	known := map[string]bool{}
	for _, k := range c.keys() {
		known[k.Name] = true
	}
	if s, err := f.GetSection(Section); err == nil {
		for _, k := range s.KeyStrings() {
			if !known[k] {
				t.Errorf("config.ini sets [mongodb] %s, which is not a key", k)
			}
		}
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for k := range known {
		if !strings.Contains(string(readme), "`"+k+"`") {
			t.Errorf("README.md does not document [mongodb] %s", k)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, text, key string
		says            []string
	}{
		{"unknown key", "[mongodb]\nurl = mongodb://x\n", "url", []string{"unknown"}},
		{"cache_ttl abc", "[mongodb]\ncache_ttl = abc\n", "cache_ttl", []string{"abc"}},
		{"cache_size 0", "[mongodb]\ncache_size = 0\n", "cache_size", nil},
		{"users_collection empty", "[mongodb]\nusers_collection =\n", "users_collection", nil},
		{"events_collection with $", "[mongodb]\nevents_collection = a$b\n", "events_collection", []string{"a$b"}},
		{"dataset_access empty", "[mongodb]\ndataset_access = ,\n", "dataset_access", nil},
		{"dataset_access operator", "[mongodb]\ndataset_access = $where\n", "dataset_access", []string{"$where"}},
		{"events_collection is a source", "[mongodb]\nevents_collection = issues\n", "events_collection", []string{"issueUpdate"}},
		{"events_ttl too short", "[mongodb]\nevents_ttl = 0s\n", "events_ttl", nil},
		{"source: not a pair", "[mongodb]\nissueUpdate = issues\n", "issueUpdate", []string{"name=value"}},
		{"source: unknown name", "[mongodb]\nissueUpdate = coll=issues\n", "issueUpdate", []string{"coll"}},
		{"source: unknown operation", "[mongodb]\nissueUpdate = operations=insert,upsert\n", "issueUpdate", []string{"upsert"}},
		{"source: bad data", "[mongodb]\ndatasetUpdate = data=all\n", "datasetUpdate", []string{"all"}},
		{"source: fields without fields", "[mongodb]\ndatasetUpdate = data=fields\n", "datasetUpdate", nil},
		{"source: finished without value", "[mongodb]\nuploadFile = finished=status\n", "uploadFile", []string{"FIELD:VALUE"}},
		{"source: user on another type", "[mongodb]\nissueUpdate = user=owner\n", "issueUpdate", []string{"notification"}},
		{"source: delete with an id field", "[mongodb]\nuploadFile = operations=delete finished=x:y\n", "uploadFile", []string{"delete"}},
		{"source: delete with finished", "[mongodb]\ndownloadFile = operations=insert,delete\n", "downloadFile", []string{"finished"}},
		{"source: notification delete", "[mongodb]\nnotification = operations=delete\n", "notification", []string{"delete"}},
		{"source: bad collection", "[mongodb]\nissueUpdate = collection=system.x\n", "issueUpdate", nil},
		{"environment: bad value", "", "cache_size", []string{"AIRLAY_MONGODB_CACHE_SIZE"}},
		{"environment: unknown variable", "", "", []string{"AIRLAY_MONGODB_URL"}},
	} {
		var env []string
		switch tc.name {
		case "environment: bad value":
			env = []string{"AIRLAY_MONGODB_CACHE_SIZE=many"}
		case "environment: unknown variable":
			env = []string{"AIRLAY_MONGODB_URL=mongodb://x/"}
		}
		_, err := readSection(t, tc.text, env...)
		var ce *iniconf.Error
		if !errors.As(err, &ce) {
			t.Errorf("%s: %v, want an *iniconf.Error", tc.name, err)
			continue
		}
		msg := err.Error()
		if ce.File != "/etc/airlay/config.ini" || ce.Section != Section || ce.Key != tc.key || strings.ContainsAny(msg, "\r\n") {
			t.Errorf("%s: %+v %q", tc.name, ce, msg)
		}
		for _, s := range append([]string{"/etc/airlay/config.ini", "[mongodb]", tc.key}, tc.says...) {
			if !strings.Contains(msg, s) {
				t.Errorf("%s: %q does not mention %q", tc.name, msg, s)
			}
		}
	}
}

// checkconfig's view: the password of the uri is masked.
func TestConfigMasksURI(t *testing.T) {
	t.Parallel()
	f, err := iniconf.Parse("c.ini", []byte("[mongodb]\nuri = mongodb://app:s3cret@db1:27017,db2:27017/airlay?replicaSet=rs0&authSource=admin\n"), nil, Section)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadConfig(f.Section(Section), "h:1"); err != nil {
		t.Fatal(err)
	}
	for _, st := range f.Settings() {
		if st.Key == "uri" {
			if v := st.Value(); strings.Contains(v, "s3cret") || v != "mongodb://app:****@db1:27017,db2:27017/airlay?replicaSet=rs0&authSource=admin" {
				t.Errorf("uri shows as %q", v)
			}
		}
	}
}
