// Package pgsource is cdc-ingest's side of PostgreSQL: the start-up checks,
// the protected tables as the catalog describes them, publication
// membership, logical decoding messages, and the logical replication
// connection that streams pgoutput in binary mode. The checks and the
// publication and slot set-up shared with `witnz init` live in
// libs/pgsetup.
package pgsource

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/pgsetup"
	"github.com/witnz/witnz/services/cdc-ingest/internal/config"
)

// DB is the normal (non-replication) connection pool cdc-ingest uses for
// checks, set-up, catalog look-ups, baselines and status.
type DB struct {
	Pool *pgxpool.Pool
	// DSN is the connection URL, for replication connections.
	DSN string
	// Addr is "host:port" of the server, for messages.
	Addr string
	// Database is the database name from the DSN.
	Database string
}

// Open connects to PostgreSQL and returns an error an operator can act on
// when it cannot.
func Open(ctx context.Context, dsn string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("--pg-dsn is not a valid PostgreSQL connection string: %v", err)
	}
	pool, err := pgsetup.Open(ctx, dsn, 4)
	if err != nil {
		return nil, err
	}
	cc := cfg.ConnConfig
	return &DB{Pool: pool, DSN: dsn, Addr: pgsetup.Addr(cc.Host, cc.Port), Database: cc.Database}, nil
}

// Close closes the pool.
func (db *DB) Close() { db.Pool.Close() }

// Preflight runs the prerequisite checks of libs/pgsetup and returns the
// first failure as one line with the fix.
func (db *DB) Preflight(ctx context.Context, slot string) error {
	checks, err := pgsetup.Prerequisites(ctx, db.Pool, slot)
	if err != nil {
		return fmt.Errorf("PostgreSQL at %s: %w", db.Addr, err)
	}
	if err := pgsetup.FirstFailure(checks); err != nil {
		return fmt.Errorf("PostgreSQL at %s: %w", db.Addr, err)
	}
	return nil
}

// Table is a protected table as found in the catalog.
type Table struct {
	config.Table
	OID uint32
	// KeyColumns are the primary-key columns in key order; empty when the
	// table has no primary key and the whole row is its key.
	KeyColumns []string
	// ReplIdent is pg_class.relreplident: 'd', 'n', 'f' or 'i'.
	ReplIdent byte
	// Partitioned is set for a partitioned table: its leaf partitions are
	// the table, published through it.
	Partitioned bool
}

// ErrNoTable wraps the error for a table that does not exist.
var ErrNoTable = errors.New("table does not exist")

// keyColumnsSQL lists the primary-key columns of relation $1 in key order.
// INCLUDE columns follow the key columns in indkey and are not part of the
// key: a DELETE's old key tuple sends them as NULL.
const keyColumnsSQL = `
SELECT coalesce(array_agg(a.attname::text ORDER BY k.ord), '{}')
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = $1 AND i.indisprimary AND k.ord <= i.indnkeyatts`

// CheckTable finds a table in the catalog and checks that its changes can
// be committed in the table's mode: the rows must be told apart (a primary
// key or REPLICA IDENTITY FULL), and a mutable table must send whole old
// rows (REPLICA IDENTITY FULL) so the expected state can follow each
// UPDATE and DELETE. For a partitioned table every leaf partition is
// checked too, since each has its own replica identity.
func (db *DB) CheckTable(ctx context.Context, t config.Table) (Table, error) {
	out := Table{Table: t}
	var relkind, replident string
	err := db.Pool.QueryRow(ctx, `
SELECT c.oid, c.relkind::text, c.relreplident::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2`, t.Schema, t.Name).Scan(&out.OID, &relkind, &replident)
	if errors.Is(err, pgx.ErrNoRows) {
		return out, fmt.Errorf("%w: table %s does not exist in database %q at %s: check the name (SCHEMA.TABLE, case-sensitive) or create the table", ErrNoTable, t, db.Database, db.Addr)
	}
	if err != nil {
		return out, fmt.Errorf("look up table %s: %w", t, pgsetup.ErrLine(err))
	}
	switch relkind {
	case "r":
	case "p":
		out.Partitioned = true
	default:
		return out, fmt.Errorf("%s is not a table (relkind %q): protect ordinary or partitioned tables", t, relkind)
	}
	out.ReplIdent = replident[0]
	if out.KeyColumns, err = db.KeyColumns(ctx, out.OID); err != nil {
		return out, fmt.Errorf("look up the primary key of %s: %w", t, err)
	}
	rels := []uint32{out.OID}
	if out.Partitioned {
		if rels, err = db.leaves(ctx, out.OID); err != nil {
			return out, fmt.Errorf("list the partitions of %s: %w", t, err)
		}
	}
	for _, oid := range rels {
		if err := db.checkIdentity(ctx, t, oid, len(out.KeyColumns) > 0); err != nil {
			return out, err
		}
	}
	return out, nil
}

