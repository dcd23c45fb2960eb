package events

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a fake connection: it keeps every delivery it is handed.
type recorder struct {
	name   string
	mu     sync.Mutex
	ds     []*Delivery
	frames []string
	onSend func(d *Delivery) // called after recording, outside mu
}

func (r *recorder) Send(d *Delivery) {
	r.mu.Lock()
	r.ds = append(r.ds, d)
	r.frames = append(r.frames, stripPos(d.Frame))
	r.mu.Unlock()
	if r.onSend != nil {
		r.onSend(d)
	}
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.frames...)
}

func (r *recorder) deliveries() []*Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Delivery(nil), r.ds...)
}

var _ Subscriber = (*recorder)(nil)

func newRecorders(n int) []*recorder {
	rs := make([]*recorder, n)
	for i := range rs {
		rs[i] = &recorder{name: fmt.Sprint("r", i)}
	}
	return rs
}

// hex24 returns the i-th test ObjectId.
func hex24(i int) string { return fmt.Sprintf("610217e481f6fc54%08x", i) }

// frameOf is e's frame without its position (see stripPos).
func frameOf(e Event) string { return stripPos(e.AppendFrame(nil, "p")) }

// stripPos returns frame without its last member, "pos" (the position
// tests of the hub compare on their own).
func stripPos(frame []byte) string {
	s := string(frame)
	i := strings.LastIndex(s, posMember)
	if i < 0 {
		panic("frame without pos: " + s)
	}
	return s[:i] + "}"
}

func TestHubSubscribeIdempotent(t *testing.T) {
	h := NewHub()
	k1 := Key{IssueUpdate, hex24(1)}
	k2 := Key{IssueUpdate, hex24(2)}
	a, b := &recorder{name: "a"}, &recorder{name: "b"}

	steps := []struct {
		name  string
		do    func() bool
		want  bool
		count int64
	}{
		{"attach a k1", func() bool { return h.Subscribe(k1, a) }, true, 1},
		{"attach a k1 again", func() bool { return h.Subscribe(k1, a) }, false, 1},
		{"attach a k1 a third time", func() bool { return h.Subscribe(k1, a) }, false, 1},
		{"attach a k2", func() bool { return h.Subscribe(k2, a) }, true, 2},
		{"attach b k1", func() bool { return h.Subscribe(k1, b) }, true, 3},
		{"detach a k1", func() bool { return h.Unsubscribe(k1, a) }, true, 2},
		{"detach a k1 again", func() bool { return h.Unsubscribe(k1, a) }, false, 2},
		{"detach a from a key never held", func() bool { return h.Unsubscribe(Key{DatasetUpdate, hex24(1)}, a) }, false, 2},
		{"detach b from a key others hold", func() bool { return h.Unsubscribe(k2, b) }, false, 2},
		{"detach b k1", func() bool { return h.Unsubscribe(k1, b) }, true, 1},
		{"detach b k1 after the key emptied", func() bool { return h.Unsubscribe(k1, b) }, false, 1},
		{"attach b k1 after the key emptied", func() bool { return h.Subscribe(k1, b) }, true, 2},
		{"detach a k2", func() bool { return h.Unsubscribe(k2, a) }, true, 1},
		{"detach b k1 last", func() bool { return h.Unsubscribe(k1, b) }, true, 0},
	}
	for _, s := range steps {
		if got := s.do(); got != s.want {
			t.Fatalf("%s: %v, want %v", s.name, got, s.want)
		}
		if got := h.Subscriptions(); got != s.count {
			t.Fatalf("%s: Subscriptions() = %d, want %d", s.name, got, s.count)
		}
	}
	// An emptied key delivers nothing and the index forgot it.
	if n := h.Publish([]Event{{Type: IssueUpdate, ID: hex24(1)}}, nil); n != 0 {
		t.Fatalf("Publish to an emptied key handed out %d", n)
	}
	for i := range h.shards {
		if len(h.shards[i].topics) != 0 {
			t.Fatalf("shard %d keeps %d topics after every subscription went", i, len(h.shards[i].topics))
		}
	}
}

