package server

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// defaultWarnInterval is Options.WarnInterval's zero.
const defaultWarnInterval = 10 * time.Second

// limitHandler passes on the first record of each message per interval and
// counts the rest; at the end of an interval in which any were held back,
// it writes one more line with their number ("suppressed"). It is for
// warnings that a client can cause at will (refused upgrades, slow
// consumers, a failing store under a flood of requests): the log stays
// readable and bounded whatever the rate. Messages are literals of this
// package, so the state stays small.
type limitHandler struct {
	next  slog.Handler
	every time.Duration
	st    *limitState
}

type limitState struct {
	mu   sync.Mutex
	msgs map[string]*limitMsg
}

type limitMsg struct {
	until      time.Time // the end of the interval of the latest line written
	suppressed int
	last       slog.Record // the latest held back, for the summary line
	flushing   bool        // a timer will write the summary
}

func newLimitHandler(next slog.Handler, every time.Duration) *limitHandler {
	return &limitHandler{next: next, every: every, st: &limitState{msgs: make(map[string]*limitMsg)}}
}

func (h *limitHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *limitHandler) Handle(ctx context.Context, r slog.Record) error {
	now := time.Now()
	h.st.mu.Lock()
	m := h.st.msgs[r.Message]
	if m == nil {
		m = &limitMsg{}
		h.st.msgs[r.Message] = m
	}
	if now.Before(m.until) || m.flushing { // a late timer's summary is this interval's line

		m.suppressed++
		m.last = r.Clone()
		if !m.flushing {
			m.flushing = true
			time.AfterFunc(m.until.Sub(now), func() { h.flush(m) })
		}
		h.st.mu.Unlock()
		return nil
	}
	m.until = now.Add(h.every)
	h.st.mu.Unlock()
	return h.next.Handle(ctx, r)
}

// flush writes the summary of the records held back in m's interval, as the
// latest of them with their count, and starts a new interval.
func (h *limitHandler) flush(m *limitMsg) {
	h.st.mu.Lock()
	n, r := m.suppressed, m.last
	m.suppressed, m.last, m.flushing = 0, slog.Record{}, false
	m.until = time.Now().Add(h.every)
	h.st.mu.Unlock()
	if n == 0 {
		return
	}
	r.Time = time.Now()
	r.AddAttrs(slog.Int("suppressed", n), slog.Duration("interval", h.every))
	_ = h.next.Handle(context.Background(), r)
}

func (h *limitHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &limitHandler{next: h.next.WithAttrs(attrs), every: h.every, st: h.st}
}

func (h *limitHandler) WithGroup(name string) slog.Handler {
	return &limitHandler{next: h.next.WithGroup(name), every: h.every, st: h.st}
}
