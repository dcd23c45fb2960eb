package server

import (
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// maxBatch is the most bytes a connection holds back to send together.
const maxBatch = 16 << 10

// yieldWindow: see batchConn.mayYield.
const yieldWindow = time.Millisecond

// deadlineSlack is the share of a deadline's duration by which the
// deadline in force may come early: a later deadline moves the socket's
// only once it is more than duration/deadlineSlack past the one in force
// (see batchConn.SetWriteDeadline).
const deadlineSlack = 8

// lingerTimeout is how long a closed WebSocket connection keeps reading
// (and discarding) what the peer still sends, so that the close frame it was
// sent is not lost to a reset (see batchConn.Close).
const lingerTimeout = time.Second

// lingerBytes bounds what a lingering close reads.
const lingerBytes = 64 << 20

// batchListener wraps every accepted connection in a batchConn.
type batchListener struct {
	net.Listener
	// write and read are the one duration of every write deadline
	// (write_timeout) and read deadline (pong_timeout) but the last ones
	// (see batchConn.SetWriteDeadline).
	write, read time.Duration
}

func (l batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &batchConn{Conn: c, wslack: int64(l.write / deadlineSlack), rslack: int64(l.read / deadlineSlack)}, nil
}

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, maxBatch); return &b }}

// batchConn lets a WebSocket connection send several queued frames in one
// system call. melody writes one frame per Write; while the connection
// knows that more frames wait in its queue, a frame is held back (up to
// maxBatch bytes) and goes out with the next one, by writev. The last frame
// of a burst, and every control frame (ping, close), goes out at once, so
// nothing waits for a frame that is not coming. Plain HTTP connections, which
// have no owner, pass straight through.
type batchConn struct {
	net.Conn
	owner atomic.Pointer[conn]

	mu  sync.Mutex
	buf *[]byte // held frames; nil when empty (the buffer goes back to the pool)

	wdeadline atomic.Int64 // write deadline in force, Unix ns; 0: none
	rdeadline atomic.Int64 // read deadline in force, Unix ns; 0: none
	wslack    int64        // see SetWriteDeadline; 0: every deadline is applied
	rslack    int64

	closeOnce sync.Once
	closed    atomic.Bool // Close was called (a lingering close is under way)
}

// SetWriteDeadline is called before every frame: melody sets now plus
// write_timeout for every frame and ping, the server's ping handler the same
// for every pong, and only a close frame, the last, gets a shorter one.
// Moving the socket's deadline costs a timer update in the runtime's poller,
// so a later deadline is applied only once it is more than wslack (an
// eighth of write_timeout) past the one in force: a write may time out up to
// an eighth of write_timeout early, never later. That holds because every
// deadline but the last has the same duration: a shorter one (gorilla's
// default pong deadline is 1 s) that is kept back by the slack could expire
// before its own write, and was how pings faster than 1.25 s got healthy
// clients dropped. An earlier deadline, or none, is always applied.
func (b *batchConn) SetWriteDeadline(t time.Time) error {
	if keepDeadline(&b.wdeadline, t, b.wslack) {
		return nil
	}
	if err := b.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	b.wdeadline.Store(unixNano(t))
	return nil
}

// SetReadDeadline is called for every frame the client sends (any frame is
// a sign of life), always with now plus pong_timeout, and kept back by
// rslack (an eighth of pong_timeout) as SetWriteDeadline is. Once the
// connection is closing (a lingering close), only an earlier deadline is
// applied.
func (b *batchConn) SetReadDeadline(t time.Time) error {
	if keepDeadline(&b.rdeadline, t, b.rslack) || b.closed.Load() && !t.IsZero() && unixNano(t) > b.rdeadline.Load() {
		return nil
	}
	if err := b.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	b.rdeadline.Store(unixNano(t))
	return nil
}

// keepDeadline reports whether the deadline in force (*rec) may stay
// instead of t: t is no earlier and at most slack later.
func keepDeadline(rec *atomic.Int64, t time.Time, slack int64) bool {
	ns, cur := unixNano(t), rec.Load()
	return ns != 0 && cur != 0 && ns >= cur && ns-cur <= slack
}