func TestHubPublishOrderExactlyOnce(t *testing.T) {
	h := NewHub()
	now := time.Unix(1_800_000_000, 0)
	h.now = func() time.Time { return now }
	k := Key{IssueUpdate, hex24(7)}
	subs := newRecorders(200)
	for _, s := range subs {
		h.Subscribe(k, s)
	}
	var want []string
	var evs []Event
	for i := range 60 {
		e := Event{Type: IssueUpdate, ID: k.ID, Data: json.RawMessage(fmt.Sprintf(`[%d]`, i))}
		evs = append(evs, e)
		want = append(want, frameOf(e))
	}
	// Single events, then batches of various sizes.
	total := 0
	for _, e := range evs[:10] {
		total += h.Publish([]Event{e}, nil)
	}
	total += h.Publish(evs[10:11], nil)
	total += h.Publish(evs[11:30], nil)
	total += h.Publish(evs[30:], nil)
	if total != len(subs)*len(evs) {
		t.Fatalf("Publish handed out %d pairs, want %d", total, len(subs)*len(evs))
	}
	for _, s := range subs {
		got := s.got()
		if len(got) != len(want) {
			t.Fatalf("%s got %d events, want %d", s.name, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s event %d = %s, want %s", s.name, i, got[i], want[i])
			}
		}
	}
	// Encoded once: every subscriber holds the same Delivery and the same bytes.
	first := subs[0].deliveries()
	for _, s := range subs[1:] {
		for i, d := range s.deliveries() {
			if d != first[i] || &d.Frame[0] != &first[i].Frame[0] {
				t.Fatalf("%s event %d: a Delivery or frame of its own, want the shared one", s.name, i)
			}
		}
	}
	for i, d := range first {
		if !d.Accepted.Equal(now) {
			t.Fatalf("event %d: Accepted = %v, want %v", i, d.Accepted, now)
		}
		if d.Tracker != nil {
			t.Fatalf("event %d: Tracker set without a tracker", i)
		}
	}
}

// TestHubPublishSnapshot: an event goes to the subscribers of its key when
// it is accepted; later attaches do not get it, detached ones get no more.
func TestHubPublishSnapshot(t *testing.T) {
	h := NewHub()
	k := Key{DatasetUpdate, hex24(1)}
	early, late := &recorder{name: "early"}, &recorder{name: "late"}
	e1 := Event{Type: DatasetUpdate, ID: k.ID, Data: json.RawMessage(`[1]`)}
	e2 := Event{Type: DatasetUpdate, ID: k.ID, Data: json.RawMessage(`[2]`)}
	e3 := Event{Type: DatasetUpdate, ID: k.ID, Data: json.RawMessage(`[3]`)}

	h.Subscribe(k, early)
	h.Publish([]Event{e1}, nil)
	h.Subscribe(k, late)
	h.Publish([]Event{e2}, nil)
	h.Unsubscribe(k, early)
	h.Publish([]Event{e3}, nil)

	check := func(r *recorder, want ...Event) {
		t.Helper()
		got := r.got()
		if len(got) != len(want) {
			t.Fatalf("%s got %q, want %d events", r.name, got, len(want))
		}
		for i := range want {
			if got[i] != frameOf(want[i]) {
				t.Fatalf("%s event %d = %s, want %s", r.name, i, got[i], frameOf(want[i]))
			}
		}
	}
	check(early, e1, e2)
	check(late, e2, e3)
}

