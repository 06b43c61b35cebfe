package verify

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// snapshot is a REPEATABLE READ, READ ONLY transaction with what the
// verifier needs to know about it: the WAL position read right after the
// snapshot was taken, and the snapshot's transaction bounds.
type snapshot struct {
	conn *pgxpool.Conn
	tx   pgx.Tx
	// lsn is X, pg_current_wal_insert_lsn() read in the statement that took
	// the snapshot: every transaction the snapshot sees has commit_lsn < X.
	lsn uint64
	// before is pg_current_wal_insert_lsn() read before the transaction
	// began: a transaction whose xid was assigned after the snapshot
	// commits at or after it.
	before uint64
	// xmin, xmax and xip are pg_current_snapshot()'s (64-bit xids).
	xmin, xmax uint64
	xip        map[uint64]bool
}

// openSnapshot begins the transaction on a connection of its own and reads
// its position. The caller must close it.
func openSnapshot(ctx context.Context, pool *pgxpool.Pool) (*snapshot, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: connect: %s", ErrDatabase, oneLine(err))
	}
	s := &snapshot{conn: conn}
	var before string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&before); err != nil {
		conn.Release()
		return nil, fmt.Errorf("%w: read the WAL position: %s", ErrDatabase, oneLine(err))
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		conn.Release()
		return nil, fmt.Errorf("%w: begin a REPEATABLE READ transaction: %s", ErrDatabase, oneLine(err))
	}
	s.tx = tx
	// The first statement of a REPEATABLE READ transaction takes its
	// snapshot before it runs, so the position is read after the snapshot.
	var snap, at string
	if err := tx.QueryRow(ctx, "SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text").Scan(&snap, &at); err != nil {
		s.close()
		return nil, fmt.Errorf("%w: take the snapshot: %s", ErrDatabase, oneLine(err))
	}
	if s.before, err = parseLSN(before); err == nil {
		s.lsn, err = parseLSN(at)
	}
	if err == nil {
		s.xmin, s.xmax, s.xip, err = parseSnapshot(snap)
	}
	if err != nil {
		s.close()
		return nil, fmt.Errorf("%w: %v", ErrDatabase, err)
	}
	return s, nil
}

// close ends the transaction and returns the connection to the pool.
func (s *snapshot) close() {
	// A read-only transaction has nothing to commit; rollback cannot lose
	// anything and also works after a failed statement.
	_ = s.tx.Rollback(context.Background())
	s.conn.Release()
}

// visible reports whether the snapshot sees the transaction of an entry
// with this (32-bit) xid and commit position. Xid 0 marks the entries of a
// protection epoch's baseline, which precede every later snapshot.
//
// Xids are compared modulo 2^32 as PostgreSQL compares them: an xid at or
// after xmax in that order was either assigned after the snapshot (it then
// commits at or after s.before) or is more than 2^31 transactions old (it
// committed long before).
func (s *snapshot) visible(xid uint32, commitLSN uint64) bool {
	if xid == 0 {
		return true
	}
	back := uint32(s.xmax) - xid // how far before xmax, modulo 2^32
	if back == 0 || back > 1<<31 {
		return commitLSN < s.before
	}
	if uint64(back) > s.xmax {
		return true
	}
	x := s.xmax - uint64(back)
	return x < s.xmin || !s.xip[x]
}

// parseSnapshot reads pg_snapshot text, "xmin:xmax:xip,xip,...".
func parseSnapshot(v string) (xmin, xmax uint64, xip map[uint64]bool, err error) {
	parts := strings.Split(v, ":")
	if len(parts) != 3 {
		return 0, 0, nil, fmt.Errorf("unexpected pg_current_snapshot() value %q", v)
	}
	if xmin, err = strconv.ParseUint(parts[0], 10, 64); err != nil {
		return 0, 0, nil, fmt.Errorf("pg_current_snapshot() xmin %q: %w", parts[0], err)
	}
	if xmax, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
		return 0, 0, nil, fmt.Errorf("pg_current_snapshot() xmax %q: %w", parts[1], err)
	}
	xip = map[uint64]bool{}
	if parts[2] != "" {
		for _, f := range strings.Split(parts[2], ",") {
			x, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				return 0, 0, nil, fmt.Errorf("pg_current_snapshot() xip %q: %w", f, err)
			}
			xip[x] = true
		}
	}
	return xmin, xmax, xip, nil
}

// parseLSN reads "X/Y" (hexadecimal halves).
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if ok {
		h, err1 := strconv.ParseUint(hi, 16, 32)
		l, err2 := strconv.ParseUint(lo, 16, 32)
		if err1 == nil && err2 == nil {
			return h<<32 | l, nil
		}
	}
	return 0, fmt.Errorf("%q is not a WAL position X/Y", s)
}

// FormatLSN writes a WAL position as PostgreSQL does, "X/Y".
func FormatLSN(lsn uint64) string {
	return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn))
}

// oneLine keeps an error message on a single line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
