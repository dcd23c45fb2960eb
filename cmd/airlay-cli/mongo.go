package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/airlay/airlay/files"
	"github.com/airlay/airlay/mongodb"
	"github.com/airlay/airlay/server"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// connectMongo builds the MongoDB side from [mongodb] without waiting for
// MongoDB: the server starts and serves even if it is unreachable. A bad
// uri is a config error naming the key (never the uri, which may hold a
// password).
//
// mode is the start-up log line that says so, for after server.New.
func connectMongo(cfg *server.Config, mc mongodb.Config, log *slog.Logger) (mg *mongodb.Mongo, mode func(), err error) {
	co := options.Client().ApplyURI(mc.URI).SetAppName("airlay")
	if err := co.Validate(); err != nil {
		return nil, nil, mongoError(cfg, "uri", errors.New("not a MongoDB connection string (mongodb://host[:port]/...)"))
	}
	mg, err = mongodb.Connect(mc, log, co)
	if err != nil {
		return nil, nil, &server.ConfigError{File: cfg.File, Section: mongodb.Section, Err: err}
	}
	var sources []string
	for _, m := range mc.Sources {
		sources = append(sources, m.Type.String()+"<-"+m.Collection)
	}
	mode = func() {
		log.Info("mode: with MongoDB (change streams, users, dataset access, publishing through the database)",
			"database", mc.Database, "instance", mc.Instance, "sources", strings.Join(sources, ","), "events_collection", mc.Events)
	}
	return mg, mode, nil
}

// mongoConfig reads the [mongodb] section (package mongodb owns its keys)
// and checks what spans both sections. The default instance name is
// hostname:port.
func mongoConfig(cfg *server.Config) (mongodb.Config, error) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "airlay"
	}
	instance := net.JoinHostPort(host, strconv.Itoa(cfg.Port))
	if cfg.Mongo == nil { // a Config made in Go, not read from a file
		return mongodb.Config{Instance: instance, IdempotencyWindow: cfg.IdempotencyWindow}, nil
	}
	mc, err := mongodb.ReadConfig(cfg.Mongo, instance)
	if err != nil {
		return mongodb.Config{}, err
	}
	mc.IdempotencyWindow = cfg.IdempotencyWindow
	if mc.URI == "" {
		return mc, nil
	}
	if cfg.MaxPublishBytes > mongodb.MaxPublishBytes {
		return mongodb.Config{}, &server.ConfigError{File: cfg.File, Section: server.SectionServer, Key: "max_publish_bytes",
			Err: fmt.Errorf("at most %d bytes (8MiB) with MongoDB: one publish is one document, and a document holds at most 16MiB", int64(mongodb.MaxPublishBytes))}
	}
	if mc.EventsTTL < cfg.IdempotencyWindow {
		return mongodb.Config{}, cfg.Mongo.Errorf("events_ttl", "%v is shorter than [%s] idempotency_window (%v): a published event (and its Idempotency-Key) must stay at least as long as the key is remembered",
			mc.EventsTTL, server.SectionServer, cfg.IdempotencyWindow)
	}
	return mc, nil
}

// mongoError is a config error naming a key of [mongodb].
func mongoError(cfg *server.Config, key string, err error) error {
	if cfg.Mongo != nil {
		return cfg.Mongo.Error(key, err)
	}
	return &server.ConfigError{File: cfg.File, Section: mongodb.Section, Key: key, Err: err}
}

// gridFiles opens the temporary download files in GridFS (bucket
// files_bucket of the database), so that a link works on every instance
// sharing it. Like the rest of the MongoDB side it does not wait for
// MongoDB.
func gridFiles(cfg *server.Config, mc mongodb.Config, mg *mongodb.Mongo) func(files.Options) (files.Store, error) {
	return func(o files.Options) (files.Store, error) {
		return files.OpenGridFS(mg.Database(mc.Database), o, files.GridFSOptions{
			Bucket: mc.FilesBucket, Instance: mc.Instance, Timeout: mc.QueryTimeout, UploadTimeout: cfg.UploadTimeout,
		})
	}
}
