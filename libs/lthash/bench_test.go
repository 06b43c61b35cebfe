package lthash

import (
	"crypto/sha256"
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

// BenchmarkExpand is the SHAKE-128 expansion alone, the bulk of Add.
func BenchmarkExpand(b *testing.B) {
	var buf [Size]byte
	b.SetBytes(int64(len(benchElem)))
	for b.Loop() {
		expand(&buf, benchElem)
	}
}

// BenchmarkAddState is the lane arithmetic alone (what Add costs beyond
// the expansion).
func BenchmarkAddState(b *testing.B) {
	var h, o Hash
	o.Add(benchElem)
	for b.Loop() {
		h.AddState(&o)
	}
}
