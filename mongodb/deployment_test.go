package mongodb

// A driver.Deployment that answers every command with a Go function, so that
// the real driver (its *mongo.ChangeStream, resume logic, queries, writes)
// runs against scripted server replies with no MongoDB server. A handler
// error reaches the driver as a network error; a handler may block (a
// getMore waiting for changes) until the request's context ends.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo/address"
	"go.mongodb.org/mongo-driver/mongo/description"
	"go.mongodb.org/mongo-driver/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/x/mongo/driver"
	"go.mongodb.org/mongo-driver/x/mongo/driver/topology"
	"go.mongodb.org/mongo-driver/x/mongo/driver/wiremessage"
)

// handlerFunc answers one command: the reply document, or an error that the
// driver sees as a broken connection.
type handlerFunc func(ctx context.Context, name string, cmd bson.Raw) (bson.D, error)

const fakeAddr = address.Address("fake.invalid:27017")

var fakeSessionTimeout int64 = 30

var fakeDescription = description.Server{
	Addr:                     fakeAddr,
	CanonicalAddr:            fakeAddr,
	MaxDocumentSize:          16 << 20,
	MaxMessageSize:           48000000,
	MaxBatchCount:            100000,
	SessionTimeoutMinutes:    uint32(fakeSessionTimeout),
	SessionTimeoutMinutesPtr: &fakeSessionTimeout,
	Kind:                     description.RSPrimary,
	WireVersion:              &description.VersionRange{Min: 0, Max: topology.SupportedWireVersions.Max},
}

type fakeDeployment struct {
	handle handlerFunc

	once    sync.Once
	updates chan description.Topology
	connSeq atomic.Uint64
}

var (
	_ driver.Deployment   = (*fakeDeployment)(nil)
	_ driver.Server       = (*fakeDeployment)(nil)
	_ driver.Connector    = (*fakeDeployment)(nil)
	_ driver.Disconnector = (*fakeDeployment)(nil)
	_ driver.Subscriber   = (*fakeDeployment)(nil)
	_ driver.Connection   = (*fakeConn)(nil)
)

func newFakeDeployment(h handlerFunc) *fakeDeployment {
	d := &fakeDeployment{handle: h, updates: make(chan description.Topology, 1)}
	d.updates <- description.Topology{SessionTimeoutMinutes: uint32(fakeSessionTimeout), SessionTimeoutMinutesPtr: &fakeSessionTimeout}
	return d
}

func (d *fakeDeployment) SelectServer(context.Context, description.ServerSelector) (driver.Server, error) {
	return d, nil
}
func (d *fakeDeployment) Kind() description.TopologyKind { return description.ReplicaSetWithPrimary }
func (d *fakeDeployment) Connection(context.Context) (driver.Connection, error) {
	return &fakeConn{d: d, id: d.connSeq.Add(1)}, nil
}
func (d *fakeDeployment) RTTMonitor() driver.RTTMonitor { return zeroRTT{} }
func (d *fakeDeployment) Connect() error                { return nil }
func (d *fakeDeployment) Disconnect(context.Context) error {
	d.once.Do(func() { close(d.updates) })
	return nil
}
func (d *fakeDeployment) Subscribe() (*driver.Subscription, error) {
	return &driver.Subscription{Updates: d.updates}, nil
}
func (d *fakeDeployment) Unsubscribe(*driver.Subscription) error { return nil }

type zeroRTT struct{}

func (zeroRTT) EWMA() time.Duration { return 0 }
func (zeroRTT) Min() time.Duration  { return 0 }
func (zeroRTT) P90() time.Duration  { return 0 }
func (zeroRTT) Stats() string       { return "" }

// fakeConn carries one command at a time: Write decodes it, Read runs the
// handler and encodes its reply.
type fakeConn struct {
	d     *fakeDeployment
	id    uint64
	reqID int32
	name  string
	cmd   bson.Raw
}

