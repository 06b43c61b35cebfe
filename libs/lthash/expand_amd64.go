//go:build !purego

package lthash

// CPU features, from CPUID and XGETBV.
var (
	// hasAESNI: CPUID.1:ECX.AES[25]. keystreamAESNI needs it and SSE2,
	// always present on amd64.
	hasAESNI bool
	// hasVAES: AES-NI, AVX (CPUID.1:ECX[28]), AVX2 (CPUID.7.0:EBX[5]),
	// VAES (CPUID.7.0:ECX[9]) and YMM state enabled by the OS
	// (CPUID.1:ECX.OSXSAVE[27], XCR0 bits 1 and 2). keystreamVAES needs
	// them.
	hasVAES bool
)

func init() {
	_, _, ecx1, _ := cpuid(1, 0)
	hasAESNI = ecx1&(1<<25) != 0
	if !hasAESNI || ecx1&(1<<27) == 0 || ecx1&(1<<28) == 0 {
		return
	}
	if xcr0, _ := xgetbv(); xcr0&6 != 6 {
		return
	}
	maxLeaf, _, _, _ := cpuid(0, 0)
	if maxLeaf < 7 {
		return
	}
	_, ebx7, ecx7, _ := cpuid(7, 0)
	hasVAES = ebx7&(1<<5) != 0 && ecx7&(1<<9) != 0
}

// keystream computes the AES-256-CTR keystream of key (counter blocks 0 …
// 127, 2048 bytes) and stores it into w, adds it or subtracts it lane by
// lane, by mode.
func keystream(w *[words]uint64, key *[32]byte, mode int) {
	switch {
	case hasVAES:
		keystreamVAES(w, key, mode)
	case hasAESNI:
		keystreamAESNI(w, key, mode)
	default:
		keystreamGeneric(w, key, mode)
	}
}

//go:noescape
func keystreamAESNI(w *[words]uint64, key *[32]byte, mode int)

//go:noescape
func keystreamVAES(w *[words]uint64, key *[32]byte, mode int)

func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)

func xgetbv() (eax, edx uint32)

// hasFastPath reports whether Add runs in assembly (tests use it).
func hasFastPath() bool { return hasAESNI }
