// Package schema describes a protected table's shape as pgoutput publishes
// it — its replica identity and, in attnum order, the name, type, type
// modifier and key flag of every published column — and commits to it.
//
// The same Schema comes from a Relation message of the replication stream
// (FromRelation) and from the catalog (Load), so a schema change is found
// both when a change streams and by polling, and the two agree.
package schema

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/witnz/witnz/libs/commitment"
)

// Replica identities (pg_class.relreplident).
const (
	ReplIdentDefault = 'd'
	ReplIdentNothing = 'n'
	ReplIdentFull    = 'f'
	ReplIdentIndex   = 'i'
)

// Column is one published column.
type Column struct {
	Name    string
	TypeOID uint32
	TypMod  int32
	// Key is pgoutput's replica-identity flag: every column under REPLICA
	// IDENTITY FULL, the primary-key columns under DEFAULT, the index's
	// key columns under USING INDEX, none under NOTHING.
	Key bool
}

// Schema is a table's shape as pgoutput sends it.
type Schema struct {
	// ReplIdent is 'd', 'n', 'f' or 'i'.
	ReplIdent byte
	Columns   []Column
}

// FromRelation is the schema a Relation message describes.
func FromRelation(m *pglogrepl.RelationMessage) Schema {
	s := Schema{ReplIdent: m.ReplicaIdentity, Columns: make([]Column, len(m.Columns))}
	for i, c := range m.Columns {
		s.Columns[i] = Column{Name: c.Name, TypeOID: c.DataType, TypMod: c.TypeModifier, Key: c.Flags&1 != 0}
	}
	return s
}

// Querier runs a query returning one row: *pgxpool.Pool, pgx.Tx and
// *pgx.Conn satisfy it.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ErrNotFound means no relation has the OID.
var ErrNotFound = errors.New("relation not found")

// loadSQL mirrors what pgoutput (PostgreSQL 14 to 17) publishes for
// relation $1: columns with attnum > 0, not dropped, not generated, in
// attnum order; the key flag as logicalrep_write_attrs sets it from
// RelationGetIdentityKeyBitmap (the replica identity index is the primary
// key under DEFAULT, the chosen index under USING INDEX, and only a valid,
// unique, immediate, non-partial index qualifies; INCLUDE columns are not
// key columns). A publication column list is not taken into account.
const loadSQL = `
WITH rel AS (
  SELECT c.oid, c.relreplident FROM pg_class c WHERE c.oid = $1
), ident AS (
  SELECT i.indkey, i.indnkeyatts
  FROM pg_index i JOIN rel ON i.indrelid = rel.oid
  WHERE i.indisvalid AND i.indisunique AND i.indimmediate AND i.indpred IS NULL
    AND ((rel.relreplident = 'd' AND i.indisprimary) OR (rel.relreplident = 'i' AND i.indisreplident))
  LIMIT 1
), keycols AS (
  SELECT k.attnum FROM ident CROSS JOIN LATERAL unnest(ident.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
  WHERE k.ord <= ident.indnkeyatts
)
SELECT rel.relreplident::text,
  coalesce(array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}'),
  coalesce(array_agg(a.atttypid ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}'),
  coalesce(array_agg(a.atttypmod ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}'),
  coalesce(array_agg(rel.relreplident = 'f' OR a.attnum IN (SELECT attnum FROM keycols) ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}')
FROM rel
LEFT JOIN pg_attribute a ON a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
GROUP BY rel.relreplident`

// Load reads the schema of the relation with OID oid from the catalog, as
// pgoutput would publish it now. For a partitioned table published through
// its root, pass the root's OID. It returns ErrNotFound when the relation
// does not exist.
func Load(ctx context.Context, q Querier, oid uint32) (Schema, error) {
	var ident string
	var names []string
	var types []uint32
	var mods []int32
	var keys []bool
	err := q.QueryRow(ctx, loadSQL, oid).Scan(&ident, &names, &types, &mods, &keys)
	if errors.Is(err, pgx.ErrNoRows) {
		return Schema{}, fmt.Errorf("relation %d: %w", oid, ErrNotFound)
	}
	if err != nil {
		return Schema{}, fmt.Errorf("read the columns of relation %d: %w", oid, err)
	}
	if len(ident) != 1 || len(types) != len(names) || len(mods) != len(names) || len(keys) != len(names) {
		return Schema{}, fmt.Errorf("read the columns of relation %d: inconsistent catalog answer", oid)
	}
	s := Schema{ReplIdent: ident[0], Columns: make([]Column, len(names))}
	for i := range names {
		s.Columns[i] = Column{Name: names[i], TypeOID: types[i], TypMod: mods[i], Key: keys[i]}
	}
	return s, nil
}

// commitTag separates schema commitments from row commitments, which are
// made under the same table key.
const commitTag = "witnz/schema/v1"

// Commit is the schema commitment: DataCommit under the table's key over
// the row encoding (commitment.AppendRow) of ["witnz/schema/v1",
// replica identity (1 byte), then for every column its name,
// uint32_be(type OID), int32_be(typmod) and key (1 byte, 0 or 1)].
func (s Schema) Commit(c *commitment.Committer) commitment.Commitment {
	vals := make([][]byte, 0, 2+4*len(s.Columns))
	vals = append(vals, []byte(commitTag), []byte{s.ReplIdent})
	for _, col := range s.Columns {
		key := byte(0)
		if col.Key {
			key = 1
		}
		vals = append(vals,
			[]byte(col.Name),
			binary.BigEndian.AppendUint32(nil, col.TypeOID),
			binary.BigEndian.AppendUint32(nil, uint32(col.TypMod)),
			[]byte{key})
	}
	enc, err := commitment.AppendRow(nil, vals)
	if err != nil {
		// More than 16383 columns (PostgreSQL allows 1600): only a
		// malformed Relation message gets here. Commit to something that
		// no real schema matches.
		enc, _ = commitment.AppendRow(nil, [][]byte{[]byte(commitTag + "/oversized"), binary.BigEndian.AppendUint32(nil, uint32(len(s.Columns)))})
	}
	return c.DataCommit(enc)
}

