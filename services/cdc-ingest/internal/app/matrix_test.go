package app_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/witnz/witnz/libs/commitment"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/pgcopy"
	"github.com/witnz/witnz/libs/testenv"
)

// matrixColumn is a column of the matrix table and the SQL expressions
// inserted into it.
type matrixColumn struct {
	name, typ string
	values    []string
}

// matrixColumns cover the types a protected table commonly holds, with
// their edge values. Literals without a time zone or in an ambiguous date
// order are read differently by each inserting session.
var matrixColumns = []matrixColumn{
	{"i2", "smallint", []string{"-32768", "0", "32767"}},
	{"i4", "integer", []string{"-2147483648", "42"}},
	{"i8", "bigint", []string{"-9223372036854775808", "9223372036854775807"}},
	{"num", "numeric", []string{"'NaN'", "'Infinity'", "'-Infinity'", "'-0.000'", "'1e-1000'",
		"'123456789012345678901234567890.123456789'", "'9.99e999'"}},
	{"num_typ", "numeric(12,4)", []string{"3.14159", "'-99999999.9999'"}},
	{"f4", "real", []string{"'-0'", "'NaN'", "'Infinity'", "'-Infinity'", "'1.17549435e-38'", "'3.4028235e38'", "'0.1'", "'1e-45'"}},
	{"f8", "double precision", []string{"'-0'", "'NaN'", "'Infinity'", "'-Infinity'", "'4.9e-324'", "'1.7976931348623157e308'", "'0.1'"}},
	{"t", "text", []string{"'héllo wörld ✓ 日本語 🎉'", `E'tab\there\nnewline\r\\backslash\\\\'`, "''",
		`'quote''s "dq" \n'`, "'مرحبا بالعالم'", "'e' || chr(769) || ' vs ' || chr(233)"}},
	{"vc", "varchar(64)", []string{"'Grüße, 世界'", `E'line1\nline2\t\\'`, "''"}},
	{"ch", "char(6)", []string{"'ab'", "'äbcdéf'"}},
	{"chr1", `"char"`, []string{"'x'"}},
	{"nm", "name", []string{"'some_name'"}},
	{"b", "bytea", []string{`'\x'`, `'\x00ff5c0a'`, "convert_to(E'tab\\té', 'UTF8')"}},
	{"ok", "boolean", []string{"true", "false"}},
	{"d", "date", []string{"'2024-02-29'", "'03/04/2024'", "'infinity'", "'-infinity'", "'4713-01-01 BC'", "'5874897-12-31'"}},
	{"tm", "time", []string{"'00:00'", "'23:59:59.999999'", "'24:00:00'", "'12:34:56.789'"}},
	{"tm2", "time(2)", []string{"'12:34:56.789'"}},
	{"ttz", "timetz", []string{"'12:00'", "'12:00+05:30'", "'23:59:59.999999-15:59'", "'00:00:00+15:59'"}},
	{"ts", "timestamp", []string{"'2024-02-29 12:34:56.123456'", "'03/04/2024 05:06'", "'infinity'", "'-infinity'",
		"'294276-12-31 23:59:59.999999'", "'4713-01-01 00:00 BC'"}},
	{"tstz", "timestamptz", []string{"'2024-03-10 02:30:00'", "'2024-11-03 01:30:00'", "'2024-06-01 12:00:00+02'",
		"'2024-06-01 12:00:00 Asia/Kathmandu'", "'1900-01-01 00:00'", "'infinity'", "'-infinity'", "'epoch'"}},
	{"iv", "interval", []string{"'1 year 2 months 3 days 04:05:06.789'", "'-1 2:03:04'", "'P1Y2M3DT4H5M6.5S'",
		"'178000000 years'", "'-178000000 years'", "'@ 1 minute ago'", "'1.5 months'"}},
	{"u", "uuid", []string{"'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'{A0EEBC99-9C0B4EF8-BB6D6BB9-BD380A12}'", "'00000000-0000-0000-0000-000000000000'"}},
	{"js", "json", []string{`'{"b":1,  "a" : [1,2,{"x":null}]}'`, `'"str\u00e9\n"'`, "'null'", "'[]'", `'{"a":1,"a":2}'`, "'123.4500'"}},
	{"jb", "jsonb", []string{`'{"b":1,  "a" : [1,2,{"x":null}]}'`, `'"str\u00e9\n"'`, "'null'", "'[]'", `'{"a":1,"a":2}'`, "'123.4500'"}},
	{"ip", "inet", []string{"'192.168.0.1/24'", "'::ffff:1.2.3.4'", "'2001:db8::1/64'", "'10.0.0.1'"}},
	{"cid", "cidr", []string{"'10.0.0.0/8'", "'2001:db8::/32'", "'192.168.0.0/24'"}},
	{"mac", "macaddr", []string{"'08:00:2b:01:02:03'"}},
	{"mac8", "macaddr8", []string{"'08:00:2b:01:02:03:04:05'"}},
	{"ia", "integer[]", []string{"'{}'", "'{1,NULL,3}'", "'{{1,2},{3,4}}'", "'[0:2]={1,2,3}'", "'{{NULL,NULL},{NULL,NULL}}'", "'{{{1}},{{2}}}'"}},
	{"ta", "text[]", []string{`'{"a\"b","c,d",NULL,"NULL","日本",""}'`, `'{{"a","b"},{"c",NULL}}'`, "'{}'"}},
	{"tsa", "timestamptz[]", []string{"'{2024-01-01 00:00,NULL,infinity}'"}},
	{"m", "mood", []string{"'sad'", "'happy'", "'ünïcode ☺'"}},
	{"ma", "mood[]", []string{"'{sad,happy,NULL}'"}},
	{"dom", "posint", []string{"1", "2147483647"}},
	{"doma", "posint[]", []string{"'{1,2}'"}},
	{"em", "email", []string{"'a@b.c'", "'ü@例え.jp'"}},
	{"comp", "pt", []string{"ROW(1, 'a b', '2024-01-01 00:00', '{x,y}', 'ok')::public.pt", "'(,,,,)'", "ROW(NULL, '', NULL, '{}', NULL)::public.pt"}},
	{"compa", "pt[]", []string{"ARRAY[ROW(1, 'a', NULL, NULL, 'sad')::public.pt, NULL, '(,,,,)'::public.pt]"}},
	{"mon", "money", []string{"'1234.56'", "'-0.01'"}},
	{"bt", "bit(8)", []string{"B'10101010'"}},
	{"vb", "bit varying", []string{"B''", "B'1'", "B'1010101010101'"}},
	{"r4", "int4range", []string{"'[1,10)'", "'empty'", "'(,)'", "'[3,3]'"}},
	{"rtz", "tstzrange", []string{"'[2024-01-01 00:00, 2024-02-01 00:00)'", "'(,infinity]'"}},
	{"mr", "int4multirange", []string{"'{[1,3), [5,7)}'", "'{}'"}},
	{"pnt", "point", []string{"'(1.5,-0)'", "'(NaN,Infinity)'"}},
	{"tsv", "tsvector", []string{"'a fat cat:1A sat'", "to_tsvector('simple', 'The quick brown fox')"}},
	{"tq", "tsquery", []string{"'fat & (rat | cat)'"}},
	{"x", "xml", []string{`'<a b="1">text &amp; é</a>'`, "'plain text fragment'"}},
	{"o", "oid", []string{"4294967295", "0"}},
	{"lsn", "pg_lsn", []string{"'16/B374D848'"}},
}

