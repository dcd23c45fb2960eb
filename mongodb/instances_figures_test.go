package mongodb

// The figures of BENCHMARKS.md "Many instances": MongoDB operations per
// publish with and without ?wait, per heartbeat interval, per revocation,
// and the time from a revoking write to the detached message, counted by
// mongosim. Run with
//
//	go test -count=1 -run TestInstanceFigures -v ./mongodb/ -instances.figures

import (
	"context"
	"encoding/json"
	"flag"
	"sort"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo/options"
)

var instanceFigures = flag.Bool("instances.figures", false, "measure the figures of many instances (BENCHMARKS.md)")

func TestInstanceFigures(t *testing.T) {
	if !*instanceFigures {
		t.Skip("figures: run with -instances.figures")
	}
	p := startSim(t)
	client := p.client()
	seed(t, client, "airlay")
	ctx := context.Background()
	_ = client.Database("airlay").CreateCollection(ctx, "airlay_messages")
	cfg := func(name string) Config {
		c := clusterConfig("airlay", name)
		c.InstanceTTL, c.HeartbeatInterval = 30*time.Second, 5*time.Second
		c.SaveInterval = time.Hour // resume-token saves aside
		return c
	}
	co := options.Client().ApplyURI(p.uri)
	envs := []*serverEnv{startServerWith(t, co, cfg("a")), startServerWith(t, co, cfg("b")), startServerWith(t, co, cfg("c"))}
	for _, e := range envs {
		waitFor(t, "/readyz 200", func() bool { st, _ := e.get("/readyz"); return st == 200 })
	}
	waitLive(t, "a,b,c", envs...)
	a := envs[0]
	tok := a.token(userA.Hex())
	for _, e := range envs[1:] {
		wsDo(t, e.dial(), wsRequest(tok, "attach", "issueUpdate", issue1.Hex()), 0)
	}
	// Readers, so that nothing piles up.
	body := `{"type":"issueUpdate","id":"` + issue1.Hex() + `"}`
	const n = 50
	ops := func(before, after simStats) (cmds map[string]int64) {
		cmds = map[string]int64{}
		for k, v := range after.Commands {
			if d := v - before.Commands[k]; d != 0 {
				cmds[k] = d
			}
		}
		return cmds
	}
	// Heartbeats are counted apart: the window of each measure is well
	// inside one interval (5 s) or they are subtracted by namespace.
	measure := func(query string) {
		before := p.stats()
		var took []time.Duration
		for range n {
			start := time.Now()
			if st, m := a.publish(query, body); st != 200 || query != "" && m["delivered"] != 2.0 {
				t.Fatalf("publish: %d %v", st, m)
			}
			took = append(took, time.Since(start))
		}
		sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
		t.Logf("FIGURE publish%s answered in: median %v, p90 %v, max %v", query, took[n/2].Round(10*time.Microsecond), took[n*9/10].Round(10*time.Microsecond), took[n-1].Round(10*time.Microsecond))
		time.Sleep(300 * time.Millisecond) // the reports of the last one
		after := p.stats()
		hb := after.writes("airlay.airlay_instances", "u") - before.writes("airlay.airlay_instances", "u")
		t.Logf("FIGURE publish%s x%d over 3 instances: events inserts %.2f/publish, message inserts %.2f/publish, finds %.2f/publish (heartbeat writes in the window: %d, not counted); commands %v",
			query, n,
			float64(after.writes("airlay.airlay_events", "i")-before.writes("airlay.airlay_events", "i"))/n,
			float64(after.writes("airlay.airlay_messages", "i")-before.writes("airlay.airlay_messages", "i"))/n,
			float64(sumFinds(after)-sumFinds(before)-(after.Finds["airlay.airlay_instances"]-before.Finds["airlay.airlay_instances"]))/n,
			hb, ops(before, after))
	}
	measure("")
	measure("?wait=5")

	// Presence: one ask, one reply per other live instance.
	{
		before := p.stats()
		var took []time.Duration
		const q = 20
		for range q {
			start := time.Now()
			if st, m := a.presence(userA.Hex(), true); st != 200 || len(m["connections"].([]any)) != 2 {
				t.Fatalf("presence: %d %v", st, m)
			}
			took = append(took, time.Since(start))
		}
		time.Sleep(100 * time.Millisecond)
		after := p.stats()
		sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
		t.Logf("FIGURE presence x%d over 3 instances: message inserts %.2f/query, finds %.2f/query; answered in median %v, max %v", q,
			float64(after.writes("airlay.airlay_messages", "i")-before.writes("airlay.airlay_messages", "i"))/q,
			float64(sumFinds(after)-sumFinds(before)-(after.Finds["airlay.airlay_instances"]-before.Finds["airlay.airlay_instances"]))/q,
			took[q/2].Round(10*time.Microsecond), took[q-1].Round(10*time.Microsecond))
	}

	// Heartbeats: 20 s with heartbeat_interval 5s, three instances.
	before := p.stats()
	time.Sleep(20 * time.Second)
	after := p.stats()
	t.Logf("FIGURE heartbeats in 20 s (interval 5s, 3 instances): writes %d, finds %d: per instance per interval %.2f writes, %.2f finds",
		after.writes("airlay.airlay_instances", "u")-before.writes("airlay.airlay_instances", "u"),
		after.Finds["airlay.airlay_instances"]-before.Finds["airlay.airlay_instances"],
		float64(after.writes("airlay.airlay_instances", "u")-before.writes("airlay.airlay_instances", "u"))/3/4,
		float64(after.Finds["airlay.airlay_instances"]-before.Finds["airlay.airlay_instances"])/3/4)

	// Revocation: B attached to dataset1 on b and c (two connections on
	// b), nobody on a; each round adds B and removes B again.
	ds := client.Database("airlay").Collection("datasets")
	tokB := a.token(userB.Hex())
	var lat []time.Duration
	var finds, writes int64
	const rounds = 20
	for range rounds {
		if _, err := ds.UpdateOne(ctx, bson.D{{Key: "_id", Value: dataset1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "members", Value: bson.A{userB}}}}}); err != nil {
			t.Fatal(err)
		}
		var conns []*websocket.Conn
		for _, e := range []*serverEnv{envs[1], envs[1], envs[2]} {
			ws := e.dial()
			waitFor(t, "attach", func() bool {
				_ = ws.WriteMessage(websocket.TextMessage, []byte(wsRequest(tokB, "attach", "datasetUpdate", dataset1.Hex())))
				return wsRead(t, ws) == answer(0)
			})
			conns = append(conns, ws)
		}
		// The change event of the $set may still come: the loop below
		// skips it (a read that times out would break the connection).
		b0 := p.stats()
		start := time.Now()
		if _, err := ds.UpdateOne(ctx, bson.D{{Key: "_id", Value: dataset1}}, bson.D{{Key: "$pull", Value: bson.D{{Key: "members", Value: userB}}}}); err != nil {
			t.Fatal(err)
		}
		var last time.Duration
		for _, ws := range conns {
			for {
				f := readFrameOrNil(ws)
				if f == nil {
					t.Fatal("no detached message")
				}
				if f["detached"] != nil {
					break
				}
			}
			last = max(last, time.Since(start))
		}
		lat = append(lat, last)
		b1 := p.stats()
		finds += b1.Finds["airlay.datasets"] - b0.Finds["airlay.datasets"]
		writes += sumWrites(b1) - sumWrites(b0) - 1 // the $pull itself
		for _, ws := range conns {
			ws.Close()
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("FIGURE revocation x%d (3 connections on 2 of 3 instances): finds of the dataset %.2f/revocation, writes besides the revoking one %.2f/revocation; revoking write to the last detached message: median %v, max %v",
		rounds, float64(finds)/rounds, float64(writes)/rounds, lat[len(lat)/2].Round(100*time.Microsecond), lat[len(lat)-1].Round(100*time.Microsecond))
}

func readFrameOrNil(ws *websocket.Conn) map[string]any {
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := ws.ReadMessage()
	if err != nil {
		return nil
	}
	var m map[string]any
	_ = json.Unmarshal(msg, &m)
	return m
}

func sumFinds(s simStats) (n int64) {
	for _, v := range s.Finds {
		n += v
	}
	return n
}

func sumWrites(s simStats) (n int64) {
	for _, v := range s.Writes {
		n += v
	}
	return n
}
