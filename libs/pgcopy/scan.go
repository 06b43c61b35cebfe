package pgcopy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Scan runs query, a `COPY ... TO STDOUT (FORMAT binary)` statement, on
// conn and calls fn with every row's encoding (valid only during the call).
// It returns the number of rows fn accepted.
//
// pgconn.CopyTo writes into a Writer, so fn runs in the goroutine that
// reads the connection, on the received message itself: rows are neither
// queued nor copied. (A Reader fed through an io.Pipe costs a copy and a
// goroutine switch per chunk; BenchmarkScan measures it 25-35% slower.)
//
// Binary send functions of text types convert to the client encoding, so
// Scan refuses a connection whose client_encoding is not UTF8 (what pgx
// and cdc-ingest use); other session settings do not change binary values.
//
// When fn returns an error, Scan returns it unchanged; pgconn then closes
// the connection to abandon the COPY, as it does on a malformed stream or
// a cancelled ctx.
func Scan(ctx context.Context, conn *pgconn.PgConn, query string, fn func(row []byte) error) (rows int64, err error) {
	if enc := conn.ParameterStatus("client_encoding"); enc != "UTF8" {
		return 0, fmt.Errorf("pgcopy: connection has client_encoding %q: binary text values depend on it, set it to UTF8", enc)
	}
	w := NewWriter(fn)
	if _, err := conn.CopyTo(ctx, w, query); err != nil {
		return w.Rows(), err
	}
	if w.state == stateHeader && len(w.pending) == 0 {
		return 0, fmt.Errorf("pgcopy: the statement sent no COPY data; want COPY ... TO STDOUT (FORMAT binary): %w", io.ErrUnexpectedEOF)
	}
	return w.Rows(), w.Close()
}

// Querier runs a catalog query: *pgx.Conn, *pgxpool.Pool and pgx.Tx are
// Queriers.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Table describes how a protected table is scanned.
type Table struct {
	Schema, Name string
	// Columns are the columns of the row encoding: every column in attnum
	// order except dropped and generated ones.
	Columns []string
	// Key are the positions in Columns of the primary-key columns, in key
	// order (pg_index.indkey, without INCLUDE columns); nil when the table
	// has no primary key and the whole row is its key.
	Key []int
	// Partitioned is set for a partitioned table: its rows are those of
	// its partitions, which witnz publishes through it.
	Partitioned bool
}

// ErrNoTable means the table does not exist (or is not visible to the
// role).
var ErrNoTable = errors.New("pgcopy: no such table")

const describeSQL = `
SELECT c.relkind::text,
       coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum)
                 FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), '{}'),
       coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
                 FROM pg_index i
                 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                 WHERE i.indrelid = c.oid AND i.indisprimary AND k.ord <= i.indnkeyatts), '{}')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2`

// Describe reads from the catalog the columns and primary key of the plain
// or partitioned table schema.table (names as stored, not quoted).
func Describe(ctx context.Context, q Querier, schema, table string) (*Table, error) {
	t := &Table{Schema: schema, Name: table}
	name := pgx.Identifier{schema, table}.Sanitize()
	var relkind string
	var keyNames []string
	err := q.QueryRow(ctx, describeSQL, schema, table).Scan(&relkind, &t.Columns, &keyNames)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrNoTable, name)
	}
	if err != nil {
		return nil, fmt.Errorf("pgcopy: describe %s: %w", name, err)
	}
	switch relkind {
	case "r":
	case "p":
		t.Partitioned = true
	default:
		return nil, fmt.Errorf("pgcopy: %s is not a table (relkind %q)", name, relkind)
	}
	for _, k := range keyNames {
		pos := -1
		for i, c := range t.Columns {
			if c == k {
				pos = i
				break
			}
		}
		if pos < 0 {
			// Only a generated column can be in the key yet not in the row.
			return nil, fmt.Errorf("pgcopy: primary-key column %q of %s is generated, so the row encoding leaves it out; it cannot identify rows", k, name)
		}
		t.Key = append(t.Key, pos)
	}
	return t, nil
}

// CopyQuery is the binary COPY of the table's row encodings:
// `COPY (SELECT <Columns> FROM ONLY schema.table) TO STDOUT (FORMAT binary)`
// with every identifier quoted. ONLY keeps rows of inheritance children
// out: their changes are published under their own name. A partitioned
// table is read without ONLY: its partitions' rows are its rows, each in
// the partitioned table's column order, as pgoutput publishes them through
// it.
func (t *Table) CopyQuery() string {
	var b strings.Builder
	b.WriteString("COPY (SELECT ")
	for i, c := range t.Columns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(pgx.Identifier{c}.Sanitize())
	}
	if t.Partitioned {
		b.WriteString(" FROM ")
	} else {
		b.WriteString(" FROM ONLY ")
	}
	b.WriteString(pgx.Identifier{t.Schema, t.Name}.Sanitize())
	b.WriteString(") TO STDOUT (FORMAT binary)")
	return b.String()
}

// CopyQuery returns Describe(...).CopyQuery().
func CopyQuery(ctx context.Context, q Querier, schema, table string) (string, error) {
	t, err := Describe(ctx, q, schema, table)
	if err != nil {
		return "", err
	}
	return t.CopyQuery(), nil
}

// KeyColumns returns Describe(...).Key: the positions of the primary-key
// columns in CopyQuery's rows, in key order, for AppendKey; nil for a table
// without a primary key.
func KeyColumns(ctx context.Context, q Querier, schema, table string) ([]int, error) {
	t, err := Describe(ctx, q, schema, table)
	if err != nil {
		return nil, err
	}
	return t.Key, nil
}
