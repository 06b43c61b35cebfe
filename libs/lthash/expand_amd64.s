//go:build !purego

#include "textflag.h"

// One AES-256 key-schedule step (the AES-NI white paper's construction, as
// in the standard library's crypto/internal/fips140/aes/aes_amd64.s). X4 is
// scratch and must be zero before the first step. EVEN computes the next
// even round key into X0 from AESKEYGENASSIST of X2 in X1; ODD the next odd
// one into X2 from AESKEYGENASSIST of X0 in X1. Each stores its key at
// off(SP).
#define EVEN(rcon, off) \
	AESKEYGENASSIST $rcon, X2, X1; \
	PSHUFD $0xff, X1, X1; \
	SHUFPS $0x10, X0, X4; \
	PXOR X4, X0; \
	SHUFPS $0x8c, X0, X4; \
	PXOR X4, X0; \
	PXOR X1, X0; \
	MOVUPS X0, off(SP)

#define ODD(off) \
	AESKEYGENASSIST $0x00, X0, X1; \
	PSHUFD $0xaa, X1, X1; \
	SHUFPS $0x10, X2, X4; \
	PXOR X4, X2; \
	SHUFPS $0x8c, X2, X4; \
	PXOR X4, X2; \
	PXOR X1, X2; \
	MOVUPS X2, off(SP)

// ROUND applies round key off(SP) to the eight blocks X1 … X8.
#define ROUND(off) \
	MOVUPS off(SP), X0; \
	AESENC X0, X1; \
	AESENC X0, X2; \
	AESENC X0, X3; \
	AESENC X0, X4; \
	AESENC X0, X5; \
	AESENC X0, X6; \
	AESENC X0, X7; \
	AESENC X0, X8

// ADDW adds the eight lanes in block X(b) to the lanes at off(DI); SUBW
// subtracts them; STORE overwrites them. The lanes are little-endian uint16,
// as PADDW and PSUBW read them.
#define ADDW(b, off) \
	MOVOU off(DI), X11; \
	PADDW b, X11; \
	MOVOU X11, off(DI)

#define SUBW(b, off) \
	MOVOU off(DI), X11; \
	PSUBW b, X11; \
	MOVOU X11, off(DI)

#define STORE(b, off) \
	MOVOU b, off(DI)

// func keystreamAESNI(w *[words]uint64, key *[32]byte, mode int)
//
// Computes the 2048-byte AES-256-CTR keystream under key with the counter
// block starting at zero (128 blocks, counter j as a 128-bit big-endian
// integer) and, by mode, stores it into w (modeStore), adds it to w lane by
// lane mod 2^16 (modeAdd) or subtracts it (modeSub). Round keys live in the
// 240-byte frame.
TEXT ·keystreamAESNI(SB), NOSPLIT, $240-24
	MOVQ w+0(FP), DI
	MOVQ key+8(FP), SI
	MOVQ mode+16(FP), DX

	// Key schedule: 15 round keys at 0(SP) … 224(SP).
	MOVUPS (SI), X0
	MOVUPS 16(SI), X2
	MOVUPS X0, 0(SP)
	MOVUPS X2, 16(SP)
	PXOR X4, X4
	EVEN(0x01, 32)
	ODD(48)
	EVEN(0x02, 64)
	ODD(80)
	EVEN(0x04, 96)
	ODD(112)
	EVEN(0x08, 128)
	ODD(144)
	EVEN(0x10, 160)
	ODD(176)
	EVEN(0x20, 192)
	ODD(208)
	EVEN(0x40, 224)

	// X9 is the next counter block, X10 adds one to it: the counter is a
	// big-endian integer below 128, so only byte 15 (the top byte of the
	// high quadword) is ever non-zero.
	PXOR X9, X9
	MOVQ $0x0100000000000000, AX
	MOVQ AX, X10
	PSLLDQ $8, X10

	MOVQ $16, CX

