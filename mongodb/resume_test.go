package mongodb

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.mongodb.org/mongo-driver/bson"
)

func issueChange(n int) bson.D {
	return chUpdate("issues", issue1, bson.D{{Key: "f" + string(rune('a'+n)), Value: n}}, nil, nil)
}

func issueFrame(n int) string {
	return frame("issueUpdate", issue1, `["f`+string(rune('a'+n))+`"]`)
}

// resumeTokens returns the resumeAfter (or startAfter) of every aggregate
// sent, as positions ("" for none).
func resumePoints(t *testing.T, f *fakeMongo) []string {
	var out []string
	for _, c := range f.commands("aggregate") {
		cs := c.Doc.Lookup("pipeline", "0", "$changeStream").Document()
		s := ""
		for _, k := range []string{"resumeAfter", "startAfter"} {
			if tok, ok := cs.Lookup(k).DocumentOK(); ok {
				pos, _ := tokenPos(tok)
				s = k + " " + string(rune('0'+pos))
			}
		}
		out = append(out, s)
	}
	return out
}

// TestResumableError: a getMore fails with a resumable error (the server's
// label, or a broken connection); the driver kills the cursor and reopens
// after the token of the last change delivered, with the same pipeline and
// options; nothing is skipped or delivered twice.
func TestResumableError(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail fakeFail
	}{
		{"ResumableChangeStreamError label", fakeFail{cmd: "getMore", reply: serverError(189, "PrimarySteppedDown", "ResumableChangeStreamError")}},
		{"network error", fakeFail{cmd: "getMore", err: errors.New("fake: connection reset by peer")}},
		{"CursorNotFound", fakeFail{cmd: "getMore", reply: serverError(43, "CursorNotFound")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeMongo(t)
			e := startSource(t, f, testConfig())
			rec := newRecorder()
			rec.subscribe(e.hub)
			e.waitReady()
			f.addChanges(issueChange(1), issueChange(2))
			rec.waitFrames(t, 2)
			f.fail(tc.fail)
			waitFor(t, "the failure to be used", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.fails) == 0 })
			f.addChanges(issueChange(3))
			got := rec.waitFrames(t, 3)
			time.Sleep(30 * time.Millisecond)
			got = rec.got()
			if want := []string{issueFrame(1), issueFrame(2), issueFrame(3)}; strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("frames\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if got, want := strings.Join(resumePoints(t, f), ","), ",resumeAfter 2"; got != want {
				t.Errorf("aggregates with %q, want %q (the second resumes after change 2)", got, want)
			}
			aggs := f.commands("aggregate")
			if extJSON(t, aggs[1].Doc.Lookup("pipeline", "1")) != extJSON(t, aggs[0].Doc.Lookup("pipeline", "1")) ||
				extJSON(t, aggs[1].Doc.Lookup("pipeline", "2")) != extJSON(t, aggs[0].Doc.Lookup("pipeline", "2")) {
				t.Error("the resumed stream has another pipeline")
			}
			if extJSON(t, aggs[1].Doc.Lookup("pipeline", "3")) != extJSON(t, aggs[0].Doc.Lookup("pipeline", "3")) {
				t.Error("the resumed stream has another last stage")
			}
			if len(f.commands("killCursors")) == 0 {
				t.Error("no killCursors before resuming")
			}
			if v := testutil.ToFloat64(e.mg.metrics.resumes); v != 1 {
				t.Errorf("resumes %v, want 1", v)
			}
		})
	}
}

