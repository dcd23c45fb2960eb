package server

// config.ini as PROTOCOL.md "config.ini" describes it: the committed example,
// every key, every error as one line naming file, section and key.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/ini.v1"
)

// cfgExamplePath is the committed example, beside go.mod.
const cfgExamplePath = "../config.ini"

// cfgKey is one ini key: its section, the Config field it sets, a valid
// value other than the default and what that value gives.
type cfgKey struct {
	section, key, field, value string
	want                       any
}

// cfgKeys lists every key of the server's sections. The tests below check it
// against Config (every field has a key), ParseConfig (every key is accepted
// and sets its field) and the committed example (every key is documented).
var cfgKeys = []cfgKey{
	{SectionServer, "address", "Address", "127.0.0.2", "127.0.0.2"},
	{SectionServer, "port", "Port", "9090", 9090},
	{SectionServer, "jwt_public_key", "JWTPublicKey", "/keys/other.pem", "/keys/other.pem"},
	{SectionServer, "jwt_issuer", "JWTIssuer", "dev.airlay.ru", "dev.airlay.ru"},
	{SectionServer, "publish_token", "PublishToken", "s3cret", "s3cret"},
	{SectionServer, "allowed_origins", "AllowedOrigins", "https://a.example, http://localhost:3000", []string{"https://a.example", "http://localhost:3000"}},
	{SectionServer, "max_subscriptions", "MaxSubscriptions", "7", 7},
	{SectionServer, "max_message_bytes", "MaxMessageBytes", "8KiB", int64(8192)},
	{SectionServer, "max_publish_bytes", "MaxPublishBytes", "2MiB", int64(2 << 20)},
	{SectionServer, "max_publish_events", "MaxPublishEvents", "9", 9},
	{SectionServer, "files_dir", "FilesDir", "/var/airlay/files", "/var/airlay/files"},
	{SectionServer, "file_ttl", "FileTTL", "7m", 7 * time.Minute},
	{SectionServer, "max_file_bytes", "MaxFileBytes", "1GiB", int64(1 << 30)},
	{SectionServer, "max_files_bytes", "MaxFilesBytes", "2GiB", int64(2 << 30)},
	{SectionServer, "max_files", "MaxFiles", "50", 50},
	{SectionServer, "send_queue", "SendQueue", "5", 5},
	{SectionServer, "send_queue_bytes", "SendQueueBytes", "2KiB", int64(2048)},
	{SectionServer, "write_timeout", "WriteTimeout", "3s", 3 * time.Second},
	{SectionServer, "ping_interval", "PingInterval", "20s", 20 * time.Second},
	{SectionServer, "pong_timeout", "PongTimeout", "45s", 45 * time.Second},
	{SectionServer, "max_connections", "MaxConnections", "11", 11},
	{SectionServer, "auth_timeout", "AuthTimeout", "3s", 3 * time.Second},
	{SectionServer, "max_token_failures", "MaxTokenFailures", "2", 2},
	{SectionServer, "body_timeout", "BodyTimeout", "4s", 4 * time.Second},
	{SectionServer, "upload_timeout", "UploadTimeout", "5m", 5 * time.Minute},
	{SectionServer, "metrics_token", "MetricsToken", "m-secret", "m-secret"},
	{SectionServer, "token_leeway", "TokenLeeway", "2s", 2 * time.Second},
	{SectionServer, "token_cache_size", "TokenCacheSize", "0", 0},
	{SectionServer, "shutdown_timeout", "ShutdownTimeout", "4s", 4 * time.Second},
	{SectionServer, "log_format", "LogFormat", "json", "json"},
	{SectionServer, "log_level", "LogLevel", "debug", slog.LevelDebug},
	{SectionServer, "live_page", "LivePage", "true", true},
	{SectionServer, "idempotency_window", "IdempotencyWindow", "30s", 30 * time.Second},
	{SectionServer, "idempotency_keys", "IdempotencyKeys", "50", 50},
	{SectionServer, "history_ttl", "HistoryTTL", "90s", 90 * time.Second},
	{SectionServer, "history_bytes", "HistoryBytes", "8MiB", int64(8 << 20)},
	{SectionServer, "max_replay", "MaxReplay", "20", 20},
	{SectionServer, "max_asks_per_user", "MaxAsksPerUser", "3", 3},
	{SectionServer, "max_asks", "MaxAsks", "500", 500},
}

