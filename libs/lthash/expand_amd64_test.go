//go:build !purego

package lthash

import (
	"math/rand/v2"
	"testing"
)

// TestKeystreamImplementationsAgree runs every implementation this CPU
// supports on the same keys, states and modes: a machine with VAES checks
// the AES-NI path too, which the others would take.
func TestKeystreamImplementationsAgree(t *testing.T) {
	impls := map[string]func(*[words]uint64, *[32]byte, int){}
	if hasAESNI {
		impls["AES-NI"] = keystreamAESNI
	}
	if hasVAES {
		impls["VAES"] = keystreamVAES
	}
	if len(impls) == 0 {
		t.Skip("no AES-NI: only the generic implementation runs here")
	}
	r := rand.New(rand.NewPCG(15, 16))
	for n := range 300 {
		var key [32]byte
		for i := range key {
			key[i] = byte(r.Uint32())
		}
		var start [words]uint64
		for i := range start {
			start[i] = r.Uint64()
		}
		mode := n % 3
		want := start
		keystreamGeneric(&want, &key, mode)
		for name, f := range impls {
			got := start
			f(&got, &key, mode)
			if got != want {
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("case %d, mode %d: %s differs from crypto/aes at word %d: %016x, want %016x", n, mode, name, i, got[i], want[i])
					}
				}
			}
		}
	}
}
