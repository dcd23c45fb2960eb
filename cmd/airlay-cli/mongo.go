package main

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/airlay/airlay/events"
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
func connectMongo(cfg *server.Config, log *slog.Logger) (mg *mongodb.Mongo, mode func(), err error) {
	co := options.Client().ApplyURI(cfg.MongoURI).SetAppName("airlay")
	if err := co.Validate(); err != nil {
		return nil, nil, &server.ConfigError{File: cfg.File, Section: server.SectionMongo, Key: "uri", Err: errors.New("not a MongoDB connection string (mongodb://host[:port]/...)")}
	}
	mc := mongoConfig(cfg)
	mg, err = mongodb.Connect(mc, log, co)
	if err != nil {
		return nil, nil, &server.ConfigError{File: cfg.File, Section: server.SectionMongo, Err: err}
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

// mongoConfig translates the [mongodb] settings.
func mongoConfig(cfg *server.Config) mongodb.Config {
	mc := mongodb.Config{
		Database:      cfg.MongoDatabase,
		Instance:      cfg.MongoInstance,
		Users:         cfg.MongoUsers,
		Datasets:      cfg.MongoDatasets,
		DatasetAccess: cfg.MongoDatasetAccess,
		CacheTTL:      cfg.MongoCacheTTL,
		CacheSize:     cfg.MongoCacheSize,
		QueryTimeout:  cfg.MongoQueryTimeout,
		Events:        cfg.MongoEvents,
		EventsTTL:     cfg.MongoEventsTTL,
		Resume:        cfg.MongoResume,
	}
	if mc.Instance == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "airlay"
		}
		mc.Instance = net.JoinHostPort(host, strconv.Itoa(cfg.Port))
	}
	srcs := cfg.MongoSources()
	for _, t := range events.Types {
		s, ok := srcs[t]
		if !ok {
			continue
		}
		mc.Sources = append(mc.Sources, mongodb.Mapping{
			Type: t, Collection: s.Collection, Operations: s.Operations, IDField: s.IDField, UserField: s.UserField,
			FinishedField: s.FinishedField, FinishedValue: s.FinishedValue, Data: s.Data, DataFields: s.DataFields,
		})
	}
	return mc
}