// TestOutageRetriedWithBackoff: MongoDB goes away for a while: the driver's
// one resume fails too, the source reports not ready and retries with
// growing waits; changes made meanwhile come once MongoDB is back, after the
// token of the last change delivered.
func TestOutageRetriedWithBackoff(t *testing.T) {
	f := newFakeMongo(t)
	cfg := testConfig()
	cfg.RetryMin, cfg.RetryMax = 10*time.Millisecond, 40*time.Millisecond
	e := startSource(t, f, cfg)
	rec := newRecorder()
	rec.subscribe(e.hub)
	e.waitReady()
	f.addChanges(issueChange(1))
	rec.waitFrames(t, 1)
	f.setDown(true)
	waitFor(t, "not ready", func() bool { return e.mg.Ready() != nil })
	if err := e.mg.Ready(); !strings.Contains(err.Error(), "connection") {
		t.Errorf("Ready() = %v, want the reason", err)
	}
	f.addChanges(issueChange(2), issueChange(3))
	start := len(f.commands("aggregate"))
	time.Sleep(200 * time.Millisecond)
	tries := len(f.commands("aggregate")) - start
	if tries < 3 || tries > 12 {
		t.Errorf("%d reopen attempts in 200ms with waits 10ms..40ms", tries)
	}
	f.setDown(false)
	e.waitReady()
	got := rec.waitFrames(t, 3)
	time.Sleep(30 * time.Millisecond)
	got = rec.got()
	if want := []string{issueFrame(1), issueFrame(2), issueFrame(3)}; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("frames\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	pts := resumePoints(t, f)
	if pts[0] != "" || pts[len(pts)-1] != "resumeAfter 1" {
		t.Errorf("aggregates with %q: want the last to resume after change 1", pts)
	}
	if !strings.Contains(e.logs.String(), "change stream down") {
		t.Error("the log does not say the stream is down")
	}
	if v := testutil.ToFloat64(e.mg.metrics.errors.WithLabelValues("watch")); v < 1 {
		t.Errorf("watch errors %v", v)
	}
}

// TestServerStopsAnswering: MongoDB accepts connections but answers nothing
// (a partition, a frozen primary): the source notices within
// MaxAwait+QueryTimeout, reports not ready, and resumes after its token once
// MongoDB answers again.
func TestServerStopsAnswering(t *testing.T) {
	f := newFakeMongo(t)
	cfg := testConfig()
	cfg.QueryTimeout = 150 * time.Millisecond
	e := startSource(t, f, cfg)
	rec := newRecorder()
	rec.subscribe(e.hub)
	e.waitReady()
	f.addChanges(issueChange(1))
	rec.waitFrames(t, 1)
	f.setHang(true)
	start := time.Now()
	waitFor(t, "not ready", func() bool { return e.mg.Ready() != nil })
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("noticed after %v, want about MaxAwait+QueryTimeout (170ms)", d)
	}
	f.addChanges(issueChange(2))
	f.setHang(false)
	e.waitReady()
	got := rec.waitFrames(t, 2)
	if want := []string{issueFrame(1), issueFrame(2)}; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("frames\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if pts := resumePoints(t, f); pts[len(pts)-1] != "resumeAfter 1" {
		t.Errorf("reopened with %q, want resumeAfter 1", pts[len(pts)-1])
	}
}

// TestNonResumableError: an error without the resumable label is not
// resumed by the driver; the source reports it, waits, and reopens after
// its token, so nothing is lost.
func TestNonResumableError(t *testing.T) {
	f := newFakeMongo(t)
	cfg := testConfig()
	cfg.RetryMin = 300 * time.Millisecond
	e := startSource(t, f, cfg)
	rec := newRecorder()
	rec.subscribe(e.hub)
	e.waitReady()
	f.addChanges(issueChange(1))
	rec.waitFrames(t, 1)
	f.fail(fakeFail{cmd: "getMore", reply: serverError(13, "Unauthorized")})
	waitFor(t, "not ready", func() bool { return e.mg.Ready() != nil })
	if err := e.mg.Ready(); !strings.Contains(err.Error(), "Unauthorized") {
		t.Errorf("Ready() = %v, want the server's error", err)
	}
	if n := len(f.commands("aggregate")); n != 1 {
		t.Errorf("%d aggregates right after a non-resumable error, want 1 (the driver must not resume it)", n)
	}
	f.addChanges(issueChange(2))
	e.waitReady()
	rec.waitFrames(t, 2)
	if got := strings.Join(resumePoints(t, f), ","); got != ",resumeAfter 1" {
		t.Errorf("aggregates with %q, want the second after change 1", got)
	}
	if !strings.Contains(e.logs.String(), "Unauthorized") {
		t.Error("the log does not give the error")
	}
}