loop:
	MOVOU X9, X1
	PADDQ X10, X9
	MOVOU X9, X2
	PADDQ X10, X9
	MOVOU X9, X3
	PADDQ X10, X9
	MOVOU X9, X4
	PADDQ X10, X9
	MOVOU X9, X5
	PADDQ X10, X9
	MOVOU X9, X6
	PADDQ X10, X9
	MOVOU X9, X7
	PADDQ X10, X9
	MOVOU X9, X8
	PADDQ X10, X9

	MOVUPS 0(SP), X0
	PXOR X0, X1
	PXOR X0, X2
	PXOR X0, X3
	PXOR X0, X4
	PXOR X0, X5
	PXOR X0, X6
	PXOR X0, X7
	PXOR X0, X8
	ROUND(16)
	ROUND(32)
	ROUND(48)
	ROUND(64)
	ROUND(80)
	ROUND(96)
	ROUND(112)
	ROUND(128)
	ROUND(144)
	ROUND(160)
	ROUND(176)
	ROUND(192)
	ROUND(208)
	MOVUPS 224(SP), X0
	AESENCLAST X0, X1
	AESENCLAST X0, X2
	AESENCLAST X0, X3
	AESENCLAST X0, X4
	AESENCLAST X0, X5
	AESENCLAST X0, X6
	AESENCLAST X0, X7
	AESENCLAST X0, X8

	CMPQ DX, $1
	JEQ add
	JGT sub
	STORE(X1, 0)
	STORE(X2, 16)
	STORE(X3, 32)
	STORE(X4, 48)
	STORE(X5, 64)
	STORE(X6, 80)
	STORE(X7, 96)
	STORE(X8, 112)
	JMP next

add:
	ADDW(X1, 0)
	ADDW(X2, 16)
	ADDW(X3, 32)
	ADDW(X4, 48)
	ADDW(X5, 64)
	ADDW(X6, 80)
	ADDW(X7, 96)
	ADDW(X8, 112)
	JMP next

sub:
	SUBW(X1, 0)
	SUBW(X2, 16)
	SUBW(X3, 32)
	SUBW(X4, 48)
	SUBW(X5, 64)
	SUBW(X6, 80)
	SUBW(X7, 96)
	SUBW(X8, 112)

next:
	ADDQ $128, DI
	DECQ CX
	JNZ loop

	RET

// VEVEN and VODD are EVEN and ODD in VEX encoding, used by the VAES path so
// that it executes no legacy-SSE instruction while YMM registers are live.
#define VEVEN(rcon, off) \
	VAESKEYGENASSIST $rcon, X2, X1; \
	VPSHUFD $0xff, X1, X1; \
	VSHUFPS $0x10, X0, X4, X4; \
	VPXOR X4, X0, X0; \
	VSHUFPS $0x8c, X0, X4, X4; \
	VPXOR X4, X0, X0; \
	VPXOR X1, X0, X0; \
	VMOVDQU X0, off(SP)

#define VODD(off) \
	VAESKEYGENASSIST $0x00, X0, X1; \
	VPSHUFD $0xaa, X1, X1; \
	VSHUFPS $0x10, X2, X4, X4; \
	VPXOR X4, X2, X2; \
	VSHUFPS $0x8c, X2, X4, X4; \
	VPXOR X4, X2, X2; \
	VPXOR X1, X2, X2; \
	VMOVDQU X2, off(SP)

#define VROUND(off) \
	VBROADCASTI128 off(SP), Y0; \
	VAESENC Y0, Y1, Y1; \
	VAESENC Y0, Y2, Y2; \
	VAESENC Y0, Y3, Y3; \
	VAESENC Y0, Y4, Y4; \
	VAESENC Y0, Y5, Y5; \
	VAESENC Y0, Y6, Y6; \
	VAESENC Y0, Y7, Y7; \
	VAESENC Y0, Y8, Y8

#define VADDW(b, off) \
	VPADDW off(DI), b, b; \
	VMOVDQU b, off(DI)

#define VSUBW(b, off) \
	VMOVDQU off(DI), Y11; \
	VPSUBW b, Y11, Y11; \
	VMOVDQU Y11, off(DI)

#define VSTORE(b, off) \
	VMOVDQU b, off(DI)

