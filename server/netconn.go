package server

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// maxBatch is the most bytes a connection holds back to send together.
const maxBatch = 16 << 10

// batchListener wraps every accepted connection in a batchConn.
type batchListener struct{ net.Listener }

func (l batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &batchConn{Conn: c}, nil
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
}

// more reports whether frames beyond the one being written wait in the queue.
func (b *batchConn) more() bool {
	c := b.owner.Load()
	return c != nil && c.queue.length.Load() > 1
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	control := len(p) > 0 && p[0]&0x08 != 0 // a frame header with a control opcode (or, harmlessly, payload bytes that look like one)
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
