package commitment

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"strings"
)

// KeySize is the size of the deployment secret K.
const KeySize = 32

// ErrNoKey means neither a key file nor the key environment variable was
// given.
var ErrNoKey = errors.New("no commitment key: pass --key-file FILE or set WITNZ_COMMIT_KEY (64 hex characters); create one with `witnz keygen`")

// Key is the deployment secret K. Only cdc-ingest and the verifier hold it.
type Key [KeySize]byte

// ParseKey accepts 64 hex characters (surrounding white space ignored) or
// exactly 32 raw bytes.
func ParseKey(b []byte) (Key, error) {
	var k Key
	if len(b) == KeySize && !isHex(b) {
		copy(k[:], b)
		return k, nil
	}
	s := strings.TrimSpace(string(b))
	raw, err := hex.DecodeString(s)
	if err != nil {
		return k, fmt.Errorf("commitment key is neither 32 raw bytes nor 64 hex characters (%d bytes given)", len(b))
	}
	if len(raw) != KeySize {
		return k, fmt.Errorf("commitment key has %d bytes, want %d (64 hex characters)", len(raw), KeySize)
	}
	copy(k[:], raw)
	if k == (Key{}) {
		return k, errors.New("commitment key is all zeros: create a random one with `witnz keygen`")
	}
	return k, nil
}

func isHex(b []byte) bool {
	for _, c := range b {
		if !strings.ContainsRune("0123456789abcdefABCDEF", rune(c)) {
			return false
		}
	}
	return true
}

// LoadKey reads K from path if it is set, otherwise from the hex value env.
func LoadKey(path, env string) (Key, error) {
	switch {
	case path != "":
		b, err := os.ReadFile(path)
		if err != nil {
			return Key{}, fmt.Errorf("read --key-file: %w", err)
		}
		k, err := ParseKey(b)
		if err != nil {
			return Key{}, fmt.Errorf("--key-file %s: %w", path, err)
		}
		return k, nil
	case env != "":
		k, err := ParseKey([]byte(env))
		if err != nil {
			return Key{}, fmt.Errorf("WITNZ_COMMIT_KEY: %w", err)
		}
		return k, nil
	}
	return Key{}, ErrNoKey
}

// TableKey is K_t, the per-table subkey.
type TableKey struct {
	k [sha256.Size]byte
}

// ForTable derives K_t for schema.table.
func (k Key) ForTable(schema, table string) TableKey {
	m := hmac.New(sha256.New, k[:])
	m.Write([]byte("witnz/table/v1"))
	m.Write([]byte(schema))
	m.Write([]byte{0})
	m.Write([]byte(table))
	var tk TableKey
	m.Sum(tk.k[:0])
	return tk
}

// Commitment is a 32-byte keyed commitment.
type Commitment [sha256.Size]byte

// Domain separators of the two commitments.
const (
	domainKey  = 0x01
	domainData = 0x02
)

// Committer computes commitments under one table key. It reuses its HMAC
// state and is not safe for concurrent use.
type Committer struct {
	mac hash.Hash
}

// NewCommitter returns a Committer for the table key.
func (tk TableKey) NewCommitter() *Committer {
	return &Committer{mac: hmac.New(sha256.New, tk.k[:])}
}

func (c *Committer) sum(domain byte, enc []byte) Commitment {
	c.mac.Reset()
	c.mac.Write([]byte{domain})
	c.mac.Write(enc)
	var out Commitment
	c.mac.Sum(out[:0])
	return out
}

// KeyCommit is HMAC(K_t, 0x01 || key encoding). For a table without a
// primary key, pass the whole row encoding.
func (c *Committer) KeyCommit(keyEnc []byte) Commitment { return c.sum(domainKey, keyEnc) }

// DataCommit is HMAC(K_t, 0x02 || row encoding).
func (c *Committer) DataCommit(rowEnc []byte) Commitment { return c.sum(domainData, rowEnc) }

// Equal compares two commitments in constant time.
func (a Commitment) Equal(b Commitment) bool { return hmac.Equal(a[:], b[:]) }

// IsZero reports whether c is all zeros (absent).
func (a Commitment) IsZero() bool { return bytes.Equal(a[:], make([]byte, len(a))) }
