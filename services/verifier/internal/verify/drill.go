package verify

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/witnz/witnz/libs/commitment"
	"github.com/witnz/witnz/libs/pgcopy"
	"github.com/witnz/witnz/libs/statedigest"
)

// groupBudget bounds the rows plus entries one drill-down group holds in
// memory (about 150 bytes each).
const groupBudget = 200_000

// Kind is what is wrong with a row.
type Kind int

// Kinds of findings.
const (
	// Modified: the row exists but differs from its committed version.
	Modified Kind = iota + 1
	// Deleted: a committed row is missing from the table.
	Deleted
	// Phantom: the row is in the table but was never committed.
	Phantom
)

func (k Kind) String() string {
	switch k {
	case Modified:
		return "modified"
	case Deleted:
		return "deleted"
	case Phantom:
		return "phantom"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Finding is one row that differs from what the witnesses committed.
type Finding struct {
	Kind Kind
	// KeyColumns and KeyValues name the row: its primary-key columns (every
	// column for a table without one) and their values as PostgreSQL text
	// ("NULL" for SQL NULL). Empty for a deleted row, of which only the key
	// commitment is known.
	KeyColumns []string
	KeyValues  []string
	KeyCommit  commitment.Commitment
	Bucket     uint32
	// Expected is the data commitment the witnesses expect (modified,
	// deleted); Actual the one the table holds (modified, phantom).
	Expected, Actual *commitment.Commitment
	// Entry is the witness entry that committed the expected version
	// (modified, deleted), or for a phantom the latest entry about its key;
	// nil when there is none.
	Entry   *uint64
	EntryOp commitment.Op
	// Latest is the latest entry about the key when it is not Entry (e.g.
	// an UPDATE of an append-only table that was never accepted).
	Latest   *uint64
	LatestOp commitment.Op
	// EvidencePath is the evidence bundle written for the finding.
	EvidencePath string
	// Message says it in one line.
	Message string
}

// Key returns the key columns and values as a map.
func (f *Finding) Key() map[string]string {
	m := make(map[string]string, len(f.KeyColumns))
	for i, c := range f.KeyColumns {
		m[c] = f.KeyValues[i]
	}
	return m
}

// identity is what must be found again on the confirming snapshot.
func (f *Finding) identity() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%x", f.Kind, f.KeyCommit)
	for _, c := range []*commitment.Commitment{f.Expected, f.Actual} {
		if c != nil {
			fmt.Fprintf(&b, "/%x", *c)
		} else {
			b.WriteString("/-")
		}
	}
	return b.String()
}

// keyText renders the key for messages: id=42, or (a=1, b=x).
func (f *Finding) keyText() string {
	parts := make([]string, len(f.KeyColumns))
	for i, c := range f.KeyColumns {
		parts[i] = c + "=" + f.KeyValues[i]
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func (f *Finding) describe(table string) string {
	switch f.Kind {
	case Modified:
		msg := fmt.Sprintf("row %s of %s differs from its version committed at entry %d (%v)", f.keyText(), table, *f.Entry, f.EntryOp)
		if f.Latest != nil {
			msg += fmt.Sprintf("; the latest entry about it, %d (%v), did not change the expected state (an UPDATE or DELETE of an append-only table is expected to be accepted first)", *f.Latest, f.LatestOp)
		}
		return msg
	case Deleted:
		msg := fmt.Sprintf("a row of %s committed at entry %d (%v) is missing from the table (key commitment %x)", table, *f.Entry, f.EntryOp, f.KeyCommit[:8])
		if f.Latest != nil {
			msg += fmt.Sprintf("; the latest entry about it, %d (%v), did not change the expected state", *f.Latest, f.LatestOp)
		}
		return msg
	}
	msg := fmt.Sprintf("row %s of %s is in the table but no entry of the current protection epoch commits it", f.keyText(), table)
	if f.Entry != nil {
		msg += fmt.Sprintf("; the latest entry about its key is %d (%v)", *f.Entry, f.EntryOp)
	}
	return msg
}

// findingType is the evidence bundle's finding type.
func (k Kind) findingType() string {
	switch k {
	case Modified:
		return "verify.row_modified"
	case Deleted:
		return "verify.row_deleted"
	}
	return "verify.row_phantom"
}

// version is one expected (data, multiplicity) of a key.
type version struct {
	data commitment.Commitment
	n    int
	seq  uint64
	op   commitment.Op
}

type keyExpect struct {
	versions []version
	last     uint64
	lastOp   commitment.Op
	hasLast  bool
}

type actualRow struct {
	data commitment.Commitment
	vals []string
}

// drillInput is what one drill down needs.
type drillInput struct {
	table   string
	snap    *snapshot
	lv      *leaderView
	desc    *pgcopy.Table
	tk      commitment.TableKey
	mode    statedigest.Mode
	buckets int
	// start is the first entry of the current epoch, size the log size of
	// the comparison.
	start, size uint64
	limit       int
}

// drill classifies the differences in the given buckets, visiting them in
// groups whose weight (rows + entries, estimated) fits groupBudget. It
// stops once limit findings are known and then reports truncated.
func drill(ctx context.Context, in drillInput, buckets []uint32, weight func(uint32) uint64) (findings []Finding, truncated bool, err error) {
	var group []uint32
	var w uint64
	flush := func() error {
		if len(group) == 0 {
			return nil
		}
		fs, err := drillGroup(ctx, in, group)
		if err != nil {
			return err
		}
		findings = append(findings, fs...)
		group, w = group[:0], 0
		return nil
	}
	for i, b := range buckets {
		if len(findings) >= in.limit {
			return findings[:in.limit], true, nil
		}
		bw := weight(b)
		if len(group) > 0 && w+bw > groupBudget {
			if err := flush(); err != nil {
				return nil, false, err
			}
			if len(findings) >= in.limit {
				return findings[:in.limit], i < len(buckets) || len(findings) > in.limit, nil
			}
		}
		group = append(group, b)
		w += bw
	}
	if err := flush(); err != nil {
		return nil, false, err
	}
	if len(findings) > in.limit {
		return findings[:in.limit], true, nil
	}
	return findings, false, nil
}

// drillGroup compares the expected and actual rows of a few buckets.
func drillGroup(ctx context.Context, in drillInput, group []uint32) ([]Finding, error) {
	want := make(map[uint32]bool, len(group))
	for _, b := range group {
		want[b] = true
	}
	shift := bucketShift(in.buckets)
	expected, err := expectedRows(ctx, in, group, want, shift)
	if err != nil {
		return nil, err
	}
	actual, keyCols, err := actualRows(ctx, in, want, shift)
	if err != nil {
		return nil, err
	}
	return classify(in.table, expected, actual, keyCols, shift), nil
}

// expectedRows replays the epoch's entries [start, size) of the wanted
// buckets that the snapshot sees into the expected rows per key.
func expectedRows(ctx context.Context, in drillInput, group []uint32, want map[uint32]bool, shift uint) (map[commitment.Commitment]*keyExpect, error) {
	exp := map[commitment.Commitment]*keyExpect{}
	at := func(key commitment.Commitment) *keyExpect {
		k := exp[key]
		if k == nil {
			k = &keyExpect{}
			exp[key] = k
		}
		return k
	}
	// The witness sends only the group's buckets (and the table-level
	// entries): the log of a big table is streamed once per group, not
	// whole.
	err := in.lv.entriesIn(ctx, in.start, in.size, group, func(e *commitment.Entry, _ []byte) error {
		if !in.snap.visible(e.XID, e.CommitLSN) {
			return nil
		}
		if e.Op == commitment.OpTruncate && in.mode == statedigest.Mutable {
			// A mutable table is empty after a TRUNCATE; it resets the
			// expected state.
			for _, k := range exp {
				k.versions = nil
			}
			return nil
		}
		if e.KeyCommit == nil || !want[bucketOf(*e.KeyCommit, shift)] {
			return nil
		}
		eff, err := statedigest.EffectOf(statedigest.ChangeOf(e), in.mode)
		if err != nil {
			return fmt.Errorf("%w: entry %d of %s: %v", ErrWitness, e.Seq, in.table, err)
		}
		k := at(*e.KeyCommit)
		k.last, k.lastOp, k.hasLast = e.Seq, e.Op, true
		if eff.Remove {
			i := slices.IndexFunc(k.versions, func(v version) bool { return v.data == eff.Removed })
			if i < 0 {
				k.versions = append(k.versions, version{data: eff.Removed, n: -1, seq: e.Seq, op: e.Op})
			} else {
				k.versions[i].n--
			}
		}
		if eff.Add {
			i := slices.IndexFunc(k.versions, func(v version) bool { return v.data == eff.Added })
			if i < 0 {
				k.versions = append(k.versions, version{data: eff.Added, n: 1, seq: e.Seq, op: e.Op})
			} else {
				k.versions[i].n++
				k.versions[i].seq, k.versions[i].op = e.Seq, e.Op
			}
		}
		return nil
	})
	return exp, err
}

// textQuery is the table's COPY query with the key columns (every column
// for a table without a primary key) appended as text, to name rows.
func textQuery(t *pgcopy.Table) (string, []string) {
	keyCols := t.Columns
	if len(t.Key) > 0 {
		keyCols = make([]string, len(t.Key))
		for i, k := range t.Key {
			keyCols[i] = t.Columns[k]
		}
	}
	var b strings.Builder
	b.WriteString("COPY (SELECT ")
	for i, c := range t.Columns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(pgx.Identifier{c}.Sanitize())
	}
	for _, c := range keyCols {
		b.WriteString(", ")
		b.WriteString(pgx.Identifier{c}.Sanitize())
		b.WriteString("::text")
	}
	if t.Partitioned {
		b.WriteString(" FROM ")
	} else {
		b.WriteString(" FROM ONLY ")
	}
	b.WriteString(pgx.Identifier{t.Schema, t.Name}.Sanitize())
	b.WriteString(") TO STDOUT (FORMAT binary)")
	return b.String(), keyCols
}

// actualRows re-scans the table in the snapshot and keeps the rows of the
// wanted buckets, with their key rendered as text.
func actualRows(ctx context.Context, in drillInput, want map[uint32]bool, shift uint) (map[commitment.Commitment][]actualRow, []string, error) {
	query, keyCols := textQuery(in.desc)
	ncols := len(in.desc.Columns)
	h := newRowHasher(in.tk, in.desc.Key)
	out := map[commitment.Commitment][]actualRow{}
	var enc []byte
	_, err := pgcopy.Scan(ctx, in.snap.conn.Conn().PgConn(), query, func(tuple []byte) error {
		fields, err := splitTuple(tuple)
		if err != nil {
			return err
		}
		if len(fields) != ncols+len(keyCols) {
			return fmt.Errorf("%w: the text COPY of %s sent %d fields, want %d", pgcopy.ErrMalformed, in.table, len(fields), ncols+len(keyCols))
		}
		// The row encoding is the tuple's first ncols fields under their
		// own count.
		end := 2
		for _, f := range fields[:ncols] {
			end = f.end
		}
		enc = binary.BigEndian.AppendUint16(enc[:0], uint16(ncols))
		enc = append(enc, tuple[2:end]...)
		key, err := h.keyCommit(enc)
		if err != nil {
			return err
		}
		if !want[bucketOf(key, shift)] {
			return nil
		}
		r := actualRow{data: h.c.DataCommit(enc), vals: make([]string, len(keyCols))}
		for i, f := range fields[ncols:] {
			r.vals[i] = renderValue(tuple[f.start:f.end], f.null)
		}
		out[key] = append(out[key], r)
		return nil
	})
	if err != nil {
		return nil, nil, scanError(in.table, err)
	}
	return out, keyCols, nil
}

// maxRendered bounds a rendered key value: a table without a primary key
// is named by every column, some of which may be large.
const maxRendered = 256

// renderValue is a text value for a finding's key: SQL NULL as "NULL",
// long values cut at a character boundary with their size noted.
func renderValue(v []byte, null bool) string {
	if null {
		return "NULL"
	}
	if len(v) <= maxRendered {
		return string(v)
	}
	cut := maxRendered
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", v[:cut], len(v))
}

type field struct {
	start, end int
	null       bool
}

// splitTuple returns the value ranges of a binary COPY tuple.
func splitTuple(t []byte) ([]field, error) {
	if len(t) < 2 {
		return nil, fmt.Errorf("%w: tuple shorter than its field count", pgcopy.ErrMalformed)
	}
	n := int(binary.BigEndian.Uint16(t))
	out := make([]field, n)
	p := 2
	for i := range out {
		if len(t)-p < 4 {
			return nil, fmt.Errorf("%w: tuple truncated in field %d", pgcopy.ErrMalformed, i+1)
		}
		l := int32(binary.BigEndian.Uint32(t[p:]))
		p += 4
		switch {
		case l == -1:
			out[i] = field{start: p, end: p, null: true}
		case l < 0 || int(l) > len(t)-p:
			return nil, fmt.Errorf("%w: field %d has length %d", pgcopy.ErrMalformed, i+1, l)
		default:
			out[i] = field{start: p, end: p + int(l)}
			p += int(l)
		}
	}
	return out, nil
}

// classify compares, key by key, the expected and the actual rows: a
// version in both is fine; what is left pairs into modified rows, and the
// rest is deleted (expected only) or phantom (actual only).
func classify(table string, exp map[commitment.Commitment]*keyExpect, act map[commitment.Commitment][]actualRow, keyCols []string, shift uint) []Finding {
	keys := map[commitment.Commitment]bool{}
	for k := range exp {
		keys[k] = true
	}
	for k := range act {
		keys[k] = true
	}
	var out []Finding
	for key := range keys {
		var missing []version // expected, one per copy
		if e := exp[key]; e != nil {
			for _, v := range e.versions {
				for range max(v.n, 0) {
					missing = append(missing, v)
				}
			}
		}
		extra := slices.Clone(act[key])
		// Cancel what is on both sides.
		for i := 0; i < len(missing); {
			j := slices.IndexFunc(extra, func(r actualRow) bool { return r.data == missing[i].data })
			if j < 0 {
				i++
				continue
			}
			missing = slices.Delete(missing, i, i+1)
			extra = slices.Delete(extra, j, j+1)
		}
		e := exp[key]
		for i := range max(len(missing), len(extra)) {
			f := Finding{KeyCommit: key, Bucket: bucketOf(key, shift)}
			switch {
			case i < len(missing) && i < len(extra):
				f.Kind = Modified
			case i < len(missing):
				f.Kind = Deleted
			default:
				f.Kind = Phantom
			}
			if i < len(missing) {
				v := missing[i]
				f.Expected = &v.data
				f.Entry, f.EntryOp = &v.seq, v.op
			}
			if i < len(extra) {
				r := extra[i]
				f.Actual = &r.data
				f.KeyColumns, f.KeyValues = keyCols, r.vals
			}
			if e != nil && e.hasLast {
				last := e.last
				switch {
				case f.Entry == nil:
					f.Entry, f.EntryOp = &last, e.lastOp
				case last != *f.Entry:
					f.Latest, f.LatestOp = &last, e.lastOp
				}
			}
			f.Message = f.describe(table)
			out = append(out, f)
		}
	}
	slices.SortFunc(out, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(a.Bucket, b.Bucket), bytes.Compare(a.KeyCommit[:], b.KeyCommit[:]), cmp.Compare(a.Kind, b.Kind))
	})
	return out
}