// TestHistoryLost: the saved token is older than the oplog: the source logs
// it, counts it and starts from now; the same when a running stream loses
// its history.
func TestHistoryLost(t *testing.T) {
	f := newFakeMongo(t)
	f.addChanges(issueChange(1), issueChange(2), issueChange(3))
	f.insertDocs("airlay_resume_tokens", bson.D{{Key: "_id", Value: "test-1"}, {Key: "token", Value: fakeToken(1)}, {Key: "startAfter", Value: false}})
	f.loseHistory() // the oplog starts after change 3
	e := startSource(t, f, testConfig())
	rec := newRecorder()
	rec.subscribe(e.hub)
	e.waitReady()
	if got := strings.Join(resumePoints(t, f), ","); got != "resumeAfter 1," {
		t.Errorf("aggregates with %q, want the saved token, then from now", got)
	}
	if v := testutil.ToFloat64(e.mg.metrics.historyLost); v != 1 {
		t.Errorf("history lost counted %v, want 1", v)
	}
	if !strings.Contains(e.logs.String(), "history lost") {
		t.Error("the log does not say history was lost")
	}
	f.addChanges(issueChange(4))
	rec.waitFrames(t, 1)
	if got := rec.got(); got[0] != issueFrame(4) {
		t.Errorf("first frame %s, want change 4", got[0])
	}

	// The running stream hits it on a getMore.
	f.fail(fakeFail{cmd: "getMore", reply: serverError(codeChangeStreamHistoryLost, "ChangeStreamHistoryLost")})
	waitFor(t, "a second history loss", func() bool { return testutil.ToFloat64(e.mg.metrics.historyLost) == 2 })
	e.waitReady()
	f.addChanges(issueChange(5))
	rec.waitFrames(t, 2)
	if pts := resumePoints(t, f); pts[len(pts)-1] != "" {
		t.Errorf("after history lost, reopened with %q, want from now", pts[len(pts)-1])
	}
}

// TestTokenSavedAndRestart: the token is saved under the instance's name; a
// new instance of the same name resumes after it and delivers the changes
// made while it was down, once.
func TestTokenSavedAndRestart(t *testing.T) {
	f := newFakeMongo(t)
	cfg := testConfig()
	cfg.SaveInterval = time.Hour // only the final save on stop
	e := startSource(t, f, cfg)
	rec := newRecorder()
	rec.subscribe(e.hub)
	e.waitReady()
	f.addChanges(issueChange(1), issueChange(2))
	rec.waitFrames(t, 2)
	e.stop()
	docs := f.docs("airlay_resume_tokens")
	if len(docs) != 1 {
		t.Fatalf("%d token documents, want 1", len(docs))
	}
	if id, _ := docs[0].Lookup("_id").StringValueOK(); id != "test-1" {
		t.Errorf("token saved under %q, want the instance name", id)
	}
	if pos, _ := tokenPos(docs[0].Lookup("token").Document()); pos != 2 {
		t.Errorf("saved token at %d, want 2", pos)
	}
	f.addChanges(issueChange(3), issueChange(4)) // while stopped

	rec2 := newRecorder() // subscribed before the source runs: 3 and 4 come at once
	e2 := startSource(t, f, cfg, rec2)
	got := rec2.waitFrames(t, 2)
	time.Sleep(30 * time.Millisecond)
	got = rec2.got()
	if want := []string{issueFrame(3), issueFrame(4)}; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after restart\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if pts := resumePoints(t, f); pts[len(pts)-1] != "resumeAfter 2" {
		t.Errorf("restart opened with %q, want resumeAfter 2", pts[len(pts)-1])
	}
	if !strings.Contains(e2.logs.String(), "resuming after the saved token") {
		t.Error("the log does not say it resumes")
	}
	// Another instance name starts from now. (e2 stops first: a stream of
	// its reopening meanwhile would be the last aggregate seen.)
	e2.stop()
	cfg.Instance = "test-2"
	e3 := startSource(t, f, cfg)
	e3.waitReady()
	if pts := resumePoints(t, f); pts[len(pts)-1] != "" {
		t.Errorf("a new instance opened with %q, want from now", pts[len(pts)-1])
	}
}

// TestInvalidate: an invalidate event (the database was dropped) ends the
// stream; the source reopens with startAfter its token.
func TestInvalidate(t *testing.T) {
	f := newFakeMongo(t)
	e := startSource(t, f, testConfig())
	rec := newRecorder()
	rec.subscribe(e.hub)
	e.waitReady()
	f.addChanges(issueChange(1), bson.D{{Key: "operationType", Value: "invalidate"}})
	// The fake does not close the cursor on invalidate; a real server does:
	// the next getMore answers cursor id 0.
	waitFor(t, "the invalidate to pass", func() bool { return len(f.commands("getMore")) > 2 })
	f.fail(fakeFail{cmd: "getMore", reply: ok(bson.E{Key: "cursor", Value: bson.D{{Key: "id", Value: int64(0)}, {Key: "ns", Value: "airlay.$cmd.aggregate"}, {Key: "nextBatch", Value: bson.A{}}}})})
	waitFor(t, "a second aggregate", func() bool { return len(f.commands("aggregate")) == 2 })
	if got := strings.Join(resumePoints(t, f), ","); got != ",startAfter 2" {
		t.Errorf("aggregates with %q, want the second startAfter the invalidate", got)
	}
	f.addChanges(issueChange(3))
	rec.waitFrames(t, 2)
}
