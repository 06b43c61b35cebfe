// Package statedigest keeps the state digest of a protected table: a
// fixed number of buckets, each holding a row count and an LtHash16 of the
// rows that should exist now, and a Merkle root over the buckets. It is
// order-independent and homomorphic, so the witness maintains it from the
// log, the verifier rebuilds it from one unordered COPY scan in bounded
// memory, and a digest "as of" an earlier log position is the current one
// minus the later changes. docs/design/0004-state-digest.md explains the
// design; the definitions below are normative.
//
// # Buckets
//
// A digest has B buckets, a power of two from 1 to MaxBuckets (default
// DefaultBuckets = 1024), fixed when the table is registered. A row goes to
// the bucket given by the top log2(B) bits of its key_commit read as a
// big-endian integer:
//
//	bucket(key) = uint32(key[0]<<24 | key[1]<<16 | key[2]<<8 | key[3]) >> (32 - log2(B))
//
// (bucket 0 when B = 1). Every version of a row has the same key_commit, so
// it always lands in the same bucket.
//
// # Bucket contents
//
// Bucket i holds count_i, the number of rows in it (uint64), and H_i, the
// LtHash16 (package lthash) of the multiset of elements
//
//	element = key_commit || data_commit   (64 bytes)
//
// of those rows. Adding a row adds its element and increments the count;
// removing one removes the element and decrements the count, which must not
// go below zero (ErrUnderflow). The count catches a removal from an empty
// bucket; it cannot tell a removal of the wrong element from a right one
// in a non-empty bucket: comparing against a scan does that.
//
// # Root
//
// The table digest is the RFC 6962 Merkle tree hash (SHA-256, leaf prefix
// 0x00, node prefix 0x01) over the B leaves, in bucket order, with
//
//	bucketLeaf(i) = uint32 i (big-endian) || uint64 count_i (big-endian) || H_i (2048 bytes)
//
// Each leaf is 2060 bytes; the root is 32 bytes.
//
// # Expected-state rules
//
// What each logged change does to the expected row set is defined once, by
// EffectOf; Apply, Undo and AsOf all use it. Zero commitments mean absent,
// as in the entry encoding.
//
//	BASELINE, INSERT  add (key, data)                            both modes
//	UPDATE            remove (key, old_data), add (key, data)    mutable
//	DELETE            remove (key, old_data)                     mutable
//	UPDATE, DELETE    nothing: the original row stays expected   append-only
//	ACCEPT            remove (key, old_data) if old_data present,
//	                  add (key, data) if data present            both modes
//	TRUNCATE, SCHEMA, HEARTBEAT, PROTECT, UNPROTECT, ANCHOR
//	                  nothing                                    both modes
//
// An ACCEPT entry names the transition an operator accepted: on an
// append-only table, accepting an UPDATE carries the row's new data and the
// original data the expected state still holds; accepting a DELETE carries
// only the original (old_data). Because it spells out the transition it
// means the same in both modes; on a mutable table it is only needed to
// reconcile a difference the log did not see (after a TRUNCATE, say, which
// by itself changes nothing here: its rows' removal is not in the log).
//
// # Encoding
//
// MarshalBinary writes, strictly checked by Unmarshal:
//
//	version  uint8  = 1
//	B        uint32 (big-endian), a power of two in [1, MaxBuckets]
//	B times: count uint64 (big-endian) || H (2048 bytes)
//
// # Memory
//
// A digest holds B × 2056 bytes of buckets plus its cached Merkle tree
// (2B × 32 bytes) and a flag per bucket: 2121 bytes per bucket, about
// 2.07 MiB at B = 1024 (the buckets alone are 2 MiB), independent of the
// number of rows. Building one from a scan needs nothing
// more, however large the table.
package statedigest
