package events

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// histHub is a hub with a history on a clock the test moves.
func histHub(ttl time.Duration, bytes int64) (*Hub, *time.Time) {
	h := NewHubWith(HubOptions{History: NewHistory(ttl, bytes)})
	now := time.Unix(1_700_000_000, 0)
	h.now = func() time.Time { return now }
	return h, &now
}

// resume attaches a recorder to k with since and returns recovered and
// the replayed frames (without positions).
func resume(t *testing.T, h *Hub, k Key, since string) (bool, []string) {
	t.Helper()
	r := &recorder{}
	var rec, called bool
	h.Resume(k, r, since, 1000, func(added, recovered bool) { rec, called = recovered, true })
	if !called {
		t.Fatal("Resume did not answer")
	}
	h.Unsubscribe(k, r)
	return rec, r.got()
}

func posOf(h *Hub, i uint64) string { return FormatPos(h.Epoch(), false, Pos{Hi: i}) }

func TestHistoryPerKeyReplay(t *testing.T) {
	h, _ := histHub(time.Minute, 1<<20)
	k1, k2 := Key{IssueUpdate, hex24(1)}, Key{IssueUpdate, hex24(2)}
	for i := range 10 {
		h.Publish([]Event{{Type: IssueUpdate, ID: hex24(1 + i%2), Data: []byte(fmt.Sprintf("[%d]", i))}}, nil)
	}
	// Events 1..10 alternate k1 (odd positions) and k2.
	ok, got := resume(t, h, k1, posOf(h, 5))
	if !ok || fmt.Sprint(got) != fmt.Sprint([]string{frameOf(Event{Type: IssueUpdate, ID: hex24(1), Data: []byte("[6]")}), frameOf(Event{Type: IssueUpdate, ID: hex24(1), Data: []byte("[8]")})}) {
		t.Fatalf("k1 after 5: %v %q", ok, got)
	}
	if ok, got := resume(t, h, k2, posOf(h, 10)); !ok || len(got) != 0 {
		t.Fatalf("k2 after its latest: %v %q", ok, got)
	}
	if ok, got := resume(t, h, k2, posOf(h, 0)); !ok || len(got) != 5 {
		t.Fatalf("k2 from the start: %v, %d events", ok, len(got))
	}
	// A key the history never saw: nothing after since, provably.
	if ok, got := resume(t, h, Key{IssueUpdate, hex24(9)}, posOf(h, 3)); !ok || len(got) != 0 {
		t.Fatalf("unseen key: %v %q", ok, got)
	}
}

func TestHistoryEvictionKeepsProofPerKey(t *testing.T) {
	per := entrySize(Event{Type: IssueUpdate, ID: hex24(1), Data: []byte("[0]")}.frameFor(t))
	h, _ := histHub(time.Minute, 4*per)
	k1, k2 := Key{IssueUpdate, hex24(1)}, Key{IssueUpdate, hex24(2)}
	pub := func(k Key, d int) {
		h.Publish([]Event{{Type: IssueUpdate, ID: k.ID, Data: []byte(fmt.Sprintf("[%d]", d))}}, nil)
	}
	pub(k1, 0) // pos 1
	pub(k2, 0) // 2
	pub(k2, 1) // 3
	pub(k2, 2) // 4
	pub(k1, 1) // 5: evicts pos 1 (k1)
	hist := h.History()
	if hist.Len() != 4 || hist.Bytes() != 4*per {
		t.Fatalf("held %d events, %d bytes; want 4, %d", hist.Len(), hist.Bytes(), 4*per)
	}
	// Since 0: pos 1 (k1) is gone.
	if ok, _ := resume(t, h, k1, posOf(h, 0)); ok {
		t.Fatal("k1 since 0 after its event 1 was evicted: recovered")
	}
	// Since 1: k1's event at 5 is held; nothing of k1 between.
	if ok, got := resume(t, h, k1, posOf(h, 1)); !ok || len(got) != 1 {
		t.Fatalf("k1 since 1: %v %q", ok, got)
	}
	pub(k1, 2) // 6: evicts 2 (k2)
	pub(k1, 3) // 7: evicts 3 (k2)
	// k1 since 1: the newest dropped is 3, but none of k1's events after 1
	// was dropped: still provable through k1's own index.
	if ok, got := resume(t, h, k1, posOf(h, 1)); !ok || len(got) != 3 {
		t.Fatalf("k1 since 1 after k2's evictions: %v, %d events", ok, len(got))
	}
	// k2 since 2: its event 3 is gone.
	if ok, _ := resume(t, h, k2, posOf(h, 2)); ok {
		t.Fatal("k2 since 2 after its event 3 was evicted: recovered")
	}
	// A key first indexed after evictions cannot prove what came before.
	k3 := Key{IssueUpdate, hex24(3)}
	pub(k3, 0) // 8: evicts 4 (k2, its last: k2 leaves the index)
	if ok, _ := resume(t, h, k3, posOf(h, 2)); ok {
		t.Fatal("k3 since 2, indexed when 3 was already dropped: recovered")
	}
	if ok, got := resume(t, h, k3, posOf(h, 4)); !ok || len(got) != 1 {
		t.Fatalf("k3 since 4: %v %q", ok, got)
	}
}

