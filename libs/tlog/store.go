package tlog

import (
	"fmt"

	"github.com/transparency-dev/merkle/compact"
)

// nodeStore keeps the hashes of the perfect subtrees of a log: the leaves
// (level 0) and every complete inner node. Nodes arrive in the order the
// compact range completes them, so a level only ever grows at its end.
// The Log serialises writes against reads; get and leaves may run
// concurrently with each other.
type nodeStore interface {
	// put records the hash of node id. The slice is only read during the
	// call.
	put(id compact.NodeID, hash []byte) error
	// get returns copies of the hashes of ids, in order.
	get(ids []compact.NodeID) ([][]byte, error)
	// leaves calls fn with the leaf hashes of [from, to) in order. The
	// slice is only valid during the call.
	leaves(from, to uint64, fn func(index uint64, hash []byte) error) error
}

// batchStore is a nodeStore whose puts take effect only when committed:
// one commit per appended batch.
type batchStore interface {
	nodeStore
	// commit makes every node put since the last commit durable, together
	// with the log state after them, atomically.
	commit(st State) error
	// discard forgets every node put since the last commit.
	discard()
}

// memChunk is the most hashes one memStore chunk holds (1 MiB): a level
// grows by adding chunks, so a large log never copies what it already has.
const memChunk = 1 << 15

// memStore keeps every level as append-only chunks of hashes laid out back
// to back.
type memStore struct {
	levels []memLevel
}

type memLevel struct {
	chunks [][]byte // all but the last hold exactly memChunk hashes
	n      uint64
}

func newMemStore() *memStore { return &memStore{} }

func (s *memStore) put(id compact.NodeID, hash []byte) error {
	if len(hash) != HashSize {
		return fmt.Errorf("node %d/%d: hash of %d bytes", id.Level, id.Index, len(hash))
	}
	for uint(len(s.levels)) <= id.Level {
		s.levels = append(s.levels, memLevel{})
	}
	lvl := &s.levels[id.Level]
	if id.Index != lvl.n {
		return fmt.Errorf("node %d/%d stored out of order (next index at level %d is %d)", id.Level, id.Index, id.Level, lvl.n)
	}
	last := len(lvl.chunks) - 1
	if last < 0 || len(lvl.chunks[last]) == memChunk*HashSize {
		// A level that filled a chunk will fill the next one too.
		size := 8 * HashSize
		if last >= 0 {
			size = memChunk * HashSize
		}
		lvl.chunks = append(lvl.chunks, make([]byte, 0, size))
		last++
	}
	c := lvl.chunks[last]
	if len(c) == cap(c) {
		// Double up to the chunk size, never beyond it.
		grown := make([]byte, len(c), min(2*cap(c), memChunk*HashSize))
		copy(grown, c)
		c = grown
	}
	lvl.chunks[last] = append(c, hash...)
	lvl.n++
	return nil
}

// node returns the stored hash of id, or nil. The slice must not be
// modified.
func (s *memStore) node(id compact.NodeID) []byte {
	if id.Level >= uint(len(s.levels)) || id.Index >= s.levels[id.Level].n {
		return nil
	}
	c := s.levels[id.Level].chunks[id.Index/memChunk]
	off := (id.Index % memChunk) * HashSize
	return c[off : off+HashSize : off+HashSize]
}

func (s *memStore) get(ids []compact.NodeID) ([][]byte, error) {
	buf := make([]byte, len(ids)*HashSize)
	out := make([][]byte, len(ids))
	for i, id := range ids {
		h := s.node(id)
		if h == nil {
			return nil, fmt.Errorf("node %d/%d: %w", id.Level, id.Index, ErrOutOfRange)
		}
		out[i] = buf[i*HashSize : (i+1)*HashSize : (i+1)*HashSize]
		copy(out[i], h)
	}
	return out, nil
}

func (s *memStore) leaves(from, to uint64, fn func(uint64, []byte) error) error {
	for i := from; i < to; i++ {
		h := s.node(compact.NewNodeID(0, i))
		if h == nil {
			return fmt.Errorf("leaf %d: %w", i, ErrOutOfRange)
		}
		if err := fn(i, h); err != nil {
			return err
		}
	}
	return nil
}
