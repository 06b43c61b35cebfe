package checkpoint

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// Signature type bytes of C2SP signed-note.
const (
	algEd25519       = 0x01 // plain Ed25519 note signature (log keys)
	algCosignatureV1 = 0x04 // timestamped Ed25519 cosignature/v1 (witness keys)
)

// Sizes of a cosignature/v1 signature: timestamp || Ed25519 signature.
const (
	timestampSize   = 8
	cosignatureSize = timestampSize + ed25519.SignatureSize
)

// ErrKey is wrapped by every error about a key string or key file.
var ErrKey = errors.New("invalid key")

// GenerateKey creates a witness cosigner key named name (a key name of
// signed-note: non-empty, no spaces, no '+'). skey is the private key,
// "PRIVATE+KEY+<name>+<key id>+base64(0x04 || 32-byte Ed25519 seed)"; vkey
// is the verifier key, "<name>+<key id>+base64(0x04 || 32-byte public key)".
// The key id is SHA-256(name || "\n" || 0x04 || public key)[:4] in hex, as
// C2SP tlog-cosignature requires.
func GenerateKey(name string) (skey, vkey string, err error) {
	if !validName(name) {
		return "", "", fmt.Errorf("%w: key name %q must be non-empty, without spaces or '+'", ErrKey, name)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", err
	}
	skey, vkey = encodeKeys(name, algCosignatureV1, priv.Seed(), pub)
	return skey, vkey, nil
}

// GenerateLogKey creates a plain Ed25519 note key (type 0x01) for a log
// signature, in the same string forms as [GenerateKey].
func GenerateLogKey(name string) (skey, vkey string, err error) {
	if !validName(name) {
		return "", "", fmt.Errorf("%w: key name %q must be non-empty, without spaces or '+'", ErrKey, name)
	}
	return note.GenerateKey(rand.Reader, name)
}

func encodeKeys(name string, alg byte, seed []byte, pub ed25519.PublicKey) (skey, vkey string) {
	pubkey := append([]byte{alg}, pub...)
	h := keyID(name, pubkey)
	skey = fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", name, h, base64.StdEncoding.EncodeToString(append([]byte{alg}, seed...)))
	vkey = fmt.Sprintf("%s+%08x+%s", name, h, base64.StdEncoding.EncodeToString(pubkey))
	return skey, vkey
}

// keyID is SHA-256(name || "\n" || type || public key)[:4], big-endian.
func keyID(name string, typedKey []byte) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte("\n"))
	h.Write(typedKey)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

func validName(name string) bool {
	return name != "" && utf8.ValidString(name) && strings.IndexFunc(name, unicode.IsSpace) < 0 && !strings.Contains(name, "+")
}

// Cosigner holds a witness's cosignature/v1 private key.
type Cosigner struct {
	name string
	id   uint32
	priv ed25519.PrivateKey
	vkey string
}

// NewCosigner parses a private key string made by [GenerateKey].
func NewCosigner(skey string) (*Cosigner, error) {
	name, id, key, err := splitKey(strings.TrimSpace(skey), true)
	if err != nil {
		return nil, err
	}
	if key[0] != algCosignatureV1 {
		return nil, fmt.Errorf("%w: private key %q has type %#02x, want %#02x (a cosignature/v1 key from `witnz witness keygen`)", ErrKey, name, key[0], algCosignatureV1)
	}
	if len(key) != 1+ed25519.SeedSize {
		return nil, fmt.Errorf("%w: private key %q has %d key bytes, want %d", ErrKey, name, len(key)-1, ed25519.SeedSize)
	}
	priv := ed25519.NewKeyFromSeed(key[1:])
	pub := priv.Public().(ed25519.PublicKey)
	if want := keyID(name, append([]byte{algCosignatureV1}, pub...)); want != id {
		return nil, fmt.Errorf("%w: private key %q: key id %08x does not match the key (want %08x)", ErrKey, name, id, want)
	}
	_, vkey := encodeKeys(name, algCosignatureV1, key[1:], pub)
	return &Cosigner{name: name, id: id, priv: priv, vkey: vkey}, nil
}

// LoadCosigner reads a private key file: the key string of [GenerateKey] on
// one line. Keep the file readable by the witness node only (mode 0600).
func LoadCosigner(path string) (*Cosigner, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot read cosigner key file: %v", ErrKey, err)
	}
	c, err := NewCosigner(string(b))
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return c, nil
}

// Name is the key name written on the cosignature line.
func (c *Cosigner) Name() string { return c.name }

// KeyHash is the 32-bit key id.
func (c *Cosigner) KeyHash() uint32 { return c.id }

// VerifierKey is the public verifier key string that goes into policies.
func (c *Cosigner) VerifierKey() string { return c.vkey }

// At returns a note signer that makes cosignatures stamped with t. Use it
// with [Sign] or golang.org/x/mod/sumdb/note.Sign.
func (c *Cosigner) At(t time.Time) note.Signer { return &timedSigner{c: c, t: t} }

type timedSigner struct {
	c *Cosigner
	t time.Time
}

func (s *timedSigner) Name() string    { return s.c.name }
func (s *timedSigner) KeyHash() uint32 { return s.c.id }

// Sign returns timestamp || Ed25519(cosigned message).
func (s *timedSigner) Sign(text []byte) ([]byte, error) {
	if s.t.Unix() < 0 {
		return nil, fmt.Errorf("checkpoint: cosignature time %v is before 1970", s.t)
	}
	ts := uint64(s.t.Unix())
	sig := make([]byte, 0, cosignatureSize)
	sig = binary.BigEndian.AppendUint64(sig, ts)
	return append(sig, ed25519.Sign(s.c.priv, cosignedMessage(ts, text))...), nil
}

