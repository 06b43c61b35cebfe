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
// New returns a log that keeps every node in memory. A DB (OpenDB) keeps
// any number of logs in one bbolt file: a log from DB.Log holds only its
// compact range and a few kilobytes of recent nodes in memory, reads the
// rest from the file, and has every Append and AppendBatch durable when it
// returns; after a crash it reopens exactly as its last successful append
// left it. Layout, durability and crash behaviour are described in
// docs/design/0006-log-storage.md. Both kinds of log give the same roots,
// proofs and chain heads for the same leaves.
//
// Appending in batches (AppendBatch) is cheaper than leaf by leaf: in a
// DB, one transaction and one sync per batch.
//
// A Log is safe for concurrent use by one appender and any number of
// readers.
package tlog

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
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
// r), without its intermediate allocations. Appends use Log.hashChildren,
// which does not allocate at all.
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
	mu      sync.RWMutex
	factory *compact.RangeFactory
	rng     *compact.Range
	store   nodeStore
	// batch is store when it commits once per batch (a DB-backed log),
	// nil when every put takes effect at once (memory).
	batch    batchStore
	chain    [HashSize]byte
	visit    compact.VisitFn
	storeErr error
	// arena hands out the 32-byte slices the compact range keeps, so an
	// append does not allocate per node.
	arena []byte

	// The root is computed when first asked for after an append, not on
	// every append: batches append many leaves and read the root once.
	rootMu   sync.Mutex
	root     [HashSize]byte
	rootSize uint64
}

// arenaSize is how many bytes of hashes one arena allocation holds.
const arenaSize = 256 * HashSize

// noRoot is a rootSize no log reaches: the cached root is stale.
const noRoot = ^uint64(0)

// New returns an empty log that keeps its hashes in memory.
func New() *Log {
	return newLog(newMemStore())
}

func newLog(store nodeStore) *Log {
	l := &Log{store: store}
	l.batch, _ = store.(batchStore)
	l.factory = &compact.RangeFactory{Hash: l.hashChildren}
	l.rng = l.factory.NewEmptyRange(0)
	copy(l.root[:], hasher.EmptyRoot())
	l.visit = func(id compact.NodeID, h []byte) {
		if l.storeErr == nil {
			l.storeErr = l.store.put(id, h)
		}
	}
	return l
}

// keep copies h into the arena and returns the copy.
func (l *Log) keep(h *[HashSize]byte) []byte {
	if len(l.arena) < HashSize {
		l.arena = make([]byte, arenaSize)
	}
	out := l.arena[:HashSize:HashSize]
	l.arena = l.arena[HashSize:]
	copy(out, h[:])
	return out
}

// hashChildren is the compact range's hash function: hashChildren with
// the result in the arena. Only appends call it, under l.mu.
func (l *Log) hashChildren(left, right []byte) []byte {
	var buf [1 + 2*HashSize]byte
	buf[0] = rfc6962.RFC6962NodeHashPrefix
	copy(buf[1:], left)
	copy(buf[1+HashSize:], right)
	h := sha256.Sum256(buf[:])
	return l.keep(&h)
}

// Append adds a leaf hash (SHA-256(0x00 || entry)) at index Size(). On a
// log from a DB the leaf is durable when Append returns; appending many
// leaves at once is AppendBatch's job.
func (l *Log) Append(leafHash [HashSize]byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.appendBatchLocked([][HashSize]byte{leafHash})
}

// AppendBatch adds leaf hashes at indexes Size(), Size()+1, ... in order.
// On a log from a DB the whole batch is written in one transaction, with
// one sync: when AppendBatch returns nil every leaf is durable, and when
// it returns an error none is and the log is as it was before the call.
func (l *Log) AppendBatch(leafHashes [][HashSize]byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.appendBatchLocked(leafHashes)
}

func (l *Log) appendBatchLocked(leafHashes [][HashSize]byte) error {
	if len(leafHashes) == 0 {
		return nil
	}
	if l.storeErr != nil {
		return fmt.Errorf("tlog: log is unusable after an earlier storage failure: %w", l.storeErr)
	}
	if l.batch == nil {
		for i := range leafHashes {
			if err := l.appendLocked(&leafHashes[i]); err != nil {
				return err
			}
		}
		return nil
	}
	// Keep what is needed to step back if the commit fails: the compact
	// range's hashes are never modified in place, so copying the slice
	// headers is enough.
	end, hashes, chain := l.rng.End(), slices.Clone(l.rng.Hashes()), l.chain
	for i := range leafHashes {
		if err := l.appendLocked(&leafHashes[i]); err != nil {
			return err
		}
	}
	if err := l.batch.commit(l.stateLocked()); err != nil {
		l.batch.discard()
		l.rng, _ = l.factory.NewRange(0, end, hashes) // the same range as before: cannot fail
		l.chain = chain
		l.rootMu.Lock()
		l.rootSize = noRoot
		l.rootMu.Unlock()
		return fmt.Errorf("tlog: append %d leaves at %d: %w", len(leafHashes), end, err)
	}
	return nil
}

func (l *Log) appendLocked(leafHash *[HashSize]byte) error {
	if err := l.rng.Append(l.keep(leafHash), l.visit); err != nil {
		return fmt.Errorf("tlog: append: %w", err)
	}
	if l.storeErr != nil {
		return fmt.Errorf("tlog: store node: %w", l.storeErr)
	}
	l.chain = chainNext(l.chain, *leafHash)
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
	return l.stateLocked()
}

func (l *Log) stateLocked() State {
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
	h, err := l.store.get([]compact.NodeID{compact.NewNodeID(0, index)})
	if err != nil {
		return out, fmt.Errorf("tlog: leaf %d: %w", index, err)
	}
	copy(out[:], h[0])
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
	return l.store.get(ids)
}
