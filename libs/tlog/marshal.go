package tlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Serialized layout (all integers big-endian):
//
//	magic      "wztl"
//	version    uint32 = 1
//	size       uint64
//	leaves     size × 32 bytes
//	root       32 bytes   RFC 6962 root at size
//	chain head 32 bytes   c_size
//
// The root and chain head are recomputed on Unmarshal and must match, so a
// damaged serialization is refused rather than loaded.
var magic = [4]byte{'w', 'z', 't', 'l'}

const (
	formatVersion = 1
	headerSize    = 4 + 4 + 8
	trailerSize   = 2 * HashSize
)

// ErrCorrupt is wrapped by every error about damaged data: from Unmarshal,
// and from a DB whose stored log does not hold together.
var ErrCorrupt = errors.New("corrupt data")

// Marshal serializes the whole log.
func (l *Log) Marshal() ([]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.marshalLocked(l.rng.End())
}

// MarshalAt serializes the log as it was when it had size leaves. Leaves
// are never rewritten, so this is a point-in-time copy even while appends
// continue.
func (l *Log) MarshalAt(size uint64) ([]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.marshalLocked(size)
}

func (l *Log) marshalLocked(size uint64) ([]byte, error) {
	root, err := l.rootAtLocked(size)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, headerSize+int(size)*HashSize+trailerSize)
	out = append(out, magic[:]...)
	out = binary.BigEndian.AppendUint32(out, formatVersion)
	out = binary.BigEndian.AppendUint64(out, size)
	var chain, leaf [HashSize]byte
	err = l.store.leaves(0, size, func(i uint64, h []byte) error {
		copy(leaf[:], h)
		chain = chainNext(chain, leaf)
		out = append(out, h...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tlog: marshal: %w", err)
	}
	out = append(out, root[:]...)
	return append(out, chain[:]...), nil
}

// Unmarshal rebuilds a log from Marshal's output, recomputing every node
// and checking the recorded root and chain head.
func Unmarshal(b []byte) (*Log, error) {
	if len(b) < headerSize+trailerSize {
		return nil, fmt.Errorf("tlog: unmarshal: %w: %d bytes is shorter than header and trailer", ErrCorrupt, len(b))
	}
	if !bytes.Equal(b[:4], magic[:]) {
		return nil, fmt.Errorf("tlog: unmarshal: %w: bad magic %q", ErrCorrupt, b[:4])
	}
	if v := binary.BigEndian.Uint32(b[4:]); v != formatVersion {
		return nil, fmt.Errorf("tlog: unmarshal: %w: version %d, want %d", ErrCorrupt, v, formatVersion)
	}
	size := binary.BigEndian.Uint64(b[8:])
	body := b[headerSize:]
	if uint64(len(body)-trailerSize)/HashSize != size || (len(body)-trailerSize)%HashSize != 0 {
		return nil, fmt.Errorf("tlog: unmarshal: %w: %d bytes of leaves for size %d", ErrCorrupt, len(body)-trailerSize, size)
	}
	l := New()
	var leaf [HashSize]byte
	for i := range size {
		copy(leaf[:], body[i*HashSize:])
		if err := l.appendLocked(&leaf); err != nil {
			return nil, err
		}
	}
	trailer := body[size*HashSize:]
	if root := l.rootLocked(); !bytes.Equal(trailer[:HashSize], root[:]) {
		return nil, fmt.Errorf("tlog: unmarshal: %w: recorded root %x, recomputed %x", ErrCorrupt, trailer[:HashSize], root)
	}
	if !bytes.Equal(trailer[HashSize:], l.chain[:]) {
		return nil, fmt.Errorf("tlog: unmarshal: %w: recorded chain head %x, recomputed %x", ErrCorrupt, trailer[HashSize:], l.chain)
	}
	return l, nil
}
