package evidence

import (
	"encoding/hex"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/witnz/witnz/libs/checkpoint"
	"github.com/witnz/witnz/libs/commitment"
)

// String says in plain words what the bundle proves and what it does not.
func (r *Report) String() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	e := r.Entry
	w("VALID evidence (%s)", Format)
	w("")
	w("Proven:")
	w("  - Entry %d of the log of table %s (witnz cluster %s) is:", r.Index, printable(r.Table), r.Cluster)
	w("      op               %s", e.Op)
	w("      commit LSN       %s, change %d of its transaction in this table", lsn(e.CommitLSN), e.TxIndex)
	w("      transaction id   %d", e.XID)
	w("      commit time      %s", time.UnixMicro(e.CommitTimeMicros).UTC().Format(time.RFC3339Nano))
	w("      key commitment   %s", commit(e.KeyCommit))
	w("      data commitment  %s", commit(e.DataCommit))
	if e.OldDataCommit != nil {
		w("      previous data    %s", commit(e.OldDataCommit))
	}
	w("      leaf hash        %x", r.LeafHash)
	w("  - It is included in that log's tree of %d entries with root", r.Checkpoint.Size)
	w("    %x", r.Checkpoint.Root)
	w("    (RFC 6962 inclusion proof of %d hashes).", r.ProofLen)
	w("  - That checkpoint (origin %s) is signed as the policy requires:", printable(r.Checkpoint.Origin))
	w("    %s.", r.Policy)
	signerLines(w, r.Signers)
	if len(r.Checkpoint.Extensions) > 0 {
		w("    Its extension lines are signed but carry no statement by the witnesses:")
		for _, x := range r.Checkpoint.Extensions {
			w("      %s", printable(x))
		}
	}
	if l := r.Later; l != nil {
		w("  - A later checkpoint of the same log, of %d entries with root", l.Checkpoint.Size)
		w("    %x,", l.Checkpoint.Root)
		w("    is also signed as the policy requires and extends this one (RFC 6962 consistency")
		w("    proof of %d hashes): the first %d entries are unchanged in it.", l.ProofLen, r.Checkpoint.Size)
		signerLines(w, l.Signers)
	}
	if ap := r.AnchorProven; ap != nil {
		rel := "is the same tree as this checkpoint"
		switch {
		case ap.Size < r.Checkpoint.Size:
			rel = "is a prefix of this checkpoint's tree"
		case ap.Size > r.Checkpoint.Size:
			rel = "extends this checkpoint's tree"
		}
		w("  - The anchor receipt's tree of %d entries with root", ap.Size)
		w("    %x", ap.Root)
		w("    %s (RFC 6962 consistency proof of %d hashes);", rel, ap.ProofLen)
		if ap.Covers {
			w("    it holds entry %d.", r.Index)
		} else {
			w("    it does not hold entry %d (anchored before it was logged).", r.Index)
		}
		if ap.Signers != nil {
			w("    The anchored checkpoint itself is signed as the policy requires:")
			signerLines(w, ap.Signers)
		}
	}
	w("")
	w("Not proven by this bundle:")
	w("  - Which row the commitments stand for: that needs the deployment's commitment key")
	w("    (the witnz verifier recomputes them from the live table).")
	if a := r.Anchor; a != nil {
		where := a.Sink + ":"
		if a.Bucket != "" {
			where += a.Bucket + "/"
		}
		where += a.Key
		if a.VersionID != "" {
			where += " version " + a.VersionID
		}
		w("  - That the checkpoint was anchored: fetch the object from the write-once store to check")
		w("    the receipt the bundle carries:")
		w("      object           %s", printable(where))
		w("      sha256           %s", printable(orUnknown(a.ChecksumSHA256)))
		w("      anchored at      %s", printable(orUnknown(a.AnchoredAt)))
		w("      retained until   %s", printable(orUnknown(a.RetainUntil)))
	}
	if f := r.Finding; f != nil {
		w("  - The finding, which is context written by whoever made the bundle:")
		w("      %s: %s", printable(f.Type), printable(f.Message))
	}
	return b.String()
}

func signerLines(w func(string, ...any), signers []checkpoint.Signer) {
	for _, s := range signers {
		switch s.Role {
		case checkpoint.RoleLog:
			w("      signed by log key %s", printable(s.KeyName))
		default:
			w("      cosigned by witness %s (key %s) at %s", printable(s.Label), printable(s.KeyName), s.Time.Format(time.RFC3339))
		}
	}
}

func commit(c *commitment.Commitment) string {
	if c == nil {
		return "(none)"
	}
	return hex.EncodeToString(c[:])
}

func lsn(v uint64) string { return fmt.Sprintf("%X/%X", v>>32, uint32(v)) }

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// printable escapes what a terminal would interpret (control characters,
// bidirectional overrides and other non-printing runes): text in a bundle
// comes from whoever made it.
func printable(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			b.WriteString(`\ufffd`)
		case unicode.IsPrint(r):
			b.WriteRune(r)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String()
}
