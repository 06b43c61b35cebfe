package schema

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/witnz/witnz/libs/commitment"
	"github.com/witnz/witnz/libs/testenv"
)

// shapes are the table shapes whose Relation message must match the
// catalog; each creates table "t" in its own schema.
var shapes = map[string]string{
	"pk":            `CREATE TABLE t (id int8 PRIMARY KEY, body text, note varchar(20), amount numeric(10,2))`,
	"composite_pk":  `CREATE TABLE t (b text, a int4, c timestamptz(3), PRIMARY KEY (a, b))`,
	"full_no_pk":    `CREATE TABLE t (x int4, y text); ALTER TABLE t REPLICA IDENTITY FULL`,
	"default_no_pk": `CREATE TABLE t (x int4, y text)`,
	"dropped_column": `CREATE TABLE t (id int4 PRIMARY KEY, gone text, kept text, later int8);
		ALTER TABLE t DROP COLUMN gone; ALTER TABLE t ADD COLUMN added bool`,
	"generated": `CREATE TABLE t (id int4 PRIMARY KEY, a int4, twice int4 GENERATED ALWAYS AS (a * 2) STORED, z text)`,
	"using_index": `CREATE TABLE t (id int4 PRIMARY KEY, code text NOT NULL, region int2 NOT NULL, body text);
		CREATE UNIQUE INDEX t_code ON t (region, code); ALTER TABLE t REPLICA IDENTITY USING INDEX t_code`,
	"pk_include": `CREATE TABLE t (id int4, extra text, body text, PRIMARY KEY (id) INCLUDE (extra))`,
	"nothing":    `CREATE TABLE t (id int4 PRIMARY KEY, body text); ALTER TABLE t REPLICA IDENTITY NOTHING`,
	"partitioned": `CREATE TABLE t (id int8, at date NOT NULL, body text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
		CREATE TABLE t_2026 PARTITION OF t FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`,
}

// TestLoadMatchesRelation proves that the catalog answer equals the
// Relation message pgoutput sends, for every shape.
func TestLoadMatchesRelation(t *testing.T) {
	pg := testenv.PostgreSQL(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	var tables []string
	for name, ddl := range shapes {
		pg.Exec(t, "postgres", "CREATE SCHEMA "+name+"; SET search_path = "+name+"; "+ddl)
		tables = append(tables, name+".t")
	}
	pg.Exec(t, "postgres", "CREATE PUBLICATION p FOR TABLE "+strings.Join(tables, ", ")+" WITH (publish_via_partition_root = true)")
	pg.Exec(t, "postgres", "SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
	for name := range shapes {
		var cols []string
		err := conn.QueryRow(ctx, `SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
			WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''`, name+".t").Scan(&cols)
		if err != nil {
			t.Fatal(err)
		}
		vals := make([]string, len(cols))
		for i, c := range cols {
			vals[i] = "DEFAULT"
			switch c {
			case "id", "a", "x", "region":
				vals[i] = "1"
			case "b", "code", "y":
				vals[i] = "'k'"
			case "at":
				vals[i] = "'2026-05-01'"
			}
		}
		pg.Exec(t, "postgres", "INSERT INTO "+name+".t VALUES ("+strings.Join(vals, ", ")+")")
	}

	oids := map[string]uint32{}
	for name := range shapes {
		var oid uint32
		if err := conn.QueryRow(ctx, "SELECT $1::regclass::oid", name+".t").Scan(&oid); err != nil {
			t.Fatal(err)
		}
		oids[name] = oid
	}
	// pgoutput also sends the leaf partition's Relation message after the
	// root's: wait for every table's own.
	rels := captureRelations(t, pg.DSN("postgres"), "s", "p", oids)
	c := commitment.Key{9}.ForTable("x", "y").NewCommitter()
	for name, oid := range oids {
		t.Run(name, func(t *testing.T) {
			m, ok := rels[oid]
			if !ok {
				t.Fatalf("no Relation message for %s (oid %d)", name, oid)
			}
			want := FromRelation(m)
			got, err := Load(ctx, conn, oid)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Load != FromRelation (-relation +catalog):\n%s", diff)
			}
			if want.Commit(c) != got.Commit(c) {
				t.Error("commitments differ")
			}
			if len(want.Columns) == 0 {
				t.Error("no columns")
			}
		})
	}

	if _, err := Load(ctx, conn, 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("Load of a missing OID: %v, want ErrNotFound", err)
	}
}

// captureRelations streams slot through pgoutput until the Relation
// message of every OID in want arrived.
func captureRelations(t *testing.T, dsn, slot, pub string, want map[string]uint32) map[uint32]*pglogrepl.RelationMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names '" + pub + "'", "binary 'true'"},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint32]*pglogrepl.RelationMessage{}
	missing := len(want)
	for missing > 0 {
		raw, err := conn.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("receive (%d relations missing): %v", missing, err)
		}
		cd, ok := raw.(*pgproto3.CopyData)
		if !ok || len(cd.Data) == 0 || cd.Data[0] != pglogrepl.XLogDataByteID {
			continue
		}
		xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			t.Fatal(err)
		}
		msg, err := pglogrepl.Parse(xld.WALData)
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := msg.(*pglogrepl.RelationMessage); ok {
			if _, dup := out[r.RelationID]; !dup && slices.Contains(slices.Collect(maps.Values(want)), r.RelationID) {
				missing--
			}
			out[r.RelationID] = r
		}
	}
	return out
}

