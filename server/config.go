package server

import (
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/airlay/airlay/internal/iniconf"
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

	// IdempotencyWindow: idempotency_window, how long an Idempotency-Key
	// of a publish is remembered; default 10m.
	IdempotencyWindow time.Duration
	// IdempotencyKeys: idempotency_keys, keys remembered at once without
	// MongoDB (with MongoDB the events collection holds them); a publish
	// with a new key past it answers 503 code 7 and publishes nothing.
	// Default 100000.
	IdempotencyKeys int

	// HistoryTTL: history_ttl, how long events are kept for resuming an
	// attach with "since"; 0 keeps none. Default 5m.
	HistoryTTL time.Duration
	// HistoryBytes: history_bytes, memory for that history, every event
	// together (frame plus a fixed overhead each); default 64MiB.
	HistoryBytes int64
	// MaxReplay: max_replay, the most events one attach with "since" is
	// sent again; a resume that needs more answers recovered:false (the
	// client reloads the object). Default 1000.
	MaxReplay int
	// MaxAsksPerUser (max_asks_per_user) and MaxAsks (max_asks): the most
	// open requests of POST /api/ask for one user and on this instance;
	// past them the answer is 429.
	MaxAsksPerUser int
	MaxAsks        int

	// Mongo is the [mongodb] section, for its owner (package mongodb,
	// wired by cmd/airlay-cli) to read.
	Mongo *iniconf.Section

	// file is what was read, for Settings.
	file *iniconf.File
}

// Settings returns every key read, with where its value came from
// (`checkconfig`); nil for a Config not read from a file.
func (c *Config) Settings() []*iniconf.Setting {
	if c.file == nil {
		return nil
	}
	return c.file.Settings()
}

// Defaults returns a Config with the default of every setting.
func Defaults() Config {
	return Config{
		Address:           "0.0.0.0",
		Port:              8081,
		AllowedOrigins:    []string{"*"},
		MaxSubscriptions:  100,
		MaxMessageBytes:   4096,
		MaxPublishBytes:   1 << 20,
		MaxPublishEvents:  1000,
		FileTTL:           5 * time.Minute,
		MaxFileBytes:      100 << 20,
		MaxFilesBytes:     1 << 30,
		MaxFiles:          1000,
		SendQueue:         256,
		SendQueueBytes:    4 << 20,
		WriteTimeout:      10 * time.Second,
		PingInterval:      25 * time.Second,
		PongTimeout:       60 * time.Second,
		MaxConnections:    10000,
		AuthTimeout:       10 * time.Second,
		MaxTokenFailures:  5,
		BodyTimeout:       30 * time.Second,
		UploadTimeout:     10 * time.Minute,
		TokenLeeway:       5 * time.Second,
		TokenCacheSize:    10000,
		ShutdownTimeout:   10 * time.Second,
		LogFormat:         "text",
		LogLevel:          slog.LevelInfo,
		IdempotencyWindow: 10 * time.Minute,
		IdempotencyKeys:   100000,
		HistoryTTL:        5 * time.Minute,
		HistoryBytes:      64 << 20,
		MaxReplay:         1000,
		MaxAsksPerUser:    16,
		MaxAsks:           10000,
	}
}

// ConfigError is a bad setting: it names the file, the section and the key
// (and the line or the environment variable it came from).
type ConfigError = iniconf.Error

// LoadConfig reads path, with the environment's AIRLAY_* variables over
// it (see package iniconf). Only [webSocketEvents] and [mongodb] are read;
// other sections belong to other parts of airlay. An unknown key in those
// two sections is an error (it is most likely a typo); [mongodb] is read by
// its owner, from Config.Mongo.
func LoadConfig(path string) (*Config, error) {
	f, err := iniconf.Load(path, os.Environ(), SectionServer, SectionMongo)
	if err != nil {
		return nil, err
	}
	return readConfig(f)
}

// ParseConfig parses the contents of a config file, without the
// environment; path names it in errors and anchors relative paths.
func ParseConfig(path string, data []byte) (*Config, error) {
	return ParseConfigEnv(path, data, nil)
}

// ParseConfigEnv is ParseConfig with environ (os.Environ's form) over the
// file.
func ParseConfigEnv(path string, data []byte, environ []string) (*Config, error) {
	f, err := iniconf.Parse(path, data, environ, SectionServer, SectionMongo)
	if err != nil {
		return nil, err
	}
	return readConfig(f)
}

