package statedigest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestMarshalRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 11))
	for _, n := range []int{1, 2, 64, DefaultBuckets} {
		d := mustNew(t, n)
		for range 100 {
			d.Add(randCommit(r), randCommit(r))
		}
		b, err := d.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != EncodedSize(n) {
			t.Fatalf("B=%d: encoding is %d bytes, want %d", n, len(b), EncodedSize(n))
		}
		got, err := Unmarshal(b)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(d) || got.Root() != d.Root() {
			t.Fatalf("B=%d: round trip changed the digest", n)
		}
		var into Digest
		if err := into.UnmarshalBinary(b); err != nil || !into.Equal(d) || into.Root() != d.Root() {
			t.Fatalf("B=%d: UnmarshalBinary: %v", n, err)
		}
	}
}

func TestUnmarshalIsStrict(t *testing.T) {
	d := mustNew(t, 4)
	d.Add(sha("k"), sha("d"))
	good, err := d.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	withCount := func(n uint32, size int) []byte {
		b := make([]byte, size)
		b[0] = EncodingVersion
		binary.BigEndian.PutUint32(b[1:], n)
		return b
	}
	tests := map[string][]byte{
		"empty":            nil,
		"header only":      good[:headerSize],
		"short header":     good[:3],
		"one byte short":   good[:len(good)-1],
		"one byte extra":   append(bytes.Clone(good), 0),
		"version 0":        append([]byte{0}, good[1:]...),
		"version 2":        append([]byte{2}, good[1:]...),
		"zero buckets":     withCount(0, headerSize),
		"three buckets":    withCount(3, EncodedSize(3)),
		"too many buckets": withCount(MaxBuckets*2, headerSize),
		"count says 8":     withCount(8, len(good)),
		"huge count":       withCount(1<<31, headerSize),
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := Unmarshal(b); !errors.Is(err, ErrEncoding) {
				t.Errorf("Unmarshal error = %v, want ErrEncoding", err)
			}
			into := mustNew(t, 2)
			if err := into.UnmarshalBinary(b); err == nil || into.Buckets() != 2 {
				t.Errorf("UnmarshalBinary accepted it or changed the digest (err %v)", err)
			}
		})
	}
}

func FuzzUnmarshal(f *testing.F) {
	for _, n := range []int{1, 2} {
		d, err := New(n)
		if err != nil {
			f.Fatal(err)
		}
		d.Add(sha("k"), sha("d"))
		b, err := d.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)-1])
	}
	f.Add([]byte{EncodingVersion, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Unmarshal(b)
		if err != nil {
			if !errors.Is(err, ErrEncoding) {
				t.Fatalf("error %v does not wrap ErrEncoding", err)
			}
			return
		}
		again, err := d.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, b) {
			t.Fatal("accepted an encoding that does not round-trip")
		}
		_ = d.Root()
	})
}

// TestCorpusGolden: the valid seeds in testdata/fuzz/FuzzUnmarshal were
// written by an independent implementation of the encoding; they must parse
// and re-encode to the same bytes.
func TestCorpusGolden(t *testing.T) {
	for name, rows := range map[string][]string{
		"valid-1-bucket":  {"k", "d"},
		"valid-2-buckets": {"k1", "d1", "k2", "d2", "k3", "d3"},
	} {
		raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzUnmarshal", name))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		lit, ok := strings.CutPrefix(lines[len(lines)-1], "[]byte(")
		if !ok {
			t.Fatalf("%s: unexpected corpus line %.40q", name, lines[len(lines)-1])
		}
		s, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		d, err := Unmarshal([]byte(s))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if again, _ := d.MarshalBinary(); string(again) != s {
			t.Fatalf("%s: re-encoding differs", name)
		}
		want := mustNew(t, d.Buckets())
		for i := 0; i < len(rows); i += 2 {
			want.Add(sha(rows[i]), sha(rows[i+1]))
		}
		if !d.Equal(want) {
			t.Fatalf("%s: differs from the digest of the rows it was made from", name)
		}
	}
}
