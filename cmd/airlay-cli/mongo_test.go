package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/airlay/airlay/events"
	"github.com/airlay/airlay/mongodb"
	"github.com/airlay/airlay/server"
)

// unreachableMongo returns a URI of a loopback port where nothing listens.
func unreachableMongo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "mongodb://" + addr + "/?directConnection=true&serverSelectionTimeoutMS=300&connectTimeoutMS=200"
}

// TestServerMongoUnreachable: with uri set and MongoDB unreachable the
// server starts, says which mode runs, serves what needs no database,
// answers code 7 (and 503) for what does, /readyz 503 with the reason in the
// log, and still shuts down cleanly.
func TestServerMongoUnreachable(t *testing.T) {
	t.Parallel()
	p, err := tryStartServerMongo(t, 0, fmt.Sprintf("uri = %s\ninstance = test-unreachable\nquery_timeout = 500ms\n", unreachableMongo(t)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.stderr.String(), "mode: with MongoDB") {
		t.Errorf("the log does not say the mode:\n%s", p.stderr.String())
	}
	resp, err := http.Get(p.base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz %d, want 503", resp.StatusCode)
	}
	ws := p.dial(t)
	tok := mintToken(t, userID)
	start := time.Now()
	attach := fmt.Sprintf(`{"auth":%q,"action":"attach","event":{"type":"issueUpdate","id":%q}}`, tok, issueID)
	if got, want := roundTrip(t, ws, attach), `{"status":400,"message":"Service unavailable","code":7}`; got != want {
		t.Errorf("attach answered %s, want %s", got, want)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("code 7 took %v (query_timeout 500ms)", d)
	}
	status, answer := p.publish(t, "", `{"type":"issueUpdate","id":"610217e481f6fc54736209e0"}`)
	if status != http.StatusServiceUnavailable || answer["code"] != 7.0 || answer["status"] != 503.0 {
		t.Errorf("publish answered %d %v, want 503 code 7", status, answer)
	}
	waitLog := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.stderr.String(), "not ready") && time.Now().Before(waitLog) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(p.stderr.String(), "not ready") {
		t.Errorf("the log does not say why it is not ready:\n%s", p.stderr.String())
	}
	resp, err = http.Get(p.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "airlay_mongodb_stream_up 0") {
		t.Error("/metrics lacks airlay_mongodb_stream_up 0")
	}
	p.stop(t, os.Interrupt)
	if strings.Contains(p.stderr.String(), "mongodb://") {
		t.Error("the log shows the uri")
	}
}

// TestServerMongoBadURI: a uri that is not a connection string stops
// start-up with one line naming the key.
func TestServerMongoBadURI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	copyFile(t, sharedKeys(t)+"/jwt.pem", dir+"/jwt.pem")
	path := writeConfig(t, dir, "[webSocketEvents]\njwt_public_key = jwt.pem\n[mongodb]\nuri = http://user:secret@db/\n")
	r := cli(t, "", "web_socket", "server", "--config", path)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1: %v", r.code, r)
	}
	assertOneLine(t, r, "[mongodb] uri")
	if strings.Contains(r.stderr, "secret") {
		t.Errorf("the error shows the password: %s", r.stderr)
	}
}

// TestMongoConfigDefaults: the defaults of config.ini reach the mongodb
// package as documented, and what spans both sections is checked.
func TestMongoConfigDefaults(t *testing.T) {
	cfg, err := server.ParseConfig("c.ini", []byte("[webSocketEvents]\njwt_public_key = jwt.pem\nport = 8081\n"))
	if err != nil {
		t.Fatal(err)
	}
	mc, err := mongoConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if host, _ := os.Hostname(); mc.Instance != host+":8081" {
		t.Errorf("instance %q, want hostname:port", mc.Instance)
	}
	want := map[events.Type]string{
		events.IssueUpdate:   "issues [insert update replace delete] _id  : changed []",
		events.Notification:  "notifications [insert] _id user : document []",
		events.DatasetUpdate: "datasets [insert update replace delete] _id  : changed []",
		events.UploadFile:    "uploads [insert update replace] dataset  status:finished fields [_id name]",
		events.DownloadFile:  "exports [insert update replace] _id  status:finished fields [url name]",
	}
	if len(mc.Sources) != len(want) {
		t.Fatalf("%d sources", len(mc.Sources))
	}
	for _, m := range mc.Sources {
		got := fmt.Sprintf("%s %v %s %s %s:%s %s %v", m.Collection, m.Operations, m.IDField, m.UserField, m.FinishedField, m.FinishedValue, m.Data, m.DataFields)
		if got != want[m.Type] {
			t.Errorf("%s: %s, want %s", m.Type, got, want[m.Type])
		}
	}
	if mc.Users != "users" || mc.Datasets != "datasets" || strings.Join(mc.DatasetAccess, ",") != "owner,members" || mc.Events != "airlay_events" || mc.Resume != "airlay_resume_tokens" {
		t.Errorf("collections %+v", mc)
	}
	if mc.IdempotencyWindow != 10*time.Minute {
		t.Errorf("idempotency window %v", mc.IdempotencyWindow)
	}
	var _ mongodb.Config = mc

	// Checks across the two sections, with uri set.
	for _, tc := range []struct{ text, section, key string }{
		{"[webSocketEvents]\njwt_public_key = jwt.pem\nmax_publish_bytes = 9MiB\n[mongodb]\nuri = mongodb://db/\n", server.SectionServer, "max_publish_bytes"},
		{"[webSocketEvents]\njwt_public_key = jwt.pem\nidempotency_window = 2h\n[mongodb]\nuri = mongodb://db/\n", server.SectionMongo, "events_ttl"},
	} {
		cfg, err := server.ParseConfig("c.ini", []byte(tc.text))
		if err != nil {
			t.Fatal(err)
		}
		_, err = mongoConfig(cfg)
		var ce *server.ConfigError
		if !errors.As(err, &ce) || ce.Section != tc.section || ce.Key != tc.key || strings.ContainsAny(err.Error(), "\n") {
			t.Errorf("%q: %v, want an error naming [%s] %s", tc.text, err, tc.section, tc.key)
		}
	}
	// Without uri the limits of MongoDB do not apply.
	cfg, err = server.ParseConfig("c.ini", []byte("[webSocketEvents]\njwt_public_key = jwt.pem\nmax_publish_bytes = 9MiB\nidempotency_window = 2h\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mongoConfig(cfg); err != nil {
		t.Errorf("without uri: %v", err)
	}
}
