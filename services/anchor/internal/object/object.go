// Package object defines the anchored object: one JSON document holding
// the latest cosigned checkpoint of every table of a witness cluster, with
// metadata. Its format is versioned ("format": "witnz-anchor/v1") and
// documented in docs/design/0010-anchoring.md. The signed notes are the
// authority; every other field repeats what the notes say so a reader can
// see it at a glance, and Verify requires that they agree.
package object

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/witnz/witnz/libs/checkpoint"
)

// Format is the value of the "format" field of this version.
const Format = "witnz-anchor/v1"

// MaxSize bounds an object read back: far above what thousands of tables
// need, and small enough to read into memory.
const MaxSize = 64 << 20

// Errors of Parse and Verify.
var (
	// ErrNotOurs: the bytes are not an anchored object of this format.
	ErrNotOurs = errors.New("not a witnz anchor object")
	// ErrTruncated: the document ends before it is complete.
	ErrTruncated = errors.New("anchor object is truncated")
	// ErrMalformed: a witnz anchor object with invalid content.
	ErrMalformed = errors.New("malformed anchor object")
)

// Object is the anchored document.
type Object struct {
	Format string `json:"format"`
	// AnchoredAt is when the anchor service built the object (UTC).
	AnchoredAt time.Time `json:"anchored_at"`
	// PolicySHA256 is the hex SHA-256 of the checkpoint policy file the
	// anchor service verified the notes with.
	PolicySHA256 string `json:"policy_sha256"`
	// Witnesses are the witness API URLs the checkpoints were read from.
	Witnesses []string `json:"witnesses"`
	// Tables are in table name order.
	Tables []Table `json:"tables"`
}

// Table is one table's cosigned checkpoint.
type Table struct {
	// Table is "schema.table".
	Table string `json:"table"`
	// Origin is the checkpoint's origin line, witnz/<cluster>/<table>.
	Origin string `json:"origin"`
	Size   uint64 `json:"size"`
	// Root is the base64 RFC 6962 root, as in the note.
	Root string `json:"root"`
	// CheckpointCreatedAt is when the witness cluster stored the
	// checkpoint.
	CheckpointCreatedAt time.Time `json:"checkpoint_created_at"`
	// Cosigners are the witness keys ("name+keyid" in hex) whose
	// cosignatures the policy accepted, with their cosignature times.
	Cosigners []Cosigner `json:"cosigners"`
	// Note is the C2SP signed note: checkpoint text and signature lines.
	Note string `json:"note"`
}

// Cosigner is one accepted witness cosignature.
type Cosigner struct {
	Key  string    `json:"key"`
	Time time.Time `json:"time"`
}

// Marshal encodes o as indented JSON with a final newline.
func Marshal(o *Object) ([]byte, error) {
	b, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Parse decodes an object, strictly: the format must be Format, unknown
// fields are refused and nothing may follow the document.
func Parse(b []byte) (*Object, error) {
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("%w: the object is empty", ErrTruncated)
	}
	if trimmed[0] != '{' {
		return nil, fmt.Errorf("%w: it does not start with a JSON object", ErrNotOurs)
	}
	// The format field first: a JSON document of another kind is "not
	// ours", a witnz document with bad content is "malformed".
	var head struct {
		Format *string `json:"format"`
	}
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&head); err != nil {
		var syn *json.SyntaxError
		if errors.Is(err, io.ErrUnexpectedEOF) || (errors.As(err, &syn) && strings.Contains(syn.Error(), "unexpected end")) {
			return nil, fmt.Errorf("%w: %d bytes end in the middle of the JSON document", ErrTruncated, len(b))
		}
		return nil, fmt.Errorf("%w: not valid JSON: %v", ErrNotOurs, err)
	}
	if head.Format == nil {
		return nil, fmt.Errorf("%w: it has no \"format\" field", ErrNotOurs)
	}
	if *head.Format != Format {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrNotOurs, *head.Format, Format)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var o Object
	if err := dec.Decode(&o); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON document", ErrMalformed)
	}
	if len(o.Tables) == 0 {
		return nil, fmt.Errorf("%w: no tables", ErrMalformed)
	}
	if !sort.SliceIsSorted(o.Tables, func(i, j int) bool { return o.Tables[i].Table < o.Tables[j].Table }) {
		return nil, fmt.Errorf("%w: tables are not in name order", ErrMalformed)
	}
	for i := 1; i < len(o.Tables); i++ {
		if o.Tables[i].Table == o.Tables[i-1].Table {
			return nil, fmt.Errorf("%w: table %s appears twice", ErrMalformed, o.Tables[i].Table)
		}
	}
	return &o, nil
}

// Verified is a table's checkpoint as its note, verified, says.
type Verified struct {
	Table      string
	Checkpoint checkpoint.Checkpoint
	Signers    []checkpoint.Signer
}

// Verify checks t's note against the policy (signatures and quorum) and
// that every other field says what the note says.
func (t *Table) Verify(p *checkpoint.Policy) (Verified, error) {
	cp, signers, err := p.Verify([]byte(t.Note))
	if err != nil {
		return Verified{}, fmt.Errorf("checkpoint note of %s does not meet the policy: %w", t.Table, err)
	}
	_, table, err := checkpoint.ParseOrigin(cp.Origin)
	if err != nil {
		return Verified{}, fmt.Errorf("checkpoint note of %s: %w", t.Table, err)
	}
	switch {
	case table != t.Table:
		return Verified{}, fmt.Errorf("%w: the note listed as %s is the checkpoint of %s", ErrMalformed, t.Table, table)
	case cp.Origin != t.Origin:
		return Verified{}, fmt.Errorf("%w: table %s: origin field %q, note %q", ErrMalformed, t.Table, t.Origin, cp.Origin)
	case cp.Size != t.Size:
		return Verified{}, fmt.Errorf("%w: table %s: size field %d, note %d", ErrMalformed, t.Table, t.Size, cp.Size)
	case base64.StdEncoding.EncodeToString(cp.Root[:]) != t.Root:
		return Verified{}, fmt.Errorf("%w: table %s: root field %s, note %s", ErrMalformed, t.Table, t.Root, base64.StdEncoding.EncodeToString(cp.Root[:]))
	}
	return Verified{Table: table, Checkpoint: cp, Signers: signers}, nil
}

// KeyName formats a policy key as "name+keyid".
func KeyName(s checkpoint.Signer) string {
	return s.KeyName + "+" + fmt.Sprintf("%08x", s.KeyHash)
}

// CosignersOf lists the witness signers of a verified note.
func CosignersOf(signers []checkpoint.Signer) []Cosigner {
	var out []Cosigner
	for _, s := range signers {
		if s.Role == checkpoint.RoleWitness {
			out = append(out, Cosigner{Key: KeyName(s), Time: s.Time.UTC()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Key is the object key for an object built at t: sortable by time, one
// plain file name (the dir sink's rule).
func Key(t time.Time) string {
	return "anchor-" + t.UTC().Format("20060102T150405.000000000Z") + ".json"
}