func readConfig(f *iniconf.File) (*Config, error) {
	c := Defaults()
	c.File, c.file = f.Path, f
	sec := f.Section(SectionServer)
	err := sec.Read([]iniconf.Key{
		{Name: "address", Value: iniconf.String(&c.Address)},
		{Name: "port", Value: iniconf.Port(&c.Port)},
		{Name: "jwt_public_key", Value: iniconf.Path(&c.JWTPublicKey, f.Dir)},
		{Name: "jwt_issuer", Value: iniconf.String(&c.JWTIssuer)},
		{Name: "publish_token", Value: iniconf.String(&c.PublishToken), Mask: iniconf.Secret},
		{Name: "allowed_origins", Value: iniconf.Origins(&c.AllowedOrigins)},
		{Name: "max_subscriptions", Value: iniconf.Int(&c.MaxSubscriptions, 1)},
		{Name: "max_message_bytes", Value: iniconf.Size(&c.MaxMessageBytes, 256)},
		{Name: "max_publish_bytes", Value: iniconf.Size(&c.MaxPublishBytes, 64)},
		{Name: "max_publish_events", Value: iniconf.Int(&c.MaxPublishEvents, 1)},
		{Name: "files_dir", Value: iniconf.Path(&c.FilesDir, f.Dir)},
		{Name: "file_ttl", Value: iniconf.Duration(&c.FileTTL, time.Second)},
		{Name: "max_file_bytes", Value: iniconf.Size(&c.MaxFileBytes, 1)},
		{Name: "max_files_bytes", Value: iniconf.Size(&c.MaxFilesBytes, 1)},
		{Name: "max_files", Value: iniconf.Int(&c.MaxFiles, 1)},
		{Name: "send_queue", Value: iniconf.Int(&c.SendQueue, 1)},
		{Name: "send_queue_bytes", Value: iniconf.Size(&c.SendQueueBytes, 1024)},
		{Name: "write_timeout", Value: iniconf.Duration(&c.WriteTimeout, 10*time.Millisecond)},
		{Name: "ping_interval", Value: iniconf.Duration(&c.PingInterval, 10*time.Millisecond)},
		{Name: "pong_timeout", Value: iniconf.Duration(&c.PongTimeout, 10*time.Millisecond)},
		{Name: "max_connections", Value: iniconf.Int(&c.MaxConnections, 1)},
		{Name: "auth_timeout", Value: iniconf.Duration(&c.AuthTimeout, 10*time.Millisecond)},
		{Name: "max_token_failures", Value: iniconf.Int(&c.MaxTokenFailures, 1)},
		{Name: "body_timeout", Value: iniconf.Duration(&c.BodyTimeout, 10*time.Millisecond)},
		{Name: "upload_timeout", Value: iniconf.Duration(&c.UploadTimeout, 10*time.Millisecond)},
		{Name: "metrics_token", Value: iniconf.String(&c.MetricsToken), Mask: iniconf.Secret},
		{Name: "token_leeway", Value: iniconf.Duration(&c.TokenLeeway, 0)},
		{Name: "token_cache_size", Value: iniconf.Int(&c.TokenCacheSize, 0)},
		{Name: "shutdown_timeout", Value: iniconf.Duration(&c.ShutdownTimeout, 10*time.Millisecond)},
		{Name: "log_format", Value: iniconf.OneOf(&c.LogFormat, "text", "json")},
		{Name: "log_level", Value: iniconf.Level(&c.LogLevel)},
		{Name: "live_page", Value: iniconf.Bool(&c.LivePage)},
		{Name: "idempotency_window", Value: iniconf.Duration(&c.IdempotencyWindow, time.Second)},
		{Name: "idempotency_keys", Value: iniconf.Int(&c.IdempotencyKeys, 1)},
		{Name: "history_ttl", Value: iniconf.Duration(&c.HistoryTTL, 0)},
		{Name: "history_bytes", Value: iniconf.Size(&c.HistoryBytes, 1024)},
		{Name: "max_replay", Value: iniconf.Int(&c.MaxReplay, 1)},
		{Name: "max_asks_per_user", Value: iniconf.Int(&c.MaxAsksPerUser, 1)},
		{Name: "max_asks", Value: iniconf.Int(&c.MaxAsks, 1)},
	})
	if err != nil {
		return nil, err
	}
	c.Mongo = f.Section(SectionMongo)
	if c.JWTPublicKey == "" {
		if !sec.Exists() {
			return nil, sec.Errorf("jwt_public_key", "required: the RSA public key (PEM) that verifies access tokens (the file has no [%s] section)", SectionServer)
		}
		return nil, sec.Errorf("jwt_public_key", "required: the RSA public key (PEM) that verifies access tokens")
	}
	if c.PongTimeout <= c.PingInterval {
		return nil, sec.Errorf("pong_timeout", "%v must be longer than ping_interval (%v)", c.PongTimeout, c.PingInterval)
	}
	if c.MaxFilesBytes < c.MaxFileBytes {
		return nil, sec.Errorf("max_files_bytes", "%d bytes is less than max_file_bytes (%d bytes)", c.MaxFilesBytes, c.MaxFileBytes)
	}
	return &c, nil
}

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

// ParseSize parses a size: a number of bytes or a number with KiB, MiB or
// GiB (KB, MB, GB are read as the same binary units: 1MB = 1048576 bytes).
func ParseSize(v string) (int64, error) { return iniconf.ParseSize(v) }
