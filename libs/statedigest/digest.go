package statedigest

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/witnz/witnz/libs/commitment"
	"github.com/witnz/witnz/libs/lthash"
)

const (
	// DefaultBuckets is the bucket count of a table registered without one.
	DefaultBuckets = 1024
	// MaxBuckets bounds the bucket count (and a digest's memory, ~128 MiB).
	MaxBuckets = 1 << 16
	// ElementSize is the length of an element: key_commit || data_commit.
	ElementSize = 2 * sha256.Size
	// LeafSize is the length of a bucket leaf.
	LeafSize = 4 + 8 + lthash.Size
)

// Errors.
var (
	// ErrBuckets: a bucket count that is not a power of two in [1, MaxBuckets].
	ErrBuckets = errors.New("statedigest: bucket count must be a power of two between 1 and 65536")
	// ErrUnderflow: a removal from a bucket whose row count is zero.
	ErrUnderflow = errors.New("statedigest: row count would go below zero")
	// ErrBucketIndex: a bucket index at or beyond the bucket count.
	ErrBucketIndex = errors.New("statedigest: bucket index out of range")
	// ErrMismatch: two digests with different bucket counts compared.
	ErrMismatch = errors.New("statedigest: digests have different bucket counts")
)

// Bucket is the content of one bucket.
type Bucket struct {
	// Count is the number of rows in the bucket.
	Count uint64
	// Hash is the LtHash16 of their elements, key_commit || data_commit.
	Hash lthash.Hash
}

// Digest is a table's state digest. Make one with New or Unmarshal; the
// zero value is only a target for UnmarshalBinary.
//
// Mutating methods (Add, Remove, Apply, Undo) need exclusive access; the
// others may run concurrently with each other.
type Digest struct {
	buckets []Bucket
	shift   uint // 32 - log2(len(buckets))

	// The Merkle tree is cached (heap layout: node 1 is the root, node n
	// has children 2n and 2n+1, bucket i's leaf hash is node B+i) and Root
	// rehashes only the leaves changed since the last call and their paths:
	// hashing all 2 MiB of leaves takes milliseconds, a batch of changes
	// touches few buckets.
	mu    sync.Mutex
	nodes [][sha256.Size]byte
	stale []bool // per bucket: leaf hash out of date
}

// New returns an empty digest with the given number of buckets (a power of
// two in [1, MaxBuckets]).
func New(buckets int) (*Digest, error) {
	if buckets < 1 || buckets > MaxBuckets || buckets&(buckets-1) != 0 {
		return nil, fmt.Errorf("%w: got %d", ErrBuckets, buckets)
	}
	return newDigest(buckets), nil
}

// newDigest returns an empty digest; buckets must be valid.
func newDigest(buckets int) *Digest {
	return &Digest{
		buckets: make([]Bucket, buckets),
		shift:   32 - uint(bits.TrailingZeros(uint(buckets))),
		nodes:   make([][sha256.Size]byte, 2*buckets),
		stale:   allTrue(buckets),
	}
}

// Buckets returns the bucket count B.
func (d *Digest) Buckets() int { return len(d.buckets) }

// BucketOf returns the bucket of a row with this key commitment: the top
// log2(B) bits of the key.
func (d *Digest) BucketOf(key commitment.Commitment) uint32 {
	return binary.BigEndian.Uint32(key[:4]) >> d.shift
}

// BucketIndex is BucketOf for a digest of the given (power of two) bucket
// count, for code that routes keys without holding a digest.
func BucketIndex(key commitment.Commitment, buckets uint32) uint32 {
	return binary.BigEndian.Uint32(key[:4]) >> (32 - bits.TrailingZeros32(buckets))
}

// Add adds the row (key, data).
func (d *Digest) Add(key, data commitment.Commitment) {
	i := d.BucketOf(key)
	e := element(key, data)
	b := &d.buckets[i]
	b.Count++
	b.Hash.Add(e[:])
	d.touch(i)
}

