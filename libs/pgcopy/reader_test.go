package pgcopy_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"testing/iotest"

	"github.com/witnz/witnz/libs/commitment"
	"github.com/witnz/witnz/libs/pgcopy"
)

// header builds a stream header with the given flags and extension.
func header(flags uint32, ext []byte) []byte {
	b := []byte(pgcopy.Signature)
	b = binary.BigEndian.AppendUint32(b, flags)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ext)))
	return append(b, ext...)
}

// tuple encodes values as a COPY tuple (nil = NULL).
func tuple(values ...[]byte) []byte {
	b, err := commitment.AppendRow(nil, values)
	if err != nil {
		panic(err)
	}
	return b
}

var trailer = []byte{0xff, 0xff}

func stream(parts ...[]byte) []byte { return slices.Concat(parts...) }

// sampleRows cover NULL, empty values, zero-column tuples and a value
// larger than the Reader's buffer.
func sampleRows() [][]byte {
	return [][]byte{
		tuple([]byte{0, 0, 0, 42}, []byte("héllo\t\n\\"), nil, []byte{}),
		tuple(),
		tuple(nil),
		tuple(bytes.Repeat([]byte("x"), 200<<10), []byte{1}),
		tuple([]byte{0, 0, 0, 43}, nil, nil, []byte("z")),
	}
}

func sampleStream() []byte {
	return stream(header(0, nil), slices.Concat(sampleRows()...), trailer)
}

// readAll drains r, copying each row.
func readAll(r *pgcopy.Reader) ([][]byte, error) {
	var rows [][]byte
	for {
		row, err := r.Next()
		if err == io.EOF {
			return rows, nil
		}
		if err != nil {
			return rows, err
		}
		rows = append(rows, bytes.Clone(row))
	}
}

// writeAll writes data to a Writer in pieces of size chunk and closes it.
func writeAll(data []byte, chunk int) ([][]byte, error) {
	var rows [][]byte
	w := pgcopy.NewWriter(func(row []byte) error {
		rows = append(rows, bytes.Clone(row))
		return nil
	})
	for len(data) > 0 {
		n := min(chunk, len(data))
		if _, err := w.Write(data[:n]); err != nil {
			return rows, err
		}
		data = data[n:]
	}
	return rows, w.Close()
}

func TestReaderChunking(t *testing.T) {
	want := sampleRows()
	data := sampleStream()
	readers := map[string]func() io.Reader{
		"whole":     func() io.Reader { return bytes.NewReader(data) },
		"one byte":  func() io.Reader { return iotest.OneByteReader(bytes.NewReader(data)) },
		"half":      func() io.Reader { return iotest.HalfReader(bytes.NewReader(data)) },
		"data+EOF":  func() io.Reader { return iotest.DataErrReader(bytes.NewReader(data)) },
		"7 at once": func() io.Reader { return &chunkReader{data: data, n: 7} },
	}
	for name, rd := range readers {
		t.Run(name, func(t *testing.T) {
			r := pgcopy.NewReader(rd())
			got, err := readAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if diff := diffRows(want, got); diff != "" {
				t.Error(diff)
			}
			if r.Rows() != int64(len(want)) {
				t.Errorf("Rows() = %d, want %d", r.Rows(), len(want))
			}
			if _, err := r.Next(); err != io.EOF {
				t.Errorf("Next after the end = %v, want io.EOF", err)
			}
		})
	}
}

func TestWriterChunking(t *testing.T) {
	want := sampleRows()
	data := sampleStream()
	for _, chunk := range []int{1, 2, 3, 5, 19, 20, 21, 4096, len(data)} {
		t.Run(fmt.Sprint(chunk), func(t *testing.T) {
			got, err := writeAll(data, chunk)
			if err != nil {
				t.Fatal(err)
			}
			if diff := diffRows(want, got); diff != "" {
				t.Error(diff)
			}
		})
	}
}

