package pgsetup

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// MinServerVersion is the oldest PostgreSQL that streams pgoutput in binary
// mode and with logical decoding messages (server_version_num).
const MinServerVersion = 140000

// SlotsNeeded is how many replication slots a deployment uses at once: its
// persistent slot, and a temporary one while a table's baseline is taken.
const SlotsNeeded = 2

// Check is the outcome of one prerequisite check.
type Check struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Detail says what was found.
	Detail string `json:"detail"`
	// Fix is the exact remedy when the check failed.
	Fix string `json:"fix,omitempty"`
}

// Err is the check as a one-line error, or nil when it passed.
func (c Check) Err() error {
	if c.OK {
		return nil
	}
	return fmt.Errorf("%s: %s: %s", c.Name, c.Detail, c.Fix)
}

// FirstFailure returns the first failed check as an error, or nil.
func FirstFailure(checks []Check) error {
	for _, c := range checks {
		if err := c.Err(); err != nil {
			return err
		}
	}
	return nil
}

// Prerequisites runs every check against the server behind pool, as the
// connecting role. slot is the deployment's slot: when it exists already it
// does not need a free slot of its own. A query that fails is returned as
// an error; a prerequisite that is not met is a failed Check.
func Prerequisites(ctx context.Context, pool *pgxpool.Pool, slot string) ([]Check, error) {
	var s struct {
		versionNum                  int
		version, walLevel, role, db string
		super, repl, canCreate      bool
		canEmit                     bool
		maxSlots, usedSlots         int
		maxSenders, usedSenders     int
		slotExists                  bool
	}
	err := pool.QueryRow(ctx, `
SELECT current_setting('server_version_num')::int, current_setting('server_version'),
       current_setting('wal_level'), current_user::text, current_database()::text,
       r.rolsuper, r.rolreplication,
       has_database_privilege(current_database(), 'CREATE'),
       has_function_privilege('pg_logical_emit_message(boolean,text,text)', 'EXECUTE'),
       current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots)::int,
       current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_stat_replication)::int,
       EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)
FROM pg_roles r WHERE r.rolname = current_user`, slot).Scan(
		&s.versionNum, &s.version, &s.walLevel, &s.role, &s.db, &s.super, &s.repl, &s.canCreate, &s.canEmit,
		&s.maxSlots, &s.usedSlots, &s.maxSenders, &s.usedSenders, &s.slotExists)
	if err != nil {
		return nil, fmt.Errorf("read the server's settings: %w", ErrLine(err))
	}
	role := QuoteIdent(s.role)
	var out []Check
	add := func(name string, ok bool, detail, fix string) {
		c := Check{Name: name, OK: ok, Detail: detail}
		if !ok {
			c.Fix = fix
		}
		out = append(out, c)
	}
	add("server version", s.versionNum >= MinServerVersion,
		fmt.Sprintf("PostgreSQL %s", s.version),
		"witnz needs PostgreSQL 14 or later (binary logical replication and decoding messages): upgrade the server")
	add("wal_level", s.walLevel == "logical",
		fmt.Sprintf("wal_level is %q", s.walLevel),
		"run ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL (Amazon RDS/Aurora: set rds.logical_replication = 1 in the parameter group and reboot; Cloud SQL: set the flag cloudsql.logical_decoding = on)")
	add("replication privilege", s.super || s.repl,
		fmt.Sprintf("role %s: superuser %t, replication %t", s.role, s.super, s.repl),
		fmt.Sprintf("run ALTER ROLE %s REPLICATION; (Amazon RDS/Aurora: GRANT rds_replication TO %s; Cloud SQL: ALTER USER %s WITH REPLICATION;)", role, role, role))
	add("create privilege", s.canCreate,
		fmt.Sprintf("role %s may create publications in database %s: %t", s.role, s.db, s.canCreate),
		fmt.Sprintf("run GRANT CREATE ON DATABASE %s TO %s;", QuoteIdent(s.db), role))
	add("pg_logical_emit_message", s.canEmit,
		fmt.Sprintf("role %s may write heartbeats and control messages to the WAL: %t", s.role, s.canEmit),
		fmt.Sprintf("run GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO %s;", role))
	need := SlotsNeeded
	if s.slotExists {
		need--
	}
	add("free replication slots", s.maxSlots-s.usedSlots >= need,
		fmt.Sprintf("%d of max_replication_slots = %d in use, witnz needs %d more", s.usedSlots, s.maxSlots, need),
		fmt.Sprintf("run ALTER SYSTEM SET max_replication_slots = %d; and restart PostgreSQL (managed services: raise max_replication_slots in the parameter group), or drop unused slots", s.usedSlots+need+2))
	add("free WAL senders", s.maxSenders-s.usedSenders >= SlotsNeeded,
		fmt.Sprintf("%d of max_wal_senders = %d in use, witnz needs %d", s.usedSenders, s.maxSenders, SlotsNeeded),
		fmt.Sprintf("run ALTER SYSTEM SET max_wal_senders = %d; and restart PostgreSQL (managed services: raise max_wal_senders in the parameter group)", s.usedSenders+SlotsNeeded+2))
	return out, nil
}

// Publication settings witnz needs.
const publicationOptions = "publish = 'insert, update, delete, truncate', publish_via_partition_root = true"

// EnsurePublication creates the deployment's publication, with no tables,
// if it is missing (created reports that), and otherwise checks that it
// was made with the settings witnz needs. It never changes or drops an
// existing publication.
func EnsurePublication(ctx context.Context, pool *pgxpool.Pool, name string) (created bool, err error) {
	pub := QuoteIdent(name)
	var allTables, ins, upd, del, trunc, viaRoot bool
	err = pool.QueryRow(ctx, `SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot FROM pg_publication WHERE pubname = $1`, name).
		Scan(&allTables, &ins, &upd, &del, &trunc, &viaRoot)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, err := pool.Exec(ctx, "CREATE PUBLICATION "+pub+" WITH ("+publicationOptions+")"); err != nil {
			return false, fmt.Errorf("create publication %s: %w: the role needs CREATE on the database (GRANT CREATE ON DATABASE ...)", name, ErrLine(err))
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up publication %s: %w", name, ErrLine(err))
	}
	if allTables {
		return false, fmt.Errorf("publication %s exists and is FOR ALL TABLES, so it is not one witnz created: pick another --publication (witnz creates its own)", name)
	}
	if !ins || !upd || !del || !trunc || !viaRoot {
		return false, fmt.Errorf("publication %s exists with other settings (insert %t, update %t, delete %t, truncate %t, publish_via_partition_root %t): run ALTER PUBLICATION %s SET (%s); or pick another --publication", name, ins, upd, del, trunc, viaRoot, pub, publicationOptions)
	}
	return false, nil
}

// PublicationTables lists the tables of publication name as schema.table.
func PublicationTables(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, name string) (map[string]bool, error) {
	rows, err := q.Query(ctx, `
SELECT n.nspname::text, c.relname::text
FROM pg_publication p
JOIN pg_publication_rel pr ON pr.prpubid = p.oid
JOIN pg_class c ON c.oid = pr.prrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE p.pubname = $1`, name)
	if err != nil {
		return nil, fmt.Errorf("list the tables of publication %s: %w", name, ErrLine(err))
	}
	have := map[string]bool{}
	for rows.Next() {
		var s, t string
		if err := rows.Scan(&s, &t); err != nil {
			return nil, err
		}
		have[s+"."+t] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list the tables of publication %s: %w", name, ErrLine(err))
	}
	return have, nil
}