func TestHubIsolation(t *testing.T) {
	h := NewHub()
	obj, other := hex24(1), hex24(2)
	userA, userB := hex24(100), hex24(101)
	keys := []Key{
		{IssueUpdate, obj}, {IssueUpdate, other},
		{DatasetUpdate, obj}, {UploadFile, obj}, {DownloadFile, obj},
		{Notification, userA}, {Notification, userB},
		// a notification key that looks like an object id
		{Notification, obj},
	}
	subs := make(map[Key]*recorder)
	for _, k := range keys {
		subs[k] = &recorder{name: fmt.Sprintf("%v/%s", k.Type, k.ID)}
		h.Subscribe(k, subs[k])
	}
	tests := []struct {
		name string
		e    Event
		to   Key
	}{
		{"issueUpdate obj", Event{Type: IssueUpdate, ID: obj}, Key{IssueUpdate, obj}},
		{"issueUpdate other", Event{Type: IssueUpdate, ID: other}, Key{IssueUpdate, other}},
		{"datasetUpdate obj", Event{Type: DatasetUpdate, ID: obj}, Key{DatasetUpdate, obj}},
		{"uploadFile obj", Event{Type: UploadFile, ID: obj}, Key{UploadFile, obj}},
		{"downloadFile obj", Event{Type: DownloadFile, ID: obj}, Key{DownloadFile, obj}},
		// Notifications route by recipient, never by their own id.
		{"notification to A, id obj", Event{Type: Notification, ID: obj, User: userA}, Key{Notification, userA}},
		{"notification to B, id of A", Event{Type: Notification, ID: userA, User: userB}, Key{Notification, userB}},
		{"notification to B, no id", Event{Type: Notification, User: userB}, Key{Notification, userB}},
	}
	for _, tt := range tests {
		before := make(map[Key]int)
		for k, r := range subs {
			before[k] = len(r.got())
		}
		if n := h.Publish([]Event{tt.e}, nil); n != 1 {
			t.Errorf("%s: handed out %d, want 1", tt.name, n)
		}
		for k, r := range subs {
			got := r.got()
			wantN := before[k]
			if k == tt.to {
				wantN++
			}
			if len(got) != wantN {
				t.Errorf("%s: %s has %d events, want %d", tt.name, r.name, len(got), wantN)
				continue
			}
			if k == tt.to && got[len(got)-1] != frameOf(tt.e) {
				t.Errorf("%s: %s got %s, want %s", tt.name, r.name, got[len(got)-1], frameOf(tt.e))
			}
		}
	}
	// Keys nobody holds.
	for _, e := range []Event{
		{Type: IssueUpdate, ID: hex24(3)},
		{Type: Notification, User: hex24(3), ID: obj},
		{Type: DatasetUpdate, ID: other},
	} {
		if n := h.Publish([]Event{e}, nil); n != 0 {
			t.Errorf("Publish %s handed out %d, want 0", frameOf(e), n)
		}
	}
}

// TestHubSendMayResubscribe: Publish holds no index lock while it hands out,
// so a subscriber may attach or detach from inside Send.
func TestHubSendMayResubscribe(t *testing.T) {
	h := NewHub()
	k := Key{IssueUpdate, hex24(1)}
	k2 := Key{IssueUpdate, hex24(2)}
	r := &recorder{name: "r"}
	r.onSend = func(*Delivery) {
		h.Unsubscribe(k, r)
		h.Subscribe(k2, r)
		h.Subscribe(k, &recorder{})
	}
	h.Subscribe(k, r)
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Publish([]Event{{Type: IssueUpdate, ID: k.ID}, {Type: IssueUpdate, ID: k2.ID}}, nil)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish deadlocked when Send changed subscriptions")
	}
	if got := len(r.got()); got != 2 {
		t.Fatalf("got %d events, want 2 (k, then k2 attached while k was handed out)", got)
	}
}

func TestTrackerNoSubscribers(t *testing.T) {
	h := NewHub()
	tr := NewTracker()
	if n := h.Publish([]Event{{Type: IssueUpdate, ID: hex24(1)}}, tr); n != 0 {
		t.Fatalf("handed out %d", n)
	}
	assertDone(t, tr, true)
	if d, p := tr.Counts(); d != 0 || p != 0 {
		t.Fatalf("Counts() = %d, %d; want 0, 0", d, p)
	}
}

func TestTrackerCounts(t *testing.T) {
	h := NewHub()
	k1, k2 := Key{IssueUpdate, hex24(1)}, Key{Notification, hex24(2)}
	subs := newRecorders(3)
	for _, s := range subs {
		h.Subscribe(k1, s)
	}
	h.Subscribe(k2, subs[0])
	h.Subscribe(Key{IssueUpdate, hex24(9)}, &recorder{}) // not published to

	tr := NewTracker()
	assertDone(t, tr, false) // not sealed yet
	evs := []Event{{Type: IssueUpdate, ID: k1.ID}, {Type: Notification, User: k2.ID}, {Type: IssueUpdate, ID: k1.ID}}
	if n := h.Publish(evs, tr); n != 7 {
		t.Fatalf("handed out %d, want 7", n)
	}
	counts := func(wantD, wantP int64) {
		t.Helper()
		if d, p := tr.Counts(); d != wantD || p != wantP {
			t.Fatalf("Counts() = %d delivered, %d pending; want %d, %d", d, p, wantD, wantP)
		}
	}
	counts(0, 7)
	assertDone(t, tr, false)
	for _, s := range subs {
		for _, d := range s.deliveries() {
			if d.Tracker != tr {
				t.Fatalf("%s: Delivery.Tracker = %p, want %p", s.name, d.Tracker, tr)
			}
		}
	}
	tr.Delivered()
	tr.Delivered()
	counts(2, 5)
	tr.Dropped() // a connection closed before its write: neither delivered nor pending
	counts(2, 4)
	assertDone(t, tr, false)
	tr.Delivered()
	tr.Delivered()
	tr.Delivered()
	counts(5, 1)
	assertDone(t, tr, false)
	tr.Dropped()
	counts(5, 0)
	assertDone(t, tr, true)
}