// Remove removes the row (key, data). It fails with ErrUnderflow, leaving
// the digest unchanged, if the row's bucket is empty.
func (d *Digest) Remove(key, data commitment.Commitment) error {
	i := d.BucketOf(key)
	b := &d.buckets[i]
	if b.Count == 0 {
		return fmt.Errorf("%w: bucket %d is empty", ErrUnderflow, i)
	}
	e := element(key, data)
	b.Count--
	b.Hash.Remove(e[:])
	d.touch(i)
	return nil
}

func element(key, data commitment.Commitment) [ElementSize]byte {
	var e [ElementSize]byte
	copy(e[:], key[:])
	copy(e[sha256.Size:], data[:])
	return e
}

func allTrue(n int) []bool {
	s := make([]bool, n)
	for i := range s {
		s[i] = true
	}
	return s
}

func (d *Digest) touch(i uint32) {
	d.mu.Lock()
	d.stale[i] = true
	d.mu.Unlock()
}

// Bucket returns the content of bucket i.
func (d *Digest) Bucket(i uint32) (Bucket, error) {
	if int64(i) >= int64(len(d.buckets)) {
		return Bucket{}, fmt.Errorf("%w: %d of %d", ErrBucketIndex, i, len(d.buckets))
	}
	return d.buckets[i], nil
}

// Rows returns the total row count over all buckets.
func (d *Digest) Rows() uint64 {
	var n uint64
	for i := range d.buckets {
		n += d.buckets[i].Count
	}
	return n
}

// BucketLeaf returns bucketLeaf(i), the bytes the Merkle tree hashes for
// bucket i.
func (d *Digest) BucketLeaf(i uint32) ([]byte, error) {
	if int64(i) >= int64(len(d.buckets)) {
		return nil, fmt.Errorf("%w: %d of %d", ErrBucketIndex, i, len(d.buckets))
	}
	return appendLeaf(make([]byte, 0, LeafSize), i, &d.buckets[i]), nil
}

func appendLeaf(dst []byte, i uint32, b *Bucket) []byte {
	dst = binary.BigEndian.AppendUint32(dst, i)
	dst = binary.BigEndian.AppendUint64(dst, b.Count)
	return b.Hash.AppendBytes(dst)
}

// Root returns the table digest: the RFC 6962 Merkle root over the bucket
// leaves.
func (d *Digest) Root() [sha256.Size]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := len(d.buckets)
	changed := make([]bool, 2*n)
	var buf [LeafSize]byte
	for i := range d.buckets {
		if d.stale[i] {
			copy(d.nodes[n+i][:], rfc6962.DefaultHasher.HashLeaf(appendLeaf(buf[:0], uint32(i), &d.buckets[i])))
			d.stale[i] = false
			changed[n+i] = true
		}
	}
	// B is a power of two, so the RFC 6962 tree is perfect and every inner
	// node is SHA-256(0x01 || left || right) of its two children.
	for j := n - 1; j >= 1; j-- {
		if changed[2*j] || changed[2*j+1] {
			copy(d.nodes[j][:], rfc6962.DefaultHasher.HashChildren(d.nodes[2*j][:], d.nodes[2*j+1][:]))
			changed[j] = true
		}
	}
	return d.nodes[1]
}

// Diff returns, in increasing order, the buckets whose count or hash differ
// between d and o. Both must have the same bucket count (ErrMismatch).
func (d *Digest) Diff(o *Digest) ([]uint32, error) {
	if len(d.buckets) != len(o.buckets) {
		return nil, fmt.Errorf("%w: %d and %d", ErrMismatch, len(d.buckets), len(o.buckets))
	}
	var out []uint32
	for i := range d.buckets {
		a, b := &d.buckets[i], &o.buckets[i]
		if a.Count != b.Count || !a.Hash.Equal(&b.Hash) {
			out = append(out, uint32(i))
		}
	}
	return out, nil
}

// Equal reports whether d and o have the same buckets with the same
// contents.
func (d *Digest) Equal(o *Digest) bool {
	diff, err := d.Diff(o)
	return err == nil && len(diff) == 0
}

// Clone returns an independent copy of d.
func (d *Digest) Clone() *Digest {
	c := newDigest(len(d.buckets))
	copy(c.buckets, d.buckets)
	d.mu.Lock()
	copy(c.nodes, d.nodes)
	copy(c.stale, d.stale)
	d.mu.Unlock()
	return c
}
