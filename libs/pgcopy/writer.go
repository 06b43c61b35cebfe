package pgcopy

import (
	"fmt"
	"io"
)

// Writer is the push side of Reader: an io.Writer that takes a binary COPY
// stream in pieces of any size (pgconn.CopyTo writes one CopyData message,
// usually one row, per call) and calls fn for every tuple, in the writing
// goroutine. A tuple that lies within one Write is passed without copying;
// one split across writes is gathered first. Write fails with fn's error,
// unchanged, or with the errors Reader.Next returns; the error is sticky.
type Writer struct {
	fn      func(row []byte) error
	pending []byte // the start of a tuple (or the header) split across writes
	off     int64  // stream offset of the next byte written (or of pending)
	skip    int64
	state   state
	rows    int64
	err     error
	maxRow  int
}

// NewWriter returns a Writer that calls fn with each tuple's bytes, the row
// encoding. The slice is valid only during the call.
func NewWriter(fn func(row []byte) error) *Writer {
	return &Writer{fn: fn, maxRow: DefaultMaxRowSize}
}

// SetMaxRowSize bounds the size of a tuple (DefaultMaxRowSize unless set).
// Call it before the first Write.
func (w *Writer) SetMaxRowSize(n int) { w.maxRow = n }

// Rows is the number of tuples passed to fn without error.
func (w *Writer) Rows() int64 { return w.rows }

// Close reports whether the stream was complete: nil once the trailer has
// been written, an error wrapping io.ErrUnexpectedEOF before that, or the
// error that stopped a Write.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.state != stateDone {
		what := fmt.Sprintf("tuple %d at byte %d", w.rows+1, w.off)
		if w.state != stateTuples {
			what = "the header"
		}
		w.err = fmt.Errorf("pgcopy: stream ends inside %s: %w", what, io.ErrUnexpectedEOF)
		return w.err
	}
	return nil
}

// Write consumes p.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if err := w.write(p); err != nil {
		w.err = err
		return 0, err
	}
	return len(p), nil
}

func (w *Writer) write(p []byte) error {
	for len(p) > 0 {
		switch w.state {
		case stateHeader:
			take := min(headerLen-len(w.pending), len(p))
			w.pending = append(w.pending, p[:take]...)
			p = p[take:]
			if badSignature(w.pending) {
				return ErrSignature
			}
			if len(w.pending) < headerLen {
				return nil
			}
			ext, err := parseHeader(w.pending)
			if err != nil {
				return err
			}
			w.off += int64(headerLen)
			w.pending = w.pending[:0]
			w.skip, w.state = ext, stateExtension
		case stateExtension:
			n := int(min(w.skip, int64(len(p))))
			p = p[n:]
			w.skip -= int64(n)
			w.off += int64(n)
			if w.skip == 0 {
				w.state = stateTuples
			}
		case stateTuples:
			var err error
			if len(w.pending) > 0 {
				p, err = w.completePending(p)
			} else {
				p, err = w.tuples(p)
			}
			if err != nil {
				return err
			}
		case stateDone:
			return fmt.Errorf("%w: data after the trailer at byte %d", ErrMalformed, w.off)
		}
	}
	// An extension of zero bytes ends the header without a byte to skip.
	if w.state == stateExtension && w.skip == 0 {
		w.state = stateTuples
	}
	return nil
}

// tuples passes every complete tuple in p to fn and keeps an incomplete
// one in pending.
func (w *Writer) tuples(p []byte) ([]byte, error) {
	for len(p) > 0 {
		n, _, trailer, err := tupleSize(p, w.maxRow)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%w in tuple %d at byte %d", err, w.rows+1, w.off)
		case trailer:
			w.state = stateDone
			w.off += 2
			return p[2:], nil
		case n == 0:
			w.pending = append(w.pending, p...)
			return nil, nil
		}
		if err := w.emit(p[:n:n]); err != nil {
			return nil, err
		}
		p = p[n:]
	}
	return p, nil
}

// completePending adds to pending, from p, the bytes its tuple still
// needs, and passes the tuple on once it is whole.
func (w *Writer) completePending(p []byte) ([]byte, error) {
	for {
		n, need, trailer, err := tupleSize(w.pending, w.maxRow)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%w in tuple %d at byte %d", err, w.rows+1, w.off)
		case trailer:
			w.state = stateDone
			w.off += 2
			w.pending = w.pending[:0]
			return p, nil
		case n > 0:
			err := w.emit(w.pending)
			if cap(w.pending) > shrinkAbove {
				w.pending = nil
			} else {
				w.pending = w.pending[:0]
			}
			return p, err
		case len(p) == 0:
			return nil, nil
		}
		take := min(need-len(w.pending), len(p))
		w.pending = append(w.pending, p[:take]...)
		p = p[take:]
	}
}

func (w *Writer) emit(row []byte) error {
	if err := w.fn(row); err != nil {
		return err
	}
	w.rows++
	w.off += int64(len(row))
	return nil
}
