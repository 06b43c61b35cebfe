// Package pgsource is cdc-ingest's side of PostgreSQL: the start-up checks,
// the publication and the replication slot, catalog look-ups, and the
// logical replication connection that streams pgoutput in binary mode.
package pgsource

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/witnz/witnz/services/cdc-ingest/internal/config"
)

// MinServerVersion is the oldest PostgreSQL that streams pgoutput in binary
// mode (server_version_num).
const MinServerVersion = 140000

const connectTimeout = 10 * time.Second

// DB is the normal (non-replication) connection pool cdc-ingest uses for
// checks, set-up, catalog look-ups and status.
type DB struct {
	pool *pgxpool.Pool
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
	cfg.MaxConns = 3
	cfg.ConnConfig.ConnectTimeout = connectTimeout
	cc := cfg.ConnConfig
	db := &DB{Addr: net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port))), Database: cc.Database}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, connectError(db.Addr, err)
	}
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := pool.Ping(cctx); err != nil {
		pool.Close()
		return nil, connectError(db.Addr, err)
	}
	db.pool = pool
	return db, nil
}

// connectError turns a connection failure into one line naming the server
// and the fix.
func connectError(addr string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return fmt.Errorf("PostgreSQL at %s refused the connection: %s (SQLSTATE %s): check the user, password and database in --pg-dsn", addr, pgErr.Message, pgErr.Code)
	}
	cause := err
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		cause = opErr.Err
	}
	return fmt.Errorf("cannot reach PostgreSQL at %s: %s: is PostgreSQL running? check --pg-dsn", addr, oneLine(cause.Error()))
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// Close closes the pool.
func (db *DB) Close() { db.pool.Close() }

// Table is a protected table as found in the catalog.
type Table struct {
	config.Table
	OID uint32
	// KeyColumns are the primary-key columns in key order; empty when the
	// table has no primary key and the whole row is its key.
	KeyColumns []string
}

