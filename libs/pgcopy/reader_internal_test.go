package pgcopy

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
)

// genStream produces a binary COPY stream of rows copies of row, followed
// by big (if any) and more copies of row, without holding it in memory.
type genStream struct {
	parts [][]byte
	reps  []int
	cur   []byte
}

func newGenStream(row []byte, rows int, big []byte) *genStream {
	h := binary.BigEndian.AppendUint32([]byte(Signature), 0)
	h = binary.BigEndian.AppendUint32(h, 0)
	return &genStream{
		parts: [][]byte{h, row, big, row, {0xff, 0xff}},
		reps:  []int{1, rows, 1, rows, 1},
	}
}

func (g *genStream) Read(p []byte) (int, error) {
	for len(g.cur) == 0 {
		if len(g.parts) == 0 {
			return 0, io.EOF
		}
		if g.reps[0] == 0 {
			g.parts, g.reps = g.parts[1:], g.reps[1:]
			continue
		}
		g.reps[0]--
		g.cur = g.parts[0]
	}
	n := copy(p, g.cur)
	g.cur = g.cur[n:]
	return n, nil
}

// TestReaderMemoryBounded streams many rows and one 5 MB row: the buffer
// stays at its default size except while the big row is being read, and
// shrinks back afterwards.
func TestReaderMemoryBounded(t *testing.T) {
	row := []byte{0, 2, 0, 0, 0, 4, 1, 2, 3, 4, 0xff, 0xff, 0xff, 0xff}
	big := binary.BigEndian.AppendUint16(nil, 1)
	big = binary.BigEndian.AppendUint32(big, 5<<20)
	big = append(big, bytes.Repeat([]byte{7}, 5<<20)...)
	const n = 200_000
	r := NewReader(newGenStream(row, n, big))
	var rows, maxBuf, bigSeen int
	for {
		got, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		rows++
		maxBuf = max(maxBuf, len(r.buf))
		switch {
		case len(got) == len(big):
			bigSeen = rows
			if !bytes.Equal(got, big) {
				t.Fatal("big row corrupted")
			}
		case !bytes.Equal(got, row):
			t.Fatalf("row %d = %x", rows, got)
		case bigSeen == 0 && len(r.buf) != defaultBufSize:
			t.Fatalf("buffer of %d bytes before the big row, want %d", len(r.buf), defaultBufSize)
		case bigSeen != 0 && rows > bigSeen+2*defaultBufSize/len(row) && len(r.buf) != defaultBufSize:
			t.Fatalf("buffer of %d bytes long after the big row, want %d again", len(r.buf), defaultBufSize)
		}
	}
	if rows != 2*n+1 || bigSeen != n+1 {
		t.Errorf("%d rows, big one at %d", rows, bigSeen)
	}
	if maxBuf > 2*len(big) {
		t.Errorf("buffer grew to %d bytes for a row of %d", maxBuf, len(big))
	}
}
