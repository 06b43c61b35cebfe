#!/usr/bin/env python3
"""Known answers for TestKnownAnswer, computed from the definition in the
package comment with hashlib, the cryptography package's AES-256-CTR and
struct, sharing nothing with the Go code. Run: python3 testdata/vectors.py"""
import hashlib
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

DOMAIN = b"witnz/lthash/v2"


def key(e):
    return hashlib.sha256(DOMAIN + e).digest()


def expand(e):
    enc = Cipher(algorithms.AES(key(e)), modes.CTR(bytes(16))).encryptor()
    return list(struct.unpack("<1024H", enc.update(bytes(2048)) + enc.finalize()))


def ser(lanes):
    return struct.pack("<1024H", *lanes)


def add(lanes, e, sign=1):
    return [(a + sign * b) % 65536 for a, b in zip(lanes, expand(e))]


e1 = bytes(range(64))
x1 = expand(e1)
print("key(0..63)          ", key(e1).hex())
print("SHA-256(X(0..63))   ", hashlib.sha256(ser(x1)).hexdigest())
print("X(0..63) block 0    ", ser(x1)[:16].hex())
print("X(0..63) lanes 0, 1 ", x1[0], x1[1])

state = add(add(add([0] * 1024, e1), b"witnz"), b"", -1)
b = ser(state)
print("SHA-256(state)      ", hashlib.sha256(b).hexdigest())
print("state bytes 0..7    ", b[:8].hex())
print("state lanes 0, 1023 ", state[0], state[1023])

long = bytes((3 * i) & 0xFF for i in range(200))
xl = expand(long)
print("SHA-256(X(200 B))   ", hashlib.sha256(ser(xl)).hexdigest())
print("X(200 B) lane 1023  ", xl[1023])
