package mongodb

// The fake MongoDB behind a loopback TCP listener, so that the driver runs
// its real topology: connection string, handshake (OP_QUERY hello), pool,
// monitoring, and real network errors (a handler error closes the
// connection).

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/x/mongo/driver/wiremessage"
)

// listenTCP serves f on 127.0.0.1 and returns a connection string for it.
func (f *fakeMongo) listenTCP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				f.serveConn(ctx, c)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "mongodb://" + ln.Addr().String() + "/?directConnection=true&heartbeatFrequencyMS=500&serverSelectionTimeoutMS=1000"
}

func (f *fakeMongo) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	for {
		var hdr [16]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := int(binary.LittleEndian.Uint32(hdr[:4]))
		if n < 16 || n > 48<<20 {
			return
		}
		wm := make([]byte, n)
		copy(wm, hdr[:])
		if _, err := io.ReadFull(c, wm[16:]); err != nil {
			return
		}
		_, reqID, _, opcode, rem, _ := wiremessage.ReadHeader(wm)
		var out []byte
		switch opcode {
		case wiremessage.OpQuery: // the first hello of the handshake
			_, rem, _ = wiremessage.ReadQueryFlags(rem)
			_, rem, _ = wiremessage.ReadQueryFullCollectionName(rem)
			_, rem, _ = wiremessage.ReadQueryNumberToSkip(rem)
			_, rem, _ = wiremessage.ReadQueryNumberToReturn(rem)
			body, _ := bson.Marshal(f.hello(c))
			idx, dst := wiremessage.AppendHeaderStart(nil, wiremessage.NextRequestID(), reqID, wiremessage.OpReply)
			dst = wiremessage.AppendReplyFlags(dst, 0)
			dst = wiremessage.AppendReplyCursorID(dst, 0)
			dst = wiremessage.AppendReplyStartingFrom(dst, 0)
			dst = wiremessage.AppendReplyNumberReturned(dst, 1)
			dst = append(dst, body...)
			out = bsoncore.UpdateLength(dst, idx, int32(len(dst[idx:])))
		case wiremessage.OpMsg:
			name, cmd, _, err := decodeOpMsg(wm)
			if err != nil {
				return
			}
			var reply bson.D
			switch name {
			case "hello", "isMaster", "ismaster":
				reply = f.hello(c)
			default:
				reply, err = f.handle(ctx, name, cmd)
				if err != nil {
					return // a network error: the connection breaks
				}
			}
			body, err := bson.Marshal(reply)
			if err != nil {
				return
			}
			idx, dst := wiremessage.AppendHeaderStart(nil, wiremessage.NextRequestID(), reqID, wiremessage.OpMsg)
			dst = wiremessage.AppendMsgFlags(dst, 0)
			dst = wiremessage.AppendMsgSectionType(dst, wiremessage.SingleDocument)
			dst = append(dst, body...)
			out = bsoncore.UpdateLength(dst, idx, int32(len(dst[idx:])))
		default:
			return
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// hello describes a replica set primary (without topologyVersion, so the
// driver polls instead of streaming).
func (f *fakeMongo) hello(c net.Conn) bson.D {
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down {
		c.Close()
	}
	addr := c.LocalAddr().String()
	return bson.D{
		{Key: "helloOk", Value: true}, {Key: "isWritablePrimary", Value: true}, {Key: "ismaster", Value: true},
		{Key: "setName", Value: "rs0"}, {Key: "hosts", Value: bson.A{addr}}, {Key: "me", Value: addr}, {Key: "primary", Value: addr},
		{Key: "maxBsonObjectSize", Value: int32(16 << 20)}, {Key: "maxMessageSizeBytes", Value: int32(48000000)}, {Key: "maxWriteBatchSize", Value: int32(100000)},
		{Key: "logicalSessionTimeoutMinutes", Value: int32(30)}, {Key: "minWireVersion", Value: int32(0)}, {Key: "maxWireVersion", Value: int32(21)},
		{Key: "ok", Value: 1.0},
	}
}

var _ = errors.New
