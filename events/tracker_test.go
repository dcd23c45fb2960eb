package events

import (
	"testing"
	"time"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A Tracker with other instances expected: Done waits for each report or
// its Forget; Counts adds the reports; an instance forgotten counts in
// neither.
func TestTrackerReports(t *testing.T) {
	tr := NewTracker()
	tr.SetWait(3 * time.Second)
	if tr.Wait() != 3*time.Second {
		t.Fatalf("Wait %v", tr.Wait())
	}
	tr.Expect([]string{"b", "c", "d"})
	tr.add(2)
	tr.seal()
	tr.Delivered()
	tr.Delivered()
	if closed(tr.Done()) {
		t.Fatal("done before the other instances reported")
	}
	if !tr.LocalDone() {
		t.Fatal("this instance's pairs are written")
	}
	if !tr.Report("b", 3, 1) {
		t.Fatal("b's report refused")
	}
	if tr.Report("b", 3, 1) {
		t.Fatal("b's second report taken")
	}
	if tr.Report("x", 5, 0) {
		t.Fatal("a report of an instance not expected taken")
	}
	tr.Forget("d") // dropped out
	if closed(tr.Done()) {
		t.Fatal("done while c has not reported")
	}
	tr.Report("c", 1, 0)
	if !closed(tr.Done()) {
		t.Fatal("not done after every report")
	}
	if d, p := tr.Counts(); d != 2+3+1 || p != 1 {
		t.Fatalf("counts %d/%d, want 6 delivered, 1 pending (d's in neither)", d, p)
	}
	if tr.Reported() != 2 {
		t.Fatalf("Reported %d, want 2", tr.Reported())
	}
}

// Reports before this instance's own writes: Done waits for those too.
func TestTrackerReportsFirst(t *testing.T) {
	tr := NewTracker()
	tr.Expect([]string{"b"})
	tr.Report("b", 1, 0)
	if closed(tr.Done()) {
		t.Fatal("done before this instance's dispatch was sealed")
	}
	tr.add(1)
	tr.seal()
	if closed(tr.Done()) {
		t.Fatal("done with a pair pending")
	}
	tr.Dropped()
	if !closed(tr.Done()) {
		t.Fatal("not done")
	}
	if d, p := tr.Counts(); d != 1 || p != 0 {
		t.Fatalf("counts %d/%d", d, p)
	}
}

// Withdraw: the frame goes in the hub's order, and only when s held k.
func TestHubWithdraw(t *testing.T) {
	h := NewHub()
	k := Key{Type: DatasetUpdate, ID: "620217e481f6fc54736209e0"}
	s := &countSub{}
	h.Subscribe(k, s)
	called := 0
	h.Publish([]Event{{Type: DatasetUpdate, ID: k.ID}}, nil) // pos 1
	var got string
	if !h.Withdraw(k, s, Pos{}, func(pos string) { called++; got = pos }) || called != 1 {
		t.Fatalf("withdraw of a held key: called %d", called)
	}
	if want := FormatPos(h.Epoch(), false, Pos{Hi: 1}); got != want {
		t.Fatalf("pos %q, want the latest given %q", got, want)
	}
	if h.Withdraw(k, s, Pos{}, func(string) { called++ }) || called != 1 {
		t.Fatal("withdraw of a key not held called then")
	}
	s.n = 0
	h.Publish([]Event{{Type: DatasetUpdate, ID: k.ID}}, nil)
	if s.n != 0 {
		t.Fatalf("an event after the withdrawal reached the subscriber")
	}
}

type countSub struct{ n int }

func (c *countSub) Send(*Delivery) { c.n++ }