// cfgContractKeys are the keys PROTOCOL.md fixes.
var cfgContractKeys = []string{
	"webSocketEvents.address", "webSocketEvents.port", "webSocketEvents.jwt_public_key", "webSocketEvents.jwt_issuer",
	"webSocketEvents.publish_token", "webSocketEvents.allowed_origins", "webSocketEvents.max_subscriptions",
	"webSocketEvents.max_message_bytes", "webSocketEvents.max_publish_bytes", "webSocketEvents.max_publish_events",
	"webSocketEvents.files_dir", "webSocketEvents.file_ttl", "webSocketEvents.max_file_bytes",
	"mongodb.uri", "mongodb.database",
}

// cfgParse parses text as the config file path.
func cfgParse(path, text string) (*Config, error) {
	return ParseConfig(path, []byte(text))
}

func cfgReadExample(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(cfgExamplePath)
	if err != nil {
		t.Fatalf("the committed example: %v", err)
	}
	return data
}

// Every field of Config has a key in the table, every key of the table is
// accepted and sets its field, and nothing else is accepted.
func TestConfigKeysSetTheirFields(t *testing.T) {
	t.Parallel()
	fields := map[string]bool{}
	for _, k := range cfgKeys {
		if fields[k.field] {
			t.Errorf("field %s twice in the table", k.field)
		}
		fields[k.field] = true
	}
	ct := reflect.TypeFor[Config]()
	for i := 0; i < ct.NumField(); i++ {
		name := ct.Field(i).Name
		if name == "File" || name == "Mongo" || name == "file" {
			continue // not settings: where the settings came from, and the section of package mongodb
		}
		if !fields[name] {
			t.Errorf("Config.%s has no ini key in the test's table (add it, and to config.ini)", name)
		}
		delete(fields, name)
	}
	for f := range fields {
		t.Errorf("the table names Config.%s, which does not exist", f)
	}

	for _, k := range cfgKeys {
		text := "[webSocketEvents]\njwt_public_key = jwt.pem\n"
		if k.key == "jwt_public_key" {
			text = "[webSocketEvents]\n"
		}
		text += "[" + k.section + "]\n" + k.key + " = " + k.value + "\n"
		c, err := cfgParse("/etc/airlay/config.ini", text)
		if err != nil {
			t.Errorf("%s.%s = %s: %v", k.section, k.key, k.value, err)
			continue
		}
		got := reflect.ValueOf(*c).FieldByName(k.field).Interface()
		if !reflect.DeepEqual(got, k.want) {
			t.Errorf("%s.%s = %s: Config.%s = %#v, want %#v", k.section, k.key, k.value, k.field, got, k.want)
		}
		if def := reflect.ValueOf(Defaults()).FieldByName(k.field).Interface(); reflect.DeepEqual(def, k.want) {
			t.Errorf("%s.%s: the test value equals the default; pick another", k.section, k.key)
		}
	}

	for _, text := range []string{
		"[webSocketEvents]\njwt_public_key = jwt.pem\nprot = 8081\n",
	} {
		if _, err := cfgParse("c.ini", text); err == nil {
			t.Errorf("accepted an unknown key:\n%s", text)
		}
	}
}

