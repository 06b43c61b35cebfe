package pgcopy

import (
	"errors"
	"fmt"
	"io"
)

// Buffer sizes. A Reader reads in chunks of at least defaultBufSize and
// holds at most one tuple (plus one read) beyond that; a buffer grown for a
// huge tuple is dropped again once rows are small.
const (
	defaultBufSize = 64 << 10
	shrinkAbove    = 1 << 20
)

type state uint8

const (
	stateHeader state = iota
	stateExtension
	stateTuples
	stateDone
)

// Reader reads a binary COPY stream tuple by tuple. It buffers one read
// chunk and the tuple being returned, never the whole stream.
type Reader struct {
	rd     io.Reader
	rerr   error // sticky error from rd
	buf    []byte
	r, w   int   // unread bytes are buf[r:w]
	off    int64 // stream offset of buf[r]
	skip   int64 // header-extension bytes still to skip
	state  state
	rows   int64
	err    error
	maxRow int
}

// NewReader returns a Reader of the binary COPY stream rd.
func NewReader(rd io.Reader) *Reader {
	return &Reader{rd: rd, maxRow: DefaultMaxRowSize}
}

// SetMaxRowSize bounds the size of a tuple (DefaultMaxRowSize unless set);
// a larger one is an ErrMalformed error. Call it before the first Next.
func (r *Reader) SetMaxRowSize(n int) { r.maxRow = n }

// Rows is the number of tuples Next has returned.
func (r *Reader) Rows() int64 { return r.rows }

// Next returns the next tuple: its bytes are the row encoding. The slice
// is valid only until the next call. At the trailer Next checks that the
// stream ends there and returns io.EOF. Errors are sticky: ErrSignature,
// ErrCriticalFlags, ErrMalformed, an error wrapping io.ErrUnexpectedEOF for
// a stream that ends early, or the underlying reader's error.
func (r *Reader) Next() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	row, err := r.next()
	if err != nil {
		r.err = err
		return nil, err
	}
	r.rows++
	return row, nil
}

func (r *Reader) next() ([]byte, error) {
	for {
		switch r.state {
		case stateHeader:
			if err := r.fill(headerLen); err != nil {
				if badSignature(r.buf[r.r:r.w]) {
					return nil, ErrSignature
				}
				return nil, r.fillError(err, "the header")
			}
			ext, err := parseHeader(r.buf[r.r : r.r+headerLen])
			if err != nil {
				return nil, err
			}
			r.consume(headerLen)
			r.skip, r.state = ext, stateExtension
		case stateExtension:
			for r.skip > 0 {
				if r.r == r.w {
					if err := r.fill(1); err != nil {
						return nil, r.fillError(err, "the header extension")
					}
				}
				n := int(min(r.skip, int64(r.w-r.r)))
				r.consume(n)
				r.skip -= int64(n)
			}
			r.state = stateTuples
		case stateTuples:
			n, need, trailer, err := tupleSize(r.buf[r.r:r.w], r.maxRow)
			switch {
			case err != nil:
				return nil, fmt.Errorf("%w in tuple %d at byte %d", err, r.rows+1, r.off)
			case trailer:
				r.consume(2)
				r.state = stateDone
				return nil, r.checkEnd()
			case n > 0:
				row := r.buf[r.r : r.r+n : r.r+n]
				r.consume(n)
				return row, nil
			}
			if err := r.fill(need); err != nil {
				return nil, r.fillError(err, fmt.Sprintf("tuple %d at byte %d", r.rows+1, r.off))
			}
		default:
			return nil, io.EOF
		}
	}
}

func (r *Reader) consume(n int) {
	r.r += n
	r.off += int64(n)
}

// fillError describes a stream that ended (or failed) inside what.
func (r *Reader) fillError(err error, what string) error {
	if err == io.EOF {
		return fmt.Errorf("pgcopy: stream ends inside %s: %w", what, io.ErrUnexpectedEOF)
	}
	return err
}

// checkEnd makes sure nothing follows the trailer.
func (r *Reader) checkEnd() error {
	if r.w > r.r {
		return fmt.Errorf("%w: %d bytes after the trailer at byte %d", ErrMalformed, r.w-r.r, r.off-2)
	}
	r.r, r.w = 0, 0
	for range 100 {
		if r.rerr != nil {
			if r.rerr == io.EOF {
				return io.EOF
			}
			return r.rerr
		}
		n, err := r.rd.Read(r.buf[:min(len(r.buf), 512)])
		if n > 0 {
			return fmt.Errorf("%w: data after the trailer at byte %d", ErrMalformed, r.off)
		}
		r.rerr = err
	}
	return io.ErrNoProgress
}

// fill reads until at least need bytes are buffered, keeping the unread
// bytes contiguous. It returns io.EOF when the stream ends first, or the
// reader's error.
func (r *Reader) fill(need int) error {
	for r.w-r.r < need {
		if r.rerr != nil {
			return r.rerr
		}
		if r.w == len(r.buf) {
			r.makeRoom(need)
		}
		n, err := r.rd.Read(r.buf[r.w:])
		if n < 0 || n > len(r.buf)-r.w {
			return errors.New("pgcopy: reader returned an invalid count")
		}
		r.w += n
		r.rerr = err
	}
	return nil
}

// makeRoom makes space after buf[w] for more of a need-byte tuple: it moves
// the unread bytes to the front and grows the buffer by doubling (so memory
// stays within twice what has arrived), or shrinks it back after a huge
// tuple.
func (r *Reader) makeRoom(need int) {
	avail := r.w - r.r
	size := len(r.buf)
	switch {
	case size == 0:
		size = defaultBufSize
	case size > shrinkAbove && need <= defaultBufSize && avail <= defaultBufSize:
		size = defaultBufSize
	case avail == size:
		size = min(2*size, max(need, size+defaultBufSize))
	}
	if size != len(r.buf) {
		buf := make([]byte, size)
		copy(buf, r.buf[r.r:r.w])
		r.buf = buf
	} else {
		copy(r.buf, r.buf[r.r:r.w])
	}
	r.r, r.w = 0, avail
}
