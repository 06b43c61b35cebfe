//go:build !amd64 || purego

package lthash

// keystream computes the AES-256-CTR keystream of key (counter blocks 0 …
// 127, 2048 bytes) and stores it into w, adds it or subtracts it lane by
// lane, by mode.
func keystream(w *[words]uint64, key *[32]byte, mode int) {
	keystreamGeneric(w, key, mode)
}

// hasFastPath reports whether Add runs in assembly (tests use it).
func hasFastPath() bool { return false }
