package files

// Downloads from GridFS: the file's document by _id, then its chunks from
// the one holding the position on.

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// Open looks the file up by its id; its link must not have expired.
func (st *GridFS) Open(ctx context.Context, key, name string) (*File, error) {
	sum := ID(key, name)
	id := hex.EncodeToString(sum[:])
	octx, cancel := st.op(ctx)
	defer cancel()
	var doc struct {
		Length     int64     `bson:"length"`
		ChunkSize  int32     `bson:"chunkSize"`
		UploadDate time.Time `bson:"uploadDate"`
		Filename   string    `bson:"filename"`
		Metadata   struct {
			Expires time.Time `bson:"expires"`
		} `bson:"metadata"`
	}
	err := st.files.FindOne(octx, bson.D{{Key: "_id", Value: id}, {Key: "metadata.expires", Value: bson.D{{Key: "$gt", Value: time.Now()}}}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, unavailable("find the file", err)
	}
	if doc.ChunkSize <= 0 || doc.Length < 0 {
		return nil, fmt.Errorf("file %s: chunkSize %d, length %d", id, doc.ChunkSize, doc.Length)
	}
	r := &chunkReader{st: st, ctx: ctx, id: id, size: doc.Length, chunkSize: int64(doc.ChunkSize)}
	return &File{Name: doc.Filename, Size: doc.Length, Created: doc.UploadDate, Expires: doc.Metadata.Expires, Content: r}, nil
}

// chunkReader reads a file's chunks from a position: Seek only moves the
// position, and a read from a new position asks for the chunks from the
// one holding it on (seek by chunk), chunksPerWrite per batch.
type chunkReader struct {
	st        *GridFS
	ctx       context.Context
	id        string
	size      int64
	chunkSize int64

	pos  int64
	cur  *mongo.Cursor
	next int64  // the number of the chunk the cursor gives next
	data []byte // the rest of the current chunk, which ends at dataEnd
	end  int64
}

func (r *chunkReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, errors.New("seek: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	if offset != r.pos {
		r.pos = offset
		r.data = nil
	}
	return offset, nil
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if len(r.data) == 0 {
		if err := r.load(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	r.pos += int64(n)
	return n, nil
}

// load makes data the rest of the chunk holding pos.
func (r *chunkReader) load() error {
	k := r.pos / r.chunkSize
	if r.cur == nil || r.next != k {
		r.closeCursor()
		octx, cancel := r.st.op(r.ctx)
		cur, err := r.st.chunks.Find(octx, bson.D{{Key: "files_id", Value: r.id}, {Key: "n", Value: bson.D{{Key: "$gte", Value: k}}}},
			options.Find().SetSort(bson.D{{Key: "n", Value: 1}}).SetBatchSize(chunksPerWrite))
		cancel()
		if err != nil {
			return unavailable("find chunks", err)
		}
		r.cur, r.next = cur, k
	}
	octx, cancel := r.st.op(r.ctx)
	ok := r.cur.Next(octx)
	cancel()
	if !ok {
		if err := r.cur.Err(); err != nil {
			return unavailable("read chunks", err)
		}
		return fmt.Errorf("file %s: chunk %d missing (removed after its link expired?)", r.id, k)
	}
	n := numberAt(r.cur.Current, "n")
	_, data, okData := r.cur.Current.Lookup("data").BinaryOK()
	want := min(r.chunkSize, r.size-k*r.chunkSize)
	if n != k || !okData || int64(len(data)) != want {
		return fmt.Errorf("file %s: chunk %d missing or of the wrong size (found chunk %d, %d bytes)", r.id, k, n, len(data))
	}
	r.next = k + 1
	r.data = data[r.pos-k*r.chunkSize:]
	return nil
}

func (r *chunkReader) closeCursor() {
	if r.cur != nil {
		ctx, cancel := context.WithTimeout(context.Background(), r.st.g.Timeout)
		_ = r.cur.Close(ctx)
		cancel()
		r.cur = nil
	}
}

func (r *chunkReader) Close() error {
	r.closeCursor()
	return nil
}
