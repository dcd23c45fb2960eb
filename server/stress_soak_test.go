package server

// The soak: the stress workload, round after round on one server, for as
// long as -soak says, sampling the process's RSS and goroutines. It fails
// when either trends upward after the warm-up (see soakRule), and writes the
// samples (CSV) and a graph (PNG).

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	soakFor   = flag.Duration("soak", 0, "run TestSoak for this long (e.g. 10m); 0 skips it")
	soakOut   = flag.String("soak.out", "", "the soak graph (PNG), the samples go beside it as .csv; relative to the repository root; default bench/soak.png")
	soakEvery = flag.Duration("soak.every", 5*time.Second, "how often the soak samples RSS and goroutines")
	soakRound = flag.Duration("soak.round", time.Minute, "length of one stress round of the soak")
)

// The trend rule. The run is cut in thirds by time: the first is warm-up
// (heaps, caches, pools and socket buffers reach their working size), the
// second is the baseline, the last is the end. The soak fails when the
// median of the last third exceeds the median of the second by more than
// soakRSSGrowth (RSS) or soakGoroutineGrowth (goroutines), each plus a small
// absolute allowance for quantisation. Medians, because a sample taken while
// a round winds down and its clients are gone, or while a round's records
// are at their largest, is not a trend. The least-squares slope over the
// second and last thirds is reported beside it.
const (
	soakRSSGrowth        = 0.10
	soakRSSAllowanceKiB  = 4 << 10
	soakGoroutineGrowth  = 0.10
	soakGoroutineAllowed = 10
)

type soakSample struct {
	at         time.Duration
	rssKiB     int64
	heapKiB    int64
	goroutines int
	subs       int64
	conns      int
	round      int // 0: no round had started, or all have ended
}

func TestSoak(t *testing.T) {
	if *soakFor <= 0 {
		t.Skip("soak mode is off; run it with: go test -run TestSoak ./server/ -soak 10m -timeout 15m")
	}
	if _, err := soakRSS(); err != nil {
		t.Skipf("soak: cannot read the process's RSS here: %v", err)
	}
	if deadline, ok := t.Deadline(); ok && time.Until(deadline) < *soakFor+2*time.Minute {
		t.Fatalf("soak: -soak %v does not fit in go test's -timeout (it ends in %v); add -timeout %v",
			*soakFor, time.Until(deadline).Round(time.Second), (*soakFor + 5*time.Minute).Round(time.Minute))
	}
	pngPath, csvPath, err := soakPaths(*soakOut)
	if err != nil {
		t.Fatal(err)
	}
	seed := *stressSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("soak: %v in rounds of %v, sampled every %v, seed %d; writing %s and %s", *soakFor, *soakRound, *soakEvery, seed, pngPath, csvPath)

	e := stressEnv(t)
	start := time.Now()
	var (
		mu      sync.Mutex
		samples []soakSample
		round   int
	)
	sample := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		rss, _ := soakRSS()
		e.srv.connsMu.Lock()
		conns := len(e.srv.conns)
		e.srv.connsMu.Unlock()
		mu.Lock()
		samples = append(samples, soakSample{
			at: time.Since(start), rssKiB: rss, heapKiB: int64(ms.HeapInuse >> 10),
			goroutines: runtime.NumGoroutine(), subs: e.srv.hub.Subscriptions(), conns: conns, round: round,
		})
		mu.Unlock()
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	sample()
	go func() {
		defer close(stopped)
		tick := time.NewTicker(*soakEvery)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				sample()
			case <-stop:
				return
			}
		}
	}()
	// Whatever happens, the samples so far are written; the last one is
	// taken once the last round has closed everything.
	var once sync.Once
	finish := func() {
		once.Do(func() {
			close(stop)
			<-stopped
			sample()
		})
	}
	defer func() {
		finish()
		mu.Lock()
		defer mu.Unlock()
		if err := soakWrite(samples, *soakFor, seed, pngPath, csvPath); err != nil {
			t.Errorf("soak: %v", err)
		}
	}()

	var must, pairs, events, conns int
	for r := 0; ; r++ {
		left := *soakFor - time.Since(start)
		if left < 10*time.Second {
			break
		}
		mu.Lock()
		round = r + 1
		mu.Unlock()
		rep := stressRound(t, e, defaultStressParams(seed+uint64(r), min(*soakRound, left)))
		must += rep.must
		pairs += rep.must + rep.mustNot + rep.maybe
		events += rep.events
		conns += rep.conns
		t.Logf("soak: round %d passed: %d events, %d connections, decidable %.2f%%, healthy p99 %v, max %v",
			r+1, rep.events, rep.conns, 100*rep.decidable(), rep.lat.quantile(.99), rep.lat.max)
	}
	mu.Lock()
	t.Logf("soak: %d rounds, %d events, %d connections, %d pairs judged (%d had to arrive, all did)", round, events, conns, pairs, must)
	round = 0 // the last sample: everything closed
	mu.Unlock()
	finish()

	mu.Lock()
	got := slices.Clone(samples)
	mu.Unlock()
	total := time.Since(start)
	rss := soakTrendOf(got, total, func(s soakSample) float64 { return float64(s.rssKiB) })
	gor := soakTrendOf(got, total, func(s soakSample) float64 { return float64(s.goroutines) })
	t.Logf("soak: RSS: %.1f MiB at start, median %.1f MiB after warm-up (second third), median %.1f MiB in the last third, %.1f MiB at the end; slope %+.3f MiB/min",
		float64(got[0].rssKiB)/1024, rss.second/1024, rss.last/1024, float64(got[len(got)-1].rssKiB)/1024, rss.slope/1024)
	t.Logf("soak: goroutines: %d at start, median %.0f after warm-up, median %.0f in the last third, %d at the end; slope %+.3f/min",
		got[0].goroutines, gor.second, gor.last, got[len(got)-1].goroutines, gor.slope)
	if rss.n2 == 0 || rss.n3 == 0 {
		t.Fatalf("soak: too few samples to judge a trend (%d in the second third, %d in the last)", rss.n2, rss.n3)
	}
	if limit := rss.second*(1+soakRSSGrowth) + soakRSSAllowanceKiB; rss.last > limit {
		t.Errorf("soak: RSS trends upward: median %.1f MiB in the last third, over %.1f MiB (the second third's %.1f MiB + %.0f%% + %d MiB)",
			rss.last/1024, limit/1024, rss.second/1024, 100*soakRSSGrowth, soakRSSAllowanceKiB>>10)
	}
	if limit := gor.second*(1+soakGoroutineGrowth) + soakGoroutineAllowed; gor.last > limit {
		t.Errorf("soak: goroutines trend upward: median %.0f in the last third, over %.0f (the second third's %.0f + %.0f%% + %d)",
			gor.last, limit, gor.second, 100*soakGoroutineGrowth, soakGoroutineAllowed)
	}
}