// TestTrackerSyncAcks: subscribers that write at once (in Send) do not close
// Done before the last event was handed out.
func TestTrackerSyncAcks(t *testing.T) {
	h := NewHub()
	k := Key{UploadFile, hex24(1)}
	tr := NewTracker()
	subs := newRecorders(4)
	var early bool
	for i, s := range subs {
		s.onSend = func(d *Delivery) {
			select {
			case <-tr.Done():
				early = true
			default:
			}
			if i == 3 {
				d.Tracker.Dropped()
			} else {
				d.Tracker.Delivered()
			}
		}
		h.Subscribe(k, s)
	}
	evs := []Event{{Type: UploadFile, ID: k.ID}, {Type: UploadFile, ID: k.ID}, {Type: UploadFile, ID: k.ID}}
	h.Publish(evs, tr)
	if early {
		t.Fatal("Done closed before Publish handed out every event")
	}
	assertDone(t, tr, true)
	if d, p := tr.Counts(); d != 9 || p != 0 {
		t.Fatalf("Counts() = %d, %d; want 9, 0", d, p)
	}
}

// TestTrackerConcurrentAcks: writers acknowledge from their own goroutines.
func TestTrackerConcurrentAcks(t *testing.T) {
	h := NewHub()
	k := Key{DownloadFile, hex24(1)}
	const nsubs, nevs = 50, 20
	queues := make([]chan *Delivery, nsubs)
	var wg sync.WaitGroup
	for i := range queues {
		q := make(chan *Delivery, nevs)
		queues[i] = q
		h.Subscribe(k, chanSub(q))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range q {
				if i%5 == 0 {
					d.Tracker.Dropped()
				} else {
					d.Tracker.Delivered()
				}
			}
		}()
	}
	tr := NewTracker()
	evs := make([]Event, nevs)
	for i := range evs {
		evs[i] = Event{Type: DownloadFile, ID: k.ID}
	}
	h.Publish(evs, tr)
	for _, q := range queues {
		close(q)
	}
	select {
	case <-tr.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after every write")
	}
	wg.Wait()
	if d, p := tr.Counts(); d != nsubs*nevs*4/5 || p != 0 {
		t.Fatalf("Counts() = %d, %d; want %d, 0", d, p, nsubs*nevs*4/5)
	}
}

type chanSub chan *Delivery

func (c chanSub) Send(d *Delivery) { c <- d }

func assertDone(t *testing.T, tr *Tracker, want bool) {
	t.Helper()
	select {
	case <-tr.Done():
		if !want {
			t.Fatal("Done is closed, want open")
		}
	default:
		if want {
			t.Fatal("Done is open, want closed")
		}
	}
}

func TestMemoryBroker(t *testing.T) {
	h := NewHub()
	r := &recorder{}
	h.Subscribe(Key{IssueUpdate, hex24(1)}, r)
	tr := NewTracker()
	var b Broker = NewMemoryBroker()
	// Publish waits for Run to have started.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	if err := b.Publish(ctx, []Event{{Type: IssueUpdate, ID: hex24(1)}}, nil); err == nil {
		t.Fatal("Publish before Run succeeded")
	}
	cancel()
	ctx, stop := context.WithCancel(t.Context())
	ran := make(chan error, 1)
	go func() { ran <- b.Run(ctx, h) }()
	if err := b.Publish(t.Context(), []Event{{Type: IssueUpdate, ID: hex24(1)}}, tr); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-ran; err != context.Canceled {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
	if got := r.got(); len(got) != 1 {
		t.Fatalf("got %q", got)
	}
	if _, p := tr.Counts(); p != 1 {
		t.Fatalf("pending %d, want 1", p)
	}
}