// leaves lists the leaf partitions of partitioned table oid.
func (db *DB) leaves(ctx context.Context, oid uint32) ([]uint32, error) {
	rows, err := db.Pool.Query(ctx, `SELECT relid::oid FROM pg_partition_tree($1) WHERE isleaf`, oid)
	if err != nil {
		return nil, pgsetup.ErrLine(err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[uint32])
}

// checkIdentity checks the replica identity of relation oid (the table or
// one of its leaf partitions) against the mode of t.
func (db *DB) checkIdentity(ctx context.Context, t config.Table, oid uint32, hasPK bool) error {
	var name, replident string
	var identIsPK *bool
	err := db.Pool.QueryRow(ctx, `
SELECT c.oid::regclass::text, c.relreplident::text,
       (SELECT i.indisprimary FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
FROM pg_class c WHERE c.oid = $1`, oid).Scan(&name, &replident, &identIsPK)
	if err != nil {
		return fmt.Errorf("look up the replica identity of %s: %w", t, pgsetup.ErrLine(err))
	}
	if t.Mode == witnessv1.TableMode_TABLE_MODE_MUTABLE {
		if replident != "f" {
			return fmt.Errorf("%s is to be protected in mutable mode, where every UPDATE and DELETE must carry the whole old row, but %s has REPLICA IDENTITY %s: run ALTER TABLE %s REPLICA IDENTITY FULL; (or protect it append-only)", t, name, replidentName(replident), name)
		}
		return nil
	}
	switch {
	case replident == "f":
		// FULL: every UPDATE and DELETE carries the whole old row.
	case !hasPK:
		return fmt.Errorf("%s has no primary key, so its rows cannot be told apart in UPDATE and DELETE: add one (ALTER TABLE %s ADD PRIMARY KEY (...)) or run ALTER TABLE %s REPLICA IDENTITY FULL;", t, name, name)
	case replident == "d":
		// DEFAULT with a primary key: UPDATE and DELETE carry the key.
	case replident == "i" && identIsPK != nil && *identIsPK:
	default:
		return fmt.Errorf("%s has REPLICA IDENTITY %s, which does not carry its primary key in UPDATE and DELETE: run ALTER TABLE %s REPLICA IDENTITY DEFAULT; (or FULL)", t, replidentName(replident), name)
	}
	return nil
}

func replidentName(r string) string {
	switch r {
	case "d":
		return "DEFAULT"
	case "n":
		return "NOTHING"
	case "f":
		return "FULL"
	case "i":
		return "USING INDEX"
	}
	return r
}

// KeyColumns returns the primary-key columns of the relation with OID oid,
// in key order; none when it has no primary key.
func (db *DB) KeyColumns(ctx context.Context, oid uint32) ([]string, error) {
	var cols []string
	if err := db.Pool.QueryRow(ctx, keyColumnsSQL, oid).Scan(&cols); err != nil {
		return nil, err
	}
	return cols, nil
}

// EnsurePublication creates the publication if it is missing, with no
// tables, and checks its settings otherwise.
func (db *DB) EnsurePublication(ctx context.Context, name string) (created bool, err error) {
	return pgsetup.EnsurePublication(ctx, db.Pool, name)
}

// PublicationTables lists the tables of publication name.
func (db *DB) PublicationTables(ctx context.Context, name string) (map[string]bool, error) {
	return pgsetup.PublicationTables(ctx, db.Pool, name)
}

// AddToPublication adds t to publication name unless it is a member.
func (db *DB) AddToPublication(ctx context.Context, name string, t Table) error {
	have, err := db.PublicationTables(ctx, name)
	if err != nil || have[t.String()] {
		return err
	}
	if _, err := db.Pool.Exec(ctx, "ALTER PUBLICATION "+pgsetup.QuoteIdent(name)+" ADD TABLE "+pgsetup.QuoteTable(t.Schema, t.Name)); err != nil {
		return fmt.Errorf("add %s to publication %s: %w: the role must own the table", t, name, pgsetup.ErrLine(err))
	}
	return nil
}

// DropFromPublication removes t from publication name and writes payload
// as a transactional logical decoding message in the same transaction, so
// the stream sees the message exactly where the table stops being
// published. It returns the position of the message.
func (db *DB) DropFromPublication(ctx context.Context, name string, t config.Table, prefix string, payload []byte) (pglogrepl.LSN, error) {
	var lsn pglogrepl.LSN
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		have, err := pgsetup.PublicationTables(ctx, tx, name)
		if err != nil {
			return err
		}
		if have[t.String()] {
			if _, err := tx.Exec(ctx, "ALTER PUBLICATION "+pgsetup.QuoteIdent(name)+" DROP TABLE "+pgsetup.QuoteTable(t.Schema, t.Name)); err != nil {
				return fmt.Errorf("remove %s from publication %s: %w: the role must own the table", t, name, pgsetup.ErrLine(err))
			}
		}
		lsn, err = emit(ctx, tx, true, prefix, payload)
		return err
	})
	return lsn, err
}