// matrixSessions insert rows and run the second scan. Each reads
// literals differently (time zone, date order, interval style) and prints
// values differently; none of that may change a row's encoding.
var matrixSessions = []struct{ name, setup string }{
	{"UTC", `SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex'`},
	{"Kolkata", `SET TimeZone = 'Asia/Kolkata'; SET DateStyle = 'SQL, DMY'; SET IntervalStyle = 'sql_standard'; SET extra_float_digits = 3; SET bytea_output = 'escape'`},
	{"St_Johns", `SET TimeZone = 'America/St_Johns'; SET DateStyle = 'German, DMY'; SET IntervalStyle = 'iso_8601'; SET extra_float_digits = -15; SET bytea_output = 'hex'`},
	{"Chatham", `SET TimeZone = 'Pacific/Chatham'; SET DateStyle = 'Postgres, MDY'; SET IntervalStyle = 'postgres_verbose'; SET extra_float_digits = 0; SET bytea_output = 'escape'; SET search_path = ''`},
}

// matrixSchema creates the protected tables. Dropped and generated columns
// sit between and after ordinary ones; the big columns cover TOAST with
// pglz, lz4 and no compression.
func matrixSchema() string {
	var cols strings.Builder
	for _, c := range matrixColumns {
		fmt.Fprintf(&cols, "\t%s %s,\n", c.name, c.typ)
		if c.name == "i4" {
			cols.WriteString("\tgen text GENERATED ALWAYS AS (coalesce(t, '') || '/' || coalesce(i4::text, '')) STORED,\n")
		}
	}
	return `
CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy', 'ünïcode ☺');
CREATE DOMAIN public.posint AS int CHECK (VALUE > 0);
CREATE DOMAIN public.email AS text CHECK (VALUE LIKE '%@%');
CREATE TYPE public.pt AS (x int, gone text, label text, at timestamptz, tags text[], m mood);
ALTER TYPE public.pt DROP ATTRIBUTE gone;
CREATE TABLE public.matrix (
	id bigint PRIMARY KEY,
	gone_a text,
` + cols.String() + `	big_t text,
	big_b bytea,
	big_lz4 text COMPRESSION lz4,
	big_ext bytea,
	big_jb jsonb,
	gone_z int
);
ALTER TABLE public.matrix ALTER COLUMN big_ext SET STORAGE EXTERNAL;
ALTER TABLE public.matrix DROP COLUMN gone_a, DROP COLUMN gone_z;
ALTER TABLE public.matrix REPLICA IDENTITY FULL;

-- A primary key in another order than the columns, with an INCLUDE column
-- that is not part of the key; replica identity DEFAULT.
CREATE TABLE public.ckey (
	a int,
	gone int,
	b text,
	g int GENERATED ALWAYS AS (a * 10) STORED,
	c timestamptz,
	d uuid,
	e numeric,
	PRIMARY KEY (d, b, a) INCLUDE (e)
);
ALTER TABLE public.ckey DROP COLUMN gone;

-- No primary key: the whole row is the key.
CREATE TABLE public.nokey (t text, n numeric, ts timestamptz, arr int[], j jsonb, big text);
ALTER TABLE public.nokey REPLICA IDENTITY FULL;`
}