func TestCommitCoversEveryField(t *testing.T) {
	c := commitment.Key{1}.ForTable("public", "t").NewCommitter()
	base := Schema{ReplIdent: 'd', Columns: []Column{{Name: "id", TypeOID: pgtype.Int8OID, TypMod: -1, Key: true}, {Name: "body", TypeOID: pgtype.TextOID, TypMod: -1}}}
	seen := map[commitment.Commitment]string{base.Commit(c): "base"}
	variants := map[string]func(s *Schema){
		"replident": func(s *Schema) { s.ReplIdent = 'f' },
		"name":      func(s *Schema) { s.Columns[1].Name = "bodx" },
		"type":      func(s *Schema) { s.Columns[1].TypeOID = pgtype.VarcharOID },
		"typmod":    func(s *Schema) { s.Columns[1].TypMod = 24 },
		"key":       func(s *Schema) { s.Columns[1].Key = true },
		"order":     func(s *Schema) { s.Columns[0], s.Columns[1] = s.Columns[1], s.Columns[0] },
		"added":     func(s *Schema) { s.Columns = append(s.Columns, Column{Name: "x", TypeOID: pgtype.BoolOID, TypMod: -1}) },
		"dropped":   func(s *Schema) { s.Columns = s.Columns[:1] },
	}
	for name, f := range variants {
		s := Schema{ReplIdent: base.ReplIdent, Columns: append([]Column(nil), base.Columns...)}
		f(&s)
		got := s.Commit(c)
		if prev, dup := seen[got]; dup {
			t.Errorf("variant %s commits like %s", name, prev)
		}
		seen[got] = name
		if s.Equal(base) {
			t.Errorf("variant %s Equal to base", name)
		}
	}
	if other := base.Commit(commitment.Key{1}.ForTable("public", "u").NewCommitter()); other == base.Commit(c) {
		t.Error("schema commitment does not depend on the table key")
	}
}

func TestDescribeAndDiff(t *testing.T) {
	old := Schema{ReplIdent: 'd', Columns: []Column{
		{Name: "id", TypeOID: pgtype.Int8OID, TypMod: -1, Key: true},
		{Name: "body", TypeOID: pgtype.TextOID, TypMod: -1},
		{Name: "gone", TypeOID: pgtype.BoolOID, TypMod: -1},
	}}
	new := Schema{ReplIdent: 'f', Columns: []Column{
		{Name: "id", TypeOID: pgtype.Int4OID, TypMod: -1, Key: true},
		{Name: "body", TypeOID: pgtype.TextOID, TypMod: -1, Key: true},
		{Name: "note", TypeOID: pgtype.VarcharOID, TypMod: 24, Key: true},
		{Name: "n", TypeOID: pgtype.NumericOID, TypMod: (10<<16 | 2) + 4, Key: true},
	}}
	if got, want := old.Describe(), "id int8 key, body text, gone bool, replica identity default"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
	if got, want := new.Describe(), "id int4 key, body text key, note varchar(20) key, n numeric(10,2) key, replica identity full"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
	want := "column gone removed; column id type int8 → int4; column body now in the replica identity key; column note added (varchar(20)); column n added (numeric(10,2)); replica identity default → full"
	if got := Diff(old, new); got != want {
		t.Errorf("Diff =\n%q\nwant\n%q", got, want)
	}
	if got := Diff(old, old); got != "no difference" {
		t.Errorf("Diff(old, old) = %q", got)
	}
	swapped := Schema{ReplIdent: 'd', Columns: []Column{old.Columns[1], old.Columns[0], old.Columns[2]}}
	if got := Diff(old, swapped); got != "column order changed" {
		t.Errorf("Diff of reordered columns = %q", got)
	}
}
