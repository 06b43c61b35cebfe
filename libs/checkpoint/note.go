package checkpoint

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
)

// Errors of signature verification.
var (
	// ErrBadSignature: a signature by a known key does not verify. One bad
	// signature rejects the whole note, as signed-note recommends.
	ErrBadSignature = errors.New("invalid signature")
	// ErrUnverified: no signature on the note is by a known key.
	ErrUnverified = errors.New("no signature by a known key")
)

// maxSignatures bounds the signature lines of a note (note.Open's limit).
const maxSignatures = 100

const sigPrefix = "— "

// Sign returns the signature line of s over c's note text. s is any note
// signer: a log key from [NewLogSigner], or a cosigner's [Cosigner.At].
func Sign(c Checkpoint, s note.Signer) (note.Signature, error) {
	text, err := c.Text()
	if err != nil {
		return note.Signature{}, err
	}
	if !validName(s.Name()) {
		return note.Signature{}, fmt.Errorf("%w: signer name %q", ErrKey, s.Name())
	}
	sig, err := s.Sign(text)
	if err != nil {
		return note.Signature{}, fmt.Errorf("checkpoint: sign with %s: %w", s.Name(), err)
	}
	raw := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(sig)), s.KeyHash())
	raw = append(raw, sig...)
	return note.Signature{Name: s.Name(), Hash: s.KeyHash(), Base64: base64.StdEncoding.EncodeToString(raw)}, nil
}

// Cosign returns k's cosignature/v1 line over c, stamped with t (whole
// seconds). A witness node calls it on the checkpoint it recomputed from its
// own state, after checking that the checkpoint extends the last one it
// cosigned.
func Cosign(c Checkpoint, k *Cosigner, t time.Time) (note.Signature, error) {
	return Sign(c, k.At(t))
}

// Assemble returns the signed note of c with sigs, in order. Repeated
// identical signatures are dropped; two different signatures by the same key
// (name and key id) are an error.
func Assemble(c Checkpoint, sigs ...note.Signature) ([]byte, error) {
	text, err := c.Text()
	if err != nil {
		return nil, err
	}
	if len(sigs) == 0 {
		return nil, fmt.Errorf("%w: a signed note needs at least one signature", ErrMalformed)
	}
	if len(sigs) > maxSignatures {
		return nil, fmt.Errorf("%w: %d signatures, at most %d", ErrMalformed, len(sigs), maxSignatures)
	}
	type key struct {
		name string
		hash uint32
	}
	seen := map[key]string{}
	var b bytes.Buffer
	b.Write(text)
	b.WriteByte('\n')
	for _, s := range sigs {
		if err := checkSignature(s); err != nil {
			return nil, err
		}
		k := key{s.Name, s.Hash}
		if prev, ok := seen[k]; ok {
			if prev != s.Base64 {
				return nil, fmt.Errorf("%w: two different signatures by %s (key id %08x)", ErrMalformed, s.Name, s.Hash)
			}
			continue
		}
		seen[k] = s.Base64
		fmt.Fprintf(&b, "%s%s %s\n", sigPrefix, s.Name, s.Base64)
	}
	return b.Bytes(), nil
}

// AddSignatures returns signed with sigs added after its signatures; a new
// signature replaces an older one by the same key.
func AddSignatures(signed []byte, sigs ...note.Signature) ([]byte, error) {
	c, old, err := Parse(signed)
	if err != nil {
		return nil, err
	}
	replaced := func(o note.Signature) bool {
		for _, s := range sigs {
			if s.Name == o.Name && s.Hash == o.Hash {
				return true
			}
		}
		return false
	}
	all := make([]note.Signature, 0, len(old)+len(sigs))
	for _, o := range old {
		if !replaced(o) {
			all = append(all, o)
		}
	}
	return Assemble(c, append(all, sigs...)...)
}

