package server

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// deadlineConn records the write deadlines that reach the socket.
type deadlineConn struct {
	net.Conn
	set []time.Time
}

func (d *deadlineConn) SetWriteDeadline(t time.Time) error {
	d.set = append(d.set, t)
	return d.Conn.SetWriteDeadline(t)
}

func TestBatchConnWriteDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	rec := &deadlineConn{Conn: a}
	bc := &batchConn{Conn: rec, wslack: int64(time.Second)}

	t0 := time.Now().Add(8 * time.Second)
	steps := []struct {
		name    string
		t       time.Time
		applied bool
	}{
		{"first deadline", t0, true},
		{"later, within slack", t0.Add(500 * time.Millisecond), false},
		{"later, exactly slack", t0.Add(time.Second), false},
		{"later, beyond slack", t0.Add(1500 * time.Millisecond), true},
		{"earlier (a close frame's short deadline)", t0.Add(-5 * time.Second), true},
		{"none", time.Time{}, true},
		{"again after none", t0, true},
	}
	for _, st := range steps {
		before := len(rec.set)
		if err := bc.SetWriteDeadline(st.t); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := len(rec.set) > before; got != st.applied {
			t.Fatalf("%s: applied=%v, want %v", st.name, got, st.applied)
		}
		if st.applied && !rec.set[len(rec.set)-1].Equal(st.t) {
			t.Fatalf("%s: socket got %v, want %v", st.name, rec.set[len(rec.set)-1], st.t)
		}
	}

	// SetDeadline resets what is in force: a later write deadline within
	// slack of the old record must still reach the socket afterwards.
	if err := bc.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	before := len(rec.set)
	if err := bc.SetWriteDeadline(t0.Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if len(rec.set) == before {
		t.Fatal("a deadline after SetDeadline(zero) was not applied")
	}
}

// The deadline that stays in force still stops a write to a peer that
// does not read: at most slack earlier than asked, never later.
func TestBatchConnWriteDeadlineTimesOut(t *testing.T) {
	a, b := net.Pipe() // unbuffered: a write blocks until b reads
	defer a.Close()
	defer b.Close()
	bc := &batchConn{Conn: a, wslack: int64(100 * time.Millisecond)}
	start := time.Now()
	if err := bc.SetWriteDeadline(start.Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := bc.SetWriteDeadline(start.Add(250 * time.Millisecond)); err != nil { // within slack: kept at 200 ms
		t.Fatal(err)
	}
	_, err := bc.Write([]byte{0x81, 1, 'x'})
	took := time.Since(start)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a stuck peer: %v, want a deadline error", err)
	}
	if took < 180*time.Millisecond || took > 2*time.Second {
		t.Fatalf("write timed out after %v, want about 200ms", took)
	}
}
