package capture

import (
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/witnz/witnz/libs/commitment"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/services/cdc-ingest/internal/alerts"
	"github.com/witnz/witnz/services/cdc-ingest/internal/schema"
)

// SchemaAlerts are the alerts for protected table t found with schema got
// (commitment c) while its log expects t.SchemaCommit (and t.ExpectedSchema, when
// known): cdc.schema_changed, plus cdc.replica_identity_changed when the
// replica identity differs from the expected one (t.ExpectedSchema's, else
// t.ReplIdent) — or, when neither is known, when it no longer identifies
// rows. None when c is what the log expects or nothing is expected yet.
// The decoder (a Relation message) and the monitor (the catalog) share it.
func SchemaAlerts(t Table, got schema.Schema, c commitment.Commitment, where alerts.Where) []*alertv1.Alert {
	if t.SchemaCommit.IsZero() || c == t.SchemaCommit {
		return nil
	}
	name := t.String()
	sc := alerts.SchemaChange{
		Where: where, Table: name, New: got.Describe(),
		OldCommit: schema.Hex(t.SchemaCommit), NewCommit: schema.Hex(c),
	}
	// The expected replica identity: the expected schema's, else the one
	// found when the table was checked for protection.
	oldIdent := t.ReplIdent
	if t.ExpectedSchema != nil {
		sc.Old, sc.Diff = t.ExpectedSchema.Describe(), schema.Diff(*t.ExpectedSchema, got)
		oldIdent = t.ExpectedSchema.ReplIdent
	}
	out := []*alertv1.Alert{alerts.SchemaChanged(sc)}
	ok := Identifies(t, got)
	if (oldIdent != 0 && oldIdent != got.ReplIdent) || (oldIdent == 0 && !ok) {
		out = append(out, alerts.ReplicaIdentityChanged(alerts.ReplicaIdentityChange{
			Where: where, Table: name, Mode: t.Mode,
			Old: schema.ReplIdentName(oldIdent), New: schema.ReplIdentName(got.ReplIdent),
			Identifies: ok, Fix: replIdentFix(t, oldIdent, got.ReplIdent, ok), SchemaCommit: schema.Hex(c),
		}))
	}
	return out
}

// Identifies reports whether UPDATE and DELETE on t, under schema s, carry
// what identifies the row: the whole old row (FULL), the primary key
// (DEFAULT with one), or an index over exactly the primary-key columns.
func Identifies(t Table, s schema.Schema) bool {
	keys := s.KeyColumns()
	switch s.ReplIdent {
	case schema.ReplIdentFull:
		return true
	case schema.ReplIdentDefault:
		return len(keys) > 0
	case schema.ReplIdentIndex:
		pk := slices.Clone(t.KeyColumns)
		slices.Sort(pk)
		slices.Sort(keys)
		return len(keys) > 0 && slices.Equal(pk, keys)
	}
	return false
}

// replIdentFix names the statement that gives the table back what its mode
// needs.
func replIdentFix(t Table, old, newIdent byte, identifies bool) string {
	ident := pgx.Identifier{t.Schema, t.Name}.Sanitize()
	switch {
	case t.Mode == witnessv1.TableMode_TABLE_MODE_MUTABLE && newIdent != schema.ReplIdentFull:
		return "a mutable table needs every old row: run ALTER TABLE " + ident + " REPLICA IDENTITY FULL"
	case !identifies:
		return "run ALTER TABLE " + ident + " REPLICA IDENTITY DEFAULT (with a primary key) or REPLICA IDENTITY FULL"
	case old == schema.ReplIdentDefault || old == schema.ReplIdentFull || old == schema.ReplIdentNothing:
		return "if this was not planned, restore it with ALTER TABLE " + ident + " REPLICA IDENTITY " + upper(schema.ReplIdentName(old))
	}
	return "if this was not planned, restore the previous replica identity of " + ident
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