// TestWriterEverySplit writes a small stream in two pieces split at every
// position, the way CopyData messages might cut it.
func TestWriterEverySplit(t *testing.T) {
	rows := [][]byte{tuple([]byte("a"), nil), tuple(), tuple([]byte{}, []byte("bcd"))}
	data := stream(header(0, []byte("ext")), slices.Concat(rows...), trailer)
	for i := range len(data) + 1 {
		var got [][]byte
		w := pgcopy.NewWriter(func(row []byte) error { got = append(got, bytes.Clone(row)); return nil })
		for _, part := range [][]byte{data[:i], data[i:]} {
			if _, err := w.Write(part); err != nil {
				t.Fatalf("split at %d: %v", i, err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatalf("split at %d: %v", i, err)
		}
		if diff := diffRows(rows, got); diff != "" {
			t.Fatalf("split at %d: %s", i, diff)
		}
	}
}

// TestTruncated cuts a valid stream at every position: the rows before the
// cut come out, then an error wrapping io.ErrUnexpectedEOF.
func TestTruncated(t *testing.T) {
	rows := [][]byte{tuple([]byte("a"), nil), tuple([]byte("bc"))}
	data := stream(header(0, []byte("x")), slices.Concat(rows...), trailer)
	for i := range len(data) {
		_, err := readAll(pgcopy.NewReader(bytes.NewReader(data[:i])))
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("Reader, stream cut at %d of %d: err = %v, want io.ErrUnexpectedEOF", i, len(data), err)
		}
		_, err = writeAll(data[:i], 3)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("Writer, stream cut at %d of %d: err = %v, want io.ErrUnexpectedEOF", i, len(data), err)
		}
	}
}

func TestMalformed(t *testing.T) {
	good := tuple([]byte("a"))
	tests := []struct {
		name  string
		data  []byte
		want  error
		rows  int // tuples before the error
		limit int // SetMaxRowSize when non-zero
	}{
		{name: "bad signature", data: stream([]byte("PGCOPY\n\xff\r\n\x01"), make([]byte, 8), trailer), want: pgcopy.ErrSignature},
		{name: "text COPY", data: []byte("1\tfoo\n2\tbar\n\\.\n"), want: pgcopy.ErrSignature},
		{name: "OIDs flag (bit 16)", data: stream(header(1<<16, nil), trailer), want: pgcopy.ErrCriticalFlags},
		{name: "bit 31", data: stream(header(1<<31, nil), trailer), want: pgcopy.ErrCriticalFlags},
		{name: "negative extension length", data: stream([]byte(pgcopy.Signature), []byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xfe}, trailer), want: pgcopy.ErrMalformed},
		{name: "field count -2", data: stream(header(0, nil), good, []byte{0xff, 0xfe}), want: pgcopy.ErrMalformed, rows: 1},
		{name: "field length -2", data: stream(header(0, nil), []byte{0, 1, 0xff, 0xff, 0xff, 0xfe}, trailer), want: pgcopy.ErrMalformed},
		{name: "garbage after trailer", data: stream(header(0, nil), good, trailer, []byte{0}), want: pgcopy.ErrMalformed, rows: 1},
		{name: "second trailer", data: stream(header(0, nil), trailer, trailer), want: pgcopy.ErrMalformed},
		{name: "tuple after trailer", data: stream(header(0, nil), trailer, good), want: pgcopy.ErrMalformed},
		{name: "row above the limit", data: stream(header(0, nil), good, tuple(make([]byte, 100)), trailer), want: pgcopy.ErrMalformed, rows: 1, limit: 64},
		{name: "huge declared length", data: stream(header(0, nil), []byte{0, 1, 0x20, 0, 0, 0}, []byte("short")), want: io.ErrUnexpectedEOF},
		{name: "empty", data: nil, want: io.ErrUnexpectedEOF},
		{name: "no trailer", data: stream(header(0, nil), good), want: io.ErrUnexpectedEOF, rows: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := pgcopy.NewReader(bytes.NewReader(tc.data))
			if tc.limit > 0 {
				r.SetMaxRowSize(tc.limit)
			}
			rows, err := readAll(r)
			if !errors.Is(err, tc.want) || len(rows) != tc.rows {
				t.Errorf("Reader: %d rows, err %v; want %d rows, err %v", len(rows), err, tc.rows, tc.want)
			}
			if _, again := r.Next(); again != err {
				t.Errorf("Reader: error not sticky: %v then %v", err, again)
			}

			var n int
			w := pgcopy.NewWriter(func([]byte) error { n++; return nil })
			if tc.limit > 0 {
				w.SetMaxRowSize(tc.limit)
			}
			_, err = w.Write(tc.data)
			if err == nil {
				err = w.Close()
			}
			if !errors.Is(err, tc.want) || n != tc.rows {
				t.Errorf("Writer: %d rows, err %v; want %d rows, err %v", n, err, tc.rows, tc.want)
			}
		})
	}
}

