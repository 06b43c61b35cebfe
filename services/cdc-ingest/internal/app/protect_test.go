package app_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pglogrepl"

	ingestv1 "github.com/witnz/witnz/libs/gen/witnz/ingest/v1"
	"github.com/witnz/witnz/libs/gen/witnz/ingest/v1/ingestv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/services/cdc-ingest/internal/control"
)

// TestProtectSeam protects a table that already holds rows while other
// sessions keep inserting into it: every row the table holds afterwards is
// in the log exactly once, either in the baseline or as an INSERT
// committed at or after the seam, never both and never neither.
func TestProtectSeam(t *testing.T) {
	t.Parallel()
	pg := testenv.PostgreSQL(t)
	e := newEnv(t, pg, "app")
	pg.Exec(t, "app", `
CREATE TABLE public.audit_log (id bigint PRIMARY KEY, note text, big text);
INSERT INTO public.audit_log SELECT g, 'before ' || g, CASE WHEN g % 1000 = 0 THEN repeat('x', 20000) END FROM generate_series(1, 20000) g;
CREATE SEQUENCE public.ids START 100000;
CREATE TABLE public.other (id bigint PRIMARY KEY);`)

	listen := testenv.FreeAddr(t)
	r := e.start(t, e.args(listen, "public.other"))

	// Writers insert continuously from several sessions, before, during
	// and after protection starts.
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var inserted atomic.Int64
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn := mustConnect(t, pg.DSN("app"))
			for ctx.Err() == nil {
				if _, err := conn.Exec(ctx, `INSERT INTO public.audit_log SELECT nextval('public.ids'), 'during', NULL FROM generate_series(1, 5)`); err == nil {
					inserted.Add(5)
				}
			}
		}()
	}
	waitFor(t, 10*time.Second, "writers running", func() bool { return inserted.Load() > 200 })

	resp, err := r.status.Protect(t.Context(), connect.NewRequest(&ingestv1.ProtectRequest{Table: "public.audit_log"}))
	if err != nil {
		t.Fatalf("Protect: %v", err)
	}
	t.Logf("protected: %d baseline rows, seam %s, %d ms; %d rows inserted so far", resp.Msg.BaselineRows, resp.Msg.SeamLsn, resp.Msg.DurationMs, inserted.Load())
	if resp.Msg.BaselineRows < 20000 {
		t.Errorf("baseline of %d rows, want at least the 20,000 that existed before", resp.Msg.BaselineRows)
	}
	waitFor(t, 10*time.Second, "writers after protection", func() bool { return inserted.Load() > int64(resp.Msg.BaselineRows)-20000+2000 })
	stop()
	wg.Wait()

	conn := mustConnect(t, pg.DSN("app"))
	var rows int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM public.audit_log`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "every row at the witness", func() bool {
		n := 0
		for _, en := range e.witness.entries("public.audit_log") {
			if en.Op == witnessv1.Op_OP_BASELINE || en.Op == witnessv1.Op_OP_INSERT {
				n++
			}
		}
		return n >= rows
	})

	all := e.witness.allEntries("public.audit_log")
	seam, err := pglogrepl.ParseLSN(resp.Msg.SeamLsn)
	if err != nil {
		t.Fatal(err)
	}
	var baseline, inserts []*witnessv1.Entry
	for i, en := range all {
		switch {
		case i == 0:
			if en.Op != witnessv1.Op_OP_PROTECT || en.CommitLsn != uint64(seam)-1 || en.TxIndex != 0 {
				t.Fatalf("first entry %v, want PROTECT at (seam-1, 0)", en)
			}
		case en.Op == witnessv1.Op_OP_BASELINE:
			baseline = append(baseline, en)
		case en.Op == witnessv1.Op_OP_SCHEMA:
			if len(inserts) > 0 || i != len(baseline)+1 || len(en.DataCommit) != 32 {
				t.Fatalf("entry %d %v: SCHEMA must close the baseline", i, en)
			}
		case en.Op == witnessv1.Op_OP_INSERT:
			if en.CommitLsn < uint64(seam) {
				t.Fatalf("INSERT %v committed before the seam %s: it is in the baseline too", en, seam)
			}
			inserts = append(inserts, en)
		default:
			t.Fatalf("unexpected entry %d %v", i, en)
		}
	}
	if uint64(len(baseline)) != resp.Msg.BaselineRows {
		t.Errorf("%d BASELINE entries, Protect reported %d", len(baseline), resp.Msg.BaselineRows)
	}
	got := pairs(append(baseline, inserts...))
	want := scanPairs(t, e, "public", "audit_log", `SELECT id, note, big FROM public.audit_log`, 0)
	if len(got) != len(want) || !slices.Equal(got, want) {
		missing, doubled := diffPairs(want, got)
		t.Fatalf("log holds %d rows (%d baseline + %d inserts), table %d: %d missing, %d extra or doubled", len(got), len(baseline), len(inserts), len(want), missing, doubled)
	}
	t.Logf("table %d rows = %d baseline + %d streamed inserts", rows, len(baseline), len(inserts))

	// Protecting it again only reports it.
	again, err := r.status.Protect(t.Context(), connect.NewRequest(&ingestv1.ProtectRequest{Table: "public.audit_log"}))
	if err != nil || !again.Msg.AlreadyProtected {
		t.Errorf("second Protect = %v, %v; want already_protected", again, err)
	}
	var kinds []string
	for _, a := range e.alerts.list() {
		kinds = append(kinds, a.Type)
	}
	if !slices.Contains(kinds, "cdc.table_protected") {
		t.Errorf("alerts %v, want cdc.table_protected", kinds)
	}
}

// diffPairs counts the rows of want missing from got and the rows of got
// not in want (extra or doubled).
func diffPairs(want, got []commitPair) (missing, extra int) {
	n := map[commitPair]int{}
	for _, p := range want {
		n[p]++
	}
	for _, p := range got {
		n[p]--
	}
	for _, c := range n {
		if c > 0 {
			missing += c
		} else {
			extra -= c
		}
	}
	return missing, extra
}

// TestProtectBadInput: unknown tables, a mutable table without REPLICA
// IDENTITY FULL, a mode that contradicts the log, a caller that is not an
// operator: a clear error, and nothing half-created.
func TestProtectBadInput(t *testing.T) {
	t.Parallel()
	pg := testenv.PostgreSQL(t)
	e := newEnv(t, pg, "app")
	pg.Exec(t, "app", `
