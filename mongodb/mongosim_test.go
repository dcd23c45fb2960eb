package mongodb

// The faithful harness: mongosim (../shared/tools/mongosim from the
// repository's root, or $MONGOSIM_DIR; $MONGOSIM_BIN for a binary built
// already), a one-node replica-set simulator that derives change events
// from its own oplog as MongoDB does (updatedFields as written, no entry
// for a write that changes nothing, updateLookup at read time, the 16 MB
// event limit, $changeStreamSplitLargeEvent). Each test that needs it gets
// a simulator process of its own, on 127.0.0.1 port 0, stopped at the end.
//
// Without mongosim these tests are skipped, loudly; with
// AIRLAY_REQUIRE_MONGOSIM=1 (CI sets it) they fail instead.
//
// The simulator is a separate module (airlay/tools/mongosim, not
// fetchable from the module proxy), so it is built and run as a program
// rather than imported: the project's go.mod stays free of a replace
// directive that would break every build without that directory.

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/airlay/airlay/internal/mongosim"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// TestMain removes the simulator binary built for the run.
func TestMain(m *testing.M) {
	code := m.Run()
	mongosim.Cleanup()
	os.Exit(code)
}

// simProc is one running simulator, with the fault and stats helpers of
// this package's tests.
type simProc struct {
	t       testing.TB
	uri     string
	control string // http://host:port
}

// startSim starts a simulator for this test (args: extra flags of serve);
// internal/mongosim builds, starts and stops it.
func startSim(t testing.TB, args ...string) *simProc {
	t.Helper()
	p := mongosim.Start(t, args...)
	return &simProc{t: t, uri: p.URI, control: p.Control}
}

// client is a driver client of the simulator, closed at the end.
func (p *simProc) client() *mongo.Client {
	p.t.Helper()
	c, err := mongo.Connect(context.Background(), options.Client().ApplyURI(p.uri))
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
}

// fault adds a fault (see mongosim's README) and returns its id.
func (p *simProc) fault(f map[string]any) int {
	p.t.Helper()
	b, _ := json.Marshal(f)
	resp, err := http.Post(p.control+"/fault", "application/json", strings.NewReader(string(b)))
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		ID    int    `json:"id"`
		Error string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&r)
	if resp.StatusCode != 200 {
		p.t.Fatalf("mongosim fault %s: %d %s", b, resp.StatusCode, r.Error)
	}
	return r.ID
}

func (p *simProc) clearFaults() {
	p.t.Helper()
	req, _ := http.NewRequest("DELETE", p.control+"/fault", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	resp.Body.Close()
}

// simStats is what the tests read of mongosim's counters.
type simStats struct {
	Commands     map[string]int64 `json:"commands"`
	Finds        map[string]int64 `json:"finds"`
	Lookups      map[string]int64 `json:"update_lookups"`
	Writes       map[string]int64 `json:"writes"`
	OplogWrites  int64            `json:"oplog_writes"`
	TooLarge     int64            `json:"too_large_events"`
	SplitEvents  int64            `json:"split_events"`
	ChangeStream int64            `json:"change_streams_opened"`
}

func (p *simProc) stats() simStats {
	p.t.Helper()
	resp, err := http.Get(p.control + "/stats")
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var s simStats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		p.t.Fatal(err)
	}
	return s
}

// writes counts the oplog entries of ns ("db.coll") for operation op (i,
// u, r, d).
func (s simStats) writes(ns, op string) int64 { return s.Writes[ns+" "+op] }

// exec runs a command (extended JSON) in database db, as a client of the
// simulator would, without faults.
func (p *simProc) exec(db, cmd string) {
	p.t.Helper()
	resp, err := http.Post(p.control+"/command?db="+db, "application/json", strings.NewReader(cmd))
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"ok":{"$numberDouble":"1.0"}`) && !strings.Contains(string(body), `"ok":1`) {
		p.t.Fatalf("mongosim command %.200s: %d %s", cmd, resp.StatusCode, body)
	}
}