// The committed config.ini is the documented reference, and also the file a
// user edits: so no test reads its values. Every key it sets in
// [webSocketEvents] is known and carries a comment saying what it is, and
// the file parses; every known key is documented in the README's table
// (which a user does not edit), so a new key cannot go undocumented.
func TestConfigExampleDocumentsEveryKey(t *testing.T) {
	t.Parallel()
	data := cfgReadExample(t)
	f, err := ini.LoadSources(ini.LoadOptions{SpaceBeforeInlineComment: true}, data)
	if err != nil {
		t.Fatal(err)
	}
	inTable := map[string]bool{}
	for _, k := range cfgKeys {
		inTable[k.key] = true
	}
	if s, err := f.GetSection(SectionServer); err == nil {
		for _, k := range s.KeyStrings() {
			if !inTable[k] {
				t.Errorf("config.ini sets [%s] %s, which is not a key of the server", SectionServer, k)
			}
		}
	}
	// Each key line carries a comment that says what it is.
	keyLine := regexp.MustCompile(`^\s*([A-Za-z_]+)\s*=(.*)$`)
	for _, line := range strings.Split(string(data), "\n") {
		m := keyLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		i := strings.Index(m[2], ";")
		if i < 0 || strings.TrimSpace(m[2][i+1:]) == "" {
			t.Errorf("config.ini: %s has no comment saying what it is", m[1])
		}
	}
	if _, err := ParseConfig("/srv/airlay/config.ini", data); err != nil {
		t.Errorf("config.ini does not parse: %v", err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range cfgKeys {
		if !strings.Contains(string(readme), "| `"+k.key+"` |") {
			t.Errorf("README.md's configuration table lacks [%s] %s", k.section, k.key)
		}
	}
}

// The contract's keys exist, and the documented defaults are the defaults:
// a config with only the required key gives Defaults().
func TestConfigContractKeysAndDefaults(t *testing.T) {
	t.Parallel()
	inTable := map[string]bool{}
	for _, k := range cfgKeys {
		inTable[k.section+"."+k.key] = true
	}
	for _, k := range cfgContractKeys {
		if strings.HasPrefix(k, SectionServer+".") && !inTable[k] {
			t.Errorf("the server lacks %s of the contract", k)
		}
	}
	c, err := cfgParse("/srv/airlay/config.ini", "[webSocketEvents]\njwt_public_key = jwt.pem\n")
	if err != nil {
		t.Fatal(err)
	}
	got, want := *c, Defaults()
	if c.JWTPublicKey != "/srv/airlay/jwt.pem" {
		t.Errorf("jwt_public_key %q, want /srv/airlay/jwt.pem (relative to the config file)", c.JWTPublicKey)
	}
	for i := 0; i < reflect.TypeFor[Config]().NumField(); i++ {
		name := reflect.TypeFor[Config]().Field(i).Name
		if name == "File" || name == "JWTPublicKey" || name == "Mongo" || name == "file" {
			continue
		}
		g, w := reflect.ValueOf(got).Field(i).Interface(), reflect.ValueOf(want).Field(i).Interface()
		if !reflect.DeepEqual(g, w) {
			t.Errorf("an absent %s gives %#v, but Defaults() has %#v", name, g, w)
		}
	}
}

// The example loads from disk and a server starts from it, with jwt.pem
// beside it.
func TestConfigExampleLoadsAndServes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.ini")
	if err := os.WriteFile(path, cfgReadExample(t), 0o644); err != nil {
		t.Fatal(err)
	}
	writePublicKey(t, dir)
	c, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.File != path {
		t.Errorf("File %q", c.File)
	}
	// What a user may have changed in the file does not matter here.
	c.JWTPublicKey = filepath.Join(dir, "jwt.pem")
	c.Address, c.Port = "127.0.0.1", 0
	c.AllowedOrigins, c.FilesDir, c.JWTIssuer = []string{"*"}, "", ""
	c.PublishToken = testPublishToken
	e := startEnv(t, c, Options{})
	status, m := e.publish("", eventJSON("issueUpdate", issue1))
	pubExpectAnswer(t, "publish", status, m, 200, 0, "Ok")
}

// cfgExpectError checks err: a *ConfigError naming file, section and key, one
// line that says so, and mentions each of says.
func cfgExpectError(t *testing.T, what string, err error, file, section, key string, says ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error", what)
		return
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("%s: error is not one line: %q", what, msg)
	}
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Errorf("%s: %T %q is not a *ConfigError", what, err, msg)
		return
	}
	if ce.File != file || ce.Section != section || ce.Key != key {
		t.Errorf("%s: ConfigError{File %q, Section %q, Key %q}, want %q %q %q (%q)", what, ce.File, ce.Section, ce.Key, file, section, key, msg)
	}
	for _, s := range append([]string{file, section, key}, says...) {
		if !strings.Contains(msg, s) {
			t.Errorf("%s: %q does not mention %q", what, msg, s)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	const file = "/etc/airlay/config.ini"
	const head = "[webSocketEvents]\njwt_public_key = jwt.pem\n"
	cases := []struct {
		name, text, section, key string
		says                     []string
	}{
		{"jwt_public_key missing", "[webSocketEvents]\nport = 8081\n", SectionServer, "jwt_public_key", nil},
		{"jwt_public_key empty", "[webSocketEvents]\njwt_public_key =\n", SectionServer, "jwt_public_key", nil},
		{"jwt_public_key only a comment", "[webSocketEvents]\njwt_public_key =   ; the key\n", SectionServer, "jwt_public_key", nil},
		{"no section at all", "", SectionServer, "jwt_public_key", []string{"no [webSocketEvents] section"}},
		{"another section name", "[WebSocket]\njwt_public_key = jwt.pem\n", SectionServer, "jwt_public_key", []string{"no [webSocketEvents] section"}},
		{"port abc", head + "port = abc\n", SectionServer, "port", []string{"abc"}},
		{"port 70000", head + "port = 70000\n", SectionServer, "port", []string{"70000"}},
		{"port -1", head + "port = -1\n", SectionServer, "port", []string{"-1"}},
		{"max_subscriptions 0", head + "max_subscriptions = 0\n", SectionServer, "max_subscriptions", []string{"0"}},
		{"max_subscriptions x", head + "max_subscriptions = x\n", SectionServer, "max_subscriptions", []string{"x"}},
		{"max_subscriptions -3", head + "max_subscriptions = -3\n", SectionServer, "max_subscriptions", nil},
		{"max_message_bytes 1XB", head + "max_message_bytes = 1XB\n", SectionServer, "max_message_bytes", []string{"1XB"}},
		{"max_publish_bytes abc", head + "max_publish_bytes = abc\n", SectionServer, "max_publish_bytes", []string{"abc"}},
		{"max_publish_bytes -1", head + "max_publish_bytes = -1\n", SectionServer, "max_publish_bytes", nil},
		{"max_publish_events 0", head + "max_publish_events = 0\n", SectionServer, "max_publish_events", nil},
		{"file_ttl 5", head + "file_ttl = 5\n", SectionServer, "file_ttl", []string{"5"}},
		{"file_ttl -5m", head + "file_ttl = -5m\n", SectionServer, "file_ttl", nil},
		{"write_timeout abc", head + "write_timeout = abc\n", SectionServer, "write_timeout", nil},
		{"ping_interval = pong_timeout", head + "ping_interval = 60s\npong_timeout = 60s\n", SectionServer, "pong_timeout", []string{"ping_interval"}},
		{"ping_interval > pong_timeout", head + "ping_interval = 90s\n", SectionServer, "pong_timeout", []string{"ping_interval"}},
		{"log_format xml", head + "log_format = xml\n", SectionServer, "log_format", []string{"xml"}},
		{"log_level loud", head + "log_level = loud\n", SectionServer, "log_level", []string{"loud"}},
		{"allowed_origins ftp://x", head + "allowed_origins = ftp://x\n", SectionServer, "allowed_origins", []string{"ftp://x"}},
		{"allowed_origins *,https://a.b", head + "allowed_origins = *,https://a.b\n", SectionServer, "allowed_origins", []string{"*"}},
		{"allowed_origins with a path", head + "allowed_origins = https://a.b/app\n", SectionServer, "allowed_origins", nil},
		{"allowed_origins host only", head + "allowed_origins = a.b\n", SectionServer, "allowed_origins", nil},
		{"unknown key", head + "prot = 8081\n", SectionServer, "prot", []string{"unknown"}},
	}
	for _, tc := range cases {
		_, err := cfgParse(file, tc.text)
		cfgExpectError(t, tc.name, err, file, tc.section, tc.key, tc.says...)
	}
	// Through LoadConfig, the message names the file as given.
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.ini")
	if err := os.WriteFile(path, []byte(head+"port = abc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path)
	cfgExpectError(t, "LoadConfig port abc", err, path, SectionServer, "port", "abc")
}

func TestConfigMissingFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "nope", "config.ini")
	_, err := LoadConfig(path)
	if err == nil {
		t.Fatal("no error for a missing file")
	}
	msg := err.Error()
	if !strings.Contains(msg, path) || !strings.Contains(msg, "no such file") || strings.ContainsAny(msg, "\r\n") {
		t.Errorf("missing file: %q, want one line naming %s and saying no such file", msg, path)
	}
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.File != path {
		t.Errorf("missing file: %T %v, want a *ConfigError for the file", err, err)
	}
	// A directory is not a config file either.
	dir := t.TempDir()
	if _, err := LoadConfig(dir); err == nil || !strings.Contains(err.Error(), dir) || strings.ContainsAny(err.Error(), "\r\n") {
		t.Errorf("a directory: %v, want one line naming it", err)
	}
}

func TestConfigValues(t *testing.T) {
	t.Parallel()
	head := "[webSocketEvents]\njwt_public_key = jwt.pem\n"

	// A relative path is relative to the config file's directory.
	for _, tc := range []struct{ file, value, want string }{
		{"/etc/airlay/config.ini", "jwt.pem", "/etc/airlay/jwt.pem"},
		{"/etc/airlay/config.ini", "keys/jwt.pem", "/etc/airlay/keys/jwt.pem"},
		{"/etc/airlay/config.ini", "../jwt.pem", "/etc/jwt.pem"},
		{"/etc/airlay/config.ini", "/opt/jwt.pem", "/opt/jwt.pem"},
		{"conf/config.ini", "jwt.pem", filepath.Join("conf", "jwt.pem")},
		{"config.ini", "jwt.pem", "jwt.pem"},
	} {
		c, err := cfgParse(tc.file, "[webSocketEvents]\njwt_public_key = "+tc.value+"\nfiles_dir = "+tc.value+".d\n")
		if err != nil {
			t.Errorf("%s in %s: %v", tc.value, tc.file, err)
			continue
		}
		if c.JWTPublicKey != tc.want || c.FilesDir != tc.want+".d" {
			t.Errorf("%s in %s: jwt_public_key %q files_dir %q, want %q", tc.value, tc.file, c.JWTPublicKey, c.FilesDir, tc.want)
		}
	}

	// Inline comments: " ; ..." ends a value; "key =   ; comment" is empty.
	c, err := cfgParse("c.ini", head+
		"publish_token = abc ; the secret\n"+
		"jwt_issuer =    ; optional\n"+
		"address = 127.0.0.1 ; listen here\n"+
		"port = 9000 ; port\n"+
		"max_publish_bytes = 2KiB ; size\n"+
		"files_dir =   ; empty\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.PublishToken != "abc" || c.JWTIssuer != "" || c.Address != "127.0.0.1" || c.Port != 9000 || c.MaxPublishBytes != 2048 || c.FilesDir != "" {
		t.Errorf("inline comments: token %q issuer %q address %q port %d max_publish_bytes %d files_dir %q",
			c.PublishToken, c.JWTIssuer, c.Address, c.Port, c.MaxPublishBytes, c.FilesDir)
	}

	// Sizes.
	for _, tc := range []struct {
		value string
		want  int64
	}{{"1MiB", 1 << 20}, {"4096", 4096}, {"2KiB", 2048}, {"1GiB", 1 << 30}} {
		c, err := cfgParse("c.ini", head+"max_publish_bytes = "+tc.value+"\nmax_file_bytes = "+tc.value+"\n")
		if err != nil {
			t.Errorf("size %q: %v", tc.value, err)
			continue
		}
		if c.MaxPublishBytes != tc.want || c.MaxFileBytes != tc.want {
			t.Errorf("size %q: %d %d, want %d", tc.value, c.MaxPublishBytes, c.MaxFileBytes, tc.want)
		}
		if n, err := ParseSize(tc.value); err != nil || n != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v", tc.value, n, err)
		}
	}
	for _, bad := range []string{"", "abc", "1XB", "-1", "MiB"} {
		if n, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", bad, n)
		}
	}

	// Origins are kept as scheme://host[:port].
	c, err = cfgParse("c.ini", head+"allowed_origins = https://a.example , http://localhost:3000,https://b.example/\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"https://a.example", "http://localhost:3000", "https://b.example"}; !reflect.DeepEqual(c.AllowedOrigins, want) {
		t.Errorf("allowed_origins %q, want %q", c.AllowedOrigins, want)
	}

	// Other sections are ignored, even with our key names and bad values.
	c, err = cfgParse("c.ini", "; airlay\n[app]\nport = abc\nsecret = 1\n\n[webSocketEvents]\njwt_public_key = jwt.pem\nport = 9001\n\n[mongodb]\nfoo = x\n\n[frontend]\nallowed_origins = ftp://x\nunknown_key = 1\n")
	if err != nil {
		t.Fatalf("other sections: %v", err)
	}
	if c.Port != 9001 || !c.AnyOrigin() || c.Mongo == nil || c.Mongo.Name() != SectionMongo {
		t.Errorf("other sections changed the settings: port %d origins %v, or [mongodb] not handed over", c.Port, c.AllowedOrigins)
	}

	// Absent keys keep their defaults.
	c, err = cfgParse("c.ini", head)
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.File, want.JWTPublicKey = "c.ini", "jwt.pem"
	got := *c
	got.Mongo, got.file = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", *c, want)
	}
}

