package client_test

// The harness: the real server of internal/servertest (server.New + Serve on
// a loopback port, in this process, stopped and started again on the same
// port when a test needs a restart), and a recorder of what a client reports.

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/airlay/airlay/client"
	"github.com/airlay/airlay/internal/servertest"
	"github.com/airlay/airlay/server"
)

const (
	userA   = "5dad615eae019570fb4647ed"
	issue1  = "610217e481f6fc54736209e0"
	issue2  = "610217e481f6fc54736209e1"
	issue3  = "610217e481f6fc54736209e2"
	waitFor = 5 * time.Second
)

// startServer starts the real server with the test settings, changed by
// mutate, and stops it when the test ends.
func startServer(t *testing.T, mutate func(*server.Config)) *servertest.Server {
	t.Helper()
	return servertest.Start(t, func(cfg *server.Config, _ string) {
		if mutate != nil {
			mutate(cfg)
		}
	})
}

// provider returns a token provider that mints tokens for userA valid for
// ttl and counts its calls.
func provider(s *servertest.Server, ttl time.Duration, calls *counter) client.TokenProvider {
	return func(context.Context) (string, error) {
		calls.add()
		return s.Token(userA, ttl), nil
	}
}

func event(typ, id, data string) string {
	return `{"type":"` + typ + `","id":"` + id + `","data":[` + data + `]}`
}

type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) add() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *counter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// recorder collects what a client reports.
type recorder struct {
	mu     sync.Mutex
	states []client.State
	events []client.Event
	errs   []error
	wake   chan struct{}
}

func newRecorder() *recorder { return &recorder{wake: make(chan struct{}, 1)} }

func (r *recorder) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *recorder) options(o client.Options) client.Options {
	o.OnState = func(s client.State) { r.mu.Lock(); r.states = append(r.states, s); r.mu.Unlock(); r.poke() }
	o.OnEvent = func(e client.Event) { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock(); r.poke() }
	o.OnError = func(err error) { r.mu.Lock(); r.errs = append(r.errs, err); r.mu.Unlock(); r.poke() }
	return o
}

func (r *recorder) snapshot() ([]client.State, []client.Event, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]client.State(nil), r.states...), append([]client.Event(nil), r.events...), append([]error(nil), r.errs...)
}

// waitUntil waits until cond holds over what was recorded.
func (r *recorder) waitUntil(t *testing.T, what string, cond func(states []client.State, evs []client.Event) bool) {
	t.Helper()
	deadline := time.NewTimer(waitFor)
	defer deadline.Stop()
	for {
		st, evs, _ := r.snapshot()
		if cond(st, evs) {
			return
		}
		select {
		case <-r.wake:
		case <-time.After(20 * time.Millisecond):
		case <-deadline.C:
			st, evs, errs := r.snapshot()
			t.Fatalf("timed out waiting for %s\nstates: %v\nevents: %d\nerrors: %v", what, st, len(evs), errs)
		}
	}
}

func count(states []client.State, state, reason string) int {
	n := 0
	for _, s := range states {
		if s.State == state && (reason == "" || s.Reason == reason) {
			n++
		}
	}
	return n
}

func dial(t *testing.T, o client.Options) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, err := client.Dial(ctx, o)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return c
}