// TestFlagsAndExtension checks that bits 0-15 are ignored and a header
// extension is skipped, whatever its size.
func TestFlagsAndExtension(t *testing.T) {
	rows := [][]byte{tuple([]byte("v"))}
	for _, ext := range [][]byte{nil, []byte("e"), bytes.Repeat([]byte{0xff}, 150<<10)} {
		data := stream(header(0xffff, ext), rows[0], trailer)
		got, err := readAll(pgcopy.NewReader(iotest.HalfReader(bytes.NewReader(data))))
		if err != nil || diffRows(rows, got) != "" {
			t.Errorf("Reader, extension of %d bytes: rows %q, err %v", len(ext), got, err)
		}
		got, err = writeAll(data, 1000)
		if err != nil || diffRows(rows, got) != "" {
			t.Errorf("Writer, extension of %d bytes: rows %q, err %v", len(ext), got, err)
		}
	}
}

func TestReaderPassesReadErrors(t *testing.T) {
	boom := errors.New("connection reset")
	data := stream(header(0, nil), tuple([]byte("a")))
	r := pgcopy.NewReader(io.MultiReader(bytes.NewReader(data), iotest.ErrReader(boom)))
	rows, err := readAll(r)
	if len(rows) != 1 || !errors.Is(err, boom) {
		t.Errorf("got %d rows, err %v; want 1 row, err %v", len(rows), err, boom)
	}
}

func TestWriterPassesCallbackError(t *testing.T) {
	stop := errors.New("stop here")
	var n int
	w := pgcopy.NewWriter(func([]byte) error {
		if n++; n == 2 {
			return stop
		}
		return nil
	})
	_, err := w.Write(sampleStream())
	if err != stop || w.Rows() != 1 {
		t.Errorf("Write = %v after %d rows; want %v after 1", err, w.Rows(), stop)
	}
	if _, err := w.Write(trailer); err != stop {
		t.Errorf("Write after the error = %v, want it again", err)
	}
	if err := w.Close(); err != stop {
		t.Errorf("Close = %v, want %v", err, stop)
	}
}

// TestTupleIsRowEncoding checks the tuples of a stream produced by
// PostgreSQL itself against commitment.SplitRow and AppendRow.
func TestTupleIsRowEncoding(t *testing.T) {
	data := mustReadFile(t, "testdata/types.copy")
	rows, err := readAll(pgcopy.NewReader(bytes.NewReader(data)))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != typesRows {
		t.Fatalf("%d rows, want %d", len(rows), typesRows)
	}
	for i, row := range rows {
		vals, err := commitment.SplitRow(row)
		if err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
		again, err := commitment.AppendRow(nil, vals)
		if err != nil || !bytes.Equal(again, row) {
			t.Fatalf("row %d: AppendRow(SplitRow(row)) differs from the tuple (err %v)", i, err)
		}
	}
}