// New loads the key: a missing file or a key that is not an RSA public key
// is a *ConfigError naming jwt_public_key.
func TestConfigNewBadKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaPrivDER, err := x509.MarshalPKCS8PrivateKey(privateKey(t))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"ec.pem":      pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecDER}),
		"private.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaPrivDER}),
		"garbage.pem": []byte("not a key\n"),
		"empty.pem":   nil,
		"broken.pem":  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("broken DER")}),
	}
	var names []string
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	names = append(names, "missing.pem", ".")
	for _, name := range names {
		cfg := Defaults()
		cfg.File = filepath.Join(dir, "config.ini")
		cfg.JWTPublicKey = filepath.Join(dir, name)
		srv, err := New(&cfg, Options{})
		if srv != nil {
			t.Errorf("%s: New returned a server", name)
		}
		cfgExpectError(t, name, err, cfg.File, SectionServer, "jwt_public_key")
		if err != nil && !strings.Contains(err.Error(), filepath.Clean(cfg.JWTPublicKey)) {
			t.Errorf("%s: %q does not name the key file", name, err)
		}
	}
	// The good key works.
	cfg := Defaults()
	cfg.File = filepath.Join(dir, "config.ini")
	cfg.JWTPublicKey = writePublicKey(t, dir)
	if _, err := New(&cfg, Options{}); err != nil {
		t.Fatalf("New with an RSA public key: %v", err)
	}
}

