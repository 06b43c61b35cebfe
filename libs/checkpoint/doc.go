// Package checkpoint signs, cosigns and verifies the checkpoints of witnz
// table logs.
//
// A checkpoint is a C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint):
// a signed note whose text is
//
//	witnz/<cluster>/<schema>.<table>     origin
//	<size>                               decimal, no leading zeros
//	<root>                               base64 of the RFC 6962 root
//	[extension lines]                    optional, non-empty, opaque
//
// followed by a blank line and signature lines (golang.org/x/mod/sumdb/note).
// Each witness node cosigns with its own Ed25519 key using the C2SP
// tlog-cosignature type cosignature/v1 (key type 0x04, a timestamped
// signature over "cosignature/v1\ntime <unix seconds>\n" and the note
// text). A log key (a plain Ed25519 note key, type 0x01) may sign too.
//
// A [Policy] says whose signatures count: an optional log key and a k-of-n
// quorum of witness keys, in a small text format close to the Sigsum policy
// file. [Policy.Verify] accepts a checkpoint only if the quorum is met.
//
// The formats and the verification rules are documented in
// docs/design/0005-checkpoints-and-evidence.md.
package checkpoint