// seqSub checks, per publisher, that events arrive once and in order.
type seqSub struct {
	mu   sync.Mutex
	next map[int]int // publisher -> next sequence number
	err  error
}

func (s *seqSub) Send(d *Delivery) {
	var e struct {
		Data [2]int `json:"data"`
	}
	err := json.Unmarshal(d.Frame, &e)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	if err != nil {
		s.err = err
		return
	}
	p, seq := e.Data[0], e.Data[1]
	if seq != s.next[p] {
		s.err = fmt.Errorf("publisher %d: got event %d, want %d", p, seq, s.next[p])
		return
	}
	s.next[p]++
}

// TestHubConcurrent runs subscribes, unsubscribes and publishes at once (run
// it with -race). Subscribers that stay throughout get every event of every
// publisher once, in that publisher's order.
func TestHubConcurrent(t *testing.T) {
	h := NewHub()
	const (
		publishers = 4
		perPub     = 300
		stable     = 16
		churners   = 8
		nkeys      = 32
	)
	hot := Key{IssueUpdate, hex24(0)}
	keys := make([]Key, nkeys)
	for i := range keys {
		keys[i] = Key{Types[i%len(Types)], hex24(1 + i)} // never hot
	}
	stables := make([]*seqSub, stable)
	for i := range stables {
		stables[i] = &seqSub{next: make(map[int]int)}
		h.Subscribe(hot, stables[i])
	}

	stop := make(chan struct{})
	var churn sync.WaitGroup
	for c := range churners {
		churn.Add(1)
		go func() {
			defer churn.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 1))
			mine := make([]*recorder, 4)
			for i := range mine {
				mine[i] = &recorder{}
			}
			held := make(map[Key]map[*recorder]bool)
			for {
				select {
				case <-stop:
					for k, rs := range held {
						for r := range rs {
							if !h.Unsubscribe(k, r) {
								t.Errorf("Unsubscribe of a held subscription reported false")
							}
						}
					}
					return
				default:
				}
				k := keys[rng.IntN(nkeys)]
				if rng.IntN(4) == 0 {
					k = hot
				}
				r := mine[rng.IntN(len(mine))]
				if held[k] == nil {
					held[k] = make(map[*recorder]bool)
				}
				if rng.IntN(2) == 0 {
					if h.Subscribe(k, r) == held[k][r] {
						t.Errorf("Subscribe reported %v for a subscription held=%v", !held[k][r], held[k][r])
					}
					held[k][r] = true
				} else {
					if h.Unsubscribe(k, r) != held[k][r] {
						t.Errorf("Unsubscribe reported %v for a subscription held=%v", !held[k][r], held[k][r])
					}
					delete(held[k], r)
				}
			}
		}()
	}

	var pubs sync.WaitGroup
	for p := range publishers {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for seq := 0; seq < perPub; {
				n := 1 + seq%3
				var evs []Event
				for i := 0; i < n && seq < perPub; i++ {
					evs = append(evs, Event{Type: IssueUpdate, ID: hot.ID, Data: json.RawMessage(fmt.Sprintf("[%d,%d]", p, seq))})
					seq++
					// Some noise to other keys in the same batch.
					k := keys[(seq+p)%nkeys]
					noise := Event{Type: k.Type, ID: k.ID}
					if k.Type.PerUser() {
						noise = Event{Type: k.Type, User: k.ID, ID: "n"}
					}
					evs = append(evs, noise)
				}
				tr := NewTracker()
				h.Publish(evs, tr)
				if d, p := tr.Counts(); d != 0 || p < int64(stable) {
					t.Errorf("Counts() = %d, %d; want 0 delivered and at least %d pending", d, p, stable)
				}
			}
		}()
	}
	pubs.Wait()
	close(stop)
	churn.Wait()

	for i, s := range stables {
		if s.err != nil {
			t.Fatalf("stable subscriber %d: %v", i, s.err)
		}
		for p := range publishers {
			if s.next[p] != perPub {
				t.Fatalf("stable subscriber %d got %d events of publisher %d, want %d", i, s.next[p], p, perPub)
			}
		}
	}
	if got := h.Subscriptions(); got != stable {
		t.Fatalf("Subscriptions() = %d after the churn, want %d", got, stable)
	}
	for _, s := range stables {
		if !h.Unsubscribe(hot, s) {
			t.Fatal("Unsubscribe of a stable subscriber reported false")
		}
	}
	if got := h.Subscriptions(); got != 0 {
		t.Fatalf("Subscriptions() = %d, want 0", got)
	}
}