// Mistakes in the file that the ini library takes silently or reports
// without a place: each is one line naming the file, the line and the
// section (and the key when there is one).
func TestConfigFileMistakes(t *testing.T) {
	t.Parallel()
	const file = "/etc/airlay/config.ini"
	for _, tc := range []struct {
		name, text, section, key string
		says                     []string
	}{
		{"line without =", "[webSocketEvents]\njwt_public_key = jwt.pem\nport 8081\n", SectionServer, "", []string{":3:", "port 8081", "key = value"}},
		{"line without = in mongodb", "[webSocketEvents]\njwt_public_key = jwt.pem\n[mongodb]\nuri\n", SectionMongo, "", []string{":4:", "uri"}},
		{"line without = in another section", "[app]\nverbose\n[webSocketEvents]\njwt_public_key = jwt.pem\n", "app", "", []string{":2:", "verbose"}},
		{"section in the wrong case", "[websocketEvents]\njwt_public_key = jwt.pem\n", "websocketEvents", "", []string{":1:", "case", "[webSocketEvents]"}},
		{"mongodb in the wrong case", "[webSocketEvents]\njwt_public_key = jwt.pem\n[MongoDB]\nuri = mongodb://x/\n", "MongoDB", "", []string{":3:", "[mongodb]"}},
		{"duplicate key", "[webSocketEvents]\njwt_public_key = jwt.pem\nport = 8081\naddress = 0.0.0.0\nport = 9000\n", SectionServer, "port", []string{":5:", "twice", "line 3"}},
		{"duplicate key across repeated sections", "[webSocketEvents]\nport = 1\n[app]\nx = 1\n[webSocketEvents]\njwt_public_key = jwt.pem\nport = 2\n", SectionServer, "port", []string{"twice"}},
		{"duplicate key in mongodb", "[webSocketEvents]\njwt_public_key = jwt.pem\n[mongodb]\nuri = a\nuri = b\n", SectionMongo, "uri", []string{"twice"}},
		{"unknown key names its line", "[webSocketEvents]\njwt_public_key = jwt.pem\n\nprot = 1\n", SectionServer, "prot", []string{":4:", "unknown"}},
		{"bad value names its line", "[webSocketEvents]\njwt_public_key = jwt.pem\nport = abc\n", SectionServer, "port", []string{":3:", "abc"}},
	} {
		_, err := cfgParse(file, tc.text)
		cfgExpectError(t, tc.name, err, file, tc.section, tc.key, tc.says...)
	}
	// Keys of other programs' sections may repeat: not ours to judge.
	if _, err := cfgParse(file, "[app]\nx = 1\nx = 2\n[webSocketEvents]\njwt_public_key = jwt.pem\n"); err != nil {
		t.Errorf("a repeated key in another section: %v", err)
	}
	// A continuation line is not a line without "=".
	if _, err := cfgParse(file, "[app]\nlist = a, \\\n  b\n[webSocketEvents]\njwt_public_key = jwt.pem\n"); err != nil {
		t.Errorf("a continued value in another section: %v", err)
	}
}