func checkSignature(s note.Signature) error {
	if !validName(s.Name) {
		return fmt.Errorf("%w: signature key name %q must be non-empty, without spaces or '+'", ErrMalformed, s.Name)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(s.Base64)
	if err != nil || base64.StdEncoding.EncodeToString(raw) != s.Base64 {
		return fmt.Errorf("%w: signature by %s is not canonical base64", ErrMalformed, s.Name)
	}
	if len(raw) < 5 {
		return fmt.Errorf("%w: signature by %s is too short", ErrMalformed, s.Name)
	}
	if binary.BigEndian.Uint32(raw) != s.Hash {
		return fmt.Errorf("%w: signature by %s starts with key id %08x, not %08x", ErrMalformed, s.Name, binary.BigEndian.Uint32(raw), s.Hash)
	}
	return nil
}

// Parse splits a signed note into its checkpoint and its signature lines,
// checking the syntax only: it verifies no signature. Use it to read the
// body before deciding to cosign; trust nothing in it before [Open] or
// [Policy.Verify].
func Parse(signed []byte) (Checkpoint, []note.Signature, error) {
	if !utf8.Valid(signed) {
		return Checkpoint{}, nil, fmt.Errorf("%w: note is not valid UTF-8", ErrMalformed)
	}
	for i, c := range signed {
		if c < 0x20 && c != '\n' || c == 0x7f {
			return Checkpoint{}, nil, fmt.Errorf("%w: control character %#x at byte %d", ErrMalformed, c, i)
		}
	}
	split := bytes.LastIndex(signed, []byte("\n\n"))
	if split < 0 {
		return Checkpoint{}, nil, fmt.Errorf("%w: no blank line before the signatures", ErrMalformed)
	}
	text, block := signed[:split+1], signed[split+2:]
	c, err := ParseText(text)
	if err != nil {
		return Checkpoint{}, nil, err
	}
	if again, _ := c.Text(); !bytes.Equal(again, text) {
		return Checkpoint{}, nil, fmt.Errorf("%w: text is not in canonical form", ErrMalformed)
	}
	if len(block) == 0 || block[len(block)-1] != '\n' {
		return Checkpoint{}, nil, fmt.Errorf("%w: no signature lines, or the last one does not end in a newline", ErrMalformed)
	}
	lines := strings.Split(string(block[:len(block)-1]), "\n")
	if len(lines) > maxSignatures {
		return Checkpoint{}, nil, fmt.Errorf("%w: %d signatures, at most %d", ErrMalformed, len(lines), maxSignatures)
	}
	sigs := make([]note.Signature, 0, len(lines))
	byKey := map[[2]string]string{}
	for i, line := range lines {
		rest, ok := strings.CutPrefix(line, sigPrefix)
		if !ok {
			return Checkpoint{}, nil, fmt.Errorf("%w: signature line %d does not start with %q", ErrMalformed, i+1, sigPrefix)
		}
		name, b64, ok := strings.Cut(rest, " ")
		if !ok {
			return Checkpoint{}, nil, fmt.Errorf("%w: signature line %d is not \"— <name> <base64>\"", ErrMalformed, i+1)
		}
		s := note.Signature{Name: name, Base64: b64}
		if raw, err := base64.StdEncoding.Strict().DecodeString(b64); err == nil && len(raw) >= 4 {
			s.Hash = binary.BigEndian.Uint32(raw)
		}
		if err := checkSignature(s); err != nil {
			return Checkpoint{}, nil, fmt.Errorf("signature line %d: %w", i+1, err)
		}
		k := [2]string{s.Name, fmt.Sprint(s.Hash)}
		if prev, ok := byKey[k]; ok {
			if prev != s.Base64 {
				return Checkpoint{}, nil, fmt.Errorf("%w: signature line %d: a second, different signature by %s (key id %08x)", ErrMalformed, i+1, s.Name, s.Hash)
			}
			continue
		}
		byKey[k] = s.Base64
		sigs = append(sigs, s)
	}
	return c, sigs, nil
}

// Open verifies a signed note with known keys: every signature by a known
// key must verify, at least one must be present, and signatures by unknown
// keys are ignored (they are in the note's UnverifiedSigs).
func Open(signed []byte, known note.Verifiers) (Checkpoint, *note.Note, error) {
	c, sigs, err := Parse(signed)
	if err != nil {
		return Checkpoint{}, nil, err
	}
	n, err := note.Open(signed, known)
	if err != nil {
		var invalid *note.InvalidSignatureError
		var unverified *note.UnverifiedNoteError
		switch {
		case errors.As(err, &invalid):
			return Checkpoint{}, nil, fmt.Errorf("%w by %s (key id %08x)", ErrBadSignature, invalid.Name, invalid.Hash)
		case errors.As(err, &unverified):
			return Checkpoint{}, nil, fmt.Errorf("%w: the note is signed by %s", ErrUnverified, describeSigs(sigs))
		default:
			return Checkpoint{}, nil, fmt.Errorf("checkpoint: open note: %w", err)
		}
	}
	return c, n, nil
}

func describeSigs(sigs []note.Signature) string {
	parts := make([]string, len(sigs))
	for i, s := range sigs {
		parts[i] = fmt.Sprintf("%s (key id %08x)", s.Name, s.Hash)
	}
	return strings.Join(parts, ", ")
}
