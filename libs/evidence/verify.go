package evidence

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/witnz/witnz/libs/checkpoint"
	"github.com/witnz/witnz/libs/commitment"
)

// ErrInvalid is wrapped by every Verify error: the bundle does not prove
// what it claims.
var ErrInvalid = errors.New("evidence does not verify")

// Later is a later checkpoint of the same log that was proven consistent
// with the bundle's checkpoint.
type Later struct {
	Checkpoint checkpoint.Checkpoint
	Signers    []checkpoint.Signer
	ProofLen   int
}

// Report is what a valid bundle proves, and what it carries unproven.
type Report struct {
	Table   string
	Cluster string
	Index   uint64
	Entry   *commitment.Entry
	// LeafHash is SHA-256(0x00 || encoded entry).
	LeafHash [sha256.Size]byte
	// ProofLen is the number of hashes of the inclusion proof.
	ProofLen   int
	Checkpoint checkpoint.Checkpoint
	// Signers are the policy keys whose signatures verified.
	Signers []checkpoint.Signer
	// Policy describes what the policy required.
	Policy string
	// Later is set when the bundle carries a consistency proof.
	Later *Later
	// Anchor and Finding are copied from the bundle. Only what
	// AnchorProven says about the anchor is proven offline; that the
	// object is in the write-once store needs the store.
	Anchor  *AnchorReceipt
	Finding *Finding
	// AnchorProven is set when the anchor receipt carries the anchored
	// size and root and they were proven consistent with the checkpoint.
	AnchorProven *AnchorProven
}

// AnchorProven is what a bundle's anchor receipt was proven to say.
type AnchorProven struct {
	Size uint64
	Root [sha256.Size]byte
	// Covers is set when the anchored tree holds the bundle's entry.
	Covers   bool
	ProofLen int
	// Signers are the policy keys that signed the anchored note; nil when
	// the receipt carries no note (the root is then proven consistent,
	// but its cosignatures are in the anchored object only).
	Signers []checkpoint.Signer
}

