package commitment

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Op is what an entry records. Values are part of the entry encoding and
// match witnz.witness.v1.Op; never reuse one.
type Op uint8

// Ops.
const (
	OpBaseline  Op = 1
	OpInsert    Op = 2
	OpUpdate    Op = 3
	OpDelete    Op = 4
	OpTruncate  Op = 5
	OpSchema    Op = 6
	OpHeartbeat Op = 7
	OpAccept    Op = 8
	OpProtect   Op = 9
	OpUnprotect Op = 10
	OpAnchor    Op = 11
	maxOp          = OpAnchor
)

var opNames = [...]string{"", "BASELINE", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "SCHEMA", "HEARTBEAT", "ACCEPT", "PROTECT", "UNPROTECT", "ANCHOR"}

func (o Op) String() string {
	if o == 0 || o > maxOp {
		return fmt.Sprintf("Op(%d)", uint8(o))
	}
	return opNames[o]
}

// EntryVersion is the first byte of every encoded entry.
const EntryVersion = 1

// EntrySize is the length of every encoded entry (version 1).
const EntrySize = 1 + 1 + 8 + 8 + 4 + 8 + 4 + 1 + 3*sha256.Size

// Presence flags of the three commitments.
const (
	flagKey     = 1 << 0
	flagData    = 1 << 1
	flagOldData = 1 << 2
	knownFlags  = flagKey | flagData | flagOldData
)

// Entry is one record of a table's log. Absent commitments are nil.
//
// Encoded layout (version 1, all integers big-endian, 131 bytes):
//
//	version            uint8   = 1
//	op                 uint8
//	seq                uint64  position in the table's log, from 0
//	commit_lsn         uint64  WAL position of the transaction's commit
//	tx_index           uint32  position of the change inside its transaction
//	commit_time_micros int64   commit time, µs since the Unix epoch
//	xid                uint32  transaction id
//	flags              uint8   bit 0 key, bit 1 data, bit 2 old data present
//	key_commit         [32]byte (zeros when absent)
//	data_commit        [32]byte (zeros when absent)
//	old_data_commit    [32]byte (zeros when absent)
type Entry struct {
	Seq              uint64
	CommitLSN        uint64
	TxIndex          uint32
	Op               Op
	CommitTimeMicros int64
	XID              uint32
	KeyCommit        *Commitment
	DataCommit       *Commitment
	OldDataCommit    *Commitment
}

// AppendEncode appends the entry's encoding to dst.
func (e *Entry) AppendEncode(dst []byte) []byte {
	dst = append(dst, EntryVersion, byte(e.Op))
	dst = binary.BigEndian.AppendUint64(dst, e.Seq)
	dst = binary.BigEndian.AppendUint64(dst, e.CommitLSN)
	dst = binary.BigEndian.AppendUint32(dst, e.TxIndex)
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.CommitTimeMicros))
	dst = binary.BigEndian.AppendUint32(dst, e.XID)
	var flags byte
	var zero Commitment
	cs := [3]*Commitment{e.KeyCommit, e.DataCommit, e.OldDataCommit}
	for i, c := range cs {
		if c != nil {
			flags |= 1 << i
		}
	}
	dst = append(dst, flags)
	for _, c := range cs {
		if c == nil {
			c = &zero
		}
		dst = append(dst, c[:]...)
	}
	return dst
}

// Encode returns the entry's encoding.
func (e *Entry) Encode() []byte { return e.AppendEncode(make([]byte, 0, EntrySize)) }

// LeafHash is the RFC 6962 leaf hash SHA-256(0x00 || encoding).
func (e *Entry) LeafHash() [sha256.Size]byte {
	var buf [1 + EntrySize]byte
	b := e.AppendEncode(buf[:1])
	return sha256.Sum256(b)
}

// ErrBadEntry is wrapped by every DecodeEntry error.
var ErrBadEntry = errors.New("invalid entry encoding")

// DecodeEntry parses an encoded entry strictly: exact length, known version,
// op and flags, and zero bytes where a commitment is absent.
func DecodeEntry(b []byte) (*Entry, error) {
	if len(b) != EntrySize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrBadEntry, len(b), EntrySize)
	}
	if b[0] != EntryVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrBadEntry, b[0], EntryVersion)
	}
	e := &Entry{Op: Op(b[1])}
	if e.Op == 0 || e.Op > maxOp {
		return nil, fmt.Errorf("%w: unknown op %d", ErrBadEntry, b[1])
	}
	p := b[2:]
	e.Seq = binary.BigEndian.Uint64(p)
	e.CommitLSN = binary.BigEndian.Uint64(p[8:])
	e.TxIndex = binary.BigEndian.Uint32(p[16:])
	e.CommitTimeMicros = int64(binary.BigEndian.Uint64(p[20:]))
	e.XID = binary.BigEndian.Uint32(p[28:])
	flags := p[32]
	if flags&^knownFlags != 0 {
		return nil, fmt.Errorf("%w: unknown flags %#x", ErrBadEntry, flags)
	}
	p = p[33:]
	dsts := [3]**Commitment{&e.KeyCommit, &e.DataCommit, &e.OldDataCommit}
	for i, dst := range dsts {
		var c Commitment
		copy(c[:], p[i*sha256.Size:])
		if flags&(1<<i) != 0 {
			*dst = &c
		} else if !c.IsZero() {
			return nil, fmt.Errorf("%w: commitment %d is absent but not zero", ErrBadEntry, i)
		}
	}
	return e, nil
}
