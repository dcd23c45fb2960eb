package server

import (
	"sync"
	"sync/atomic"

	"github.com/airlay/airlay/events"
)

// windowFrames is the capacity of melody's per-session channel: the frames
// handed to melody at once. It is preallocated for every connection, so it
// is kept small; bursts wait in the backlog, which grows only while they
// last.
const windowFrames = 16

// sendQueue is a connection's outbound queue: a window of frames handed to
// melody, in order and not yet written, and a backlog waiting for room in
// the window. It is bounded in frames and in bytes; frames are shared
// between connections, so the bytes bound what one connection can pin.
// Because every frame passes through it, each write reported by melody is
// matched to its delivery (latency, ?wait counts).
type sendQueue struct {
	maxFrames, maxBytes, window int

	mu      sync.Mutex
	inMel   []*events.Delivery // handed to melody
	backlog []*events.Delivery // waiting for room in inMel
	bytes   int
	closed  bool

	// length is len(inMel)+len(backlog), readable without the lock (the
	// batchConn and answers waiting for room read it).
	length atomic.Int32
}

type pushResult uint8

const (
	pushed pushResult = iota
	pushClosed
	pushFull
)

// push queues d; write hands a frame to melody and is called under the
// queue's lock so that melody's order is the queue's order.
func (q *sendQueue) push(d *events.Delivery, write func([]byte)) pushResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return pushClosed
	}
	n := len(q.inMel) + len(q.backlog)
	if n >= q.maxFrames || q.bytes+len(d.Frame) > q.maxBytes {
		return pushFull
	}
	q.bytes += len(d.Frame)
	if len(q.inMel) < q.window {
		q.inMel = append(q.inMel, d)
		write(d.Frame)
	} else {
		q.backlog = append(q.backlog, d)
	}
	q.length.Store(int32(n + 1))
	return pushed
}

// sent takes the delivery whose frame melody has written, moving the next
// backlog frame into melody. It returns nil when nothing was queued.
func (q *sendQueue) sent(write func([]byte)) *events.Delivery {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.inMel) == 0 {
		return nil
	}
	d := q.inMel[0]
	q.inMel[0] = nil
	q.inMel = q.inMel[1:]
	q.bytes -= len(d.Frame)
	if len(q.backlog) > 0 && !q.closed {
		next := q.backlog[0]
		q.backlog[0] = nil
		q.backlog = q.backlog[1:]
		q.inMel = append(q.inMel, next)
		write(next.Frame)
	}
	// Let the arrays of a burst go once it has drained.
	if len(q.backlog) == 0 {
		q.backlog = nil
	}
	if len(q.inMel) == 0 {
		q.inMel = nil
	}
	q.length.Store(int32(len(q.inMel) + len(q.backlog)))
	return d
}

// close stops queueing and returns what was still queued.
func (q *sendQueue) close() []*events.Delivery {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	left := append(q.inMel, q.backlog...)
	q.inMel, q.backlog = nil, nil
	q.length.Store(0)
	return left
}

// answerDeliveries holds a delivery per response code, so that answers take
// the same queue as events.
var answerDeliveries = func() []*events.Delivery {
	ds := make([]*events.Delivery, events.Unavailable+1)
	for c := range ds {
		ds[c] = &events.Delivery{Frame: events.Code(c).Frame()}
	}
	return ds
}()