func TestAppendKey(t *testing.T) {
	row := tuple([]byte("a"), nil, []byte{}, []byte("dd"))
	tests := []struct {
		cols []int
		want []byte
	}{
		{nil, row},
		{[]int{0}, tuple([]byte("a"))},
		{[]int{3, 0}, tuple([]byte("dd"), []byte("a"))},
		{[]int{1, 2}, tuple(nil, []byte{})},
		{[]int{2, 2}, tuple([]byte{}, []byte{})},
	}
	for _, tc := range tests {
		got, err := pgcopy.AppendKey([]byte("prefix"), row, tc.cols)
		if err != nil || !bytes.Equal(got, append([]byte("prefix"), tc.want...)) {
			t.Errorf("AppendKey(%v) = %x, %v; want prefix+%x", tc.cols, got, err, tc.want)
		}
	}
	wide := make([][]byte, 100)
	for i := range wide {
		wide[i] = []byte{byte(i)}
	}
	got, err := pgcopy.AppendKey(nil, tuple(wide...), []int{99, 40})
	if err != nil || !bytes.Equal(got, tuple([]byte{99}, []byte{40})) {
		t.Errorf("AppendKey on a wide row = %x, %v", got, err)
	}
	for _, bad := range []struct {
		row  []byte
		cols []int
	}{
		{row, []int{4}},
		{row, []int{-1}},
		{row[:len(row)-1], []int{3}},
		{[]byte{0}, []int{0}},
		{[]byte{0, 1, 0xff, 0xff, 0xff, 0xfe}, []int{0}},
	} {
		if _, err := pgcopy.AppendKey(nil, bad.row, bad.cols); !errors.Is(err, pgcopy.ErrMalformed) {
			t.Errorf("AppendKey(%x, %v) = %v, want ErrMalformed", bad.row, bad.cols, err)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		pgcopy.AppendKey(make([]byte, 0, 64), row, []int{3, 0})
	}); n > 1 {
		t.Errorf("AppendKey allocates %.0f times, want at most the destination", n)
	}
}

// FuzzReader feeds arbitrary streams to Reader (in reads of chunk bytes)
// and Writer (in writes of chunk bytes): both must agree, and a stream
// they accept must be exactly header, tuples and trailer.
func FuzzReader(f *testing.F) {
	f.Add(sampleStream(), uint16(0))
	f.Add(stream(header(0, []byte("ext")), tuple(), trailer), uint16(3))
	f.Add(stream(header(0, nil), trailer), uint16(1))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16) {
		n := int(chunk%512) + 1
		r := pgcopy.NewReader(&chunkReader{data: data, n: n})
		r.SetMaxRowSize(1 << 20)
		rows, rerr := readAll(r)

		var wrows [][]byte
		w := pgcopy.NewWriter(func(row []byte) error { wrows = append(wrows, bytes.Clone(row)); return nil })
		w.SetMaxRowSize(1 << 20)
		var werr error
		for p := data; len(p) > 0 && werr == nil; p = p[min(n, len(p)):] {
			_, werr = w.Write(p[:min(n, len(p))])
		}
		if werr == nil {
			werr = w.Close()
		}
		if (rerr == nil) != (werr == nil) || diffRows(rows, wrows) != "" {
			t.Fatalf("Reader: %d rows, %v; Writer: %d rows, %v", len(rows), rerr, len(wrows), werr)
		}
		for _, row := range rows {
			vals, err := commitment.SplitRow(row)
			if err != nil {
				t.Fatalf("row %x is not a row encoding: %v", row, err)
			}
			if again, _ := commitment.AppendRow(nil, vals); !bytes.Equal(again, row) {
				t.Fatalf("row %x does not survive SplitRow and AppendRow", row)
			}
		}
		if rerr != nil {
			return
		}
		ext := int(binary.BigEndian.Uint32(data[len(pgcopy.Signature)+4:]))
		rebuilt := stream(data[:19+ext], slices.Concat(rows...), trailer)
		if !bytes.Equal(rebuilt, data) {
			t.Fatalf("accepted stream %x is not header+tuples+trailer", data)
		}
	})
}

// diffRows describes the first difference between two lists of rows, or
// returns "" (cmp is slow on large byte slices).
func diffRows(want, got [][]byte) string {
	for i := range min(len(want), len(got)) {
		if !bytes.Equal(want[i], got[i]) || (want[i] == nil) != (got[i] == nil) {
			return fmt.Sprintf("row %d differs:\nwant %.200x\ngot  %.200x", i, want[i], got[i])
		}
	}
	if len(want) != len(got) {
		return fmt.Sprintf("%d rows, want %d", len(got), len(want))
	}
	return ""
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	data []byte
	n    int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.data)
	c.data = c.data[k:]
	return k, nil
}