func (c *fakeConn) WriteWireMessage(_ context.Context, wm []byte) error {
	name, cmd, reqID, err := decodeOpMsg(wm)
	if err != nil {
		return err
	}
	c.name, c.cmd, c.reqID = name, cmd, reqID
	return nil
}

func (c *fakeConn) ReadWireMessage(ctx context.Context) ([]byte, error) {
	if c.cmd == nil {
		return nil, errors.New("fake: read without a command")
	}
	name, cmd := c.name, c.cmd
	c.cmd = nil
	reply, err := c.d.handle(ctx, name, cmd)
	if err != nil {
		return nil, err
	}
	body, err := bson.Marshal(reply)
	if err != nil {
		return nil, err
	}
	idx, dst := wiremessage.AppendHeaderStart(nil, wiremessage.NextRequestID(), c.reqID, wiremessage.OpMsg)
	dst = wiremessage.AppendMsgFlags(dst, 0)
	dst = wiremessage.AppendMsgSectionType(dst, wiremessage.SingleDocument)
	dst = append(dst, body...)
	return bsoncore.UpdateLength(dst, idx, int32(len(dst[idx:]))), nil
}

func (c *fakeConn) Description() description.Server { return fakeDescription }
func (c *fakeConn) Close() error                    { return nil }
func (c *fakeConn) ID() string                      { return fmt.Sprintf("fake-%d", c.id) }
func (c *fakeConn) ServerConnectionID() *int64      { id := int64(c.id); return &id }
func (c *fakeConn) DriverConnectionID() uint64      { return c.id }
func (c *fakeConn) Address() address.Address        { return fakeAddr }
func (c *fakeConn) Stale() bool                     { return false }
func (c *fakeConn) OIDCTokenGenID() uint64          { return 0 }
func (c *fakeConn) SetOIDCTokenGenID(uint64)        {}

// decodeOpMsg reads an OP_MSG into one command document: the body, with each
// document sequence (insert's documents, update's updates) as an array.
func decodeOpMsg(wm []byte) (name string, cmd bson.Raw, reqID int32, err error) {
	_, reqID, _, opcode, rem, ok := wiremessage.ReadHeader(wm)
	if !ok || opcode != wiremessage.OpMsg {
		return "", nil, 0, fmt.Errorf("fake: not an OP_MSG (opcode %v)", opcode)
	}
	if _, rem, ok = wiremessage.ReadMsgFlags(rem); !ok {
		return "", nil, 0, errors.New("fake: no flags")
	}
	var body bson.D
	var seqs []bson.E
	for len(rem) > 0 {
		var st wiremessage.SectionType
		if st, rem, ok = wiremessage.ReadMsgSectionType(rem); !ok {
			return "", nil, 0, errors.New("fake: bad section")
		}
		switch st {
		case wiremessage.SingleDocument:
			var doc bsoncore.Document
			if doc, rem, ok = wiremessage.ReadMsgSectionSingleDocument(rem); !ok {
				return "", nil, 0, errors.New("fake: bad body")
			}
			if err := bson.Unmarshal(doc, &body); err != nil {
				return "", nil, 0, err
			}
		case wiremessage.DocumentSequence:
			var id string
			var docs []bsoncore.Document
			if id, docs, rem, ok = wiremessage.ReadMsgSectionDocumentSequence(rem); !ok {
				return "", nil, 0, errors.New("fake: bad document sequence")
			}
			arr := make(bson.A, len(docs))
			for i, d := range docs {
				arr[i] = bson.Raw(d)
			}
			seqs = append(seqs, bson.E{Key: id, Value: arr})
		default:
			return "", nil, 0, fmt.Errorf("fake: section type %v", st)
		}
	}
	if len(body) == 0 {
		return "", nil, 0, errors.New("fake: no command")
	}
	raw, err := bson.Marshal(append(body, seqs...))
	return body[0].Key, raw, reqID, err
}