// Every key can be set from the environment, AIRLAY_<SECTION>_<KEY>, over
// the file; an error in such a value names the variable; a variable with a
// section's prefix that names no key is an error.
func TestConfigEnvironment(t *testing.T) {
	t.Parallel()
	const file = "/etc/airlay/config.ini"
	head := "[webSocketEvents]\njwt_public_key = jwt.pem\nport = 8081\n"
	// Each key of the table, set only from the environment.
	for _, k := range cfgKeys {
		if k.section != SectionServer {
			continue
		}
		text := head
		if k.key == "jwt_public_key" || k.key == "port" {
			text = "[webSocketEvents]\n"
		}
		env := []string{"AIRLAY_" + strings.ToUpper(k.section) + "_" + strings.ToUpper(k.key) + "=" + k.value}
		if k.key == "port" {
			env = append(env, "AIRLAY_WEBSOCKETEVENTS_JWT_PUBLIC_KEY=jwt.pem")
		} else if k.key == "jwt_public_key" {
			env = append(env, "AIRLAY_WEBSOCKETEVENTS_PORT=8081")
		}
		c, err := ParseConfigEnv(file, []byte(text), env)
		if err != nil {
			t.Errorf("%v: %v", env, err)
			continue
		}
		if got := reflect.ValueOf(*c).FieldByName(k.field).Interface(); !reflect.DeepEqual(got, k.want) {
			t.Errorf("%v: Config.%s = %#v, want %#v", env, k.field, got, k.want)
		}
		for _, st := range c.Settings() {
			if st.Section == k.section && st.Key == k.key && (st.Origin != "environment" || st.Env != env[0][:strings.IndexByte(env[0], '=')]) {
				t.Errorf("%v: origin %s %s", env, st.Origin, st.Env)
			}
		}
	}
	// The environment wins over the file; the file over the default.
	c, err := ParseConfigEnv(file, []byte(head+"publish_token = from-file\nmax_subscriptions = 7\n"),
		[]string{"AIRLAY_WEBSOCKETEVENTS_PUBLISH_TOKEN=from-env", "PATH=/bin", "AIRLAY_TOKEN=not-a-setting"})
	if err != nil {
		t.Fatal(err)
	}
	if c.PublishToken != "from-env" || c.MaxSubscriptions != 7 {
		t.Errorf("publish_token %q max_subscriptions %d", c.PublishToken, c.MaxSubscriptions)
	}
	origins := map[string]string{}
	for _, st := range c.Settings() {
		origins[st.Key] = string(st.Origin)
		if st.Key == "publish_token" && st.Value() != "****" {
			t.Errorf("publish_token shows as %q, want it masked", st.Value())
		}
		if st.Key == "port" && st.Line != 3 {
			t.Errorf("port from line %d, want 3", st.Line)
		}
	}
	if origins["publish_token"] != "environment" || origins["max_subscriptions"] != "file" || origins["max_connections"] != "default" {
		t.Errorf("origins %v", origins)
	}
	// Errors name the variable.
	for _, tc := range []struct {
		env, key string
		says     []string
	}{
		{"AIRLAY_WEBSOCKETEVENTS_PORT=abc", "port", []string{"AIRLAY_WEBSOCKETEVENTS_PORT", "abc"}},
		{"AIRLAY_WEBSOCKETEVENTS_MAX_PUBLISH_BYTES=lots", "max_publish_bytes", []string{"AIRLAY_WEBSOCKETEVENTS_MAX_PUBLISH_BYTES"}},
		{"AIRLAY_WEBSOCKETEVENTS_PROT=1", "", []string{"AIRLAY_WEBSOCKETEVENTS_PROT", "no key"}},
		{"AIRLAY_WEBSOCKETEVENTS_JWT_PUBLIC_KEY=", "jwt_public_key", []string{"AIRLAY_WEBSOCKETEVENTS_JWT_PUBLIC_KEY", "required"}},
	} {
		_, err := ParseConfigEnv(file, []byte(head), []string{tc.env})
		cfgExpectError(t, tc.env, err, file, SectionServer, tc.key, tc.says...)
	}
	// LoadConfig reads the process environment.
	dir := t.TempDir()
	path := filepath.Join(dir, "config.ini")
	if err := os.WriteFile(path, []byte(head), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := LoadConfig(path); err != nil || c.Port != 8081 {
		t.Errorf("LoadConfig: %v", err)
	}
}

// Sizes: KB, MB and GB are binary units, as documented; checkconfig shows
// the bytes.
func TestConfigSizeUnits(t *testing.T) {
	t.Parallel()
	c, err := cfgParse("c.ini", "[webSocketEvents]\njwt_public_key = jwt.pem\nmax_publish_bytes = 1MB\nmax_message_bytes = 8KB\nmax_file_bytes = 1GB\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxPublishBytes != 1<<20 || c.MaxMessageBytes != 8<<10 || c.MaxFileBytes != 1<<30 {
		t.Errorf("1MB %d, 8KB %d, 1GB %d", c.MaxPublishBytes, c.MaxMessageBytes, c.MaxFileBytes)
	}
	for _, st := range c.Settings() {
		if st.Key == "max_publish_bytes" && st.Value() != "1048576 (1MiB)" {
			t.Errorf("max_publish_bytes shows as %q", st.Value())
		}
	}
}
