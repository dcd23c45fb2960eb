package mongodb

// The Grafana dashboard and the Prometheus alert rules in deploy/ name only
// metrics that a running server exports: a server with MongoDB (the fake)
// is started, used a little (so that labelled series exist), and scraped.
// promtool checks the rules' syntax in CI (.ci/run).

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promVar      = regexp.MustCompile(`\$\w+`)
	promLabels   = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promOffset   = regexp.MustCompile(`\boffset\s+\w+`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true}
)

// promMetricNames returns the metric names a PromQL expression selects:
// identifiers that are not functions, keywords, label names or durations.
func promMetricNames(expr string) []string {
	s := promString.ReplaceAllString(expr, `""`)
	for _, re := range []*regexp.Regexp{promMatchers, promRange, promVar, promLabels, promOffset} {
		s = re.ReplaceAllString(s, " ")
	}
	var names []string
	for _, id := range promIdent.FindAllString(s, -1) {
		if strings.HasSuffix(id, "(") || promKeywords[id] {
			continue
		}
		names = append(names, id)
	}
	return names
}

func TestPromMetricNames(t *testing.T) {
	for expr, want := range map[string]string{
		`histogram_quantile(0.99, sum by (instance, le) (rate(airlay_delivery_latency_seconds_bucket{instance=~"$instance"}[5m]))) > 0.5`: "airlay_delivery_latency_seconds_bucket",
		`sum(airlay_connections) == 0 and sum(airlay_connections offset 1h) > 10`:                                                         "airlay_connections airlay_connections",
		`count(count by (version) (airlay_build_info)) > 1`:                                                                               "airlay_build_info",
		`up{job="airlay"} == 0`:                     "up",
		`label_values(airlay_build_info, instance)`: "airlay_build_info instance",
	} {
		if got := strings.Join(promMetricNames(expr), " "); got != want {
			t.Errorf("promMetricNames(%s) = %q, want %q", expr, got, want)
		}
	}
}

// dashboardExprs returns every "expr" of the dashboard's panels and the
// metric of its label_values variables.
func dashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || (k == "definition" && strings.HasPrefix(s, "label_values("))) {
					if k == "definition" {
						s = strings.TrimSuffix(strings.SplitN(strings.TrimPrefix(s, "label_values("), ",", 2)[0], ")")
					}
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(d)
	return exprs
}

// ruleExprs returns the expr of every rule (one line each).
func ruleExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	alerts := 0
	for _, line := range strings.Split(string(b), "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "- alert:") || strings.HasPrefix(l, "- record:") {
			alerts++
		}
		if e, ok := strings.CutPrefix(l, "expr:"); ok {
			exprs = append(exprs, strings.TrimSpace(e))
		}
	}
	if len(exprs) != alerts || alerts == 0 {
		t.Fatalf("%s: %d rules, %d one-line exprs: keep each expr on one line", path, alerts, len(exprs))
	}
	return exprs
}

func TestDeployQueriesNameExportedMetrics(t *testing.T) {
	f := storeFake(t)
	e := startServer(t, f, testConfig())
	waitFor(t, "/readyz 200", func() bool { s, _ := e.get("/readyz"); return s == 200 })
	// Use it, so that the labelled series exist: an attach (the user cache),
	// a publish, a closed connection, an upload.
	ws := e.dial()
	wsDo(t, ws, wsRequest(e.token(userA.Hex()), "attach", "issueUpdate", issue1.Hex()), 0)
	if status, _ := e.publish("?wait=5", `{"type":"issueUpdate","id":"`+issue1.Hex()+`"}`); status != 200 {
		t.Fatalf("publish: %d", status)
	}
	ws.Close()
	req, _ := http.NewRequest(http.MethodPost, e.base+"/api/files?name=a.txt", strings.NewReader("hello"))
	req.Header.Set("Authorization", "Bearer "+e2ePublishToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("upload: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
	var exported map[string]bool
	waitFor(t, "the closed connection in /metrics", func() bool {
		_, scrape := e.get("/metrics")
		exported = map[string]bool{}
		for _, line := range strings.Split(scrape, "\n") {
			if line == "" || line[0] == '#' {
				continue
			}
			name := line[:strings.IndexAny(line, "{ ")]
			exported[name] = true
		}
		return exported["airlay_connections_closed_total"]
	})

	root := filepath.Join("..", "deploy")
	check := func(file string, exprs []string, allowed map[string]bool) {
		t.Helper()
		seen := map[string]bool{}
		for _, expr := range exprs {
			for _, name := range promMetricNames(expr) {
				if name == "instance" && strings.Contains(expr, "label_values") {
					continue
				}
				seen[name] = true
				if !exported[name] && !allowed[name] {
					t.Errorf("%s: %q names %s, which the server does not export", file, expr, name)
				}
			}
		}
		names := make([]string, 0, len(seen))
		for n := range seen {
			names = append(names, n)
		}
		sort.Strings(names)
		t.Logf("%s: %d queries over %d metrics: %s", file, len(exprs), len(names), strings.Join(names, " "))
		if len(names) < 10 {
			t.Errorf("%s: only %d metrics found in its queries", file, len(names))
		}
	}
	check("grafana/airlay.json", dashboardExprs(t, filepath.Join(root, "grafana", "airlay.json")), nil)
	// up is Prometheus's own series about each scrape.
	check("prometheus/alerts.yml", ruleExprs(t, filepath.Join(root, "prometheus", "alerts.yml")), map[string]bool{"up": true})
}

// The dashboard is one Grafana can import: a data source input, panels
// with unique ids, a place on the grid, and targets with an expr and a
// refId of their own.
func TestDashboardShape(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "deploy", "grafana", "airlay.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Inputs []struct {
			Name     string `json:"name"`
			PluginID string `json:"pluginId"`
		} `json:"__inputs"`
		Title         string `json:"title"`
		UID           string `json:"uid"`
		SchemaVersion int    `json:"schemaVersion"`
		Panels        []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			GridPos struct{ H, W, X, Y int } `json:"gridPos"`
			Targets []struct {
				Expr  string `json:"expr"`
				RefID string `json:"refId"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 30 || len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("dashboard header: title %q uid %q schema %d inputs %+v", d.Title, d.UID, d.SchemaVersion, d.Inputs)
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] || p.Title == "" || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %d %q: duplicate id, no title or off the grid (%+v)", p.ID, p.Title, p.GridPos)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: data source %+v, %d targets", p.Title, p.Datasource, len(p.Targets))
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: target %+v", p.Title, tg)
			}
			refs[tg.RefID] = true
		}
	}
}
