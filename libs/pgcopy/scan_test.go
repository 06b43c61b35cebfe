package pgcopy_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/witnz/witnz/libs/pgcopy"
	"github.com/witnz/witnz/libs/testenv"
)

var update = flag.Bool("update", false, "rewrite testdata/types.copy and the fuzz seeds from PostgreSQL")

func mustReadFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustConnect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(t.Context(), sql); err != nil {
		t.Fatalf("%v\n%s", err, sql)
	}
}

// scanAll runs Scan and copies the rows.
func scanAll(t *testing.T, conn *pgx.Conn, query string) [][]byte {
	t.Helper()
	var rows [][]byte
	n, err := pgcopy.Scan(t.Context(), conn.PgConn(), query, func(row []byte) error {
		rows = append(rows, bytes.Clone(row))
		return nil
	})
	if err != nil {
		t.Fatalf("Scan(%s): %v", query, err)
	}
	if n != int64(len(rows)) {
		t.Fatalf("Scan returned %d rows but called fn %d times", n, len(rows))
	}
	return rows
}

// copyRaw returns the raw binary COPY stream of query.
func copyRaw(t *testing.T, conn *pgx.Conn, query string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := conn.PgConn().CopyTo(t.Context(), &buf, query); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// typesRows is the number of rows in testdata/types.copy.
const typesRows = 4

const typesTable = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE types (
	id int PRIMARY KEY, i2 smallint, i8 bigint, n numeric, f4 real, f8 float8, t text, b bytea,
	ok bool, d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval, u uuid,
	j json, jb jsonb, ip inet, arr int[], tarr text[], m mood
);
INSERT INTO types VALUES
 (1, -32768, 9223372036854775807, 'NaN', '-0', 'Infinity', 'héllo	wörld\n', '\x00ff', true, '2024-02-29', '23:59:59.999999',
  '12:00+05:30', '2000-01-01 00:00:00', '2024-02-29 12:00:00+00', '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"b": 1, "a": [1, 2]}', '{"b": 1, "a": [1, 2]}', '192.168.0.1/24', '{{1,NULL},{3,4}}', '{"a\"b", NULL, "日本"}', 'happy'),
 (2, NULL, NULL, '123456789012345678901234567890.123456789', 'NaN', '-Infinity', '', '', false, 'infinity', '00:00', '00:00-12', '-infinity',
  'infinity', '-1 days', NULL, 'null', '[]', '::1', '{}', '{}', 'sad'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 0, 0, '1e-1000', 1.5, 2.5, repeat('x', 3000), decode(repeat('ab', 2100), 'hex'), true, '0001-01-01 BC', '12:34', '12:34+14', 'epoch', 'epoch',
  '0', '00000000-0000-0000-0000-000000000000', '{}', '{}', '10.0.0.0/8', '{1}', '{""}', 'ok');`

// TestWithPostgreSQL runs the parts that need a server against one
// PostgreSQL.
func TestWithPostgreSQL(t *testing.T) {
	pg := testenv.PostgreSQL(t)
	pg.CreateDatabase(t, "app")
	conn := mustConnect(t, pg.DSN("app"))

	t.Run("Describe", func(t *testing.T) { testDescribe(t, conn) })
	t.Run("Scan", func(t *testing.T) { testScan(t, conn) })
	t.Run("ScanErrors", func(t *testing.T) { testScanErrors(t, pg.DSN("app")) })
	t.Run("SessionSettings", func(t *testing.T) { testSessionSettings(t, pg.DSN("app")) })
}

func testDescribe(t *testing.T, conn *pgx.Conn) {
	mustExec(t, conn, `
CREATE SCHEMA "Odd ""Schema""";
CREATE TABLE "Odd ""Schema"""."Tab.le" (
	gone int,
	"select" text,
	"with space" int,
	"ünï" int,
	twice int GENERATED ALWAYS AS ("with space" * 2) STORED,
	"Mixed""Case" int,
	PRIMARY KEY ("Mixed""Case", "select") INCLUDE ("ünï")
);
ALTER TABLE "Odd ""Schema"""."Tab.le" DROP COLUMN gone;
CREATE TABLE public.nokey (a int, b text);
CREATE TABLE public.nocols ();
CREATE VIEW public.v AS SELECT 1 AS x;
CREATE TABLE public.genkey (a int, g int GENERATED ALWAYS AS (a + 1) STORED PRIMARY KEY);`)

	got, err := pgcopy.Describe(t.Context(), conn, `Odd "Schema"`, "Tab.le")
	if err != nil {
		t.Fatal(err)
	}
	want := &pgcopy.Table{
		Schema:  `Odd "Schema"`,
		Name:    "Tab.le",
		Columns: []string{"select", "with space", "ünï", `Mixed"Case`},
		Key:     []int{3, 0},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Describe (-want +got):\n%s", diff)
	}
	const wantQuery = `COPY (SELECT "select", "with space", "ünï", "Mixed""Case" FROM ONLY "Odd ""Schema"""."Tab.le") TO STDOUT (FORMAT binary)`
	if q := got.CopyQuery(); q != wantQuery {
		t.Errorf("CopyQuery = %s\nwant        %s", q, wantQuery)
	}
	if q, err := pgcopy.CopyQuery(t.Context(), conn, `Odd "Schema"`, "Tab.le"); err != nil || q != wantQuery {
		t.Errorf("CopyQuery() = %s, %v", q, err)
	}
	if k, err := pgcopy.KeyColumns(t.Context(), conn, `Odd "Schema"`, "Tab.le"); err != nil || !cmp.Equal(k, []int{3, 0}) {
		t.Errorf("KeyColumns() = %v, %v", k, err)
	}
	// The query runs, and the key comes out of a row in key order.
	mustExec(t, conn, `INSERT INTO "Odd ""Schema"""."Tab.le" ("select", "with space", "ünï", "Mixed""Case") VALUES ('k', 2, 3, 4)`)
	rows := scanAll(t, conn, wantQuery)
	key, err := pgcopy.AppendKey(nil, rows[0], got.Key)
	if err != nil || !bytes.Equal(key, tuple([]byte{0, 0, 0, 4}, []byte("k"))) {
		t.Errorf("key of the scanned row = %x, %v", key, err)
	}

	nokey, err := pgcopy.Describe(t.Context(), conn, "public", "nokey")
	if err != nil || nokey.Key != nil || !cmp.Equal(nokey.Columns, []string{"a", "b"}) {
		t.Errorf("Describe(nokey) = %+v, %v", nokey, err)
	}
	nocols, err := pgcopy.Describe(t.Context(), conn, "public", "nocols")
	if err != nil || len(nocols.Columns) != 0 {
		t.Fatalf("Describe(nocols) = %+v, %v", nocols, err)
	}
	mustExec(t, conn, `INSERT INTO public.nocols DEFAULT VALUES; INSERT INTO public.nocols DEFAULT VALUES`)
	if rows := scanAll(t, conn, nocols.CopyQuery()); diffRows([][]byte{{0, 0}, {0, 0}}, rows) != "" {
		t.Errorf("rows of a table without columns = %x", rows)
	}

	for _, tc := range []struct {
		schema, table string
		want          string
	}{
		{"public", "missing", "no such table"},
		{"Public", "nokey", "no such table"},
		{"public", "v", "not a table"},
		{"public", "genkey", `primary-key column "g" of "public"."genkey" is generated`},
	} {
		_, err := pgcopy.Describe(t.Context(), conn, tc.schema, tc.table)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("Describe(%s.%s) = %v, want an error containing %q", tc.schema, tc.table, err, tc.want)
		}
	}
	if _, err := pgcopy.Describe(t.Context(), conn, "public", "missing"); !errors.Is(err, pgcopy.ErrNoTable) {
		t.Errorf("Describe of a missing table = %v, want ErrNoTable", err)
	}
}