// matrixRows builds the INSERT statements of one session, taking each
// row's id from nextID with a label that names it. Per column and value,
// one row holds that value alone (so a mismatch names the column and the
// value); then rows with every column set, and a row of NULLs.
func matrixRows(session int, nextID func(label string) int64) []string {
	var stmts []string
	name := matrixSessions[session].name
	for _, c := range matrixColumns {
		var vals []string
		for _, v := range c.values {
			id := nextID(fmt.Sprintf("%s = %s (session %s)", c.name, v, name))
			vals = append(vals, fmt.Sprintf("(%d, %s)", id, v))
		}
		stmts = append(stmts, fmt.Sprintf("INSERT INTO public.matrix (id, %s) VALUES %s", c.name, strings.Join(vals, ", ")))
	}
	names := []string{"id"}
	for _, c := range matrixColumns {
		names = append(names, c.name)
	}
	for i := range 3 {
		vals := []string{fmt.Sprint(nextID(fmt.Sprintf("every column, value %d (session %s)", i, name)))}
		for _, c := range matrixColumns {
			vals = append(vals, c.values[(i+session)%len(c.values)])
		}
		stmts = append(stmts, fmt.Sprintf("INSERT INTO public.matrix (%s) VALUES (%s)", strings.Join(names, ", "), strings.Join(vals, ", ")))
	}
	stmts = append(stmts, fmt.Sprintf("INSERT INTO public.matrix (id) VALUES (%d)", nextID("NULL everywhere (session "+name+")")))
	return stmts
}