// Preflight runs the start-up checks: server version, wal_level, the role's
// REPLICATION attribute, and that every protected table exists and can be
// identified row by row. Each error is one line with the fix.
func (db *DB) Preflight(ctx context.Context, tables []config.Table) ([]Table, error) {
	var versionNum int
	var version, walLevel string
	err := db.pool.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, current_setting('server_version'), current_setting('wal_level')`).
		Scan(&versionNum, &version, &walLevel)
	if err != nil {
		return nil, fmt.Errorf("read settings of PostgreSQL at %s: %w", db.Addr, err)
	}
	if versionNum < MinServerVersion {
		return nil, fmt.Errorf("PostgreSQL %s at %s is too old: witnz needs PostgreSQL 14 or later (binary logical replication); upgrade the server", version, db.Addr)
	}
	if walLevel != "logical" {
		return nil, fmt.Errorf("wal_level is %q on PostgreSQL at %s but must be \"logical\": run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (on Amazon RDS set rds.logical_replication = 1 in the parameter group and reboot)", walLevel, db.Addr)
	}

	var role string
	var super, repl bool
	err = db.pool.QueryRow(ctx, `SELECT rolname, rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user`).Scan(&role, &super, &repl)
	if err != nil {
		return nil, fmt.Errorf("read the attributes of the connecting role: %w", err)
	}
	if !super && !repl {
		return nil, fmt.Errorf("role %q lacks the REPLICATION attribute needed to stream changes: run ALTER ROLE %s REPLICATION; (on Amazon RDS: GRANT rds_replication TO %s;)", role, pgx.Identifier{role}.Sanitize(), pgx.Identifier{role}.Sanitize())
	}

	out := make([]Table, 0, len(tables))
	for _, t := range tables {
		pt, err := db.checkTable(ctx, t)
		if err != nil {
			return nil, err
		}
		out = append(out, pt)
	}
	return out, nil
}

// keyColumnsSQL lists the primary-key columns of relation $1 in key order.
// INCLUDE columns follow the key columns in indkey and are not part of the
// key: a DELETE's old key tuple sends them as NULL.
const keyColumnsSQL = `
SELECT coalesce(array_agg(a.attname::text ORDER BY k.ord), '{}')
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = $1 AND i.indisprimary AND k.ord <= i.indnkeyatts`

func (db *DB) checkTable(ctx context.Context, t config.Table) (Table, error) {
	out := Table{Table: t}
	var relkind, replident string
	var replidentIsPK *bool
	err := db.pool.QueryRow(ctx, `
SELECT c.oid, c.relkind::text, c.relreplident::text,
       (SELECT i.indisprimary FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2`, t.Schema, t.Name).Scan(&out.OID, &relkind, &replident, &replidentIsPK)
	if errors.Is(err, pgx.ErrNoRows) {
		return out, fmt.Errorf("table %s named in --protect does not exist in database %q at %s: create it, or fix --protect", t, db.Database, db.Addr)
	}
	if err != nil {
		return out, fmt.Errorf("look up table %s: %w", t, err)
	}
	if relkind != "r" {
		return out, fmt.Errorf("%s named in --protect is not a plain table (relkind %q): protect ordinary tables only (partitioned tables are not supported yet)", t, relkind)
	}
	if out.KeyColumns, err = db.KeyColumns(ctx, out.OID); err != nil {
		return out, fmt.Errorf("look up the primary key of %s: %w", t, err)
	}
	ident := quoteTable(t.Schema, t.Name)
	hasPK := len(out.KeyColumns) > 0
	switch {
	case replident == "f":
		// FULL: every UPDATE and DELETE carries the whole old row.
	case !hasPK:
		return out, fmt.Errorf("table %s has no primary key, so its rows cannot be told apart in UPDATE and DELETE: add one (ALTER TABLE %s ADD PRIMARY KEY (...)) or run ALTER TABLE %s REPLICA IDENTITY FULL;", t, ident, ident)
	case replident == "d":
		// DEFAULT with a primary key: UPDATE and DELETE carry the key.
	case replident == "i" && replidentIsPK != nil && *replidentIsPK:
	default:
		return out, fmt.Errorf("table %s has a replica identity (%s) that does not carry its primary key in UPDATE and DELETE: run ALTER TABLE %s REPLICA IDENTITY DEFAULT; (or FULL)", t, replidentName(replident), ident)
	}
	return out, nil
}

func replidentName(r string) string {
	switch r {
	case "n":
		return "NOTHING"
	case "i":
		return "USING INDEX of a non-primary-key index"
	}
	return r
}

// KeyColumns returns the primary-key columns of the relation with OID oid,
// in key order; none when it has no primary key.
func (db *DB) KeyColumns(ctx context.Context, oid uint32) ([]string, error) {
	var cols []string
	if err := db.pool.QueryRow(ctx, keyColumnsSQL, oid).Scan(&cols); err != nil {
		return nil, err
	}
	return cols, nil
}

func quoteTable(schema, table string) string {
	return pgx.Identifier{schema, table}.Sanitize()
}

// EnsurePublication creates the publication for the protected tables if it
// is missing, and adds protected tables it lacks. It never removes a table.
func (db *DB) EnsurePublication(ctx context.Context, name string, tables []Table) (created bool, added []string, err error) {
	pub := pgx.Identifier{name}.Sanitize()
	var allTables, ins, upd, del bool
	err = db.pool.QueryRow(ctx, `SELECT puballtables, pubinsert, pubupdate, pubdelete FROM pg_publication WHERE pubname = $1`, name).
		Scan(&allTables, &ins, &upd, &del)
	if errors.Is(err, pgx.ErrNoRows) {
		names := make([]string, len(tables))
		for i, t := range tables {
			names[i] = quoteTable(t.Schema, t.Name)
		}
		if _, err := db.pool.Exec(ctx, "CREATE PUBLICATION "+pub+" FOR TABLE "+strings.Join(names, ", ")); err != nil {
			return false, nil, fmt.Errorf("create publication %s: %w (the role must own the protected tables and may create objects in database %q)", name, pgErrLine(err), db.Database)
		}
		return true, nil, nil
	}
	if err != nil {
		return false, nil, fmt.Errorf("look up publication %s: %w", name, err)
	}
	if !ins || !upd || !del {
		return false, nil, fmt.Errorf("publication %s does not publish every INSERT, UPDATE and DELETE: run ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate'); or pick another --publication", name, pub)
	}
	if allTables {
		return false, nil, nil
	}
	rows, err := db.pool.Query(ctx, `SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1`, name)
	if err != nil {
		return false, nil, fmt.Errorf("list tables of publication %s: %w", name, err)
	}
	have := map[string]bool{}
	for rows.Next() {
		var s, t string
		if err := rows.Scan(&s, &t); err != nil {
			return false, nil, err
		}
		have[s+"."+t] = true
	}
	if err := rows.Err(); err != nil {
		return false, nil, fmt.Errorf("list tables of publication %s: %w", name, err)
	}
	for _, t := range tables {
		if have[t.String()] {
			continue
		}
		if _, err := db.pool.Exec(ctx, "ALTER PUBLICATION "+pub+" ADD TABLE "+quoteTable(t.Schema, t.Name)); err != nil {
			return false, added, fmt.Errorf("add %s to publication %s: %w (the role must own the table)", t, name, pgErrLine(err))
		}
		added = append(added, t.String())
	}
	return false, added, nil
}

// Slot is the state of a replication slot.
type Slot struct {
	Plugin            string
	Database          string
	ConfirmedFlushLSN pglogrepl.LSN
	// WALStatus is pg_replication_slots.wal_status ("reserved", "extended",
	// "unreserved" or "lost").
	WALStatus string
	Active    bool
}

// ErrNoSlot means the slot does not exist.
var ErrNoSlot = errors.New("replication slot does not exist")

// Slot reads the state of replication slot name.
func (db *DB) Slot(ctx context.Context, name string) (Slot, error) {
	var s Slot
	var plugin, database, walStatus *string
	var lsn *string
	err := db.pool.QueryRow(ctx, `SELECT plugin::text, database::text, confirmed_flush_lsn::text, wal_status, active FROM pg_replication_slots WHERE slot_name = $1`, name).
		Scan(&plugin, &database, &lsn, &walStatus, &s.Active)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, ErrNoSlot
	}
	if err != nil {
		return s, fmt.Errorf("read replication slot %s: %w", name, err)
	}
	s.Plugin, s.Database, s.WALStatus = deref(plugin), deref(database), deref(walStatus)
	if lsn != nil {
		if s.ConfirmedFlushLSN, err = pglogrepl.ParseLSN(*lsn); err != nil {
			return s, fmt.Errorf("slot %s: %w", name, err)
		}
	}
	return s, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// EnsureSlot creates the slot through repl if it is missing (reporting
// created) and checks it otherwise. It never drops a slot.
func (db *DB) EnsureSlot(ctx context.Context, repl *Repl, name string) (slot Slot, created bool, err error) {
	slot, err = db.Slot(ctx, name)
	if errors.Is(err, ErrNoSlot) {
		if created, err = repl.CreateSlot(ctx, name); err != nil {
			return slot, false, err
		}
		slot, err = db.Slot(ctx, name)
	}
	if err != nil {
		return slot, false, err
	}
	return slot, created, db.CheckSlot(name, slot)
}

// CheckSlot verifies that an existing slot can serve this deployment.
func (db *DB) CheckSlot(name string, s Slot) error {
	if s.Plugin != "pgoutput" {
		return fmt.Errorf("replication slot %s exists but uses plugin %q, not pgoutput: pick another --slot, or drop it with SELECT pg_drop_replication_slot('%s');", name, s.Plugin, name)
	}
	if s.Database != db.Database {
		return fmt.Errorf("replication slot %s belongs to database %q, not %q from --pg-dsn: pick another --slot", name, s.Database, db.Database)
	}
	if s.WALStatus == "lost" {
		return fmt.Errorf("replication slot %s was invalidated by PostgreSQL (wal_status lost: the WAL it needed was removed); changes since its last confirmed position cannot be read: investigate, then drop and recreate it with SELECT pg_drop_replication_slot('%s'); and verify every protected table", name, name)
	}
	return nil
}

// ServerLSN is pg_current_wal_lsn().
func (db *DB) ServerLSN(ctx context.Context) (pglogrepl.LSN, error) {
	var s string
	if err := db.pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&s); err != nil {
		return 0, err
	}
	return pglogrepl.ParseLSN(s)
}

// pgErrLine renders a PostgreSQL error as its message and SQLSTATE.
func pgErrLine(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return fmt.Errorf("%s (SQLSTATE %s)", pgErr.Message, pgErr.Code)
	}
	return err
}