// Equal reports whether two schemas are the same.
func (s Schema) Equal(o Schema) bool {
	if s.ReplIdent != o.ReplIdent || len(s.Columns) != len(o.Columns) {
		return false
	}
	for i := range s.Columns {
		if s.Columns[i] != o.Columns[i] {
			return false
		}
	}
	return true
}

// KeyColumns names the columns flagged as the replica identity key, in
// attnum order.
func (s Schema) KeyColumns() []string {
	var out []string
	for _, c := range s.Columns {
		if c.Key {
			out = append(out, c.Name)
		}
	}
	return out
}

// Describe renders the schema for alerts, e.g.
// "id int8 key, body text, note varchar(20), replica identity default".
func (s Schema) Describe() string {
	parts := make([]string, len(s.Columns))
	for i, c := range s.Columns {
		parts[i] = c.describe()
	}
	cols := strings.Join(parts, ", ")
	if cols == "" {
		cols = "no columns"
	}
	return cols + ", replica identity " + ReplIdentName(s.ReplIdent)
}

func (c Column) describe() string {
	s := c.Name + " " + TypeName(c.TypeOID, c.TypMod)
	if c.Key {
		s += " key"
	}
	return s
}

// ReplIdentName spells a replica identity as ALTER TABLE does.
func ReplIdentName(r byte) string {
	switch r {
	case ReplIdentDefault:
		return "default"
	case ReplIdentNothing:
		return "nothing"
	case ReplIdentFull:
		return "full"
	case ReplIdentIndex:
		return "using index"
	case 0:
		return "unknown"
	}
	return fmt.Sprintf("%q", r)
}

var typeMap = sync.OnceValue(pgtype.NewMap)

// TypeName names a type for messages: the built-in name with its modifier
// where PostgreSQL shows one, else "type <oid>".
func TypeName(oid uint32, typmod int32) string {
	name := fmt.Sprintf("type %d", oid)
	if t, ok := typeMap().TypeForOID(oid); ok {
		name = t.Name
	}
	if typmod < 0 {
		return name
	}
	switch oid {
	case pgtype.VarcharOID, pgtype.BPCharOID:
		return fmt.Sprintf("%s(%d)", name, typmod-4)
	case pgtype.NumericOID:
		m := typmod - 4
		return fmt.Sprintf("%s(%d,%d)", name, m>>16&0xffff, m&0xffff)
	case pgtype.TimestampOID, pgtype.TimestamptzOID, pgtype.TimeOID, pgtype.TimetzOID, pgtype.BitOID, pgtype.VarbitOID:
		return fmt.Sprintf("%s(%d)", name, typmod)
	}
	return fmt.Sprintf("%s(typmod %d)", name, typmod)
}

// Diff says what changed from old to new, e.g. "column note added
// (varchar(20)); replica identity default → full".
func Diff(old, new Schema) string {
	var out []string
	oldPos := make(map[string]int, len(old.Columns))
	for i, c := range old.Columns {
		oldPos[c.Name] = i
	}
	newPos := make(map[string]int, len(new.Columns))
	for i, c := range new.Columns {
		newPos[c.Name] = i
	}
	for _, c := range old.Columns {
		if _, ok := newPos[c.Name]; !ok {
			out = append(out, fmt.Sprintf("column %s removed", c.Name))
		}
	}
	var kept []string
	for _, c := range new.Columns {
		i, ok := oldPos[c.Name]
		if !ok {
			out = append(out, fmt.Sprintf("column %s added (%s)", c.Name, TypeName(c.TypeOID, c.TypMod)))
			continue
		}
		kept = append(kept, c.Name)
		o := old.Columns[i]
		if o.TypeOID != c.TypeOID || o.TypMod != c.TypMod {
			out = append(out, fmt.Sprintf("column %s type %s → %s", c.Name, TypeName(o.TypeOID, o.TypMod), TypeName(c.TypeOID, c.TypMod)))
		}
		if o.Key != c.Key {
			if c.Key {
				out = append(out, fmt.Sprintf("column %s now in the replica identity key", c.Name))
			} else {
				out = append(out, fmt.Sprintf("column %s no longer in the replica identity key", c.Name))
			}
		}
	}
	var oldKept []string
	for _, c := range old.Columns {
		if _, ok := newPos[c.Name]; ok {
			oldKept = append(oldKept, c.Name)
		}
	}
	if strings.Join(oldKept, "\x00") != strings.Join(kept, "\x00") {
		out = append(out, "column order changed")
	}
	if old.ReplIdent != new.ReplIdent {
		out = append(out, fmt.Sprintf("replica identity %s → %s", ReplIdentName(old.ReplIdent), ReplIdentName(new.ReplIdent)))
	}
	if len(out) == 0 {
		return "no difference"
	}
	return strings.Join(out, "; ")
}

// Hex renders a commitment for alert details.
func Hex(c commitment.Commitment) string { return hex.EncodeToString(c[:]) }
