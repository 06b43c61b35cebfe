package commitment

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustKey(t *testing.T, s string) Key {
	t.Helper()
	k, err := ParseKey([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

const testKeyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

func TestTableKeyDerivation(t *testing.T) {
	k := mustKey(t, testKeyHex)
	// Recompute K_t and the commitments from the DESIGN formulas directly.
	m := hmac.New(sha256.New, k[:])
	m.Write([]byte("witnz/table/v1public\x00audit_log"))
	kt := m.Sum(nil)
	row, err := AppendRow(nil, [][]byte{{0, 0, 0, 1}, nil, []byte("héllo")})
	if err != nil {
		t.Fatal(err)
	}
	want := hmac.New(sha256.New, kt)
	want.Write(append([]byte{0x02}, row...))
	c := k.ForTable("public", "audit_log").NewCommitter()
	if got := c.DataCommit(row); !bytes.Equal(got[:], want.Sum(nil)) {
		t.Fatalf("DataCommit = %x, want %x", got, want.Sum(nil))
	}
	wantKey := hmac.New(sha256.New, kt)
	wantKey.Write(append([]byte{0x01}, row...))
	if got := c.KeyCommit(row); !bytes.Equal(got[:], wantKey.Sum(nil)) {
		t.Fatalf("KeyCommit = %x, want %x", got, wantKey.Sum(nil))
	}
	// Domain separation and table separation.
	if c.KeyCommit(row) == c.DataCommit(row) {
		t.Fatal("key and data commitments of the same bytes collide")
	}
	if k.ForTable("public", "audit_log") == k.ForTable("publi", "caudit_log") {
		t.Fatal("schema/table boundary is ambiguous")
	}
}

func TestParseKey(t *testing.T) {
	for _, tc := range []struct {
		name, in, err string
	}{
		{"hex", testKeyHex + "\n", ""},
		{"short hex", "abcd", "has 2 bytes, want 32"},
		{"not hex", strings.Repeat("z", 64), "neither 32 raw bytes nor 64 hex"},
		{"zero", strings.Repeat("0", 64), "all zeros"},
		{"raw", string(bytes.Repeat([]byte{0xfe}, 32)), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseKey([]byte(tc.in))
			if tc.err == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("error %v, want it to contain %q", err, tc.err)
			}
		})
	}
}

func TestLoadKey(t *testing.T) {
	if _, err := LoadKey("", ""); !errors.Is(err, ErrNoKey) {
		t.Fatalf("no key: %v", err)
	}
	p := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(p, []byte(testKeyHex), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := LoadKey(p, "ignored")
	if err != nil || hex.EncodeToString(k[:]) != testKeyHex {
		t.Fatalf("LoadKey(file) = %x, %v", k, err)
	}
	if _, err := LoadKey(filepath.Join(t.TempDir(), "missing"), ""); err == nil || !strings.Contains(err.Error(), "--key-file") {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := LoadKey("", "12"); err == nil || !strings.Contains(err.Error(), "WITNZ_COMMIT_KEY") {
		t.Fatalf("bad env: %v", err)
	}
}

func TestRowEncoding(t *testing.T) {
	values := [][]byte{nil, {}, []byte("a\tb\\n"), {0xff, 0x00}}
	enc, err := AppendRow(nil, values)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 5, 'a', '\t', 'b', '\\', 'n', 0, 0, 0, 2, 0xff, 0}
	if !bytes.Equal(enc, want) {
		t.Fatalf("encoding %x, want %x", enc, want)
	}
	got, err := SplitRow(enc)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(values) || got[0] != nil || got[1] == nil || len(got[1]) != 0 {
		t.Fatalf("NULL and empty must stay distinct: %q", got)
	}
	for _, bad := range [][]byte{{}, {0}, {0, 1}, {0, 1, 0, 0, 0, 9, 1}, append(append([]byte{}, enc...), 0), {0, 1, 0xff, 0xff, 0xff, 0xfe}} {
		if _, err := SplitRow(bad); err == nil {
			t.Errorf("SplitRow(%x) accepted malformed input", bad)
		}
	}
}

func sampleEntry() *Entry {
	kc, dc, oc := Commitment{1}, Commitment{2}, Commitment{3}
	return &Entry{Seq: 7, CommitLSN: 0x16B3748, TxIndex: 3, Op: OpUpdate, CommitTimeMicros: 1_763_000_000_000_000, XID: 731, KeyCommit: &kc, DataCommit: &dc, OldDataCommit: &oc}
}

func TestEntryRoundTrip(t *testing.T) {
	for _, e := range []*Entry{sampleEntry(), {Seq: 1, Op: OpHeartbeat, CommitLSN: 9}} {
		enc := e.Encode()
		if len(enc) != EntrySize {
			t.Fatalf("encoded %d bytes, want %d", len(enc), EntrySize)
		}
		d, err := DecodeEntry(enc)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(d.Encode(), enc) {
			t.Fatalf("round trip changed the entry: %x vs %x", d.Encode(), enc)
		}
		lh := e.LeafHash()
		if want := sha256.Sum256(append([]byte{0}, enc...)); lh != want {
			t.Fatalf("leaf hash %x, want %x", lh, want)
		}
	}
}

func TestDecodeEntryRejects(t *testing.T) {
	good := sampleEntry().Encode()
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte{}, good...)) }
	for name, b := range map[string][]byte{
		"short":          good[:EntrySize-1],
		"trailing":       append(append([]byte{}, good...), 0),
		"version":        mut(func(b []byte) []byte { b[0] = 2; return b }),
		"op zero":        mut(func(b []byte) []byte { b[1] = 0; return b }),
		"op unknown":     mut(func(b []byte) []byte { b[1] = byte(maxOp) + 1; return b }),
		"flags unknown":  mut(func(b []byte) []byte { b[34] |= 0x08; return b }),
		"absent nonzero": mut(func(b []byte) []byte { b[34] &^= flagOldData; return b }),
	} {
		if _, err := DecodeEntry(b); !errors.Is(err, ErrBadEntry) {
			t.Errorf("%s: DecodeEntry error %v, want ErrBadEntry", name, err)
		}
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add(sampleEntry().Encode())
	f.Add((&Entry{Op: OpInsert}).Encode())
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEntry(b)
		if err != nil {
			return
		}
		if !bytes.Equal(e.Encode(), b) {
			t.Fatalf("accepted input does not re-encode to itself: %x", b)
		}
	})
}

func FuzzSplitRow(f *testing.F) {
	enc, _ := AppendRow(nil, [][]byte{nil, {}, []byte("x")})
	f.Add(enc)
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		values, err := SplitRow(b)
		if err != nil {
			return
		}
		again, err := AppendRow(nil, values)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted input does not re-encode to itself: %x", b)
		}
	})
}

func BenchmarkDataCommit(b *testing.B) {
	k := mustKeyB(b)
	c := k.ForTable("public", "audit_log").NewCommitter()
	row := bytes.Repeat([]byte{7}, 120)
	b.SetBytes(int64(len(row)))
	for b.Loop() {
		c.DataCommit(row)
	}
}

func mustKeyB(b *testing.B) Key {
	k, err := ParseKey([]byte(testKeyHex))
	if err != nil {
		b.Fatal(err)
	}
	return k
}