CREATE TABLE public.nopk (a int, b text);
CREATE TABLE public.pk (id int PRIMARY KEY, b text);
CREATE TABLE public.other (id int PRIMARY KEY);`)
	listen := testenv.FreeAddr(t)
	r := e.start(t, e.args(listen, "public.other"))
	protect := func(table string, mode witnessv1.TableMode) error {
		_, err := r.status.Protect(t.Context(), connect.NewRequest(&ingestv1.ProtectRequest{Table: table, Mode: mode}))
		return err
	}
	for _, c := range []struct {
		table string
		mode  witnessv1.TableMode
		code  connect.Code
		want  string
	}{
		{"public.missing", 0, connect.CodeNotFound, "does not exist"},
		{"nodot", 0, connect.CodeInvalidArgument, "SCHEMA.TABLE"},
		{"public.nopk", 0, connect.CodeFailedPrecondition, "REPLICA IDENTITY FULL"},
		{"public.pk", witnessv1.TableMode_TABLE_MODE_MUTABLE, connect.CodeFailedPrecondition, "REPLICA IDENTITY FULL"},
		{"public.other", witnessv1.TableMode_TABLE_MODE_MUTABLE, connect.CodeFailedPrecondition, "mode never changes"},
	} {
		err := protect(c.table, c.mode)
		if connect.CodeOf(err) != c.code || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Protect(%s, %v) = %v, want %v containing %q", c.table, c.mode, err, c.code, c.want)
		}
	}
	// Only operators change protection.
	service := ingestv1connect.NewIngestServiceClient(mustTLS(t, e.pki, ingestID).HTTPClient(), "https://"+listen, rpcserver.ClientOptions()...)
	if _, err := service.Protect(t.Context(), connect.NewRequest(&ingestv1.ProtectRequest{Table: "public.pk"})); connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "operator") {
		t.Errorf("Protect by a service identity: %v, want PermissionDenied naming the operator identity", err)
	}
	conn := mustConnect(t, pg.DSN("app"))
	var members []string
	rows, err := conn.Query(t.Context(), `SELECT tablename::text FROM pg_publication_tables WHERE pubname = 'witnz' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		members = append(members, s)
	}
	if fmt.Sprint(members) != "[other]" {
		t.Errorf("publication holds %v after refused protects, want [other]", members)
	}
	var slots int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_replication_slots`).Scan(&slots); err != nil || slots != 1 {
		t.Errorf("%d replication slots (%v), want just the deployment's", slots, err)
	}
}

// TestUnprotectAndAccept drives the two control messages end to end: an
// accepted UPDATE is logged as ACCEPT with the original data the expected
// state held; unprotect logs UNPROTECT where the table left the
// publication, after which its changes are not logged; a forged message
// changes nothing and alerts.
func TestUnprotectAndAccept(t *testing.T) {
	t.Parallel()
	pg := testenv.PostgreSQL(t)
	e := newEnv(t, pg, "app")
	pg.Exec(t, "app", `