// frameFor is e's frame at a position of the longest form a hub of these
// tests writes.
func (e Event) frameFor(t *testing.T) []byte {
	t.Helper()
	h := NewHub()
	var f []byte
	r := &recorder{onSend: func(d *Delivery) { f = d.Frame }}
	h.Subscribe(e.Key(), r)
	h.Publish([]Event{e}, nil)
	return f
}

func TestHistoryTTL(t *testing.T) {
	h, now := histHub(time.Minute, 1<<20)
	k := Key{IssueUpdate, hex24(1)}
	h.Publish([]Event{{Type: IssueUpdate, ID: k.ID}}, nil) // 1
	*now = now.Add(40 * time.Second)
	h.Publish([]Event{{Type: IssueUpdate, ID: k.ID}}, nil) // 2
	*now = now.Add(30 * time.Second)                       // 1 is 70 s old
	if ok, _ := resume(t, h, k, posOf(h, 0)); ok {
		t.Fatal("since 0 after event 1 expired: recovered")
	}
	if ok, got := resume(t, h, k, posOf(h, 1)); !ok || len(got) != 1 {
		t.Fatalf("since 1: %v %q", ok, got)
	}
	if n := h.History().Len(); n != 1 {
		t.Fatalf("%d events held, want 1", n)
	}
}

func TestHistoryGapAndHuge(t *testing.T) {
	h := NewHubWith(HubOptions{Epoch: "00000000000000aa", Stamped: true, History: NewHistory(time.Minute, 2048)})
	k := Key{IssueUpdate, hex24(1)}
	h.Deliver([]Event{{Type: IssueUpdate, ID: k.ID}, {Type: IssueUpdate, ID: k.ID}}, nil, Stamp{T: 100, I: 1})
	h.Deliver([]Event{{Type: IssueUpdate, ID: k.ID}}, nil, Stamp{T: 100, I: 2})
	at := func(t, i uint32, n uint32) string { return FormatPos(h.Epoch(), true, Stamp{T: t, I: i}.Pos(int(n))) }
	if ok, got := resume(t, h, k, at(100, 1, 0)); !ok || len(got) != 2 {
		t.Fatalf("since 100.1.0: %v %q", ok, got)
	}
	h.Gap(Stamp{T: 100, I: 1})
	if ok, _ := resume(t, h, k, at(100, 1, 1)); ok {
		t.Fatal("since inside the gap: recovered")
	}
	if ok, got := resume(t, h, k, at(100, 2, 0)); !ok || len(got) != 0 {
		t.Fatalf("since after the gap: %v %q", ok, got)
	}
	// Counted positions of the same epoch are another form: false.
	if ok, _ := resume(t, h, k, FormatPos(h.Epoch(), false, Pos{Hi: 5})); ok {
		t.Fatal("a counted position on a stamped hub: recovered")
	}
	// An event larger than the whole history drops everything up to it.
	big := make([]byte, 4096)
	big[0], big[len(big)-1] = '[', ']'
	for i := 1; i < len(big)-1; i++ {
		big[i] = ' '
	}
	h.Deliver([]Event{{Type: IssueUpdate, ID: k.ID, Data: big}}, nil, Stamp{T: 101, I: 1})
	if n := h.History().Len(); n != 0 {
		t.Fatalf("%d held after a huge event", n)
	}
	if ok, _ := resume(t, h, k, at(100, 2, 0)); ok {
		t.Fatal("since before a dropped huge event: recovered")
	}
	if ok, _ := resume(t, h, k, at(101, 1, 0)); !ok {
		t.Fatal("since the huge event: not recovered")
	}
}