// EmitMessage writes a logical decoding message: transactional ones are
// decoded at their transaction's commit, the others at once.
func (db *DB) EmitMessage(ctx context.Context, transactional bool, prefix string, payload []byte) (pglogrepl.LSN, error) {
	return emit(ctx, db.Pool, transactional, prefix, payload)
}

func emit(ctx context.Context, q interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}, transactional bool, prefix string, payload []byte) (pglogrepl.LSN, error) {
	var s string
	if err := q.QueryRow(ctx, `SELECT pg_logical_emit_message($1, $2, $3::text)::text`, transactional, prefix, string(payload)).Scan(&s); err != nil {
		return 0, fmt.Errorf("write a logical decoding message: %w: the role needs EXECUTE on pg_logical_emit_message (see witnz init)", pgsetup.ErrLine(err))
	}
	return pglogrepl.ParseLSN(s)
}

// Slot reads the state of replication slot name.
func (db *DB) Slot(ctx context.Context, name string) (pgsetup.Slot, error) {
	return pgsetup.ReadSlot(ctx, db.Pool, name)
}

// EnsureSlot creates the slot if it is missing (reporting created) and
// checks it otherwise. It never drops a slot.
func (db *DB) EnsureSlot(ctx context.Context, name string) (pgsetup.Slot, bool, error) {
	return pgsetup.EnsureSlot(ctx, db.Pool, db.DSN, db.Database, name)
}

// ServerLSN is pg_current_wal_lsn().
func (db *DB) ServerLSN(ctx context.Context) (pglogrepl.LSN, error) {
	return db.lsn(ctx, `SELECT pg_current_wal_lsn()::text`)
}

// InsertLSN is pg_current_wal_insert_lsn(): every WAL record inserted so
// far, written out or not, lies before it.
func (db *DB) InsertLSN(ctx context.Context) (pglogrepl.LSN, error) {
	return db.lsn(ctx, `SELECT pg_current_wal_insert_lsn()::text`)
}

func (db *DB) lsn(ctx context.Context, query string) (pglogrepl.LSN, error) {
	var s string
	if err := db.Pool.QueryRow(ctx, query).Scan(&s); err != nil {
		return 0, err
	}
	return pglogrepl.ParseLSN(s)
}