// Big values, each above 1 MB except the medium ones, which sit around
// the TOAST threshold.
const (
	compressibleText  = `repeat('witnz compressible ✓ ', 60000)`
	incompressibleHex = `(SELECT string_agg(md5(g::text || random()::text), '') FROM generate_series(1, 40000) g)`
	compressibleBytes = `convert_to(repeat('abc', 400000), 'UTF8')`
	incompressibleBin = `(SELECT string_agg(decode(md5(g::text || random()::text), 'hex'), ''::bytea) FROM generate_series(1, 70000) g)`
	bigJSON           = `(SELECT jsonb_agg(jsonb_build_object('k', g, 'v', md5(g::text))) FROM generate_series(1, 25000) g)`
)

// TestRowEncodingMatrix checks, for every row of tables covering the
// common types and their edge values, that the commitments cdc-ingest
// logged from the WAL equal those computed from a binary COPY scan through
// libs/pgcopy: first after inserts from sessions with different settings,
// then after updates (TOASTed values left unchanged, changed, a primary key
// changed) and deletes. Scans from two differently configured sessions
// return the same bytes.
func TestRowEncodingMatrix(t *testing.T) {
	t.Parallel()
	start := time.Now()
	pg := testenv.PostgreSQL(t)
	e := newEnv(t, pg, "app")
	pg.Exec(t, "app", matrixSchema())
	e.start(t, e.args(testenv.FreeAddr(t), "public.matrix:mutable", "public.ckey:append-only", "public.nokey:mutable"))
	started := time.Since(start)

	sessions := make([]*pgx.Conn, len(matrixSessions))
	for i, s := range matrixSessions {
		sessions[i] = mustConnect(t, pg.DSN("app"))
		mustExec(t, sessions[i], s.setup)
	}
	labels := map[int64]string{}
	var lastID int64
	nextID := func(label string) int64 {
		lastID++
		labels[lastID] = label
		return lastID
	}

	// Inserts: the first session in one transaction, the others one
	// statement at a time.
	for i, conn := range sessions {
		stmts := matrixRows(i, nextID)
		if i == 0 {
			stmts = append([]string{"BEGIN"}, append(stmts, "COMMIT")...)
		}
		for _, s := range stmts {
			mustExec(t, conn, s)
		}
	}
	toast := map[string]int64{}
	for i, v := range []struct{ name, t, b, lz4, ext, jb string }{
		{"compressible", compressibleText, compressibleBytes, compressibleText, compressibleBytes, bigJSON},
		{"incompressible", incompressibleHex, incompressibleBin, incompressibleHex, incompressibleBin, "NULL"},
		{"medium", "repeat('x', 3000)", "decode(repeat('0f', 2500), 'hex')", "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 80) g)",
			"(SELECT string_agg(decode(md5(g::text), 'hex'), ''::bytea) FROM generate_series(1, 150) g)", "'[1]'"},
	} {
		id := nextID("TOASTed values, " + v.name)
		toast[v.name] = id
		mustExec(t, sessions[i%len(sessions)], fmt.Sprintf(`INSERT INTO public.matrix (id, t, i4, big_t, big_b, big_lz4, big_ext, big_jb)
VALUES (%d, 'toast', 1, %s, %s, %s, %s, %s)`, id, v.t, v.b, v.lz4, v.ext, v.jb))
	}
	// The big values are stored the way the columns say.
	var forms []*string
	var sizes []int64
	err := sessions[0].QueryRow(t.Context(), fmt.Sprintf(`SELECT ARRAY[pg_column_compression(big_t), pg_column_compression(big_b),
  pg_column_compression(big_lz4), pg_column_compression(big_ext)],
  ARRAY[octet_length(big_t), octet_length(big_b), octet_length(big_lz4), octet_length(big_ext), octet_length(big_jb::text)]
FROM public.matrix WHERE id = %d`, toast["compressible"])).Scan(&forms, &sizes)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(deref(forms)); got != "[pglz pglz lz4 <nil>]" || slices.Min(sizes) < 1<<20 {
		t.Errorf("compressible TOAST row: compression %s, sizes %v; want [pglz pglz lz4 <nil>], each above 1 MB", got, sizes)
	}

	// Values sent in binary through the extended protocol.
	binID := nextID("binary parameters")
	tag, err := sessions[1].Exec(t.Context(), `INSERT INTO public.matrix (id, i8, f4, f8, num, t, b, tstz, ts, d, u, js, jb, ip, ia, ta, ok)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
		binID, int64(math.MinInt64), float32(math.Copysign(0, -1)), math.NaN(), "-1.500", "bin ✓\x01", []byte{0, 1, 2},
		time.Date(2024, 3, 10, 2, 30, 0, 123456000, mustLocation(t, "Asia/Kolkata")), time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(2000, 2, 29, 0, 0, 0, 0, time.UTC), [16]byte{1, 2, 3}, `{"z": [1, 2]}`, map[string]any{"k": "v"},
		netip.MustParsePrefix("10.1.2.3/16"), []int32{1, 2}, []*string{nil, ptr("x")}, true)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("insert with binary parameters: %v", err)
	}
	// COPY FROM in binary.
	fromCopy := [][]any{}
	for range 5 {
		id := nextID("COPY FROM")
		fromCopy = append(fromCopy, []any{id, int32(id), "copied\t" + fmt.Sprint(id), time.Unix(id, 0), float64(id) / 3, []int32{int32(id), 0}})
	}
	if _, err := sessions[2].CopyFrom(t.Context(), pgx.Identifier{"public", "matrix"}, []string{"id", "i4", "t", "tstz", "f8", "ia"}, pgx.CopyFromRows(fromCopy)); err != nil {
		t.Fatal(err)
	}

	// The other tables. Identical rows in nokey are two rows.
	for i, conn := range sessions {
		for j, v := range []string{"'2024-03-10 02:30:00'", "'2024-02-29 12:00 +05'", "NULL"} {
			mustExec(t, conn, fmt.Sprintf(`INSERT INTO public.ckey (a, b, c, d, e) VALUES (%d, 'k%d ✓', %s, '%08d-0000-0000-0000-000000000000', %d.5)`, j, i, v, i, j))
		}
		mustExec(t, conn, `INSERT INTO public.nokey VALUES ('dup', 1.0, '2024-01-01 00:00', '{1,NULL}', '{"a": 1}', NULL), ('dup', 1.0, '2024-01-01 00:00', '{1,NULL}', '{"a": 1}', NULL), (NULL, NULL, NULL, NULL, NULL, NULL)`)
	}
	mustExec(t, sessions[3], `INSERT INTO public.nokey (t, big) VALUES ('big', `+compressibleText+`), ('big2', `+incompressibleHex+`)`)

	inserted := time.Now()
	waitSlot(t, pg, sessions[0])
	logged := time.Now()
	checkMatrix(t, e, sessions, labels)
	t.Logf("%d matrix rows; cdc-ingest started in %s; inserts made in %s, logged %s later, checked in %s",
		lastID, started.Round(time.Millisecond), inserted.Sub(start.Add(started)).Round(time.Millisecond),
		logged.Sub(inserted).Round(time.Millisecond), time.Since(logged).Round(time.Millisecond))

	// Updates and deletes. REPLICA IDENTITY FULL: an UPDATE that leaves
	// TOASTed values alone sends them only in the old row.
	for _, sql := range []string{
		fmt.Sprintf(`UPDATE public.matrix SET i4 = i4 + 1 WHERE id = %d`, toast["compressible"]),
		fmt.Sprintf(`UPDATE public.matrix SET big_t = big_t || 'more', tstz = '2024-03-10 02:30' WHERE id = %d`, toast["incompressible"]),
		fmt.Sprintf(`UPDATE public.matrix SET id = id + 1000000 WHERE id = %d`, binID),
		fmt.Sprintf(`DELETE FROM public.matrix WHERE id = %d`, toast["medium"]),
		`UPDATE public.matrix SET tstz = '2024-11-03 01:30:00', d = '03/04/2024' WHERE id % 50 = 0`,
		`DELETE FROM public.matrix WHERE id % 60 = 1`,
		`UPDATE public.ckey SET c = '2024-11-03 01:30:00', e = e + 1 WHERE a = 1`,
		`DELETE FROM public.ckey WHERE a = 2`,
		`DELETE FROM public.nokey WHERE ctid = (SELECT min(ctid) FROM public.nokey WHERE t = 'dup')`,
		`UPDATE public.nokey SET n = 2 WHERE t LIKE 'big%'`,
	} {
		mustExec(t, sessions[1], sql)
	}
	labels[binID+1000000] = labels[binID] + ", key changed"
	changed := time.Now()
	waitSlot(t, pg, sessions[0])
	checkMatrix(t, e, sessions, labels)
	t.Logf("updates and deletes logged and checked in %s; whole test %s", time.Since(changed).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

func ptr[T any](v T) *T { return &v }

func deref(ss []*string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		if s != nil {
			out[i] = *s
		}
	}
	return out
}

func mustLocation(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(t.Context(), sql); err != nil {
		t.Fatalf("%v\n%.2000s", err, sql)
	}
}

// waitSlot waits until the slot is confirmed past everything written so
// far: cdc-ingest confirms only what the witness has acknowledged.
func waitSlot(t *testing.T, pg *testenv.PG, conn *pgx.Conn) {
	t.Helper()
	var lsn pglogrepl.LSN
	if err := conn.QueryRow(t.Context(), `SELECT pg_current_wal_lsn()`).Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "slot confirmed past "+lsn.String(), func() bool {
		return slotLSN(t, conn, "witnz") >= uint64(lsn)
	})
}

// checkMatrix compares the three tables.
func checkMatrix(t *testing.T, e *env, sessions []*pgx.Conn, labels map[int64]string) {
	t.Helper()
	byID := func(row []byte) string {
		id, err := pgcopy.AppendKey(nil, row, []int{0})
		if err != nil || len(id) != 2+4+8 {
			return fmt.Sprintf("%.40x…", row)
		}
		n := int64(binary.BigEndian.Uint64(id[6:]))
		return fmt.Sprintf("id %d: %s", n, labels[n])
	}
	rows := checkTable(t, e, sessions, "matrix", byID)
	wantCols := []string{"id"}
	for _, c := range matrixColumns {
		wantCols = append(wantCols, c.name)
	}
	wantCols = append(wantCols, "big_t", "big_b", "big_lz4", "big_ext", "big_jb")
	if desc, err := pgcopy.Describe(t.Context(), sessions[0], "public", "matrix"); err != nil || !cmp.Equal(desc.Columns, wantCols) {
		t.Errorf("matrix row columns = %v, %v; want %v", desc.Columns, err, wantCols)
	}
	if rows < len(labels)/2 {
		t.Errorf("matrix scan has %d rows, fewer than expected", rows)
	}
	hexRow := func(row []byte) string { return fmt.Sprintf("%.80x…", row) }
	checkTable(t, e, sessions, "ckey", hexRow)
	checkTable(t, e, sessions, "nokey", hexRow)
}

type commitPairs struct{ key, data commitment.Commitment }

// maxReported bounds the rows a failing table check names.
const maxReported = 20

// checkTable scans public.<name> from two sessions (the rows must be the
// same bytes whatever the session), computes each row's commitments
// (pgcopy.Describe, Scan, AppendKey; libs/commitment) and compares them,
// row by row, with the rows cdc-ingest's entries say should exist. It
// returns the number of rows.
func checkTable(t *testing.T, e *env, sessions []*pgx.Conn, name string, label func(row []byte) string) int {
	t.Helper()
	desc, err := pgcopy.Describe(t.Context(), sessions[0], "public", name)
	if err != nil {
		t.Fatal(err)
	}
	var rows [][]byte
	// The first session runs in UTC with the usual settings, the last one
	// in Pacific/Chatham with odd settings and an empty search_path.
	for _, i := range []int{0, len(sessions) - 1} {
		conn := sessions[i]
		var got [][]byte
		_, err := pgcopy.Scan(t.Context(), conn.PgConn(), desc.CopyQuery(), func(row []byte) error {
			got = append(got, bytes.Clone(row))
			return nil
		})
		if err != nil {
			t.Fatalf("scan public.%s from session %s: %v", name, matrixSessions[i].name, err)
		}
		slices.SortFunc(got, bytes.Compare)
		if i == 0 {
			rows = got
			continue
		}
		if len(got) != len(rows) {
			t.Fatalf("public.%s: %d rows from session %s, %d from %s", name, len(got), matrixSessions[i].name, len(rows), matrixSessions[0].name)
		}
		for j := range got {
			if !bytes.Equal(got[j], rows[j]) {
				t.Fatalf("public.%s: scans from sessions %s and %s differ at %s", name, matrixSessions[0].name, matrixSessions[i].name, label(rows[j]))
			}
		}
	}

	state := replay(t, name, e.witness.entries("public."+name))
	c := e.key.ForTable("public", name).NewCommitter()
	var mismatches int
	defer func() {
		if mismatches > maxReported {
			t.Errorf("public.%s: %d more rows differ", name, mismatches-maxReported)
		}
	}()
	for _, row := range rows {
		if vals, err := commitment.SplitRow(row); err != nil || len(vals) != len(desc.Columns) {
			t.Fatalf("public.%s %s: not a row encoding of %d columns (%v)", name, label(row), len(desc.Columns), err)
		}
		key, err := pgcopy.AppendKey(nil, row, desc.Key)
		if err != nil {
			t.Fatal(err)
		}
		p := commitPairs{c.KeyCommit(key), c.DataCommit(row)}
		if state[p] > 0 {
			state[p]--
			continue
		}
		why := "no logged row has its key commitment"
		for q, n := range state {
			if n > 0 && q.key == p.key {
				why = "the logged row with its key commitment has another data commitment"
			}
		}
		if mismatches++; mismatches <= maxReported {
			t.Errorf("public.%s %s: scan commitments differ from the WAL's: %s", name, label(row), why)
		}
	}
	for q, n := range state {
		if n > 0 {
			t.Errorf("public.%s: the WAL logged %d row(s) the scan lacks (key commitment %x)", name, n, q.key[:8])
		}
	}
	return len(rows)
}

// replay turns a table's entries into the multiset of (key, data)
// commitments of the rows that exist after them.
func replay(t *testing.T, name string, entries []*witnessv1.Entry) map[commitPairs]int {
	t.Helper()
	state := map[commitPairs]int{}
	remove := func(e *witnessv1.Entry, match func(commitPairs) bool) {
		for q, n := range state {
			if n > 0 && match(q) {
				state[q]--
				return
			}
		}
		t.Errorf("public.%s: %s entry at %s #%d removes a row that was never logged", name, e.Op, pglogrepl.LSN(e.CommitLsn), e.TxIndex)
	}
	for _, e := range entries {
		var p commitPairs
		copy(p.key[:], e.KeyCommit)
		copy(p.data[:], e.DataCommit)
		var old commitment.Commitment
		copy(old[:], e.OldDataCommit)
		hasOld := len(e.OldDataCommit) > 0
		switch e.Op {
		case witnessv1.Op_OP_INSERT:
			state[p]++
		case witnessv1.Op_OP_UPDATE:
			if len(e.DataCommit) == 0 {
				t.Errorf("public.%s: UPDATE at %s without a data commitment", name, pglogrepl.LSN(e.CommitLsn))
				continue
			}
			if hasOld {
				remove(e, func(q commitPairs) bool { return q.data == old })
			} else {
				remove(e, func(q commitPairs) bool { return q.key == p.key })
			}
			state[p]++
		case witnessv1.Op_OP_DELETE:
			remove(e, func(q commitPairs) bool { return q.key == p.key && (!hasOld || q.data == old) })
		default:
			t.Errorf("public.%s: unexpected %s entry", name, e.Op)
		}
	}
	return state
}
