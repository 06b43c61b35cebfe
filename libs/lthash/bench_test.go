package lthash

import (
	"crypto/sha256"
	"crypto/sha3"
	"encoding/binary"
	"testing"
)

// The element statedigest adds: key_commit || data_commit.
var benchElem = func() []byte {
	b := make([]byte, 64)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}()

// BenchmarkAdd is B6 "LtHash add": one 64-byte element into a state.
func BenchmarkAdd(b *testing.B) {
	var h Hash
	b.SetBytes(int64(len(benchElem)))
	for b.Loop() {
		h.Add(benchElem)
	}
}

// BenchmarkSHA256Same is the B6 baseline: SHA-256 of the same 64 bytes.
func BenchmarkSHA256Same(b *testing.B) {
	b.SetBytes(int64(len(benchElem)))
	var sink [32]byte
	for b.Loop() {
		sink = sha256.Sum256(benchElem)
	}
	_ = sink
}

// BenchmarkExpand is the expansion alone (key derivation and keystream,
// stored rather than added), the bulk of Add.
func BenchmarkExpand(b *testing.B) {
	var h Hash
	b.SetBytes(int64(len(benchElem)))
	for b.Loop() {
		apply(&h.w, benchElem, modeStore)
	}
}

// BenchmarkExpandGeneric is the expansion through crypto/aes, the path
// taken without AES-NI.
func BenchmarkExpandGeneric(b *testing.B) {
	var h Hash
	b.SetBytes(int64(len(benchElem)))
	for b.Loop() {
		key := elementKey(benchElem)
		keystreamGeneric(&h.w, &key, modeStore)
	}
}

// BenchmarkAddSHAKE128 is Add as it was with the first definition,
// X(e) = SHAKE-128(e) to 2048 bytes plus the word arithmetic, for
// comparison in the same run.
func BenchmarkAddSHAKE128(b *testing.B) {
	var h Hash
	var buf [Size]byte
	b.SetBytes(int64(len(benchElem)))
	for b.Loop() {
		s := sha3.NewSHAKE128()
		s.Write(benchElem)
		s.Read(buf[:])
		for i := range h.w {
			h.w[i] = add(h.w[i], binary.LittleEndian.Uint64(buf[8*i:]))
		}
	}
}

// BenchmarkExpandSHAKE128 is the first definition's expansion alone.
func BenchmarkExpandSHAKE128(b *testing.B) {
	var buf [Size]byte
	b.SetBytes(int64(len(benchElem)))
	for b.Loop() {
		s := sha3.NewSHAKE128()
		s.Write(benchElem)
		s.Read(buf[:])
	}
}

// BenchmarkAddState is the lane arithmetic alone.
func BenchmarkAddState(b *testing.B) {
	var h, o Hash
	o.Add(benchElem)
	for b.Loop() {
		h.AddState(&o)
	}
}
