package lthash

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
)

// domain is prepended to every element before it is hashed into an AES key.
const domain = "witnz/lthash/v2"

// What keystream does with the expansion.
const (
	modeStore = iota
	modeAdd
	modeSub
)

// elementKey returns SHA-256(domain || elem), the AES-256 key of elem's
// expansion. Elements up to 113 bytes are hashed from a stack buffer, so
// Add does not allocate for them.
func elementKey(elem []byte) [32]byte {
	var buf [128]byte
	if len(domain)+len(elem) <= len(buf) {
		n := copy(buf[:], domain)
		n += copy(buf[n:], elem)
		return sha256.Sum256(buf[:n])
	}
	h := sha256.New()
	h.Write([]byte(domain))
	h.Write(elem)
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// apply stores X(elem) into w, adds it or subtracts it, by mode.
func apply(w *[words]uint64, elem []byte, mode int) {
	key := elementKey(elem)
	keystream(w, &key, mode)
}

// keystreamGeneric is keystream written with crypto/aes: what runs without
// AES-NI (or with the purego build tag), and the reference in tests.
func keystreamGeneric(w *[words]uint64, key *[32]byte, mode int) {
	var buf [Size]byte
	block, _ := aes.NewCipher(key[:]) // cannot fail: the key is 32 bytes
	var iv [aes.BlockSize]byte
	cipher.NewCTR(block, iv[:]).XORKeyStream(buf[:], buf[:])
	for i := range w {
		x := binary.LittleEndian.Uint64(buf[8*i:])
		switch mode {
		case modeStore:
			w[i] = x
		case modeAdd:
			w[i] = add(w[i], x)
		case modeSub:
			w[i] = sub(w[i], x)
		}
	}
}