// soakRSS returns the process's resident set in KiB.
func soakRSS() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, errors.New("no VmRSS in /proc/self/status")
}

// soakPaths resolves -soak.out against the repository root.
func soakPaths(out string) (pngPath, csvPath string, err error) {
	if out == "" {
		out = filepath.Join("bench", "soak.png")
	}
	if !filepath.IsAbs(out) {
		dir, err := os.Getwd()
		if err != nil {
			return "", "", err
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				break
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				return "", "", errors.New("soak: no go.mod above the working directory")
			}
			dir = parent
		}
		out = filepath.Join(dir, out)
	}
	return out, strings.TrimSuffix(out, filepath.Ext(out)) + ".csv", nil
}

type soakTrend struct {
	second, last float64 // medians of the second and last thirds
	slope        float64 // per minute, least squares over both
	n2, n3       int
}

func soakTrendOf(samples []soakSample, total time.Duration, value func(soakSample) float64) soakTrend {
	var second, last, xs, ys []float64
	for _, s := range samples {
		switch {
		case s.round == 0: // before the first round or after the last
			continue
		case s.at < total/3:
			continue
		case s.at < 2*total/3:
			second = append(second, value(s))
		default:
			last = append(last, value(s))
		}
		xs = append(xs, s.at.Minutes())
		ys = append(ys, value(s))
	}
	return soakTrend{second: soakMedian(second), last: soakMedian(last), slope: soakSlope(xs, ys), n2: len(second), n3: len(last)}
}

func soakMedian(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func soakSlope(xs, ys []float64) float64 {
	n := float64(len(xs))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / den
}

// soakWrite writes the samples as CSV and draws the graph.
func soakWrite(samples []soakSample, planned time.Duration, seed uint64, pngPath, csvPath string) error {
	if err := os.MkdirAll(filepath.Dir(pngPath), 0o755); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("elapsed_s,rss_mib,heap_inuse_mib,goroutines,subscriptions,connections,round\n")
	for _, s := range samples {
		fmt.Fprintf(&b, "%.1f,%.2f,%.2f,%d,%d,%d,%d\n", s.at.Seconds(), float64(s.rssKiB)/1024, float64(s.heapKiB)/1024, s.goroutines, s.subs, s.conns, s.round)
	}
	if err := os.WriteFile(csvPath, []byte(b.String()), 0o644); err != nil {
		return err
	}
	if len(samples) == 0 {
		return nil
	}
	total := samples[len(samples)-1].at
	ch := plotChart{
		title:  fmt.Sprintf("airlay soak: %v of stress rounds, seed %d", planned.Round(time.Second), seed),
		xlabel: "time (min). shaded: warm-up third. dashed: medians of the 2nd and last thirds",
		vlines: []float64{(total / 3).Minutes(), (2 * total / 3).Minutes()},
	}
	var rss, heap, gor []float64
	for _, s := range samples {
		ch.xs = append(ch.xs, s.at.Minutes())
		rss = append(rss, float64(s.rssKiB)/1024)
		heap = append(heap, float64(s.heapKiB)/1024)
		gor = append(gor, float64(s.goroutines))
	}
	spans := func(v func(soakSample) float64, scale float64) []plotSpan {
		tr := soakTrendOf(samples, total, v)
		return []plotSpan{
			{x0: (total / 3).Minutes(), x1: (2 * total / 3).Minutes(), y: tr.second / scale, color: plotBlack},
			{x0: (2 * total / 3).Minutes(), x1: total.Minutes(), y: tr.last / scale, color: plotBlack},
		}
	}
	ch.panels = []plotPanel{
		{
			title:  "RSS (MiB, blue) and Go heap in use (MiB, green)",
			series: []plotSeries{{ys: heap, color: plotGreen}, {ys: rss, color: plotBlue}},
			spans:  spans(func(s soakSample) float64 { return float64(s.rssKiB) }, 1024),
		},
		{
			title:  "goroutines (red)",
			series: []plotSeries{{ys: gor, color: plotRed}},
			spans:  spans(func(s soakSample) float64 { return float64(s.goroutines) }, 1),
		},
	}
	return ch.writePNG(pngPath)
}