CREATE TABLE public.audit (id int PRIMARY KEY, msg text);
INSERT INTO public.audit VALUES (1, 'one'), (2, 'two'), (3, 'three');
CREATE TABLE public.other (id int PRIMARY KEY);`)
	r := e.start(t, e.args(testenv.FreeAddr(t), "public.audit", "public.other"))
	conn := mustConnect(t, pg.DSN("app"))
	if _, err := conn.Exec(t.Context(), `UPDATE public.audit SET msg = 'changed' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	var upd uint64
	waitFor(t, 30*time.Second, "the UPDATE at the witness", func() bool {
		for i, en := range e.witness.allEntries("public.audit") {
			if en.Op == witnessv1.Op_OP_UPDATE {
				upd = uint64(i)
				return true
			}
		}
		return false
	})
	all := e.witness.allEntries("public.audit")
	var original []byte
	for _, en := range all {
		if en.Op == witnessv1.Op_OP_BASELINE && string(en.KeyCommit) == string(all[upd].KeyCommit) {
			original = en.DataCommit
		}
	}
	if original == nil {
		t.Fatal("no baseline entry for the updated row")
	}

	accept := func(seq uint64) (*ingestv1.AcceptResponse, error) {
		resp, err := r.status.Accept(t.Context(), connect.NewRequest(&ingestv1.AcceptRequest{Table: "public.audit", Seq: seq, Reason: "ticket 7"}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	if _, err := accept(1); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("accepting a BASELINE entry: %v, want FailedPrecondition", err)
	}
	if _, err := accept(1000); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("accepting a seq beyond the log: %v, want NotFound", err)
	}
	res, err := accept(upd)
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	if res.Op != "UPDATE" {
		t.Errorf("accepted op %q, want UPDATE", res.Op)
	}
	all = e.witness.allEntries("public.audit")
	last := all[len(all)-1]
	if last.Op != witnessv1.Op_OP_ACCEPT || string(last.KeyCommit) != string(all[upd].KeyCommit) ||
		string(last.DataCommit) != string(all[upd].DataCommit) || string(last.OldDataCommit) != string(original) {
		t.Fatalf("last entry %v, want ACCEPT of the UPDATE's key and data with the original data as old", last)
	}

	// A control message not sealed with the commitment key is refused.
	forged := `{"v":1,"op":"accept","table":"public.audit","slot":"witnz","nonce":"00","issued_at_us":1,"seq":5,"mac":"` + strings.Repeat("00", 32) + `"}`
	if _, err := conn.Exec(t.Context(), `SELECT pg_logical_emit_message(true, 'witnz', $1)`, forged); err != nil {
		t.Fatal(err)
	}
	size := len(all)

	if _, err := r.status.Unprotect(t.Context(), connect.NewRequest(&ingestv1.UnprotectRequest{Table: "public.audit", Reason: "retired"})); err != nil {
		t.Fatalf("Unprotect: %v", err)
	}
	all = e.witness.allEntries("public.audit")
	if len(all) != size+1 || all[size].Op != witnessv1.Op_OP_UNPROTECT {
		t.Fatalf("after unprotect the log ends with %v (size %d), want one UNPROTECT after the ACCEPT (the forged message must log nothing)", all[len(all)-1], len(all))
	}
	// Changes after it are not logged: a change of another table made
	// later arrives, the audit one does not.
	if _, err := conn.Exec(t.Context(), `INSERT INTO public.audit VALUES (4, 'after'); INSERT INTO public.other VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the later change of public.other", func() bool { return len(e.witness.entries("public.other")) == 1 })
	if n := len(e.witness.allEntries("public.audit")); n != size+1 {
		t.Errorf("public.audit log grew to %d after unprotect", n)
	}
	for _, tb := range r.getStatus(t).Tables {
		if tb.Name == "public.audit" {
			t.Errorf("status still lists public.audit: %v", tb)
		}
	}
	var kinds []string
	for _, a := range e.alerts.list() {
		kinds = append(kinds, a.Type)
	}
	for _, want := range []string{"cdc.change_accepted", "cdc.table_unprotected", "cdc.forged_control_message", "cdc.update_on_append_only"} {
		if !slices.Contains(kinds, want) {
			t.Errorf("alerts %v lack %s", kinds, want)
		}
	}
	if _, err := r.status.Unprotect(t.Context(), connect.NewRequest(&ingestv1.UnprotectRequest{Table: "public.audit", Reason: "again"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("unprotecting an unprotected table: %v, want NotFound", err)
	}
}

// TestProtectPartitioned protects a partitioned table through its parent:
// rows already in its partitions are its baseline, and changes to any
// partition, including one attached later, are logged under the parent's
// name with the parent's column order.
func TestProtectPartitioned(t *testing.T) {
	t.Parallel()
	pg := testenv.PostgreSQL(t)
	e := newEnv(t, pg, "app")
	pg.Exec(t, "app", `
CREATE TABLE public.events (at date NOT NULL, id bigint NOT NULL, body text, PRIMARY KEY (at, id)) PARTITION BY RANGE (at);
CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
-- A partition whose columns are in another order than the parent's.
CREATE TABLE public.events_2026 (body text, id bigint NOT NULL, at date NOT NULL);
ALTER TABLE public.events ATTACH PARTITION public.events_2026 FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO public.events SELECT date '2025-06-01' + (g % 400), g, 'e' || g FROM generate_series(1, 500) g;
CREATE TABLE public.other (id int PRIMARY KEY);`)
	r := e.start(t, e.args(testenv.FreeAddr(t), "public.other"))
	resp, err := r.status.Protect(t.Context(), connect.NewRequest(&ingestv1.ProtectRequest{Table: "public.events"}))
	if err != nil {
		t.Fatalf("Protect: %v", err)
	}
	if resp.Msg.BaselineRows != 500 {
		t.Errorf("baseline of %d rows, want 500", resp.Msg.BaselineRows)
	}
	pg.Exec(t, "app", `
INSERT INTO public.events SELECT date '2025-12-20' + (g % 30), 1000 + g, 'late' || g FROM generate_series(1, 100) g;
CREATE TABLE public.events_2027 PARTITION OF public.events FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
INSERT INTO public.events VALUES ('2027-03-01', 5000, 'new partition');`)
	waitFor(t, 30*time.Second, "every row at the witness", func() bool {
		return len(e.witness.entries("public.events")) == 601
	})
	got := pairs(e.witness.entries("public.events"))
	want := scanPairs(t, e, "public", "events", `SELECT at, id, body FROM public.events`, 0, 1)
	if !slices.Equal(got, want) {
		missing, extra := diffPairs(want, got)
		t.Fatalf("log and table differ: %d rows missing, %d extra", missing, extra)
	}
	// Mutable mode needs every leaf partition to carry whole old rows.
	pg.Exec(t, "app", `CREATE TABLE public.m (id int PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE public.m1 PARTITION OF public.m FOR VALUES FROM (0) TO (10);
ALTER TABLE public.m REPLICA IDENTITY FULL;`)
	_, err = r.status.Protect(t.Context(), connect.NewRequest(&ingestv1.ProtectRequest{Table: "public.m", Mode: witnessv1.TableMode_TABLE_MODE_MUTABLE}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "m1") {
		t.Errorf("mutable partitioned table with a DEFAULT-identity partition: %v, want FailedPrecondition naming m1", err)
	}
}

// TestRestartKeepsProtection: protection lives in the witness log, so a
// restart without --protect resumes every protected table from its seam
// with no new baseline; a protected table dropped while cdc-ingest was
// down is reported and the others carry on.
func TestRestartKeepsProtection(t *testing.T) {
	t.Parallel()
	pg := testenv.PostgreSQL(t)
	e := newEnv(t, pg, "app")
	pg.Exec(t, "app", `
CREATE TABLE public.audit (id int PRIMARY KEY, msg text);
INSERT INTO public.audit SELECT g, 'm' || g FROM generate_series(1, 10) g;
CREATE TABLE public.doomed (id int PRIMARY KEY);`)
	listen := testenv.FreeAddr(t)
	r := e.start(t, e.args(listen, "public.audit", "public.doomed"))
	if err := r.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	before := len(e.witness.allEntries("public.audit"))
	if before != 12 {
		t.Fatalf("first run logged %d entries for public.audit, want PROTECT, 10 BASELINE, SCHEMA", before)
	}
	pg.Exec(t, "app", `DROP TABLE public.doomed; INSERT INTO public.audit VALUES (11, 'while down')`)

	r = e.start(t, e.args(testenv.FreeAddr(t)))
	waitFor(t, 30*time.Second, "the row inserted while down", func() bool { return len(e.witness.allEntries("public.audit")) == before+1 })
	all := e.witness.allEntries("public.audit")
	if last := all[len(all)-1]; last.Op != witnessv1.Op_OP_INSERT {
		t.Errorf("entry after restart is %v, want the INSERT (no new baseline)", last)
	}
	var dropped bool
	for _, a := range e.alerts.list() {
		dropped = dropped || a.Type == "cdc.table_dropped" && a.Table == "public.doomed"
	}
	if !dropped {
		t.Error("no cdc.table_dropped alert for public.doomed")
	}
	var names []string
	for _, tb := range r.getStatus(t).Tables {
		names = append(names, tb.Name)
	}
	if fmt.Sprint(names) != "[public.audit]" {
		t.Errorf("status lists %v, want [public.audit]", names)
	}

	// A genuine unprotect message of the earlier run (sealed with the
	// deployment's key moments ago), written to the WAL again after the
	// restart emptied the nonce memory: refused, nothing logged.
	payload, err := control.Seal(e.key, control.Message{Op: control.OpUnprotect, Table: "public.audit", Slot: "witnz", By: "spiffe://witnz/operator/admin", Reason: "captured"})
	if err != nil {
		t.Fatal(err)
	}
	size := len(e.witness.allEntries("public.audit"))
	pg.Exec(t, "app", fmt.Sprintf(`BEGIN; SELECT pg_logical_emit_message(true, 'witnz', '%s'); INSERT INTO public.audit VALUES (12, 'after the replay'); COMMIT;`, payload))
	waitFor(t, 30*time.Second, "the INSERT after the replayed message", func() bool { return len(e.witness.allEntries("public.audit")) == size+1 })
	if last := e.witness.allEntries("public.audit")[size]; last.Op != witnessv1.Op_OP_INSERT {
		t.Errorf("entry after the replayed unprotect is %v, want the INSERT (the table stays protected)", last.Op)
	}
	waitFor(t, 30*time.Second, "the replayed control message's alert", func() bool {
		for _, a := range e.alerts.list() {
			if a.Type == "cdc.forged_control_message" && strings.Contains(a.Message, "not issued by it") {
				return true
			}
		}
		return false
	})
}
