// Package pgcopy reads the output of PostgreSQL's
// `COPY ... TO STDOUT (FORMAT binary)` one tuple at a time, in bounded
// memory, and builds the canonical COPY query of a protected table.
//
// A binary COPY stream is a header (the 11-byte signature "PGCOPY\n\377\r\n\0",
// an int32 flags field and an int32 header-extension length followed by
// that many bytes), then one tuple per row, then the trailer int16 -1. A
// tuple is an int16 field count followed, per field, by an int32 length
// (-1 for NULL) and that many bytes of the column's binary send format. All
// integers are big-endian.
//
// Those tuple bytes, unchanged, are the witnz row encoding
// (docs/design/0001-commitments.md): uint16 column count, then per column an
// int32 length (-1 = NULL) and the binary send bytes. Reader and Writer
// therefore hand out each tuple as it stands, without copying it when they
// can, and a caller commits to it directly.
//
// The stream comes from Reader (pull, over any io.Reader) or Writer (push:
// an io.Writer that pgconn.CopyTo writes into). Scan runs a COPY through
// pgx and calls a function for every row; Describe, CopyQuery and
// KeyColumns give the query whose rows match what cdc-ingest commits from
// the WAL, and the positions of the primary-key columns in it.
package pgcopy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Signature opens every binary COPY stream.
const Signature = "PGCOPY\n\xff\r\n\x00"

// headerLen is the fixed part of the header: signature, flags and the
// header-extension length.
const headerLen = len(Signature) + 4 + 4

// criticalFlags are the flag bits (16-31) a reader must not ignore. Bit 16
// announces OIDs in the data, which PostgreSQL 12 and later never send
// and this package does not read.
const criticalFlags = 0xffff0000

// DefaultMaxRowSize bounds a tuple's size in bytes. PostgreSQL builds each
// COPY row in one buffer of less than 1 GiB, so a larger tuple cannot come
// from it.
const DefaultMaxRowSize = 1 << 30

// Errors. A stream that ends early yields an error wrapping
// io.ErrUnexpectedEOF.
var (
	// ErrSignature means the stream does not start with Signature: it is
	// not binary COPY output.
	ErrSignature = errors.New("pgcopy: not binary COPY output (bad signature)")
	// ErrCriticalFlags means the header sets flag bits 16-31, which announce
	// a format this reader does not understand.
	ErrCriticalFlags = errors.New("pgcopy: header sets critical flag bits")
	// ErrMalformed covers every other structural error: a field count or
	// length out of range, a tuple above the size limit, bytes after the
	// trailer.
	ErrMalformed = errors.New("pgcopy: malformed binary COPY stream")
)

// badSignature reports whether b, the start of a stream, already differs
// from Signature.
func badSignature(b []byte) bool {
	n := min(len(b), len(Signature))
	return string(b[:n]) != Signature[:n]
}

// parseHeader checks the fixed header in h (headerLen bytes) and returns
// the length of the header extension that follows it.
func parseHeader(h []byte) (ext int64, err error) {
	if badSignature(h) {
		return 0, ErrSignature
	}
	if flags := binary.BigEndian.Uint32(h[len(Signature):]); flags&criticalFlags != 0 {
		return 0, fmt.Errorf("%w: flags %#08x", ErrCriticalFlags, flags)
	}
	n := int32(binary.BigEndian.Uint32(h[len(Signature)+4:]))
	if n < 0 {
		return 0, fmt.Errorf("%w: header extension length %d", ErrMalformed, n)
	}
	return int64(n), nil
}

// tupleSize examines b, which starts at a tuple or at the trailer. It
// returns the size of a complete tuple at the start of b (at least 2), or
// 0 and trailer=true when b starts with the trailer, or 0 and need > len(b):
// the number of bytes b must hold before the tuple can be measured further.
func tupleSize(b []byte, maxRow int) (n, need int, trailer bool, err error) {
	if len(b) < 2 {
		return 0, 2, false, nil
	}
	count := int16(binary.BigEndian.Uint16(b))
	if count < 0 {
		if count == -1 {
			return 0, 0, true, nil
		}
		return 0, 0, false, fmt.Errorf("%w: field count %d", ErrMalformed, count)
	}
	p := 2
	for i := range int(count) {
		if len(b)-p < 4 {
			return 0, p + 4, false, nil
		}
		l := int32(binary.BigEndian.Uint32(b[p : p+4]))
		p += 4
		if l < 0 {
			if l != -1 {
				return 0, 0, false, fmt.Errorf("%w: field %d has length %d", ErrMalformed, i+1, l)
			}
			continue
		}
		p += int(l)
		if p > maxRow {
			return 0, 0, false, fmt.Errorf("%w: tuple exceeds %d bytes", ErrMalformed, maxRow)
		}
		if len(b) < p {
			return 0, p, false, nil
		}
	}
	return p, 0, false, nil
}

// AppendKey appends to dst the key encoding of row, a row encoding (a
// tuple as Reader, Writer and Scan hand it out): the same layout over the
// fields at positions cols (0-based, in key order, as KeyColumns returns
// them). With no cols the whole row is the key, as for a table without a
// primary key, and AppendKey appends row unchanged.
func AppendKey(dst, row []byte, cols []int) ([]byte, error) {
	if len(cols) == 0 {
		return append(dst, row...), nil
	}
	if len(cols) > math.MaxUint16 {
		return dst, fmt.Errorf("%w: %d key columns", ErrMalformed, len(cols))
	}
	last := 0
	for _, c := range cols {
		if c < 0 {
			return dst, fmt.Errorf("%w: key column %d", ErrMalformed, c)
		}
		last = max(last, c)
	}
	// Field boundaries up to the last key column; a small key of a narrow
	// row needs no allocation.
	var stack [32]int
	starts := stack[:0]
	if len(row) < 2 {
		return dst, fmt.Errorf("%w: row shorter than its field count", ErrMalformed)
	}
	count := int(binary.BigEndian.Uint16(row))
	if last >= count {
		return dst, fmt.Errorf("%w: key column %d but the row has %d fields", ErrMalformed, last, count)
	}
	p := 2
	for i := 0; i <= last; i++ {
		if len(row)-p < 4 {
			return dst, fmt.Errorf("%w: row truncated in field %d", ErrMalformed, i+1)
		}
		starts = append(starts, p)
		l := int32(binary.BigEndian.Uint32(row[p:]))
		p += 4
		switch {
		case l == -1:
		case l < 0 || int(l) > len(row)-p:
			return dst, fmt.Errorf("%w: field %d has length %d with %d bytes left", ErrMalformed, i+1, l, len(row)-p)
		default:
			p += int(l)
		}
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(cols)))
	for _, c := range cols {
		s := starts[c]
		l := int32(binary.BigEndian.Uint32(row[s:]))
		end := s + 4
		if l > 0 {
			end += int(l)
		}
		dst = append(dst, row[s:end]...)
	}
	return dst, nil
}