func testScan(t *testing.T, conn *pgx.Conn) {
	mustExec(t, conn, typesTable+`
CREATE TABLE child (extra int) INHERITS (types);
INSERT INTO child (id, extra) VALUES (99, 1);`)
	tbl, err := pgcopy.Describe(t.Context(), conn, "public", "types")
	if err != nil {
		t.Fatal(err)
	}
	query := tbl.CopyQuery() // ONLY: the child's row is not there
	raw := copyRaw(t, conn, query)
	want, err := readAll(pgcopy.NewReader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != typesRows {
		t.Fatalf("%d rows, want %d", len(want), typesRows)
	}
	if diff := diffRows(want, scanAll(t, conn, query)); diff != "" {
		t.Errorf("Scan differs from Reader over the same COPY: %s", diff)
	}
	if *update {
		writeTestdata(t, raw)
	}

	// The empty table: header and trailer only.
	mustExec(t, conn, `CREATE TABLE empty (a int)`)
	if rows := scanAll(t, conn, `COPY empty TO STDOUT (FORMAT binary)`); len(rows) != 0 {
		t.Errorf("empty table gave %d rows", len(rows))
	}
}

// writeTestdata stores a stream from PostgreSQL as the golden file and,
// with the stream of an empty table, as fuzz seeds.
func writeTestdata(t *testing.T, raw []byte) {
	if err := os.WriteFile("testdata/types.copy", raw, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzReader")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	seeds := []struct {
		name  string
		data  []byte
		chunk uint16
	}{
		{"pg-types", raw, 100},
		{"pg-empty", append(append([]byte(nil), raw[:19]...), 0xff, 0xff), 7},
	}
	for _, s := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nuint16(%d)\n", s.data, s.chunk)
		if err := os.WriteFile(filepath.Join(dir, s.name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func testScanErrors(t *testing.T, dsn string) {
	conn := mustConnect(t, dsn)
	mustExec(t, conn, `CREATE TABLE many AS SELECT g FROM generate_series(1, 1000) g`)

	// fn's error comes back unchanged and stops the COPY.
	stop := errors.New("enough")
	n, err := pgcopy.Scan(t.Context(), conn.PgConn(), `COPY many TO STDOUT (FORMAT binary)`, func([]byte) error {
		return stop
	})
	if err != stop || n != 0 {
		t.Errorf("Scan with a failing fn = %d, %v; want 0, %v", n, err, stop)
	}

	// A server error is the server's.
	conn = mustConnect(t, dsn)
	_, err = pgcopy.Scan(t.Context(), conn.PgConn(), `COPY nosuch TO STDOUT (FORMAT binary)`, func([]byte) error { return nil })
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
		t.Errorf("Scan of a missing table = %v, want undefined_table", err)
	}
	// The connection is still usable after a server error.
	if rows := scanAll(t, conn, `COPY many TO STDOUT (FORMAT binary)`); len(rows) != 1000 {
		t.Errorf("%d rows, want 1000", len(rows))
	}

	// A statement that is not a COPY sends no COPY data.
	_, err = pgcopy.Scan(t.Context(), conn.PgConn(), `SELECT 1`, func([]byte) error { return nil })
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "sent no COPY data") {
		t.Errorf("Scan of a SELECT = %v", err)
	}

	// Text COPY output is not a binary stream.
	_, err = pgcopy.Scan(t.Context(), conn.PgConn(), `COPY many TO STDOUT`, func([]byte) error { return nil })
	if !errors.Is(err, pgcopy.ErrSignature) {
		t.Errorf("Scan of text COPY = %v, want ErrSignature", err)
	}

	// Text values depend on the client encoding: anything but UTF8 is refused.
	conn = mustConnect(t, dsn)
	mustExec(t, conn, `SET client_encoding = 'LATIN1'`)
	_, err = pgcopy.Scan(t.Context(), conn.PgConn(), `COPY many TO STDOUT (FORMAT binary)`, func([]byte) error { return nil })
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte(`client_encoding "LATIN1"`)) {
		t.Errorf("Scan with client_encoding LATIN1 = %v", err)
	}
}

// testSessionSettings scans the same rows from sessions with different
// settings: binary values do not depend on them.
func testSessionSettings(t *testing.T, dsn string) {
	plain := mustConnect(t, dsn)
	query, err := pgcopy.CopyQuery(t.Context(), plain, "public", "types")
	if err != nil {
		t.Fatal(err)
	}
	want := scanAll(t, plain, query)
	odd := mustConnect(t, dsn)
	mustExec(t, odd, `SET TimeZone = 'America/St_Johns'; SET DateStyle = 'SQL, DMY'; SET IntervalStyle = 'iso_8601';
SET extra_float_digits = -15; SET bytea_output = 'escape'; SET search_path = ''; SET lc_messages = 'C'`)
	if diff := diffRows(want, scanAll(t, odd, query)); diff != "" {
		t.Errorf("rows differ between sessions: %s", diff)
	}
}
