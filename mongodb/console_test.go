package mongodb

// The operator console's data with MongoDB: the change stream's state,
// the changes read and their lag, as GET /api/console reports them.

import (
	"encoding/json"
	"net/http"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
)

func consoleMongoOf(t *testing.T, e *serverEnv) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.base+"/api/console", nil)
	req.Header.Set("Authorization", "Bearer "+e2ePublishToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /api/console: %d %v", resp.StatusCode, err)
	}
	m, ok := a["mongodb"].(map[string]any)
	if !ok {
		t.Fatalf("GET /api/console with MongoDB: mongodb is %v", a["mongodb"])
	}
	return m
}

func TestConsoleWithMongoDB(t *testing.T) {
	f := storeFake(t)
	e := startServer(t, f, testConfig())
	waitFor(t, "/readyz 200", func() bool { s, _ := e.get("/readyz"); return s == 200 })
	m := consoleMongoOf(t, e)
	if m["stream_up"] != true || m["change_events_total"] != 0.0 || m["history_lost_total"] != 0.0 {
		t.Errorf("console at start: %v", m)
	}
	ws := e.dial()
	wsDo(t, ws, wsRequest(e.token(userA.Hex()), "attach", "issueUpdate", issue1.Hex()), 0)
	f.addChanges(
		chUpdate("issues", issue1, bson.D{{Key: "a", Value: 1}}, nil, nil),
		chUpdate("issues", issue1, bson.D{{Key: "b", Value: 1}}, nil, nil),
	)
	wsRead(t, ws)
	wsRead(t, ws)
	waitFor(t, "two changes in the console", func() bool {
		m = consoleMongoOf(t, e)
		lag, _ := m["lag_seconds"].(map[string]any)
		return m["change_events_total"] == 2.0 && lag != nil && lag["count"] == 2.0
	})
	lag := m["lag_seconds"].(map[string]any)
	if b, _ := lag["bounds"].([]any); len(b) == 0 || len(b) != len(lag["counts"].([]any)) {
		t.Errorf("lag histogram %v", lag)
	}

	// The stream down: the console says so.
	f.setDown(true)
	waitFor(t, "stream_up false", func() bool { return consoleMongoOf(t, e)["stream_up"] == false })
	f.setDown(false)
	waitFor(t, "stream_up true again", func() bool { return consoleMongoOf(t, e)["stream_up"] == true })
}