// TestHubPublishAllocsPerEvent: fan-out allocates per event, never per
// subscriber (see BenchmarkPublish for the figures).
func TestHubPublishAllocsPerEvent(t *testing.T) {
	allocs := func(n int) float64 {
		h := NewHub()
		k := Key{IssueUpdate, hex24(1)}
		for range n {
			h.Subscribe(k, &nopSub{})
		}
		evs := []Event{{Type: IssueUpdate, ID: k.ID, Data: json.RawMessage(`["status"]`)}}
		h.Publish(evs, nil)
		return testing.AllocsPerRun(50, func() { h.Publish(evs, nil) })
	}
	one, many := allocs(1), allocs(2000)
	if many != one {
		t.Fatalf("Publish allocates %v times with 1 subscriber and %v with 2000, want the same", one, many)
	}
}

func TestHubSincePublish(t *testing.T) {
	h := NewHub()
	time.Sleep(20 * time.Millisecond)
	if d := h.SincePublish(); d < 20*time.Millisecond {
		t.Fatalf("SincePublish before any publish = %v, want at least the time since start", d)
	}
	h.Publish([]Event{{Type: IssueUpdate, ID: "610217e481f6fc54736209e0"}}, nil)
	if d := h.SincePublish(); d < 0 || d > 10*time.Millisecond {
		t.Fatalf("SincePublish right after a publish = %v", d)
	}
	time.Sleep(20 * time.Millisecond)
	if d := h.SincePublish(); d < 20*time.Millisecond {
		t.Fatalf("SincePublish 20ms after a publish = %v", d)
	}
}

// A key's subscribers move from the single field to a map and back; each
// publish reaches exactly the subscribers held at that moment.
func TestHubTopicOneAndMany(t *testing.T) {
	h := NewHub()
	k := Key{IssueUpdate, hex24(7)}
	rs := newRecorders(3)
	a, b, c := rs[0], rs[1], rs[2]
	seq := 0
	publish := func(want ...*recorder) {
		t.Helper()
		seq++
		ev := Event{Type: IssueUpdate, ID: hex24(7), Data: []byte(fmt.Sprintf("[%d]", seq))}
		before := make([]int, len(rs))
		for i, r := range rs {
			before[i] = len(r.got())
		}
		if n := h.Publish([]Event{ev}, nil); n != len(want) {
			t.Fatalf("publish %d handed out %d, want %d", seq, n, len(want))
		}
		for i, r := range rs {
			got := r.got()[before[i]:]
			wanted := false
			for _, w := range want {
				wanted = wanted || w == r
			}
			switch {
			case wanted && (len(got) != 1 || got[0] != frameOf(ev)):
				t.Fatalf("publish %d: %s got %q, want the event once", seq, r.name, got)
			case !wanted && len(got) != 0:
				t.Fatalf("publish %d: %s got %q, want nothing", seq, r.name, got)
			}
		}
	}
	h.Subscribe(k, a)
	publish(a)
	h.Subscribe(k, b) // to the map
	publish(a, b)
	h.Subscribe(k, c)
	publish(a, b, c)
	h.Unsubscribe(k, a)
	h.Unsubscribe(k, b)
	publish(c) // one left, in the map
	if h.Subscribe(k, c) {
		t.Fatal("Subscribe of a held key in the map reported new")
	}
	h.Subscribe(k, a)
	publish(a, c)
	h.Unsubscribe(k, a)
	h.Unsubscribe(k, c)
	publish()
	h.Subscribe(k, b) // a new topic: the single field again
	if h.Subscribe(k, b) {
		t.Fatal("Subscribe of the held single key reported new")
	}
	if h.Unsubscribe(k, a) {
		t.Fatal("Unsubscribe of a non-subscriber of a single key reported held")
	}
	publish(b)
	if h.Subscriptions() != 1 {
		t.Fatalf("Subscriptions() = %d, want 1", h.Subscriptions())
	}
}
