package pgsetup

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Slot is the state of a replication slot.
type Slot struct {
	Plugin            string
	Database          string
	SlotType          string
	Temporary         bool
	TwoPhase          bool
	ConfirmedFlushLSN pglogrepl.LSN
	// WALStatus is pg_replication_slots.wal_status ("reserved",
	// "extended", "unreserved" or "lost").
	WALStatus string
	Active    bool
}

// ErrNoSlot means the slot does not exist.
var ErrNoSlot = errors.New("replication slot does not exist")

// ReadSlot reads the state of replication slot name.
func ReadSlot(ctx context.Context, pool *pgxpool.Pool, name string) (Slot, error) {
	var s Slot
	var plugin, database, walStatus, lsn *string
	err := pool.QueryRow(ctx, `
SELECT plugin::text, slot_type, database::text, temporary, two_phase,
       confirmed_flush_lsn::text, wal_status, active
FROM pg_replication_slots WHERE slot_name = $1`, name).
		Scan(&plugin, &s.SlotType, &database, &s.Temporary, &s.TwoPhase, &lsn, &walStatus, &s.Active)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, ErrNoSlot
	}
	if err != nil {
		return s, fmt.Errorf("read replication slot %s: %w", name, ErrLine(err))
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

// CheckSlot verifies that an existing slot can serve a deployment on
// database: a persistent pgoutput slot of that database, not two-phase,
// not invalidated.
func CheckSlot(name, database string, s Slot) error {
	switch {
	case s.SlotType != "logical" || s.Plugin != "pgoutput":
		return fmt.Errorf("replication slot %s exists but is a %s slot with plugin %q, not a logical pgoutput slot: pick another --slot, or drop it with SELECT pg_drop_replication_slot('%s'); if nothing uses it", name, s.SlotType, s.Plugin, name)
	case s.Database != database:
		return fmt.Errorf("replication slot %s belongs to database %q, not %q from --pg-dsn: pick another --slot", name, s.Database, database)
	case s.Temporary:
		return fmt.Errorf("replication slot %s is a temporary slot of another session: pick another --slot", name)
	case s.TwoPhase:
		return fmt.Errorf("replication slot %s was created with two_phase enabled, so it is not one witnz created: pick another --slot", name)
	case s.WALStatus == "lost":
		return fmt.Errorf("replication slot %s was invalidated by PostgreSQL (wal_status lost: the WAL it needed was removed); changes since its last confirmed position cannot be read: investigate, then drop and recreate it with SELECT pg_drop_replication_slot('%s'); and re-protect every table (witnz protect) to take new baselines", name, name)
	}
	return nil
}

// CreateSlot creates the persistent logical slot name with plugin pgoutput
// through the replication connection conn. It reports false without error
// when the slot already exists.
func CreateSlot(ctx context.Context, conn *pgconn.PgConn, name string) (bool, error) {
	_, err := pglogrepl.CreateReplicationSlot(ctx, conn, name, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" { // duplicate_object
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("create replication slot %s: %w: check that max_replication_slots leaves a slot free", name, ErrLine(err))
	}
	return true, nil
}

// EnsureSlot creates the persistent slot if it is missing (created reports
// that) and checks it otherwise. It never drops a slot.
func EnsureSlot(ctx context.Context, pool *pgxpool.Pool, dsn, database, name string) (slot Slot, created bool, err error) {
	slot, err = ReadSlot(ctx, pool, name)
	if errors.Is(err, ErrNoSlot) {
		conn, cerr := ConnectReplication(ctx, dsn)
		if cerr != nil {
			return slot, false, cerr
		}
		created, err = CreateSlot(ctx, conn, name)
		conn.Close(context.Background())
		if err != nil {
			return slot, false, err
		}
		slot, err = ReadSlot(ctx, pool, name)
	}
	if err != nil {
		return slot, false, err
	}
	return slot, created, CheckSlot(name, database, slot)
}

// Snapshot is a temporary slot's exported snapshot. Every transaction whose
// commit record starts before ConsistentPoint is visible in it; the
// persistent slot streams every transaction at or after it. The snapshot
// stays importable (SET TRANSACTION SNAPSHOT) until Close.
type Snapshot struct {
	Name            string
	ConsistentPoint pglogrepl.LSN
	conn            *pgconn.PgConn
}

// ExportSnapshot creates a temporary logical slot that exports its
// snapshot, on a replication connection of its own. Creating it waits for
// transactions running at the time to end.
func ExportSnapshot(ctx context.Context, dsn, slotName string) (*Snapshot, error) {
	conn, err := ConnectReplication(ctx, dsn)
	if err != nil {
		return nil, err
	}
	res, err := pglogrepl.CreateReplicationSlot(ctx, conn, slotName, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Temporary: true, Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("create temporary slot %s to take a consistent snapshot: %w: check that max_replication_slots and max_wal_senders leave one free", slotName, ErrLine(err))
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("temporary slot %s: consistent point %q: %w", slotName, res.ConsistentPoint, err)
	}
	return &Snapshot{Name: res.SnapshotName, ConsistentPoint: lsn, conn: conn}, nil
}

// Close ends the snapshot's connection, which drops the temporary slot.
func (s *Snapshot) Close() error { return s.conn.Close(context.Background()) }
