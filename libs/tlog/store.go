package tlog

import (
	"fmt"

	"github.com/transparency-dev/merkle/compact"
)

// nodeStore keeps the hashes of the perfect subtrees of a log: the leaves
// (level 0) and every complete inner node. Nodes arrive in the order the
// compact range completes them, so a level only ever grows at its end.
// The Log serialises access; implementations need no locking of their own.
type nodeStore interface {
	// put records the hash of node id.
	put(id compact.NodeID, hash []byte) error
	// get returns the hash of node id. The slice must not be modified.
	get(id compact.NodeID) ([]byte, error)
}

// memStore keeps every level as one flat, append-only byte slice.
type memStore struct {
	levels [][]byte
}

func newMemStore() *memStore { return &memStore{} }

func (s *memStore) put(id compact.NodeID, hash []byte) error {
	if len(hash) != HashSize {
		return fmt.Errorf("node %d/%d: hash of %d bytes", id.Level, id.Index, len(hash))
	}
	for uint(len(s.levels)) <= id.Level {
		s.levels = append(s.levels, nil)
	}
	lvl := s.levels[id.Level]
	if want := uint64(len(lvl) / HashSize); id.Index != want {
		return fmt.Errorf("node %d/%d stored out of order (next index at level %d is %d)", id.Level, id.Index, id.Level, want)
	}
	s.levels[id.Level] = append(lvl, hash...)
	return nil
}

func (s *memStore) get(id compact.NodeID) ([]byte, error) {
	if id.Level < uint(len(s.levels)) {
		lvl := s.levels[id.Level]
		if off := id.Index * HashSize; id.Index < uint64(len(lvl)/HashSize) {
			return lvl[off : off+HashSize : off+HashSize], nil
		}
	}
	return nil, fmt.Errorf("node %d/%d: %w", id.Level, id.Index, ErrOutOfRange)
}
