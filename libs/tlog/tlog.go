// Package tlog is the transparency log witnz keeps per protected table: an
// append-only RFC 6962 Merkle tree over entry leaf hashes, with inclusion
// and consistency proofs, and a SHA-256 hash chain running beside it.
//
// The tree arithmetic comes from github.com/transparency-dev/merkle: the
// compact package appends in O(log n) and reports every perfect subtree it
// completes, which the log stores so that any root, inclusion proof or
// consistency proof at any earlier size is answered in O(log n) from stored
// nodes (the proof package says which nodes, and rebuilds the one ephemeral
// node a proof may need).
//
// The hash chain is c_0 = 0^32, c_n = SHA-256(c_{n-1} || leaf_n): a second,
// purely sequential commitment to the same leaves.
//
// A Log is safe for concurrent use by one appender and any number of
// readers.
package tlog

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

// HashSize is the size of every hash in the log.
const HashSize = sha256.Size

// ErrOutOfRange is wrapped by errors about an index or size beyond the log.
var ErrOutOfRange = errors.New("out of range")

var (
	hasher  = rfc6962.DefaultHasher
	factory = &compact.RangeFactory{Hash: hashChildren}
)

// hashChildren is rfc6962.DefaultHasher.HashChildren, SHA-256(0x01 || l ||
// r), without its intermediate allocations: appends hash on every leaf.
func hashChildren(l, r []byte) []byte {
	var buf [1 + 2*HashSize]byte
	buf[0] = rfc6962.RFC6962NodeHashPrefix
	copy(buf[1:], l)
	copy(buf[1+HashSize:], r)
	h := sha256.Sum256(buf[:])
	return h[:]
}

// Log is one table's transparency log.
type Log struct {
	mu       sync.RWMutex
	rng      *compact.Range
	store    nodeStore
	chain    [HashSize]byte
	visit    compact.VisitFn
	storeErr error

	// The root is computed when first asked for after an append, not on
	// every append: batches append many leaves and read the root once.
	rootMu   sync.Mutex
	root     [HashSize]byte
	rootSize uint64
}

// New returns an empty log that keeps its hashes in memory.
func New() *Log {
	return newLog(newMemStore())
}

func newLog(store nodeStore) *Log {
	l := &Log{rng: factory.NewEmptyRange(0), store: store}
	copy(l.root[:], hasher.EmptyRoot())
	l.visit = func(id compact.NodeID, h []byte) {
		if l.storeErr == nil {
			l.storeErr = l.store.put(id, h)
		}
	}
	return l
}

// Append adds a leaf hash (SHA-256(0x00 || entry)) at index Size().
func (l *Log) Append(leafHash [HashSize]byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.appendLocked(leafHash)
}

func (l *Log) appendLocked(leafHash [HashSize]byte) error {
	if l.storeErr != nil {
		return fmt.Errorf("tlog: log is unusable after an earlier storage failure: %w", l.storeErr)
	}
	if err := l.rng.Append(leafHash[:], l.visit); err != nil {
		return fmt.Errorf("tlog: append: %w", err)
	}
	if l.storeErr != nil {
		return fmt.Errorf("tlog: store node: %w", l.storeErr)
	}
	l.chain = chainNext(l.chain, leafHash)
	return nil
}

// rootLocked returns the root of the whole log; l.mu must be held (read or
// write).
func (l *Log) rootLocked() [HashSize]byte {
	l.rootMu.Lock()
	defer l.rootMu.Unlock()
	if size := l.rng.End(); l.rootSize != size {
		copy(l.root[:], foldRoot(l.rng.Hashes()))
		l.rootSize = size
	}
	return l.root
}

// chainNext is c_n = SHA-256(c_{n-1} || leaf_n).
func chainNext(prev, leaf [HashSize]byte) [HashSize]byte {
	var buf [2 * HashSize]byte
	copy(buf[:HashSize], prev[:])
	copy(buf[HashSize:], leaf[:])
	return sha256.Sum256(buf[:])
}

// Size is the number of leaves.
func (l *Log) Size() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.rng.End()
}

// Root is the RFC 6962 root of the whole log (SHA-256 of nothing when
// empty).
func (l *Log) Root() [HashSize]byte {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.rootLocked()
}

// ChainHead is c_Size(); all zeros for an empty log.
func (l *Log) ChainHead() [HashSize]byte {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.chain
}

// State is a consistent view of a log's size, root and chain head.
type State struct {
	Size      uint64
	Root      [HashSize]byte
	ChainHead [HashSize]byte
}

// State returns size, root and chain head read together.
func (l *Log) State() State {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return State{Size: l.rng.End(), Root: l.rootLocked(), ChainHead: l.chain}
}

// LeafHash returns the leaf hash at index.
func (l *Log) LeafHash(index uint64) ([HashSize]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var out [HashSize]byte
	if index >= l.rng.End() {
		return out, fmt.Errorf("tlog: leaf %d: %w (log size %d)", index, ErrOutOfRange, l.rng.End())
	}
	h, err := l.store.get(compact.NewNodeID(0, index))
	if err != nil {
		return out, fmt.Errorf("tlog: leaf %d: %w", index, err)
	}
	copy(out[:], h)
	return out, nil
}

// RootAt returns the root of the tree made of the first size leaves.
func (l *Log) RootAt(size uint64) ([HashSize]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.rootAtLocked(size)
}

func (l *Log) rootAtLocked(size uint64) ([HashSize]byte, error) {
	var out [HashSize]byte
	if size > l.rng.End() {
		return out, fmt.Errorf("tlog: root at size %d: %w (log size %d)", size, ErrOutOfRange, l.rng.End())
	}
	if size == l.rng.End() {
		return l.rootLocked(), nil
	}
	if size == 0 {
		copy(out[:], hasher.EmptyRoot())
		return out, nil
	}
	hashes, err := l.nodes(compact.RangeNodes(0, size, nil))
	if err != nil {
		return out, fmt.Errorf("tlog: root at size %d: %w", size, err)
	}
	copy(out[:], foldRoot(hashes))
	return out, nil
}

// foldRoot computes the root of a tree from the hashes of the perfect
// subtrees covering it, largest first (a compact range starting at 0),
// folding from the right as RFC 6962 does for sizes that are not a power of
// two. It is what compact.Range.GetRootHash does, for stored nodes too.
func foldRoot(hashes [][]byte) []byte {
	if len(hashes) == 0 {
		return hasher.EmptyRoot()
	}
	h := hashes[len(hashes)-1]
	for i := len(hashes) - 2; i >= 0; i-- {
		h = hashChildren(hashes[i], h)
	}
	return h
}

// nodes fetches the stored hashes of ids, in order, as fresh slices.
func (l *Log) nodes(ids []compact.NodeID) ([][]byte, error) {
	out := make([][]byte, len(ids))
	for i, id := range ids {
		h, err := l.store.get(id)
		if err != nil {
			return nil, err
		}
		out[i] = append([]byte(nil), h...)
	}
	return out, nil
}
