package statedigest

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/witnz/witnz/libs/lthash"
)

// EncodingVersion is the first byte of an encoded digest.
const EncodingVersion = 1

const (
	headerSize = 1 + 4
	bucketSize = 8 + lthash.Size
)

// ErrEncoding is wrapped by every Unmarshal error.
var ErrEncoding = errors.New("statedigest: invalid digest encoding")

// EncodedSize returns the length of the encoding of a digest with the given
// bucket count.
func EncodedSize(buckets int) int { return headerSize + buckets*bucketSize }

// AppendBinary appends d's encoding to dst.
func (d *Digest) AppendBinary(dst []byte) ([]byte, error) {
	dst = append(dst, EncodingVersion)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(d.buckets)))
	for i := range d.buckets {
		dst = binary.BigEndian.AppendUint64(dst, d.buckets[i].Count)
		dst = d.buckets[i].Hash.AppendBytes(dst)
	}
	return dst, nil
}

// MarshalBinary returns d's encoding. It never fails.
func (d *Digest) MarshalBinary() ([]byte, error) {
	return d.AppendBinary(make([]byte, 0, EncodedSize(len(d.buckets))))
}

// Unmarshal parses an encoding made by MarshalBinary, strictly: known
// version, a valid bucket count and exactly the bytes it implies.
func Unmarshal(b []byte) (*Digest, error) {
	if len(b) < headerSize {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrEncoding, len(b), headerSize)
	}
	if b[0] != EncodingVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrEncoding, b[0], EncodingVersion)
	}
	n := binary.BigEndian.Uint32(b[1:])
	if n < 1 || n > MaxBuckets || n&(n-1) != 0 {
		return nil, fmt.Errorf("%w: bucket count %d is not a power of two in [1, %d]", ErrEncoding, n, MaxBuckets)
	}
	if want := EncodedSize(int(n)); len(b) != want {
		return nil, fmt.Errorf("%w: %d bytes, want %d for %d buckets", ErrEncoding, len(b), want, n)
	}
	d := newDigest(int(n))
	p := b[headerSize:]
	for i := range d.buckets {
		d.buckets[i].Count = binary.BigEndian.Uint64(p)
		h, err := lthash.FromBytes(p[8:bucketSize])
		if err != nil {
			return nil, fmt.Errorf("%w: bucket %d: %w", ErrEncoding, i, err)
		}
		d.buckets[i].Hash = h
		p = p[bucketSize:]
	}
	return d, nil
}

// UnmarshalBinary replaces d's contents with the digest encoded in b, as
// Unmarshal parses it. On error d is unchanged.
func (d *Digest) UnmarshalBinary(b []byte) error {
	n, err := Unmarshal(b)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.buckets, d.shift, d.nodes, d.stale = n.buckets, n.shift, n.nodes, n.stale
	return nil
}
