package lthash

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha3"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"testing"
)

// laneAdd is the definition written out lane by lane, without the word
// arithmetic: the reference Hash is checked against.
func laneAdd(state []byte, elem []byte, sign int) {
	x := sha3.SumSHAKE128(elem, Size)
	for i := 0; i < Lanes; i++ {
		l := binary.LittleEndian.Uint16(state[2*i:])
		e := binary.LittleEndian.Uint16(x[2*i:])
		if sign > 0 {
			l += e
		} else {
			l -= e
		}
		binary.LittleEndian.PutUint16(state[2*i:], l)
	}
}

func randElem(r *rand.Rand) []byte {
	b := make([]byte, r.IntN(100))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func randHash(r *rand.Rand) Hash {
	var h Hash
	for i := range h.w {
		h.w[i] = r.Uint64()
	}
	return h
}

func mustFromBytes(t *testing.T, b []byte) Hash {
	t.Helper()
	h, err := FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestKnownAnswer pins the definition to values computed independently
// (Python hashlib.shake_128 and struct '<1024H').
func TestKnownAnswer(t *testing.T) {
	e1 := make([]byte, 64)
	for i := range e1 {
		e1[i] = byte(i)
	}
	x := Expand(e1)
	if got, want := hex.EncodeToString(sha256Of(x.Bytes())), "355b36aedc62d5b699bb8e335c4994081111fb4ec8607b8c6bdf3083c75e5198"; got != want {
		t.Errorf("SHA-256(X(0..63)) = %s, want %s", got, want)
	}
	if x.Lane(0) != 28121 || x.Lane(1) != 36990 {
		t.Errorf("X(0..63) lanes 0,1 = %d,%d, want 28121,36990", x.Lane(0), x.Lane(1))
	}

	var h Hash
	h.Add(e1)
	h.Add([]byte("witnz"))
	h.Remove(nil)
	b := h.Bytes()
	if got, want := hex.EncodeToString(sha256Of(b)), "c22e4f0511cf2c2edd87856b3191bda31b5a02b6c8113c68cfb928419cc25665"; got != want {
		t.Errorf("SHA-256(state) = %s, want %s", got, want)
	}
	if got, want := hex.EncodeToString(b[:8]), "7044f3835dd6d8a6"; got != want {
		t.Errorf("first bytes = %s, want %s", got, want)
	}
	if h.Lane(0) != 17520 || h.Lane(1023) != 29918 {
		t.Errorf("lanes 0,1023 = %d,%d, want 17520,29918", h.Lane(0), h.Lane(1023))
	}
}

func sha256Of(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func TestMatchesLaneLoop(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 200 {
		h := randHash(r)
		ref := h.Bytes()
		elem := randElem(r)
		sign := 1
		if n%2 == 1 {
			sign = -1
			h.Remove(elem)
		} else {
			h.Add(elem)
		}
		laneAdd(ref, elem, sign)
		if !bytes.Equal(h.Bytes(), ref) {
			t.Fatalf("case %d (sign %d): word arithmetic differs from the lane loop", n, sign)
		}
	}
}

// TestWordArithmetic checks add and sub against plain uint16 arithmetic on
// every combination of the lane values where carries and borrows happen.
func TestWordArithmetic(t *testing.T) {
	edges := []uint16{0, 1, 2, 0x7ffe, 0x7fff, 0x8000, 0x8001, 0xfffe, 0xffff, 0x1234, 0xedcb}
	r := rand.New(rand.NewPCG(3, 4))
	for _, a := range edges {
		for _, b := range edges {
			// Put the pair in one lane and random values in the others so
			// a carry leaking across a lane boundary shows up.
			for lane := range 4 {
				var as, bs [4]uint16
				for i := range 4 {
					as[i], bs[i] = uint16(r.Uint32()), uint16(r.Uint32())
				}
				as[lane], bs[lane] = a, b
				wa, wb := pack(as), pack(bs)
				var sum, diff [4]uint16
				for i := range 4 {
					sum[i] = as[i] + bs[i]
					diff[i] = as[i] - bs[i]
				}
				if got := add(wa, wb); got != pack(sum) {
					t.Fatalf("add(%04x, %04x) = %016x, want %016x", as, bs, got, pack(sum))
				}
				if got := sub(wa, wb); got != pack(diff) {
					t.Fatalf("sub(%04x, %04x) = %016x, want %016x", as, bs, got, pack(diff))
				}
			}
		}
	}
}

func pack(l [4]uint16) uint64 {
	return uint64(l[0]) | uint64(l[1])<<16 | uint64(l[2])<<32 | uint64(l[3])<<48
}

func TestStateArithmeticMatchesLaneLoop(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 50 {
		a, b := randHash(r), randHash(r)
		ab, bb := a.Bytes(), b.Bytes()
		sum, diff := a, a
		sum.AddState(&b)
		diff.SubState(&b)
		for i := range Lanes {
			la := binary.LittleEndian.Uint16(ab[2*i:])
			lb := binary.LittleEndian.Uint16(bb[2*i:])
			if sum.Lane(i) != la+lb || diff.Lane(i) != la-lb {
				t.Fatalf("lane %d: sum %d diff %d, want %d %d", i, sum.Lane(i), diff.Lane(i), la+lb, la-lb)
			}
		}
	}
}

func TestOrderIndependence(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	elems := make([][]byte, 40)
	for i := range elems {
		elems[i] = randElem(r)
	}
	var want Hash
	for _, e := range elems {
		want.Add(e)
	}
	for range 5 {
		var h Hash
		for _, i := range r.Perm(len(elems)) {
			h.Add(elems[i])
		}
		if !h.Equal(&want) {
			t.Fatal("a permutation of the same additions gave a different state")
		}
	}
	// A multiset, not a set: adding twice is not adding once.
	var once, twice Hash
	once.Add(elems[0])
	twice.Add(elems[0])
	twice.Add(elems[0])
	if once.Equal(&twice) {
		t.Fatal("adding an element twice equals adding it once")
	}
}

func TestAddRemoveIdentity(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	h := randHash(r)
	orig := h
	var elems [][]byte
	for range 30 {
		e := randElem(r)
		elems = append(elems, e)
		h.Add(e)
	}
	if h.Equal(&orig) {
		t.Fatal("adding elements did not change the state")
	}
	for _, i := range r.Perm(len(elems)) {
		h.Remove(elems[i])
	}
	if !h.Equal(&orig) {
		t.Fatal("removing what was added did not restore the state")
	}
	var empty Hash
	empty.Add(elems[0])
	empty.Remove(elems[0])
	if !empty.IsZero() {
		t.Fatal("add then remove on the empty state is not zero")
	}
}

func TestUnionIsSum(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	var a, b, all Hash
	for i := range 20 {
		e := randElem(r)
		all.Add(e)
		if i%3 == 0 {
			a.Add(e)
		} else {
			b.Add(e)
		}
	}
	u := a
	u.AddState(&b)
	if !u.Equal(&all) {
		t.Fatal("AddState is not the state of the union")
	}
	u.SubState(&b)
	if !u.Equal(&a) {
		t.Fatal("SubState did not undo AddState")
	}
	x := Expand([]byte("e"))
	var viaAdd Hash
	viaAdd.Add([]byte("e"))
	if !x.Equal(&viaAdd) {
		t.Fatal("Expand differs from Add on the empty state")
	}
}

func TestBytesRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	h := randHash(r)
	b := h.Bytes()
	if len(b) != Size {
		t.Fatalf("Bytes is %d bytes, want %d", len(b), Size)
	}
	// Lane i is at bytes 2i, 2i+1, little-endian.
	for _, i := range []int{0, 1, 3, 4, 511, 1023} {
		if got := binary.LittleEndian.Uint16(b[2*i:]); got != h.Lane(i) {
			t.Fatalf("bytes of lane %d = %d, Lane = %d", i, got, h.Lane(i))
		}
	}
	g := mustFromBytes(t, b)
	if !g.Equal(&h) {
		t.Fatal("FromBytes(Bytes()) differs")
	}
	if got := h.AppendBytes([]byte("x")); !bytes.Equal(got[1:], b) || got[0] != 'x' {
		t.Fatal("AppendBytes does not append the serialization")
	}
}

func TestFromBytesRejectsWrongLength(t *testing.T) {
	for _, n := range []int{0, 1, Size - 1, Size + 1, 2 * Size} {
		if _, err := FromBytes(make([]byte, n)); !errors.Is(err, ErrSize) {
			t.Errorf("FromBytes(%d bytes) error = %v, want ErrSize", n, err)
		}
	}
}

func TestAddDoesNotAllocate(t *testing.T) {
	var h Hash
	elem := make([]byte, 64)
	if n := testing.AllocsPerRun(100, func() { h.Add(elem) }); n != 0 {
		t.Errorf("Add allocates %v times per call", n)
	}
}

func FuzzFromBytes(f *testing.F) {
	f.Add(make([]byte, Size))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := FromBytes(b)
		if err != nil {
			if len(b) == Size {
				t.Fatalf("rejected a %d-byte state: %v", Size, err)
			}
			return
		}
		if !bytes.Equal(h.Bytes(), b) {
			t.Fatal("round trip changed the bytes")
		}
	})
}