// cosignedMessage is what a cosignature/v1 signs: "cosignature/v1\n",
// "time <decimal seconds>\n", then the whole note text.
func cosignedMessage(ts uint64, text []byte) []byte {
	m := make([]byte, 0, 48+len(text))
	m = append(m, "cosignature/v1\ntime "...)
	m = strconv.AppendUint(m, ts, 10)
	m = append(m, '\n')
	return append(m, text...)
}

// splitKey parses "[PRIVATE+KEY+]name+hash+base64" and returns the typed
// key bytes (at least one byte).
func splitKey(s string, private bool) (name string, id uint32, key []byte, err error) {
	what := "verifier key"
	if private {
		what = "private key"
		rest, ok := strings.CutPrefix(s, "PRIVATE+KEY+")
		if !ok {
			return "", 0, nil, fmt.Errorf("%w: a private key starts with PRIVATE+KEY+", ErrKey)
		}
		s = rest
	}
	parts := strings.Split(s, "+")
	// base64 may itself contain '+': the name and id are the first two parts.
	if len(parts) < 3 {
		return "", 0, nil, fmt.Errorf("%w: %s must be <name>+<key id>+<base64 key>", ErrKey, what)
	}
	name, hash16, key64 := parts[0], parts[1], strings.Join(parts[2:], "+")
	if !validName(name) {
		return "", 0, nil, fmt.Errorf("%w: %s has an invalid name %q", ErrKey, what, name)
	}
	h, herr := strconv.ParseUint(hash16, 16, 32)
	key, kerr := base64.StdEncoding.Strict().DecodeString(key64)
	if len(hash16) != 8 || herr != nil {
		return "", 0, nil, fmt.Errorf("%w: %s %q: key id %q is not 8 hex digits", ErrKey, what, name, hash16)
	}
	if kerr != nil || len(key) < 2 {
		return "", 0, nil, fmt.Errorf("%w: %s %q: key material is not valid base64", ErrKey, what, name)
	}
	return name, uint32(h), key, nil
}

// NewCosignatureVerifier parses a witness's verifier key (type 0x04,
// cosignature/v1) and checks its key id. Verification is done by
// github.com/transparency-dev/formats/note.
func NewCosignatureVerifier(vkey string) (note.Verifier, error) {
	name, id, key, err := splitKey(vkey, false)
	if err != nil {
		return nil, err
	}
	switch {
	case key[0] == algEd25519:
		return nil, fmt.Errorf("%w: verifier key %q has type 0x01, a plain Ed25519 note key; witness keys are cosignature/v1 keys (type 0x04) made by `witnz witness keygen`", ErrKey, name)
	case key[0] != algCosignatureV1:
		return nil, fmt.Errorf("%w: verifier key %q has type %#02x, want %#02x (cosignature/v1)", ErrKey, name, key[0], algCosignatureV1)
	case len(key) != 1+ed25519.PublicKeySize:
		return nil, fmt.Errorf("%w: verifier key %q has %d key bytes, want %d", ErrKey, name, len(key)-1, ed25519.PublicKeySize)
	case keyID(name, key) != id:
		return nil, fmt.Errorf("%w: verifier key %q: key id %08x does not match the key (want %08x)", ErrKey, name, id, keyID(name, key))
	}
	v, err := fnote.NewVerifierForCosignatureV1(vkey)
	if err != nil {
		return nil, fmt.Errorf("%w: verifier key %q: %v", ErrKey, name, err)
	}
	if v.KeyHash() != id || v.Name() != name {
		return nil, fmt.Errorf("%w: verifier key %q: key id mismatch", ErrKey, name)
	}
	return v, nil
}

// NewLogVerifier parses a log's verifier key (type 0x01, plain Ed25519
// note signatures) and checks its key id.
func NewLogVerifier(vkey string) (note.Verifier, error) {
	name, _, key, err := splitKey(vkey, false)
	if err != nil {
		return nil, err
	}
	if key[0] != algEd25519 {
		return nil, fmt.Errorf("%w: log key %q has type %#02x, want 0x01 (a plain Ed25519 note key)", ErrKey, name, key[0])
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("%w: log key %q: %v", ErrKey, name, err)
	}
	return v, nil
}

// NewLogSigner parses a log's private key (type 0x01) made by
// [GenerateLogKey].
func NewLogSigner(skey string) (note.Signer, error) {
	skey = strings.TrimSpace(skey)
	name, _, key, err := splitKey(skey, true)
	if err != nil {
		return nil, err
	}
	if key[0] != algEd25519 {
		return nil, fmt.Errorf("%w: log private key %q has type %#02x, want 0x01", ErrKey, name, key[0])
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("%w: log private key %q: %v", ErrKey, name, err)
	}
	return s, nil
}

// CosignatureTime returns the timestamp inside a cosignature/v1 signature
// line (base64 of key id || timestamp || signature).
func CosignatureTime(sig note.Signature) (time.Time, error) {
	raw, err := base64.StdEncoding.DecodeString(sig.Base64)
	if err != nil || len(raw) != 4+cosignatureSize {
		return time.Time{}, fmt.Errorf("%w: signature by %s is not a cosignature/v1", ErrMalformed, sig.Name)
	}
	ts := binary.BigEndian.Uint64(raw[4:])
	if ts > 1<<63-1 {
		return time.Time{}, fmt.Errorf("%w: cosignature by %s has timestamp %d beyond 2^63-1", ErrMalformed, sig.Name, ts)
	}
	return time.Unix(int64(ts), 0).UTC(), nil
}