// Verify checks a bundle offline against a policy:
//
//  1. the checkpoint note is well formed and meets the policy (log key if
//     any, k-of-n witness cosignatures; every known signature valid);
//  2. its origin is witnz/<cluster>/<table> for the bundle's table;
//  3. the entry decodes strictly (commitment.DecodeEntry) and its seq is
//     the bundle's index, which is inside the checkpoint's tree;
//  4. the inclusion proof leads from SHA-256(0x00 || entry) at that index
//     to the checkpoint's root (RFC 6962);
//  5. if present, the later checkpoint meets the policy, has the same
//     origin and a size at least as large, and the consistency proof holds;
//  6. if the anchor receipt carries a root, the anchored tree and the
//     checkpoint's are the same or one extends the other (consistency
//     proof), and the anchored note, if present, meets the policy, has the
//     same origin and says the receipt's size and root.
//
// Every error wraps ErrInvalid and names the first check that failed.
func Verify(b *Bundle, p *checkpoint.Policy) (*Report, error) {
	fail := func(format string, args ...any) (*Report, error) {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	if b == nil || p == nil {
		return fail("no bundle or no policy")
	}
	if b.Format != Format {
		return fail("format %q, this version reads %q", b.Format, Format)
	}
	c, signers, err := p.Verify([]byte(b.Checkpoint))
	if err != nil {
		return fail("checkpoint: %v", err)
	}
	cluster, table, err := checkpoint.ParseOrigin(c.Origin)
	if err != nil {
		return fail("checkpoint: %v", err)
	}
	if table != b.Table {
		return fail("the checkpoint is of the log of table %q (origin %q), not of table %q", table, c.Origin, b.Table)
	}
	e, err := commitment.DecodeEntry(b.Entry)
	if err != nil {
		return fail("entry: %v", err)
	}
	if e.Seq != b.Index {
		return fail("entry: its seq is %d but the bundle places it at index %d", e.Seq, b.Index)
	}
	if b.Index >= c.Size {
		return fail("entry index %d is outside the checkpoint's tree of %d entries", b.Index, c.Size)
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(b.Entry)
	path, err := hashes("inclusion proof", b.InclusionProof)
	if err != nil {
		return fail("%v", err)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, b.Index, c.Size, leaf, path, c.Root[:]); err != nil {
		return fail("inclusion proof of entry %d in the tree of %d entries: %v", b.Index, c.Size, proofError(err))
	}
	r := &Report{
		Table:      table,
		Cluster:    cluster,
		Index:      b.Index,
		Entry:      e,
		ProofLen:   len(path),
		Checkpoint: c,
		Signers:    signers,
		Policy:     p.Describe(),
		Anchor:     b.Anchor,
		Finding:    b.Finding,
	}
	copy(r.LeafHash[:], leaf)
	if b.Consistency != nil {
		later, err := verifyConsistency(b.Consistency, c, p)
		if err != nil {
			return fail("%v", err)
		}
		r.Later = later
	}
	if b.Anchor != nil && (b.Anchor.Root != nil || b.Anchor.Checkpoint != "" || len(b.Anchor.Proof) > 0) {
		ap, err := verifyAnchor(b.Anchor, c, p)
		if err != nil {
			return fail("anchor receipt: %v", err)
		}
		ap.Covers = b.Index < ap.Size
		r.AnchorProven = ap
	}
	return r, nil
}

func verifyAnchor(a *AnchorReceipt, c checkpoint.Checkpoint, p *checkpoint.Policy) (*AnchorProven, error) {
	if len(a.Root) != sha256.Size {
		return nil, fmt.Errorf("root has %d bytes, want %d", len(a.Root), sha256.Size)
	}
	ap := &AnchorProven{Size: a.Size}
	copy(ap.Root[:], a.Root)
	if a.Checkpoint != "" {
		ac, signers, err := p.Verify([]byte(a.Checkpoint))
		if err != nil {
			return nil, fmt.Errorf("anchored checkpoint: %v", err)
		}
		if ac.Origin != c.Origin {
			return nil, fmt.Errorf("anchored checkpoint is of log %q, not %q", ac.Origin, c.Origin)
		}
		if ac.Size != a.Size || ac.Root != ap.Root {
			return nil, fmt.Errorf("anchored checkpoint says size %d root %x, the receipt size %d root %x", ac.Size, ac.Root, a.Size, ap.Root)
		}
		ap.Signers = signers
	}
	path, err := hashes("anchor consistency proof", a.Proof)
	if err != nil {
		return nil, err
	}
	ap.ProofLen = len(path)
	switch {
	case a.Size == c.Size:
		if ap.Root != c.Root || len(path) != 0 {
			return nil, fmt.Errorf("anchored at the checkpoint's size %d with root %x, but the checkpoint's root is %x", a.Size, ap.Root, c.Root)
		}
	case a.Size < c.Size:
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, a.Size, c.Size, path, ap.Root[:], c.Root[:]); err != nil {
			return nil, fmt.Errorf("consistency proof from the anchored %d entries to the checkpoint's %d: %v", a.Size, c.Size, proofError(err))
		}
	default:
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, c.Size, a.Size, path, c.Root[:], ap.Root[:]); err != nil {
			return nil, fmt.Errorf("consistency proof from the checkpoint's %d entries to the anchored %d: %v", c.Size, a.Size, proofError(err))
		}
	}
	return ap, nil
}

func verifyConsistency(cons *Consistency, c checkpoint.Checkpoint, p *checkpoint.Policy) (*Later, error) {
	c2, signers, err := p.Verify([]byte(cons.Checkpoint))
	if err != nil {
		return nil, fmt.Errorf("later checkpoint: %v", err)
	}
	if c2.Origin != c.Origin {
		return nil, fmt.Errorf("later checkpoint is of log %q, not %q", c2.Origin, c.Origin)
	}
	if c2.Size < c.Size {
		return nil, fmt.Errorf("later checkpoint has %d entries, fewer than the %d of the checkpoint", c2.Size, c.Size)
	}
	path, err := hashes("consistency proof", cons.Proof)
	if err != nil {
		return nil, err
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, c.Size, c2.Size, path, c.Root[:], c2.Root[:]); err != nil {
		return nil, fmt.Errorf("consistency proof from %d to %d entries: %v", c.Size, c2.Size, proofError(err))
	}
	return &Later{Checkpoint: c2, Signers: signers, ProofLen: len(path)}, nil
}

func hashes(what string, in []Bytes) ([][]byte, error) {
	out := make([][]byte, len(in))
	for i, h := range in {
		if len(h) != sha256.Size {
			return nil, fmt.Errorf("%s hash %d has %d bytes, want %d", what, i+1, len(h), sha256.Size)
		}
		out[i] = h
	}
	return out, nil
}

// proofError rewrites the library's root mismatch (multi-line, decimal
// bytes) as one line with hex roots.
func proofError(err error) error {
	var mismatch proof.RootMismatchError
	if errors.As(err, &mismatch) {
		return fmt.Errorf("it leads to root %x, not to %x", mismatch.CalculatedRoot, mismatch.ExpectedRoot)
	}
	return err
}
