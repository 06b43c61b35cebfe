package verify

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/witnz/witnz/libs/commitment"
	"github.com/witnz/witnz/libs/lthash"
	"github.com/witnz/witnz/libs/pgcopy"
	"github.com/witnz/witnz/libs/statedigest"
)

const (
	// batchBytes is the size of the row batches handed to the hashing
	// workers: large enough that channel operations are rare, small enough
	// that the batches in flight stay a few MiB.
	batchBytes = 256 << 10
	// inlineRow is the row size above which the reading goroutine hashes
	// the row itself instead of copying it into a batch.
	inlineRow = 64 << 10
)

// rowHasher computes a table's commitments. Each hashing goroutine needs
// its own: a Committer is not safe for concurrent use.
type rowHasher struct {
	c       *commitment.Committer
	keyCols []int
	keyBuf  []byte
}

func newRowHasher(tk commitment.TableKey, keyCols []int) *rowHasher {
	return &rowHasher{c: tk.NewCommitter(), keyCols: keyCols}
}

// keyCommit is the row's key commitment: the primary-key columns' encoding,
// or the whole row for a table without a primary key, as cdc-ingest
// commits them.
func (h *rowHasher) keyCommit(row []byte) (commitment.Commitment, error) {
	if len(h.keyCols) == 0 {
		return h.c.KeyCommit(row), nil
	}
	var err error
	if h.keyBuf, err = pgcopy.AppendKey(h.keyBuf[:0], row, h.keyCols); err != nil {
		return commitment.Commitment{}, err
	}
	return h.c.KeyCommit(h.keyBuf), nil
}

// bucketOf is statedigest's bucket function for B buckets, given
// shift = 32 - log2(B).
func bucketOf(key commitment.Commitment, shift uint) uint32 {
	return binary.BigEndian.Uint32(key[:4]) >> shift
}

func bucketShift(buckets int) uint {
	return 32 - uint(bits.TrailingZeros(uint(buckets)))
}

// accumulator holds the buckets of the rows one goroutine hashed.
type accumulator struct {
	h      *rowHasher
	shift  uint
	counts []uint64
	hashes []lthash.Hash
}

func newAccumulator(h *rowHasher, buckets int) *accumulator {
	return &accumulator{h: h, shift: bucketShift(buckets), counts: make([]uint64, buckets), hashes: make([]lthash.Hash, buckets)}
}

func (a *accumulator) add(row []byte) error {
	key, err := a.h.keyCommit(row)
	if err != nil {
		return err
	}
	data := a.h.c.DataCommit(row)
	var el [statedigest.ElementSize]byte
	copy(el[:], key[:])
	copy(el[len(key):], data[:])
	i := bucketOf(key, a.shift)
	a.counts[i]++
	a.hashes[i].Add(el[:])
	return nil
}

// merge adds o's buckets to a's.
func (a *accumulator) merge(o *accumulator) {
	for i := range a.counts {
		a.counts[i] += o.counts[i]
		a.hashes[i].AddState(&o.hashes[i])
	}
}

// digest returns the accumulated buckets as a state digest.
func (a *accumulator) digest() (*statedigest.Digest, error) {
	b := len(a.counts)
	enc := make([]byte, 0, statedigest.EncodedSize(b))
	enc = append(enc, statedigest.EncodingVersion)
	enc = binary.BigEndian.AppendUint32(enc, uint32(b))
	for i := range a.counts {
		enc = binary.BigEndian.AppendUint64(enc, a.counts[i])
		enc = a.hashes[i].AppendBytes(enc)
	}
	return statedigest.Unmarshal(enc)
}

// batch is a run of rows copied out of the COPY stream.
type batch struct {
	buf  []byte
	ends []int
}

func (b *batch) reset() {
	b.buf = b.buf[:0]
	b.ends = b.ends[:0]
}

// scanDigest runs the COPY query on conn and returns the state digest of
// its rows with the given bucket count. Rows are copied into batches that
// workers goroutines hash in parallel; the number of batches in flight is
// bounded, so memory does not depend on the table's size.
func scanDigest(ctx context.Context, conn *pgconn.PgConn, query string, tk commitment.TableKey, keyCols []int, buckets, workers int) (*statedigest.Digest, uint64, error) {
	workers = max(workers, 1)
	accs := make([]*accumulator, workers+1) // the last one is the reader's
	for i := range accs {
		accs[i] = newAccumulator(newRowHasher(tk, keyCols), buckets)
	}
	maxBatches := 2*workers + 1
	work := make(chan *batch, maxBatches)
	free := make(chan *batch, maxBatches)
	made := 0
	getBatch := func() *batch {
		select {
		case b := <-free:
			return b
		default:
		}
		if made < maxBatches {
			made++
			return &batch{buf: make([]byte, 0, batchBytes)}
		}
		return <-free
	}

	var failed atomic.Bool
	var errOnce sync.Once
	var workErr error
	fail := func(err error) {
		errOnce.Do(func() { workErr = err })
		failed.Store(true)
	}
	var wg sync.WaitGroup
	for i := range workers {
		a := accs[i]
		wg.Go(func() {
			for b := range work {
				if !failed.Load() {
					start := 0
					for _, end := range b.ends {
						if err := a.add(b.buf[start:end]); err != nil {
							fail(err)
							break
						}
						start = end
					}
				}
				b.reset()
				free <- b
			}
		})
	}

	cur := getBatch()
	reader := accs[workers]
	rows, err := pgcopy.Scan(ctx, conn, query, func(row []byte) error {
		if failed.Load() {
			return errWorker
		}
		if len(row) > inlineRow {
			return reader.add(row)
		}
		if len(cur.buf)+len(row) > cap(cur.buf) && len(cur.ends) > 0 {
			work <- cur
			cur = getBatch()
		}
		cur.buf = append(cur.buf, row...)
		cur.ends = append(cur.ends, len(cur.buf))
		return nil
	})
	if len(cur.ends) > 0 && err == nil {
		work <- cur
	}
	close(work)
	wg.Wait()
	if workErr != nil && (err == nil || errors.Is(err, errWorker)) {
		err = workErr
	}
	if err != nil {
		return nil, 0, err
	}
	for _, a := range accs[1:] {
		accs[0].merge(a)
	}
	d, err := accs[0].digest()
	if err != nil {
		return nil, 0, fmt.Errorf("build the scan digest: %w", err)
	}
	return d, uint64(rows), nil
}

// errWorker stops the COPY when a hashing worker failed; the worker's
// error is reported instead.
var errWorker = errors.New("a hashing worker failed")
