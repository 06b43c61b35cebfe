package tlog

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzUnmarshal: Unmarshal either refuses the bytes as corrupt or returns a
// log that serializes back to exactly the same bytes.
func FuzzUnmarshal(f *testing.F) {
	for _, n := range []int{0, 1, 2, 3, 7} {
		l, _ := mustLog(f, n)
		b, err := l.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("wztl"))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := Unmarshal(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Unmarshal error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, err := l.Marshal()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("Marshal after Unmarshal = %x, %v; want the input %x", again, err, b)
		}
	})
}

// FuzzDecodeMeta: a state record either decodes and encodes back to the
// same bytes or is refused as corrupt.
func FuzzDecodeMeta(f *testing.F) {
	l, _ := mustLog(f, 5)
	f.Add(encodeMeta(l.State()))
	f.Add(encodeMeta(State{}))
	f.Add([]byte("wztm"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeMeta(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decodeMeta error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if again := encodeMeta(st); !bytes.Equal(again, b) {
			t.Fatalf("encodeMeta(decodeMeta(%x)) = %x", b, again)
		}
	})
}
