// Package lthash implements LtHash16, the order-independent, homomorphic
// multiset hash behind witnz state digests (docs/design/0004-state-digest.md).
//
// # Definition (normative)
//
// A state is 1024 lanes of 16 bits, L[0] … L[1023], serialized as 2048
// bytes with lane i at bytes 2i and 2i+1, little-endian:
//
//	bytes[2i]   = L[i] & 0xff
//	bytes[2i+1] = L[i] >> 8
//
// The empty multiset is the all-zero state. An element e (any byte string;
// witnz uses key_commit || data_commit, 64 bytes) is expanded to 2048 bytes
// X(e) in two steps (this is version 2 of the expansion; version 1 was
// SHAKE-128(e)):
//
//	k    = SHA-256("witnz/lthash/v2" || e)                  (FIPS 180-4)
//	X(e) = AES-256_k(T_0) || AES-256_k(T_1) || … || AES-256_k(T_127)
//
// where "witnz/lthash/v2" is those 15 ASCII bytes, with no length or
// separator after them, AES-256_k is the FIPS 197 block cipher under the
// 32-byte key k, and the counter block T_j is j as a 16-byte big-endian
// integer (bytes 0…14 zero, byte 15 = j). X(e) is thus the AES-256-CTR
// keystream (SP 800-38A) of k with an all-zero initial counter block: what
// encrypting 2048 zero bytes with AES-256-CTR, key k and IV 0^128 gives
// (openssl enc -aes-256-ctr -K <k in hex> -iv 0). X(e) is read as 1024
// little-endian uint16 lanes in the state's layout, X(e)[i] = bytes 2i,
// 2i+1. Then
//
//	Add(e):       L[i] = (L[i] + X(e)[i]) mod 2^16   for every i
//	Remove(e):    L[i] = (L[i] - X(e)[i]) mod 2^16
//	AddState(o):  L[i] = (L[i] + o.L[i])  mod 2^16
//	SubState(o):  L[i] = (L[i] - o.L[i])  mod 2^16
//
// The state of a multiset is therefore the lane-wise sum of the expansions
// of its elements: it does not depend on the order of additions, removing
// an element undoes adding it, and the state of a union is the sum of the
// states. The fixed prefix separates this use of SHA-256 from any other;
// it does not separate kinds of elements: callers that hash different kinds
// of elements into one state must encode them unambiguously themselves.
//
// LtHash16 comes from Bellare–Micciancio (1997) and the parameters (n = 1024,
// 16-bit lanes) from Lewi et al., "Securing Update Propagation with
// Homomorphic Hashing" (Facebook, 2019). Its collision resistance assumes
// the expansion behaves as a random function with 2048-byte outputs;
// docs/design/0004 gives the argument for this one. Removing an element
// that was never added is arithmetic like any other: the state does not
// detect it (witnz keeps a count beside each state for that).
//
// # Implementation
//
// On amd64 the keystream is computed and added to the lanes in one pass of
// assembly: VAES on YMM registers where the CPU has it, otherwise AES-NI.
// Elsewhere, without AES-NI, or with the purego build tag, crypto/aes
// computes it (several times slower, and allocating). Add, Remove and Expand
// do not allocate for elements of up to 113 bytes.
//
// The zero value of Hash is the empty multiset. A Hash is a value: copying
// it copies the state. It is not safe for concurrent mutation.
package lthash

import (
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	// Lanes is the number of 16-bit lanes in a state.
	Lanes = 1024
	// Size is the length of a serialized state in bytes.
	Size = 2 * Lanes

	words = Size / 8
	// hi has the top bit of each 16-bit lane of a 64-bit word set.
	hi = 0x8000_8000_8000_8000
)

// ErrSize is returned by FromBytes for input that is not exactly Size bytes.
var ErrSize = errors.New("lthash: wrong state size")

// Hash is an LtHash16 state.
//
// Internally the lanes are held four to a uint64 word (word w holds lanes
// 4w … 4w+3, lane 4w in the low 16 bits, so a little-endian load of bytes
// 8w … 8w+7 gives the word) and added with carries masked at lane
// boundaries, which is exactly lane-wise arithmetic mod 2^16.
type Hash struct {
	w [words]uint64
}

// Expand returns X(elem), the state holding elem once.
func Expand(elem []byte) Hash {
	var h Hash
	apply(&h.w, elem, modeStore)
	return h
}

// Add adds elem to the multiset.
func (h *Hash) Add(elem []byte) { apply(&h.w, elem, modeAdd) }

// Remove removes elem from the multiset.
func (h *Hash) Remove(elem []byte) { apply(&h.w, elem, modeSub) }

// AddState adds o's multiset to h's (multiset union).
func (h *Hash) AddState(o *Hash) {
	for i := range h.w {
		h.w[i] = add(h.w[i], o.w[i])
	}
}

// SubState subtracts o's multiset from h's.
func (h *Hash) SubState(o *Hash) {
	for i := range h.w {
		h.w[i] = sub(h.w[i], o.w[i])
	}
}

// Equal reports whether h and o are the same state.
func (h *Hash) Equal(o *Hash) bool { return h.w == o.w }

// IsZero reports whether h is the empty-multiset state.
func (h *Hash) IsZero() bool { return h.w == [words]uint64{} }

// Lane returns lane i (0 ≤ i < Lanes).
func (h *Hash) Lane(i int) uint16 { return uint16(h.w[i/4] >> (16 * (i % 4))) }

// Bytes returns the 2048-byte serialization.
func (h *Hash) Bytes() []byte { return h.AppendBytes(make([]byte, 0, Size)) }

// AppendBytes appends the 2048-byte serialization to dst.
func (h *Hash) AppendBytes(dst []byte) []byte {
	for _, w := range h.w {
		dst = binary.LittleEndian.AppendUint64(dst, w)
	}
	return dst
}

// FromBytes parses a serialization made by Bytes. Every 2048-byte string is
// a valid state; any other length is an error wrapping ErrSize.
func FromBytes(b []byte) (Hash, error) {
	var h Hash
	if len(b) != Size {
		return h, fmt.Errorf("%w: %d bytes, want %d", ErrSize, len(b), Size)
	}
	for i := range h.w {
		h.w[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return h, nil
}

// add returns the lane-wise sum mod 2^16 of the four lanes in a and b: the
// low 15 bits of each lane are added with their carry stopping at the lane's
// top bit, and the top bit is then the XOR of both top bits and that carry.
func add(a, b uint64) uint64 {
	return ((a &^ hi) + (b &^ hi)) ^ ((a ^ b) & hi)
}

// sub returns the lane-wise difference mod 2^16: setting each lane's top bit
// in a before subtracting b's low 15 bits means no lane ever borrows from
// its neighbour; the top bit is then fixed up the same way as in add.
func sub(a, b uint64) uint64 {
	return ((a | hi) - (b &^ hi)) ^ ((a ^ ^b) & hi)
}
