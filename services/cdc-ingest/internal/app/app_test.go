package app_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/witnz/witnz/libs/commitment"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	ingestv1 "github.com/witnz/witnz/libs/gen/witnz/ingest/v1"
	"github.com/witnz/witnz/libs/gen/witnz/ingest/v1/ingestv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/services/cdc-ingest/internal/alerts"
	"github.com/witnz/witnz/services/cdc-ingest/internal/app"
)

// commitPair is what the witness holds for one row.
type commitPair struct {
	Key, Data string
}

func pairs(entries []*witnessv1.Entry) []commitPair {
	out := make([]commitPair, len(entries))
	for i, e := range entries {
		out[i] = commitPair{fmt.Sprintf("%x", e.KeyCommit), fmt.Sprintf("%x", e.DataCommit)}
	}
	slices.SortFunc(out, func(a, b commitPair) int { return strings.Compare(a.Key+a.Data, b.Key+b.Data) })
	return out
}

// scanPairs recomputes the commitments of every row from a binary COPY:
// keyCols are the positions of the key columns in query's select list.
func scanPairs(t *testing.T, e *env, schema, table, query string, keyCols ...int) []commitPair {
	t.Helper()
	c := e.key.ForTable(schema, table).NewCommitter()
	var out []commitPair
	for _, row := range copyRows(t, mustConnect(t, e.pg.DSN(e.db)), query) {
		vals, err := commitment.SplitRow(row)
		if err != nil {
			t.Fatal(err)
		}
		key := make([][]byte, len(keyCols))
		for i, k := range keyCols {
			key[i] = vals[k]
		}
		keyEnc, err := commitment.AppendRow(nil, key)
		if err != nil {
			t.Fatal(err)
		}
		k, d := c.KeyCommit(keyEnc), c.DataCommit(row)
		out = append(out, commitPair{fmt.Sprintf("%x", k), fmt.Sprintf("%x", d)})
	}
	slices.SortFunc(out, func(a, b commitPair) int { return strings.Compare(a.Key+a.Data, b.Key+b.Data) })
	return out
}

