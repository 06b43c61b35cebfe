package evidence

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"
)

// Format is the value of the "format" member of every bundle this package
// writes and the only one it reads.
const Format = "witnz-evidence/v1"

// MaxSize bounds the encoded size of a bundle Decode accepts.
const MaxSize = 4 << 20

// ErrDecode is wrapped by every Decode error.
var ErrDecode = errors.New("invalid evidence bundle")

// Bundle is one evidence bundle: a log entry of a table, its inclusion
// proof, and the cosigned checkpoint the proof leads to. It is stored as one
// JSON object (see docs/design/0005-checkpoints-and-evidence.md); binary
// values are standard padded base64.
type Bundle struct {
	// Format is always [Format].
	Format string `json:"format"`
	// Table is the protected table, "schema.table".
	Table string `json:"table"`
	// Index is the entry's position in the table's log (its seq).
	Index uint64 `json:"index"`
	// Entry is the encoded entry (libs/commitment layout).
	Entry Bytes `json:"entry"`
	// InclusionProof is the RFC 6962 audit path from the entry's leaf to the
	// root of the checkpoint's tree, leaf side first.
	InclusionProof []Bytes `json:"inclusion_proof"`
	// Checkpoint is the cosigned checkpoint note (C2SP tlog-checkpoint).
	Checkpoint string `json:"checkpoint"`
	// Consistency optionally proves that a later checkpoint extends it.
	Consistency *Consistency `json:"consistency,omitempty"`
	// Anchor is the optional receipt of the checkpoint's publication in
	// write-once storage. It is reported, not checked, offline.
	Anchor *AnchorReceipt `json:"anchor,omitempty"`
	// Finding optionally says why the bundle was made. It is context from
	// whoever made the bundle, not something the bundle proves.
	Finding *Finding `json:"finding,omitempty"`
}

// Consistency is a later checkpoint of the same log and the RFC 6962
// consistency proof from the bundle's checkpoint to it.
type Consistency struct {
	Checkpoint string  `json:"checkpoint"`
	Proof      []Bytes `json:"proof"`
}

// AnchorReceipt says where a checkpoint was anchored (the fields of
// witnz.anchor.v1.Receipt). Times are RFC 3339.
//
// With Root set, the receipt also says what was anchored for the bundle's
// table (Size and Root, from the receipt's checkpoints) and Verify checks
// it against the bundle's checkpoint: equal at the same size, otherwise
// Proof is the RFC 6962 consistency proof from the smaller of the two
// sizes to the larger. Checkpoint, when present, is the anchored signed
// note itself (read from the anchored object); it must meet the policy
// and say Size and Root.
type AnchorReceipt struct {
	Sink           string `json:"sink"`
	Bucket         string `json:"bucket,omitempty"`
	Key            string `json:"key"`
	VersionID      string `json:"version_id,omitempty"`
	ChecksumSHA256 string `json:"checksum_sha256,omitempty"`
	AnchoredAt     string `json:"anchored_at,omitempty"`
	RetainUntil    string `json:"retain_until,omitempty"`
	// WitnessRaftIndex is the witness log index that recorded the receipt.
	WitnessRaftIndex uint64  `json:"witness_raft_index,omitempty"`
	Size             uint64  `json:"size,omitempty"`
	Root             Bytes   `json:"root,omitempty"`
	Proof            []Bytes `json:"proof,omitempty"`
	Checkpoint       string  `json:"checkpoint,omitempty"`
}

// Finding is what the bundle is evidence for, in the words of whoever made
// it, e.g. {"type": "verify.row_modified", "message": "row id=42 ..."}.
type Finding struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// Bytes is binary data encoded in JSON as a standard, padded base64 string.
// Decoding accepts only the canonical encoding.
type Bytes []byte

// MarshalJSON encodes b as a base64 string.
func (b Bytes) MarshalJSON() ([]byte, error) {
	return json.Marshal(base64.StdEncoding.EncodeToString(b))
}

// UnmarshalJSON decodes a canonical base64 string.
func (b *Bytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return errors.New("want a base64 string")
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || base64.StdEncoding.EncodeToString(raw) != s {
		return fmt.Errorf("%q is not canonical base64", truncate(s))
	}
	*b = raw
	return nil
}

func truncate(s string) string {
	if len(s) > 24 {
		return s[:24] + "…"
	}
	return s
}

// Encode returns the bundle as indented JSON ending in a newline.
func (b *Bundle) Encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(b); err != nil {
		return nil, fmt.Errorf("evidence: encode bundle: %w", err)
	}
	return buf.Bytes(), nil
}

// shape lists the members of each object of a bundle, exactly as spelled
// (encoding/json alone would match names case-insensitively); required
// members are marked with a '!'.
var shape = map[string][]string{
	"":            {"!format", "!table", "!index", "!entry", "!inclusion_proof", "!checkpoint", "consistency", "anchor", "finding"},
	"consistency": {"!checkpoint", "!proof"},
	"anchor":      {"!sink", "bucket", "!key", "version_id", "checksum_sha256", "anchored_at", "retain_until", "witness_raft_index", "size", "root", "proof", "checkpoint"},
	"finding":     {"!type", "!message"},
}

// Decode parses a bundle strictly: valid UTF-8 JSON of at most [MaxSize]
// bytes holding one object, no unknown, repeated, missing or null members,
// canonical base64, and the format this package reads. It does not verify
// anything: see [Verify].
func Decode(data []byte) (*Bundle, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrDecode, len(data), MaxSize)
	}
	if !json.Valid(data) {
		return nil, fmt.Errorf("%w: not valid JSON", ErrDecode)
	}
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrDecode)
	}
	if err := checkShape(data); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecode, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var b Bundle
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecode, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the bundle object", ErrDecode)
	}
	if b.Format != Format {
		return nil, fmt.Errorf("%w: format %q, this version reads %q", ErrDecode, b.Format, Format)
	}
	return &b, nil
}

// checkShape walks the JSON tokens: the top level is an object; every
// member is known, present once and not null; required members are there.
func checkShape(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("not a JSON object")
	}
	return walkObject(dec, "")
}

// walkObject reads the members of the object at path, whose '{' was read.
func walkObject(dec *json.Decoder, path string) error {
	members := shape[path]
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		name := tok.(string) // object keys are strings in valid JSON
		full := name
		if path != "" {
			full = path + "." + name
		}
		if !slices.Contains(members, name) && !slices.Contains(members, "!"+name) {
			return fmt.Errorf("unknown member %q", full)
		}
		if seen[name] {
			return fmt.Errorf("member %q appears twice", full)
		}
		seen[name] = true
		if err := walkValue(dec, full); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // '}'
		return err
	}
	for _, m := range members {
		if r, ok := strings.CutPrefix(m, "!"); ok && !seen[r] {
			if path != "" {
				r = path + "." + r
			}
			return fmt.Errorf("member %q is missing", r)
		}
	}
	return nil
}

func walkValue(dec *json.Decoder, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok := tok.(type) {
	case nil:
		return fmt.Errorf("member %q is null", path)
	case json.Delim:
		switch tok {
		case '{':
			if _, ok := shape[path]; !ok {
				return fmt.Errorf("member %q is an object", path)
			}
			return walkObject(dec, path)
		case '[':
			for dec.More() {
				if err := walkValue(dec, path+"[]"); err != nil {
					return err
				}
			}
			_, err := dec.Token() // ']'
			return err
		}
	}
	return nil
}
