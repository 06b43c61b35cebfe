// Package commitment computes the keyed commitments witnz logs for every
// protected row, and encodes log entries in their fixed binary layout.
//
// The normative definitions are in docs/design/0001-commitments.md:
//
//	K_t         = HMAC-SHA256(K, "witnz/table/v1" || schema || 0x00 || table)
//	key_commit  = HMAC-SHA256(K_t, 0x01 || primary-key encoding)
//	data_commit = HMAC-SHA256(K_t, 0x02 || row encoding)
//
// A row encoding is PostgreSQL's binary send format of each column value,
// in attnum order, skipping dropped and generated columns: a big-endian
// uint16 column count, then per column an int32 length (-1 for NULL)
// followed by that many bytes. It is byte-for-byte the tuple layout of
// `COPY ... TO STDOUT (FORMAT binary)`, and the same bytes can be rebuilt
// from pgoutput messages in binary mode, so a scan and the WAL agree.
package commitment