// func keystreamVAES(w *[words]uint64, key *[32]byte, mode int)
//
// keystreamAESNI with VAES on YMM registers: two blocks per instruction,
// sixteen in flight.
TEXT ·keystreamVAES(SB), NOSPLIT, $240-24
	MOVQ w+0(FP), DI
	MOVQ key+8(FP), SI
	MOVQ mode+16(FP), DX

	VMOVDQU (SI), X0
	VMOVDQU 16(SI), X2
	VMOVDQU X0, 0(SP)
	VMOVDQU X2, 16(SP)
	VPXOR X4, X4, X4
	VEVEN(0x01, 32)
	VODD(48)
	VEVEN(0x02, 64)
	VODD(80)
	VEVEN(0x04, 96)
	VODD(112)
	VEVEN(0x08, 128)
	VODD(144)
	VEVEN(0x10, 160)
	VODD(176)
	VEVEN(0x20, 192)
	VODD(208)
	VEVEN(0x40, 224)

	// Y9 holds the next two counter blocks (j, j+1), Y10 adds two to both:
	// as in keystreamAESNI only the top byte of each block's high quadword
	// is ever non-zero.
	MOVQ $0x0100000000000000, AX
	VMOVQ AX, X10
	VPSLLDQ $8, X10, X10
	VPXOR Y9, Y9, Y9
	VINSERTI128 $1, X10, Y9, Y9
	VPADDQ X10, X10, X10
	VINSERTI128 $1, X10, Y10, Y10

	MOVQ $8, CX

vloop:
	VMOVDQU Y9, Y1
	VPADDQ Y10, Y9, Y9
	VMOVDQU Y9, Y2
	VPADDQ Y10, Y9, Y9
	VMOVDQU Y9, Y3
	VPADDQ Y10, Y9, Y9
	VMOVDQU Y9, Y4
	VPADDQ Y10, Y9, Y9
	VMOVDQU Y9, Y5
	VPADDQ Y10, Y9, Y9
	VMOVDQU Y9, Y6
	VPADDQ Y10, Y9, Y9
	VMOVDQU Y9, Y7
	VPADDQ Y10, Y9, Y9
	VMOVDQU Y9, Y8
	VPADDQ Y10, Y9, Y9

	VBROADCASTI128 0(SP), Y0
	VPXOR Y0, Y1, Y1
	VPXOR Y0, Y2, Y2
	VPXOR Y0, Y3, Y3
	VPXOR Y0, Y4, Y4
	VPXOR Y0, Y5, Y5
	VPXOR Y0, Y6, Y6
	VPXOR Y0, Y7, Y7
	VPXOR Y0, Y8, Y8
	VROUND(16)
	VROUND(32)
	VROUND(48)
	VROUND(64)
	VROUND(80)
	VROUND(96)
	VROUND(112)
	VROUND(128)
	VROUND(144)
	VROUND(160)
	VROUND(176)
	VROUND(192)
	VROUND(208)
	VBROADCASTI128 224(SP), Y0
	VAESENCLAST Y0, Y1, Y1
	VAESENCLAST Y0, Y2, Y2
	VAESENCLAST Y0, Y3, Y3
	VAESENCLAST Y0, Y4, Y4
	VAESENCLAST Y0, Y5, Y5
	VAESENCLAST Y0, Y6, Y6
	VAESENCLAST Y0, Y7, Y7
	VAESENCLAST Y0, Y8, Y8

	CMPQ DX, $1
	JEQ vadd
	JGT vsub
	VSTORE(Y1, 0)
	VSTORE(Y2, 32)
	VSTORE(Y3, 64)
	VSTORE(Y4, 96)
	VSTORE(Y5, 128)
	VSTORE(Y6, 160)
	VSTORE(Y7, 192)
	VSTORE(Y8, 224)
	JMP vnext

vadd:
	VADDW(Y1, 0)
	VADDW(Y2, 32)
	VADDW(Y3, 64)
	VADDW(Y4, 96)
	VADDW(Y5, 128)
	VADDW(Y6, 160)
	VADDW(Y7, 192)
	VADDW(Y8, 224)
	JMP vnext

vsub:
	VSUBW(Y1, 0)
	VSUBW(Y2, 32)
	VSUBW(Y3, 64)
	VSUBW(Y4, 96)
	VSUBW(Y5, 128)
	VSUBW(Y6, 160)
	VSUBW(Y7, 192)
	VSUBW(Y8, 224)

vnext:
	ADDQ $256, DI
	DECQ CX
	JNZ vloop

	VZEROUPPER
	RET

// func xgetbv() (eax, edx uint32)
TEXT ·xgetbv(SB), NOSPLIT, $0-8
	MOVL $0, CX
	XGETBV
	MOVL AX, eax+0(FP)
	MOVL DX, edx+4(FP)
	RET

// func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL leaf+0(FP), AX
	MOVL sub+4(FP), CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL BX, ebx+12(FP)
	MOVL CX, ecx+16(FP)
	MOVL DX, edx+20(FP)
	RET