// TestInsertsMatchCopyScan proves that the commitments computed from the
// WAL equal those recomputed from a binary COPY scan of the table.
func TestInsertsMatchCopyScan(t *testing.T) {
	t.Parallel()
	pg := testenv.PostgreSQL(t)
	e := newEnv(t, pg, "app")
	pg.Exec(t, "app", `
CREATE TABLE public.audit_log (
	id bigint PRIMARY KEY,
	gone int,
	note text NOT NULL,
	maybe text,
	payload bytea,
	at timestamptz NOT NULL,
	n int,
	doubled int GENERATED ALWAYS AS (n * 2) STORED
);
ALTER TABLE public.audit_log DROP COLUMN gone;`)

	// The first --witness is a follower: cdc-ingest must follow its hint.
	follower := newFakeWitness()
	follower.leader = e.wURL
	listen := testenv.FreeAddr(t)
	args := e.args(listen, "public.audit_log")
	args[slices.Index(args, e.wURL)] = follower.start(t, e.pki, "w2")
	args = append(args, "--witness", e.wURL, "--batch-max", "128")
	r := e.start(t, args)

	const insert = `INSERT INTO public.audit_log (id, note, maybe, payload, at, n)
SELECT g, 'héllo wörld ✓ 日本語 ' || g, CASE WHEN g % 3 = 0 THEN NULL ELSE '' END,
       decode(md5(g::text), 'hex'), '2024-02-29 23:59:59.123456+00'::timestamptz + g * interval '1 second', g
FROM generate_series($1::int, $2::int) AS g`
	conn := mustConnect(t, pg.DSN("app"))
	for _, span := range [][2]int{{1, 450}, {451, 900}} {
		if _, err := conn.Exec(t.Context(), insert, span[0], span[1]); err != nil {
			t.Fatal(err)
		}
	}
	for g := 901; g <= 1000; g++ {
		if _, err := conn.Exec(t.Context(), insert, g, g); err != nil {
			t.Fatal(err)
		}
	}
	var serverLSN pglogrepl.LSN
	if err := conn.QueryRow(t.Context(), `SELECT pg_current_wal_lsn()`).Scan(&serverLSN); err != nil {
		t.Fatal(err)
	}

	waitFor(t, 30*time.Second, "1,000 entries at the witness", func() bool {
		return len(e.witness.entries("public.audit_log")) >= 1000
	})
	entries := e.witness.entries("public.audit_log")
	if len(entries) != 1000 {
		t.Fatalf("witness holds %d entries, want 1000", len(entries))
	}
	txIndex := map[uint64]uint32{}
	for _, en := range entries {
		if en.Op != witnessv1.Op_OP_INSERT || en.Xid == 0 || en.CommitTimeMicros == 0 || len(en.OldDataCommit) != 0 {
			t.Fatalf("unexpected entry %v", en)
		}
		if en.TxIndex != txIndex[en.CommitLsn] {
			t.Fatalf("entry %v: tx_index %d, want %d", en, en.TxIndex, txIndex[en.CommitLsn])
		}
		txIndex[en.CommitLsn]++
	}
	if len(txIndex) != 102 {
		t.Errorf("entries come from %d transactions, want 102", len(txIndex))
	}

	// Generated and dropped columns are not part of the row.
	want := scanPairs(t, e, "public", "audit_log", `SELECT id, note, maybe, payload, at, n FROM public.audit_log`, 0)
	if diff := cmp.Diff(want, pairs(entries)); diff != "" {
		t.Fatalf("WAL commitments differ from scan commitments (-scan +wal):\n%s", diff)
	}

	// The slot is confirmed once the witness has everything.
	waitFor(t, 30*time.Second, "slot confirmed past the inserts", func() bool {
		return slotLSN(t, conn, "witnz") >= uint64(serverLSN)
	})
	st := r.getStatus(t)
	if st.Tables[0].EntriesCommitted != 1000 || st.PendingEntries != 0 || st.LastCommitAt == nil || st.SlotName != "witnz" || st.Publication != "witnz" || st.ServerLsn == "" {
		t.Errorf("status = %v", st)
	}
	// The same over the Connect protocol.
	viaConnect := ingestv1connect.NewIngestServiceClient(mustTLS(t, e.pki, operatorID).HTTPClient(), "https://"+listen)
	resp, err := viaConnect.GetStatus(t.Context(), connect.NewRequest(&ingestv1.GetStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(st.Tables, resp.Msg.Tables, protocmp.Transform()); diff != "" {
		t.Errorf("tables over Connect (-gRPC +Connect):\n%s", diff)
	}
}

// TestForbiddenChangesAlert checks that UPDATE and DELETE on an append-only
// table raise CRITICAL alerts naming the table, key and transaction, and
// that every change is logged.
func TestForbiddenChangesAlert(t *testing.T) {
	t.Parallel()
	pg := testenv.PostgreSQL(t)
	e := newEnv(t, pg, "app")
	pg.Exec(t, "app", `
CREATE TABLE public.audit (id int, region text, msg text, PRIMARY KEY (region, id));
CREATE TABLE public.ledger (id int PRIMARY KEY, balance numeric);
ALTER TABLE public.ledger REPLICA IDENTITY FULL;
CREATE TABLE public.nokey (v text, n int);
ALTER TABLE public.nokey REPLICA IDENTITY FULL;
CREATE TABLE public.other (id int PRIMARY KEY);
-- An existing publication lacking two of the protected tables.
CREATE PUBLICATION witnz FOR TABLE public.audit WITH (publish_via_partition_root = true);`)
	e.start(t, e.args(testenv.FreeAddr(t), "public.audit", "public.ledger:mutable", "public.nokey:append-only"))

	conn := mustConnect(t, pg.DSN("app"))
	pg.Exec(t, "app", `
INSERT INTO public.audit VALUES (41, 'eu', 'a'), (42, 'eu', 'b'), (43, 'us', 'c');
INSERT INTO public.ledger VALUES (1, 10.5);
INSERT INTO public.nokey VALUES ('a', 1);
INSERT INTO public.other VALUES (1);`)
	xidOf := func(sql string) uint32 {
		t.Helper()
		tx, err := conn.Begin(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(t.Context(), sql); err != nil {
			t.Fatal(err)
		}
		var xid uint32
		if err := tx.QueryRow(t.Context(), `SELECT pg_current_xact_id()::text::bigint`).Scan(&xid); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(t.Context()); err != nil {
			t.Fatal(err)
		}
		return xid
	}
	updXID := xidOf(`UPDATE public.audit SET msg = 'tampered' WHERE id = 42`)
	delXID := xidOf(`DELETE FROM public.audit WHERE id = 43`)
	xidOf(`UPDATE public.ledger SET balance = 99 WHERE id = 1; UPDATE public.other SET id = 2`)
	nokeyXID := xidOf(`DELETE FROM public.nokey`)

	forbidden := func() []*alertv1.Alert {
		var out []*alertv1.Alert
		for _, a := range e.alerts.list() {
			if a.Type != "cdc.table_protected" {
				out = append(out, a)
			}
		}
		return out
	}
	waitFor(t, 30*time.Second, "three alerts", func() bool { return len(forbidden()) >= 3 })
	waitFor(t, 30*time.Second, "every entry", func() bool {
		return len(e.witness.entries("public.audit")) == 5 && len(e.witness.entries("public.ledger")) == 2 && len(e.witness.entries("public.nokey")) == 2
	})
	audit := e.witness.entries("public.audit")
	upd, del := audit[3], audit[4]

	got := forbidden()
	if len(got) != 3 {
		t.Fatalf("got %d alerts, want 3: %v", len(got), got)
	}
	type alertView struct {
		Type, Message, Source, Table string
		Severity                     alertv1.Severity
		Detail                       map[string]any
	}
	view := func(a *alertv1.Alert) alertView {
		d := a.Detail.AsMap()
		delete(d, "commit_time")
		delete(d, "lsn")
		// The message ends with the change's LSN, checked below.
		msg, _, _ := strings.Cut(a.Message, " at ")
		return alertView{a.Type, msg, a.Source, a.Table, a.Severity, d}
	}
	lsn := func(l uint64) string { return pglogrepl.LSN(l).String() }
	wantAlerts := []alertView{{
		Type: "cdc.update_on_append_only", Severity: alertv1.Severity_SEVERITY_CRITICAL, Source: "cdc-ingest", Table: "public.audit",
		Message: fmt.Sprintf("UPDATE on append-only table public.audit (region=eu, id=42) in xid %d", updXID),
		Detail: map[string]any{"table": "public.audit", "op": "UPDATE", "key": map[string]any{"region": "eu", "id": "42"},
			"xid": float64(updXID), "commit_lsn": lsn(upd.CommitLsn)},
	}, {
		Type: "cdc.delete_on_append_only", Severity: alertv1.Severity_SEVERITY_CRITICAL, Source: "cdc-ingest", Table: "public.audit",
		Message: fmt.Sprintf("DELETE on append-only table public.audit (region=us, id=43) in xid %d", delXID),
		Detail: map[string]any{"table": "public.audit", "op": "DELETE", "key": map[string]any{"region": "us", "id": "43"},
			"xid": float64(delXID), "commit_lsn": lsn(del.CommitLsn)},
	}, {
		// Without a primary key the whole row is the key.
		Type: "cdc.delete_on_append_only", Severity: alertv1.Severity_SEVERITY_CRITICAL, Source: "cdc-ingest", Table: "public.nokey",
		Message: fmt.Sprintf("DELETE on append-only table public.nokey (v=a, n=1) in xid %d", nokeyXID),
		Detail: map[string]any{"table": "public.nokey", "op": "DELETE", "key": map[string]any{"v": "a", "n": "1"},
			"xid": float64(nokeyXID), "commit_lsn": lsn(e.witness.entries("public.nokey")[1].CommitLsn)},
	}}
	if diff := cmp.Diff(wantAlerts, []alertView{view(got[0]), view(got[1]), view(got[2])}); diff != "" {
		t.Errorf("alerts (-want +got):\n%s", diff)
	}
	for _, a := range got {
		if a.AlertId == "" || a.OccurredAt == nil || !strings.HasSuffix(a.Message, " at "+a.Detail.AsMap()["lsn"].(string)) {
			t.Errorf("alert %v: missing id, time or LSN", a)
		}
	}

	// The log records the changes: the UPDATE carries the new row's
	// commitments, the DELETE the key; the key is (region, id) in key order.
	c := e.key.ForTable("public", "audit").NewCommitter()
	keyOf := func(region string, id int32) []byte {
		k, err := commitment.AppendRow(nil, [][]byte{[]byte(region), {byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}})
		if err != nil {
			t.Fatal(err)
		}
		kc := c.KeyCommit(k)
		return kc[:]
	}
	if upd.Op != witnessv1.Op_OP_UPDATE || upd.Xid != updXID || !bytes.Equal(upd.KeyCommit, keyOf("eu", 42)) || len(upd.OldDataCommit) != 0 {
		t.Errorf("UPDATE entry = %v", upd)
	}
	rows := copyRows(t, conn, `SELECT * FROM public.audit WHERE id = 42`)
	if dc := c.DataCommit(rows[0]); !bytes.Equal(upd.DataCommit, dc[:]) {
		t.Errorf("UPDATE data commitment differs from the scan of the updated row")
	}
	if del.Op != witnessv1.Op_OP_DELETE || del.Xid != delXID || !bytes.Equal(del.KeyCommit, keyOf("us", 43)) || len(del.DataCommit) != 0 {
		t.Errorf("DELETE entry = %v", del)
	}
	// REPLICA IDENTITY FULL: the UPDATE carries the old row's commitment.
	if l := e.witness.entries("public.ledger"); l[1].Op != witnessv1.Op_OP_UPDATE || !bytes.Equal(l[1].OldDataCommit, l[0].DataCommit) || !bytes.Equal(l[1].KeyCommit, l[0].KeyCommit) {
		t.Errorf("ledger entries = %v", l)
	}
	// Without a primary key, key and data commitments cover the whole row.
	nk := e.witness.entries("public.nokey")
	nc := e.key.ForTable("public", "nokey").NewCommitter()
	row := copyRows(t, conn, `SELECT 'a'::text, 1`)[0]
	rowKey, rowData := nc.KeyCommit(row), nc.DataCommit(row)
	if !bytes.Equal(nk[0].KeyCommit, rowKey[:]) || !bytes.Equal(nk[0].DataCommit, rowData[:]) ||
		nk[1].Op != witnessv1.Op_OP_DELETE || !bytes.Equal(nk[1].KeyCommit, rowKey[:]) || !bytes.Equal(nk[1].OldDataCommit, rowData[:]) {
		t.Errorf("nokey entries = %v", nk)
	}
}

// TestSlotWaitsForWitness checks that the slot's confirmed position never
// passes entries the witness has not acknowledged, and moves once it has.
func TestSlotWaitsForWitness(t *testing.T) {
	t.Parallel()
	// Frequent keepalives: their positions must not move the slot past
	// pending entries either.
	pg := testenv.PostgreSQL(t, testenv.WithSetting("wal_sender_timeout", "2s"))
	e := newEnv(t, pg, "app")
	pg.Exec(t, "app", `CREATE TABLE public.t (id int PRIMARY KEY); CREATE TABLE public.unprotected (id int)`)
	r := e.start(t, e.args(testenv.FreeAddr(t), "public.t"))
	conn := mustConnect(t, pg.DSN("app"))

	e.witness.unavailable.Store(true)
	pg.Exec(t, "app", `INSERT INTO public.t SELECT generate_series(1, 10)`)
	var refused []*witnessv1.Entry
	waitFor(t, 30*time.Second, "refused appends", func() bool {
		refused = e.witness.refusedEntries()
		return len(refused) > 0
	})
	pending := refused[0].CommitLsn
	// Keep WAL moving with unrelated transactions while the witness is
	// down, and watch the slot across several retries and keepalives.
	for i := range 20 {
		pg.Exec(t, "app", fmt.Sprintf(`INSERT INTO public.unprotected VALUES (%d)`, i))
		if got := slotLSN(t, conn, "witnz"); got > pending {
			t.Fatalf("slot confirmed at %s, past unacknowledged entries at %s", pglogrepl.LSN(got), pglogrepl.LSN(pending))
		}
	}
	// PostgreSQL asks for a reply after 1 s of silence (half of
	// wal_sender_timeout); wait for two such replies while the witness is
	// down. Had they gone unanswered, PostgreSQL would have dropped the
	// connection.
	var since time.Time
	if err := conn.QueryRow(t.Context(), `SELECT now()`).Scan(&since); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "keepalive replies while the witness is down", func() bool {
		if got := slotLSN(t, conn, "witnz"); got > pending {
			t.Fatalf("slot confirmed at %s, past unacknowledged entries at %s", pglogrepl.LSN(got), pglogrepl.LSN(pending))
		}
		var ok bool
		err := conn.QueryRow(t.Context(), `SELECT coalesce(bool_or(reply_time > $1::timestamptz + interval '1.5 seconds'), false) FROM pg_stat_replication`, since).Scan(&ok)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	})
	if strings.Contains(r.log.String(), "replication stream lost") {
		t.Errorf("the replication connection dropped while the witness was down")
	}
	if st := r.getStatus(t); st.PendingEntries != 10 || !st.Streaming {
		t.Errorf("status while the witness is down = %v", st)
	}

	e.witness.unavailable.Store(false)
	waitFor(t, 30*time.Second, "entries acknowledged", func() bool { return len(e.witness.entries("public.t")) == 10 })
	waitFor(t, 30*time.Second, "slot confirmed past the entries", func() bool { return slotLSN(t, conn, "witnz") > pending })
}

// TestRestartResumes checks that nothing is lost or doubled across lost
// answers, a dropped replication connection and a restart.
func TestRestartResumes(t *testing.T) {
	t.Parallel()
	pg := testenv.PostgreSQL(t)
	e := newEnv(t, pg, "app")
	pg.Exec(t, "app", `CREATE TABLE public.t (id int PRIMARY KEY, v text)`)
	insert := func(from, to int) {
		for i := from; i <= to; i += 50 {
			pg.Exec(t, "app", fmt.Sprintf(`INSERT INTO public.t SELECT g, md5(g::text) FROM generate_series(%d, %d) g`, i, i+49))
		}
	}
	count := func(n int) func() bool {
		return func() bool { return len(e.witness.entries("public.t")) == n }
	}

	// The witness stores the first appends but their answers are lost:
	// the retries are replays it skips.
	e.witness.loseAcks.Store(2)
	listen := testenv.FreeAddr(t)
	r := e.start(t, e.args(listen, "public.t"))
	insert(1, 200)
	waitFor(t, 30*time.Second, "200 entries", count(200))
	if err := r.stop(t); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	if e.witness.duplicates == 0 {
		t.Error("lost answers caused no replays")
	}

	insert(201, 400) // while cdc-ingest is down
	r = e.start(t, e.args(listen, "public.t"))
	waitFor(t, 30*time.Second, "400 entries", count(400))

	// Drop the replication connection under it.
	pg.Exec(t, "app", `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'witnz'`)
	insert(401, 600)
	waitFor(t, 30*time.Second, "600 entries", count(600))

	seen := map[entryKey]bool{}
	for _, en := range e.witness.entries("public.t") {
		k := entryKey{en.CommitLsn, en.TxIndex}
		if seen[k] {
			t.Fatalf("entry %v logged twice", en)
		}
		seen[k] = true
	}
	want := scanPairs(t, e, "public", "t", `SELECT * FROM public.t`, 0)
	if diff := cmp.Diff(want, pairs(e.witness.entries("public.t"))); diff != "" {
		t.Fatalf("logged commitments differ from the table (-scan +wal):\n%s", diff)
	}
	waitFor(t, 30*time.Second, "reconnected", func() bool { return r.getStatus(t).Streaming })
}

// TestSecondInstance starts a second cdc-ingest on the slot the first one
// streams: it says the slot is in use, writes no heartbeats (which the
// first would refuse as control messages it did not seal, with a false
// CRITICAL alert), and takes over when the first stops, losing nothing.
func TestSecondInstance(t *testing.T) {
	t.Parallel()
	pg := testenv.PostgreSQL(t)
	e := newEnv(t, pg, "app")
	pg.Exec(t, "app", `CREATE TABLE public.t (id int PRIMARY KEY, v text)`)
	hb := []string{"--heartbeat-interval", "100ms", "--heartbeat-timeout", "30s"}
	a := e.start(t, append(e.args(testenv.FreeAddr(t), "public.t"), hb...))
	pg.Exec(t, "app", `INSERT INTO public.t SELECT g, 'a' FROM generate_series(1, 10) g`)
	waitFor(t, 30*time.Second, "10 entries", func() bool { return len(e.witness.entries("public.t")) == 10 })

	ctx, cancel := context.WithCancel(context.Background())
	bLog := &syncBuffer{}
	bDone := make(chan error, 1)
	go func() { bDone <- app.Run(ctx, append(e.args(testenv.FreeAddr(t), "public.t"), hb...), e.getenv, bLog) }()
	t.Cleanup(func() {
		cancel()
		<-bDone
		if t.Failed() {
			t.Logf("second cdc-ingest log:\n%s", bLog.String())
		}
	})
	waitFor(t, 30*time.Second, "the second instance to name the slot in use", func() bool {
		return strings.Contains(bLog.String(), "is in use by another process")
	})
	// The first one read ten heartbeat intervals meanwhile.
	time.Sleep(time.Second)
	// The second retries with backoff (100 ms doubling): a handful of
	// attempts in the first seconds, not a loop.
	if n := strings.Count(bLog.String(), "replication stream lost; reconnecting"); n < 2 || n > 12 {
		t.Errorf("the second instance logged %d reconnection attempts within about two seconds, want a few, spaced by the backoff", n)
	}
	pg.Exec(t, "app", `INSERT INTO public.t SELECT g, 'b' FROM generate_series(11, 20) g`)
	waitFor(t, 30*time.Second, "20 entries", func() bool { return len(e.witness.entries("public.t")) == 20 })
	for _, al := range e.alerts.list() {
		if al.GetType() == alerts.TypeForgedControlMessage {
			t.Fatalf("the first instance alerted a heartbeat of the second: %v", al)
		}
	}

	if err := a.stop(t); err != nil {
		t.Fatalf("stop the first: %v", err)
	}
	pg.Exec(t, "app", `INSERT INTO public.t SELECT g, 'c' FROM generate_series(21, 30) g`)
	waitFor(t, 60*time.Second, "30 entries through the second", func() bool { return len(e.witness.entries("public.t")) == 30 })
	want := scanPairs(t, e, "public", "t", `SELECT * FROM public.t`, 0)
	if diff := cmp.Diff(want, pairs(e.witness.entries("public.t"))); diff != "" {
		t.Fatalf("logged commitments differ from the table (-scan +wal):\n%s", diff)
	}
	for _, al := range e.alerts.list() {
		if al.GetType() == alerts.TypeForgedControlMessage {
			t.Fatalf("forged control message alerted: %v", al)
		}
	}
}

// TestStartupErrors checks the one-line errors for bad set-ups.
func TestStartupErrors(t *testing.T) {
	t.Parallel()
	pg := testenv.PostgreSQL(t)
	e := newEnv(t, pg, "app")
	pg.Exec(t, "app", `
CREATE TABLE public.nokey (v text);
CREATE TABLE public.nothing (id int PRIMARY KEY);
ALTER TABLE public.nothing REPLICA IDENTITY NOTHING;
CREATE TABLE public.good (id int PRIMARY KEY);
CREATE ROLE plain LOGIN;`)
	pg.Exec(t, "app", `SELECT pg_create_logical_replication_slot('textual', 'test_decoding')`)

	unreachable := testenv.FreeAddr(t)
	tests := []struct {
		name string
		args []string
		want []string
	}{{
		name: "missing table",
		args: e.args(testenv.FreeAddr(t), "public.nope"),
		want: []string{"table public.nope", "does not exist", "check the name (SCHEMA.TABLE, case-sensitive) or create the table"},
	}, {
		name: "no primary key",
		args: e.args(testenv.FreeAddr(t), "public.nokey"),
		want: []string{"public.nokey has no primary key", "REPLICA IDENTITY FULL"},
	}, {
		name: "replica identity nothing",
		args: e.args(testenv.FreeAddr(t), "public.nothing"),
		want: []string{"public.nothing", "REPLICA IDENTITY DEFAULT"},
	}, {
		name: "role without replication",
		args: append(e.args(testenv.FreeAddr(t), "public.nothing"), "--pg-dsn", strings.Replace(pg.DSN("app"), "postgres@", "plain@", 1)),
		want: []string{`replication privilege: role plain: superuser false, replication false`, `ALTER ROLE "plain" REPLICATION`},
	}, {
		name: "unreachable",
		args: append(e.args(testenv.FreeAddr(t), "public.nothing"), "--pg-dsn", "postgres://postgres@"+unreachable+"/app?sslmode=disable"),
		want: []string{"cannot reach PostgreSQL at " + unreachable, "is PostgreSQL running? check --pg-dsn"},
	}, {
		name: "slot of another plugin",
		args: append(e.args(testenv.FreeAddr(t), "public.good"), "--slot", "textual"),
		want: []string{`replication slot textual exists but is a logical slot with plugin "test_decoding"`, "pick another --slot"},
	}, {
		name: "bad flag",
		args: append(e.args(testenv.FreeAddr(t), "public.nothing"), "--batch-max", "0"),
		want: []string{"--batch-max 0"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := app.Run(t.Context(), tc.args, e.getenv, &syncBuffer{})
			checkErr(t, err, tc.want...)
		})
	}
}

// TestWALLevelReplica checks the error when logical decoding is off.
func TestWALLevelReplica(t *testing.T) {
	t.Parallel()
	pg := testenv.PostgreSQL(t, testenv.WithSetting("wal_level", "replica"))
	e := newEnv(t, pg, "app")
	pg.Exec(t, "app", `CREATE TABLE public.t (id int PRIMARY KEY)`)
	err := app.Run(t.Context(), e.args(testenv.FreeAddr(t), "public.t"), e.getenv, &syncBuffer{})
	checkErr(t, err, `wal_level is "replica"`, "ALTER SYSTEM SET wal_level = logical;", "restart PostgreSQL", "rds.logical_replication")
}

func checkErr(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("Run succeeded, want an error")
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		t.Errorf("error spans several lines: %q", msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not contain %q", msg, w)
		}
	}
}