// SetDeadline keeps the record of both deadlines in step.
func (b *batchConn) SetDeadline(t time.Time) error {
	if err := b.Conn.SetDeadline(t); err != nil {
		return err
	}
	b.wdeadline.Store(unixNano(t))
	b.rdeadline.Store(unixNano(t))
	return nil
}

// Close of a WebSocket connection is a lingering close: the server's side
// is shut for writing (the peer gets everything written, the close frame
// last, then end of stream), and what the peer still sends is read and
// dropped for up to lingerTimeout before the socket closes. Closing a socket
// with unread data makes the kernel send a reset, and a peer that is still
// sending (a frame over max_message_bytes, say) then loses the close frame
// and sees 1006 instead of its code. Plain HTTP connections close at once.
func (b *batchConn) Close() error {
	if b.owner.Load() == nil {
		return b.Conn.Close()
	}
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		cw, ok := b.Conn.(interface{ CloseWrite() error })
		if !ok || cw.CloseWrite() != nil {
			_ = b.Conn.Close()
			return
		}
		end := time.Now().Add(lingerTimeout)
		_ = b.Conn.SetReadDeadline(end)
		b.rdeadline.Store(end.UnixNano())
		go func() {
			// The reader of the connection may still be reading as well
			// (it ends at the peer's close frame or the deadline); what
			// either reads is dropped.
			_, _ = io.Copy(io.Discard, io.LimitReader(b.Conn, lingerBytes))
			_ = b.Conn.Close()
		}()
	})
	return nil
}

// unixNano is t in Unix nanoseconds, 0 for the zero time (no deadline).
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// more reports whether frames beyond the one being written wait in the queue.
func (b *batchConn) more() bool {
	c := b.owner.Load()
	return c != nil && c.queue.length.Load() > 1
}

func (b *batchConn) Write(p []byte) (int, error) {
	control := len(p) > 0 && p[0]&0x08 != 0 // a frame header with a control opcode (or, harmlessly, payload bytes that look like one)
	b.mu.Lock()
	defer b.mu.Unlock()
	if !control && !b.more() && b.mayYield() {
		// The last frame known, while frames are coming in: let the
		// goroutines that are runnable now (the publisher, other writers)
		// go first, so that frames they queue meanwhile leave in the same
		// writev. Under no load this returns at once.
		b.mu.Unlock()
		runtime.Gosched()
		b.mu.Lock()
	}
	if !control && b.more() && (b.buf == nil || len(*b.buf)+len(p) <= maxBatch) && len(p) <= maxBatch {
		if b.buf == nil {
			b.buf = batchPool.Get().(*[]byte)
		}
		*b.buf = append(*b.buf, p...)
		return len(p), nil
	}
	if b.buf == nil {
		return b.Conn.Write(p)
	}
	bufs := net.Buffers{*b.buf, p}
	n, err := bufs.WriteTo(b.Conn)
	held := len(*b.buf)
	*b.buf = (*b.buf)[:0]
	batchPool.Put(b.buf)
	b.buf = nil
	if err != nil {
		return max(0, int(n)-held), err
	}
	return len(p), nil
}

// mayYield reports whether a burst may be going on: frames are held (this
// connection got several in a row), or a publish ended within
// yieldWindow. A lone frame long after the last publish (an event at a
// modest rate fanned out to many connections) goes out at once: there is
// nothing to wait for, and a yield would only add to every later writer's
// latency. Called with b.mu held.
func (b *batchConn) mayYield() bool {
	c := b.owner.Load()
	return c != nil && (b.buf != nil || c.srv.hub.SincePublish() < yieldWindow)
}

// ReadFrom keeps sendfile for plain HTTP answers.
func (b *batchConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := b.Conn.(io.ReaderFrom); ok && b.owner.Load() == nil {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{b}, r)
}

// CloseWrite lets net/http half-close plain HTTP connections.
func (b *batchConn) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