// TestHistoryRandom checks after against a plain list of everything
// published, under random evictions by size.
func TestHistoryRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	h, now := histHub(time.Second, 40*(EntryOverhead+80))
	type pub struct {
		k  Key
		at time.Time
	}
	var all []pub // index i: position i+1
	for step := 0; step < 3000; step++ {
		if rng.IntN(3) > 0 {
			k := Key{IssueUpdate, hex24(rng.IntN(6))}
			h.Publish([]Event{{Type: IssueUpdate, ID: k.ID, Data: []byte(fmt.Sprintf("[%d]", rng.IntN(1000)))}}, nil)
			all = append(all, pub{k, *now})
		}
		*now = now.Add(time.Duration(rng.IntN(30)) * time.Millisecond)
		if len(all) == 0 {
			continue
		}
		k := Key{IssueUpdate, hex24(rng.IntN(6))}
		since := uint64(rng.IntN(len(all) + 1))
		ok, got := resume(t, h, k, posOf(h, since))
		var want int
		for i := int(since); i < len(all); i++ {
			if all[i].k == k {
				want++
			}
		}
		if ok && len(got) != want {
			t.Fatalf("step %d: %v since %d: recovered with %d events, want %d", step, k, since, len(got), want)
		}
		// Claimed false: some event of k after since must be gone, or
		// something of k at or before since may be (never false for a
		// since at the very end with nothing expired after it).
		if !ok && since == uint64(len(all)) {
			t.Fatalf("step %d: since the latest event: not recovered", step)
		}
	}
	if h.History().Evicted() == 0 {
		t.Fatal("nothing was evicted: the test proved little")
	}
}

// TestHistoryMemoryPerEvent measures the heap one retained event costs
// besides its frame and checks that EntryOverhead covers it, with one and
// with two events per key.
func TestHistoryMemoryPerEvent(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap")
	}
	for _, perKey := range []int{1, 2} {
		const n = 50_000
		h := NewHubWith(HubOptions{History: NewHistory(time.Hour, 1<<40)})
		evs := make([]Event, n)
		for i := range evs {
			evs[i] = Event{Type: IssueUpdate, ID: hex24(i / perKey), Data: []byte(`["status"]`)}
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i := range evs {
			h.Publish(evs[i:i+1], nil)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		per := float64(after.HeapAlloc-before.HeapAlloc) / n
		frame := roundClass(evs[0].FrameSize())
		t.Logf("history, %d event(s) per key: %.0f bytes of heap per retained event, of which the frame's allocation %d (a frame of %d bytes)",
			perKey, per, frame, len(evs[0].AppendFrame(nil, h.Epoch()+":12345")))
		if over := per - float64(frame); over > EntryOverhead {
			t.Errorf("%d per key: %.0f bytes per event besides the frame's allocation, EntryOverhead counts %d", perKey, over, EntryOverhead)
		}
		if got := h.History().Bytes(); got < int64(per*n*0.8) {
			t.Errorf("%d per key: the history counts %d bytes, the heap grew %.0f", perKey, got, per*n)
		}
		runtime.KeepAlive(h)
	}
}

// roundClass rounds an allocation up to Go's size classes (up to 512).
func roundClass(n int) int {
	for _, c := range []int{8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 288, 320, 352, 384, 416, 448, 480, 512} {
		if n <= c {
			return c
		}
	}
	return n
}
