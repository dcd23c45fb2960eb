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
// the window. Because every frame passes through it, each write reported by
// melody is matched to its delivery (latency, ?wait counts).
//
// It is bounded in frames and in bytes (frames are shared between
// connections, so the bytes bound what one connection can pin), and the
// bounds judge what a connection has not written of earlier publishes: the
// first frame of a publish is refused when the queue is at a bound, and the
// rest of that publish then follows it. A publish (or a replay) hands all of
// its frames to a connection at once, faster than any socket takes them, so
// counting them against the bound would close prompt readers of a large
// publish. What such a batch put past the bound is an allowance (over,
// overBytes) that the next publishes do not count either, and that shrinks
// with every frame written: a reader that keeps up drains it while live
// events come in, a slow one is caught once what it holds beyond the
// allowance reaches the bound. The queue therefore holds at most
// maxFrames-1 frames plus one batch (max_publish_events, max_replay).
type sendQueue struct {
	maxFrames, maxBytes, window int

	mu      sync.Mutex
	inMel   []*events.Delivery // handed to melody
	backlog []*events.Delivery // waiting for room in inMel
	bytes   int
	batch   uint64 // Delivery.Batch of the latest event admitted
	// over and overBytes: the allowance of the latest batch that went past
	// the bounds, less what has been written since.
	over, overBytes int
	grant           bool // the current batch may add to the allowance
	closed          bool // nothing more is queued: closed, or a close frame is queued last
	gone            bool // the connection is gone: nothing more goes to melody

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
func (q *sendQueue) push(d *events.Delivery, write func(*events.Delivery)) pushResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return pushClosed
	}
	n := len(q.inMel) + len(q.backlog)
	first := d.Batch == 0 || d.Batch != q.batch
	if first { // an answer, or the first frame of a publish
		if n-q.over >= q.maxFrames || q.bytes-q.overBytes >= q.maxBytes {
			return pushFull
		}
		if d.Batch != 0 {
			q.batch = d.Batch
			// Only a batch that finds no allowance left gets one: one
			// large batch at a time is forgiven, never a stream of them.
			q.grant = q.over == 0 && q.overBytes == 0
		}
	}
	q.add(d, write)
	if !first && q.grant { // the batch's later frames past the bounds become allowance
		q.over = max(q.over, n+1-(q.maxFrames-1))
		q.overBytes = max(q.overBytes, q.bytes-(q.maxBytes-1))
	}
	return pushed
}

// seal queues nothing more: a slow consumer is being closed, and no frame
// may follow the one it was refused.
func (q *sendQueue) seal() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}

// pushLast queues d after everything queued, whatever the bounds, and
// queues nothing after it: d is the close frame.
func (q *sendQueue) pushLast(d *events.Delivery, write func(*events.Delivery)) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.add(d, write)
	q.closed = true
	return true
}

func (q *sendQueue) add(d *events.Delivery, write func(*events.Delivery)) {
	q.bytes += len(d.Frame)
	if len(q.inMel) < q.window {
		q.inMel = append(q.inMel, d)
		write(d)
	} else {
		q.backlog = append(q.backlog, d)
	}
	q.length.Store(int32(len(q.inMel) + len(q.backlog)))
}

// sent takes the delivery whose frame melody has written, moving the next
// backlog frame into melody. It returns nil when nothing was queued.
func (q *sendQueue) sent(write func(*events.Delivery)) *events.Delivery {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.inMel) == 0 {
		return nil
	}
	d := q.inMel[0]
	q.inMel[0] = nil
	q.inMel = q.inMel[1:]
	q.bytes -= len(d.Frame)
	q.over = max(0, q.over-1)
	q.overBytes = max(0, q.overBytes-len(d.Frame))
	if len(q.backlog) > 0 && !q.gone {
		next := q.backlog[0]
		q.backlog[0] = nil
		q.backlog = q.backlog[1:]
		q.inMel = append(q.inMel, next)
		write(next)
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
	q.closed, q.gone = true, true
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

// recoveredAnswers are the answers of an attach with since: index 0 with
// "recovered":false, 1 with "recovered":true.
var recoveredAnswers = func() [2]*events.Delivery {
	var ds [2]*events.Delivery
	for i, v := range []string{"false", "true"} {
		f := events.OK.Frame()
		b := append(append(append([]byte(nil), f[:len(f)-1]...), `,"recovered":`...), v...)
		ds[i] = &events.Delivery{Frame: append(b, '}')}
	}
	return ds
}()
