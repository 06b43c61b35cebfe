package capture

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/witnz/witnz/libs/commitment"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/services/cdc-ingest/internal/alerts"
	"github.com/witnz/witnz/services/cdc-ingest/internal/config"
	"github.com/witnz/witnz/services/cdc-ingest/internal/control"
	"github.com/witnz/witnz/services/cdc-ingest/internal/pgsource"
	"github.com/witnz/witnz/services/cdc-ingest/internal/schema"
)

// pgEnv is a database with protected tables public.audit (append-only)
// and public.ledger (mutable), a table public.other that is not
// protected, the publication "pub" of the protected tables and the slot
// named after the database, created after the tables: the stream holds
// everything the test does next.
type pgEnv struct {
	pg   *testenv.PG
	db   string
	conn *pgx.Conn
}

func newPGEnv(t *testing.T, pg *testenv.PG, db string) *pgEnv {
	t.Helper()
	pg.CreateDatabase(t, db)
	pg.Exec(t, db, `CREATE TABLE audit (id int8 PRIMARY KEY, body text);
		CREATE TABLE ledger (id int8 PRIMARY KEY, amount int8);
		CREATE TABLE other (id int4 PRIMARY KEY);
		CREATE PUBLICATION pub FOR TABLE audit, ledger WITH (publish_via_partition_root = true)`)
	pg.Exec(t, db, `SELECT pg_create_logical_replication_slot('`+db+`', 'pgoutput')`)
	conn, err := pgx.Connect(t.Context(), pg.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return &pgEnv{pg: pg, db: db, conn: conn}
}

func (e *pgEnv) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := e.conn.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// lsn is pg_current_wal_lsn().
func (e *pgEnv) lsn(t *testing.T) pglogrepl.LSN {
	t.Helper()
	var s string
	if err := e.conn.QueryRow(t.Context(), `SELECT pg_current_wal_lsn()::text`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// table describes public.<name> as protected, its log expecting the
// current schema.
func (e *pgEnv) table(t *testing.T, name string, mode witnessv1.TableMode) Table {
	t.Helper()
	var oid uint32
	if err := e.conn.QueryRow(t.Context(), `SELECT $1::regclass::oid`, "public."+name).Scan(&oid); err != nil {
		t.Fatal(err)
	}
	s, err := schema.Load(t.Context(), e.conn, oid)
	if err != nil {
		t.Fatal(err)
	}
	return Table{
		Table:          pgsource.Table{Table: config.Table{Schema: "public", Name: name, Mode: mode}, OID: oid, KeyColumns: s.KeyColumns(), ReplIdent: s.ReplIdent},
		SchemaCommit:   s.Commit(testKey.ForTable("public", name).NewCommitter()),
		ExpectedSchema: &s,
	}
}

// emit writes a logical decoding message.
func (e *pgEnv) emit(t *testing.T, transactional bool, prefix string, payload []byte) {
	t.Helper()
	e.exec(t, `SELECT pg_logical_emit_message($1, $2, $3::bytea)`, transactional, prefix, payload)
}

func seal(t *testing.T, k commitment.Key, m control.Message) []byte {
	t.Helper()
	p, err := control.Seal(k, m)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// stream reads the slot from its confirmed position (never confirming) up
// to a message with prefix "end" it writes first, feeding dec.
func (e *pgEnv) stream(t *testing.T, dec *Decoder) {
	t.Helper()
	marker := []byte(time.Now().Format(time.RFC3339Nano))
	e.emit(t, false, "end", marker)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cfg, err := pgconn.ParseConfig(e.pg.DSN(e.db))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		conn.Close(context.Background())
		// The next read needs the slot released.
		deadline := time.Now().Add(30 * time.Second)
		for {
			var active bool
			if err := e.conn.QueryRow(context.Background(), `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, e.db).Scan(&active); err != nil || !active {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("replication slot still active after the connection closed")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	err = pglogrepl.StartReplication(ctx, conn, e.db, 0, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names 'pub'", "binary 'true'", "messages 'true'"},
	})
	if err != nil {
		t.Fatal(err)
	}
	dec.Reset()
	for {
		raw, err := conn.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		cd, ok := raw.(*pgproto3.CopyData)
		if !ok || len(cd.Data) == 0 || cd.Data[0] != pglogrepl.XLogDataByteID {
			continue
		}
		xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			t.Fatal(err)
		}
		if err := dec.Handle(ctx, xld.WALStart, xld.WALData); err != nil {
			t.Fatalf("Handle at %s: %v", xld.WALStart, err)
		}
		if m, err := pglogrepl.Parse(xld.WALData); err == nil {
			if lm, ok := m.(*pglogrepl.LogicalDecodingMessage); ok && lm.Prefix == "end" && string(lm.Content) == string(marker) {
				return
			}
		}
	}
}

type captured struct {
	dec         *Decoder
	sink        *recordSink
	heartbeats  []pglogrepl.LSN
	unprotected []string
	announced   *Announcements
}

func (e *pgEnv) decoder(t *testing.T, tables ...Table) *captured {
	c := &captured{sink: &recordSink{}, announced: NewAnnouncements()}
	c.dec = New(Options{
		Slot: e.db, Publication: "pub", Key: testKey, Tables: tables, Sink: c.sink, Announced: c.announced,
		Log:         slog.New(slog.DiscardHandler),
		OnHeartbeat: func(_ time.Time, lsn pglogrepl.LSN) { c.heartbeats = append(c.heartbeats, lsn) },
		OnUnprotect: func(table string) { c.unprotected = append(c.unprotected, table) },
	})
	return c
}

// summary renders the sink's entries and alerts, one line each:
// "entry public.audit OP_INSERT 0" or "alert cdc.truncate CRITICAL public.audit".
func (c *captured) summary() []string {
	var out []string
	for _, ev := range c.sink.events {
		switch ev.Kind {
		case "entry":
			out = append(out, fmt.Sprintf("entry %s %s %d", ev.Table, ev.Entry.GetOp(), ev.Entry.GetTxIndex()))
		case "alert":
			out = append(out, fmt.Sprintf("alert %s %s %s", ev.Alert.GetType(), strings.TrimPrefix(ev.Alert.GetSeverity().String(), "SEVERITY_"), ev.Alert.GetTable()))
		}
	}
	return out
}

func (c *captured) alerts(typ string) []*alertv1.Alert {
	var out []*alertv1.Alert
	for _, ev := range c.sink.events {
		if ev.Alert != nil && ev.Alert.GetType() == typ {
			out = append(out, ev.Alert)
		}
	}
	return out
}

func (c *captured) entries(op witnessv1.Op) []*witnessv1.Entry {
	var out []*witnessv1.Entry
	for _, ev := range c.sink.events {
		if ev.Entry != nil && ev.Entry.GetOp() == op {
			out = append(out, ev.Entry)
		}
	}
	return out
}

func field(a *alertv1.Alert, k string) any {
	if v := a.GetDetail().GetFields()[k]; v != nil {
		return v.AsInterface()
	}
	return nil
}

func alertIDs(events []event) []string {
	var out []string
	for _, ev := range events {
		if ev.Alert != nil {
			out = append(out, ev.Alert.GetAlertId())
		}
	}
	return out
}

func wantSummary(t *testing.T, c *captured, want ...string) {
	t.Helper()
	got := c.summary()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stream gave\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestStreamSignals runs each scenario through a real replication
// connection.
func TestStreamSignals(t *testing.T) {
	pg := testenv.PostgreSQL(t, testenv.WithSetting("max_replication_slots", "30"), testenv.WithSetting("max_wal_senders", "30"))
	appendOnly, mutable := witnessv1.TableMode_TABLE_MODE_APPEND_ONLY, witnessv1.TableMode_TABLE_MODE_MUTABLE

	t.Run("truncate", func(t *testing.T) {
		t.Parallel()
		e := newPGEnv(t, pg, "truncate")
		c := e.decoder(t, e.table(t, "audit", appendOnly), e.table(t, "ledger", mutable))
		e.exec(t, `INSERT INTO audit VALUES (1, 'a'); INSERT INTO ledger VALUES (1, 5)`)
		e.exec(t, `TRUNCATE audit, ledger RESTART IDENTITY CASCADE`)
		e.stream(t, c.dec)
		wantSummary(t, c,
			"entry public.audit OP_INSERT 0",
			"entry public.ledger OP_INSERT 0",
			"entry public.audit OP_TRUNCATE 0",
			"alert cdc.truncate CRITICAL public.audit",
			"entry public.ledger OP_TRUNCATE 0",
			"alert cdc.truncate HIGH public.ledger",
		)
		a := c.alerts(alerts.TypeTruncate)[0]
		if field(a, "cascade") != true || field(a, "restart_identity") != true || field(a, "relations") != "public.audit, public.ledger" ||
			field(a, "xid") == 0.0 || field(a, "commit_time") == "" || !strings.Contains(a.GetMessage(), "TRUNCATE CASCADE RESTART IDENTITY of append-only table public.audit") {
			t.Errorf("alert = %v", a)
		}
	})

	t.Run("schema_change", func(t *testing.T) {
		t.Parallel()
		e := newPGEnv(t, pg, "schema_change")
		audit := e.table(t, "audit", appendOnly)
		c := e.decoder(t, audit)
		e.exec(t, `INSERT INTO audit VALUES (1, 'a')`)
		e.exec(t, `ALTER TABLE audit ADD COLUMN note varchar(20)`)
		e.exec(t, `INSERT INTO audit VALUES (2, 'b', 'n')`)
		e.stream(t, c.dec)
		wantSummary(t, c,
			"entry public.audit OP_INSERT 0",
			"entry public.audit OP_SCHEMA 0",
			"alert cdc.schema_changed HIGH public.audit",
			"entry public.audit OP_INSERT 1",
		)
		a := c.alerts(alerts.TypeSchemaChanged)[0]
		if field(a, "diff") != "column note added (varchar(20))" || field(a, "old_schema") != "id int8 key, body text, replica identity default" {
			t.Errorf("alert = %v", a)
		}
		got := c.entries(witnessv1.Op_OP_SCHEMA)[0]
		now, err := schema.Load(t.Context(), e.conn, audit.OID)
		if err != nil {
			t.Fatal(err)
		}
		if want := now.Commit(testKey.ForTable("public", "audit").NewCommitter()); string(got.GetDataCommit()) != string(want[:]) {
			t.Error("SCHEMA entry does not carry the new schema commitment")
		}
		if tabs := c.dec.Tables(); len(tabs) != 1 || tabs[0].ExpectedSchema == nil || len(tabs[0].ExpectedSchema.Columns) != 3 {
			t.Errorf("Tables() does not follow the change: %+v", tabs)
		}
		// A new connection reads the same transactions again (nothing was
		// confirmed): they give the same entries and alerts.
		first := c.summary()
		firstIDs := alertIDs(c.sink.events)
		c.sink.events = nil
		e.exec(t, `INSERT INTO audit VALUES (3, 'c', 'n')`)
		e.stream(t, c.dec)
		if got, want := strings.Join(c.summary(), "\n"), strings.Join(append(first, "entry public.audit OP_INSERT 0"), "\n"); got != want {
			t.Errorf("after reconnecting:\n%s\nwant\n%s", got, want)
		}
		if got := alertIDs(c.sink.events); fmt.Sprint(got) != fmt.Sprint(firstIDs) {
			t.Errorf("alert ids after reconnecting %v, want %v", got, firstIDs)
		}
	})

	t.Run("announced_by_catalog_check", func(t *testing.T) {
		t.Parallel()
		e := newPGEnv(t, pg, "announced")
		audit, ledger := e.table(t, "audit", appendOnly), e.table(t, "ledger", appendOnly)
		c := e.decoder(t, audit, ledger)
		e.exec(t, `ALTER TABLE audit ADD COLUMN note text; ALTER TABLE audit RENAME TO audit2; ALTER TABLE ledger ADD COLUMN note text`)
		committed := func(oid uint32, name string) commitment.Commitment {
			s, err := schema.Load(t.Context(), e.conn, oid)
			if err != nil {
				t.Fatal(err)
			}
			return s.Commit(testKey.ForTable("public", name).NewCommitter())
		}
		// The catalog check alerted audit's change and rename, and a
		// change of ledger to some other schema than the one it has now.
		c.announced.SchemaAlerted("public.audit", audit.SchemaCommit, committed(audit.OID, "audit"))
		c.announced.RenameAlerted("public.audit", "public.audit2")
		c.announced.SchemaAlerted("public.ledger", ledger.SchemaCommit, audit.SchemaCommit)
		e.exec(t, `INSERT INTO audit2 VALUES (1, 'a', 'n'); INSERT INTO ledger VALUES (1, 5, 'n')`)
		e.stream(t, c.dec)
		wantSummary(t, c,
			"entry public.audit OP_SCHEMA 0",
			"entry public.audit OP_INSERT 1",
			"entry public.ledger OP_SCHEMA 0",
			"alert cdc.schema_changed HIGH public.ledger",
			"entry public.ledger OP_INSERT 1",
		)
		if _, _, ok := c.announced.Schema("public.audit"); ok {
			t.Error("the announcement outlived the SCHEMA entry it covered")
		}
	})

	t.Run("adopt_first_schema", func(t *testing.T) {
		t.Parallel()
		e := newPGEnv(t, pg, "adopt")
		audit := e.table(t, "audit", appendOnly)
		audit.SchemaCommit, audit.ExpectedSchema = commitment.Commitment{}, nil
		c := e.decoder(t, audit)
		e.exec(t, `INSERT INTO audit VALUES (1, 'a')`)
		e.stream(t, c.dec)
		wantSummary(t, c, "entry public.audit OP_SCHEMA 0", "entry public.audit OP_INSERT 1")
	})

	t.Run("rename", func(t *testing.T) {
		t.Parallel()
		e := newPGEnv(t, pg, "rename")
		c := e.decoder(t, e.table(t, "audit", appendOnly))
		e.exec(t, `ALTER TABLE audit RENAME TO audit_old`)
		e.exec(t, `INSERT INTO audit_old VALUES (1, 'a')`)
		e.exec(t, `INSERT INTO audit_old VALUES (2, 'b')`)
		e.stream(t, c.dec)
		wantSummary(t, c,
			"alert cdc.table_renamed CRITICAL public.audit",
			"entry public.audit OP_INSERT 0",
			"entry public.audit OP_INSERT 0",
		)
		if a := c.alerts(alerts.TypeTableRenamed)[0]; field(a, "new_name") != "public.audit_old" {
			t.Errorf("alert = %v", a)
		}
	})

	t.Run("replica_identity", func(t *testing.T) {
		t.Parallel()
		e := newPGEnv(t, pg, "replident")
		c := e.decoder(t, e.table(t, "audit", appendOnly), e.table(t, "ledger", mutable))
		e.exec(t, `INSERT INTO audit VALUES (1, 'a'); INSERT INTO ledger VALUES (1, 5)`)
		e.exec(t, `ALTER TABLE audit REPLICA IDENTITY FULL; ALTER TABLE ledger ALTER amount SET NOT NULL;
			CREATE UNIQUE INDEX ledger_amount ON ledger (amount); ALTER TABLE ledger REPLICA IDENTITY USING INDEX ledger_amount`)
		e.exec(t, `UPDATE audit SET body = 'x'`)
		e.exec(t, `UPDATE ledger SET amount = 6`)
		e.stream(t, c.dec)
		wantSummary(t, c,
			"entry public.audit OP_INSERT 0",
			"entry public.ledger OP_INSERT 0",
			"entry public.audit OP_SCHEMA 0",
			"alert cdc.schema_changed HIGH public.audit",
			"alert cdc.replica_identity_changed HIGH public.audit",
			"entry public.audit OP_UPDATE 1",
			"alert cdc.update_on_append_only CRITICAL public.audit",
			"entry public.ledger OP_SCHEMA 0",
			"alert cdc.schema_changed HIGH public.ledger",
			"alert cdc.replica_identity_changed HIGH public.ledger",
			"entry public.ledger OP_UPDATE 1",
		)
		got := c.alerts(alerts.TypeReplicaIdentityChanged)
		if field(got[0], "new_replica_identity") != "full" || field(got[0], "identifies_rows") != true {
			t.Errorf("audit alert = %v", got[0])
		}
		if field(got[1], "new_replica_identity") != "using index" || field(got[1], "identifies_rows") != false || !strings.Contains(got[1].GetMessage(), `ALTER TABLE "public"."ledger" REPLICA IDENTITY FULL`) {
			t.Errorf("ledger alert = %v", got[1])
		}
	})

	t.Run("foreign_table", func(t *testing.T) {
		t.Parallel()
		e := newPGEnv(t, pg, "foreign")
		c := e.decoder(t, e.table(t, "audit", appendOnly), e.table(t, "ledger", mutable))
		e.exec(t, `ALTER PUBLICATION pub ADD TABLE other`)
		e.exec(t, `INSERT INTO other VALUES (1)`)
		e.exec(t, `INSERT INTO other VALUES (2)`)
		e.stream(t, c.dec)
		wantSummary(t, c, "alert cdc.publication_changed HIGH public.other")
	})

	t.Run("protected_while_paused", func(t *testing.T) {
		t.Parallel()
		e := newPGEnv(t, pg, "protect")
		c := e.decoder(t, e.table(t, "audit", appendOnly))
		e.exec(t, `ALTER PUBLICATION pub ADD TABLE other`)
		e.exec(t, `INSERT INTO other VALUES (1)`)
		seam := e.lsn(t)
		e.exec(t, `INSERT INTO other VALUES (2)`)
		// The protect flow adds the table before the stream resumes.
		other := e.table(t, "other", mutable)
		other.Seam = seam
		c.dec.Protect(other)
		e.stream(t, c.dec)
		wantSummary(t, c, "entry public.other OP_INSERT 0")
		if got := c.entries(witnessv1.Op_OP_INSERT)[0].GetCommitLsn(); got < uint64(seam) {
			t.Errorf("entry at %s, before the seam %s", pglogrepl.LSN(got), seam)
		}
	})

	t.Run("unprotect", func(t *testing.T) {
		t.Parallel()
		e := newPGEnv(t, pg, "unprotect")
		c := e.decoder(t, e.table(t, "audit", appendOnly), e.table(t, "ledger", mutable))
		e.exec(t, `INSERT INTO audit VALUES (1, 'a')`)
		tx, err := e.conn.Begin(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		p := seal(t, testKey, control.Message{Op: control.OpUnprotect, Table: "public.audit", Slot: "unprotect", By: "operator/admin", Reason: "retired"})
		if _, err := tx.Exec(t.Context(), `ALTER PUBLICATION pub DROP TABLE audit`); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(t.Context(), `SELECT pg_logical_emit_message(true, 'witnz', $1::bytea)`, p); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(t.Context()); err != nil {
			t.Fatal(err)
		}
		e.exec(t, `INSERT INTO audit VALUES (2, 'b'); INSERT INTO ledger VALUES (1, 1)`)
		e.stream(t, c.dec)
		wantSummary(t, c,
			"entry public.audit OP_INSERT 0",
			"entry public.audit OP_UNPROTECT 0",
			"alert cdc.table_unprotected HIGH public.audit",
			"entry public.ledger OP_INSERT 0",
		)
		if fmt.Sprint(c.unprotected) != "[public.audit]" {
			t.Errorf("OnUnprotect calls = %v", c.unprotected)
		}
		if tabs := c.dec.Tables(); len(tabs) != 1 || tabs[0].Name != "ledger" {
			t.Errorf("Tables() = %v", tabs)
		}
		a := c.alerts(alerts.TypeTableUnprotected)[0]
		if field(a, "by") != "operator/admin" || field(a, "reason") != "retired" {
			t.Errorf("alert = %v", a)
		}
		if e := c.entries(witnessv1.Op_OP_UNPROTECT)[0]; e.GetCommitLsn() == 0 || e.GetXid() == 0 {
			t.Errorf("UNPROTECT entry = %v", e)
		}

		// A reconnect reads it all again: the table's changes before the
		// unprotect are logged again, the same way, and nothing after.
		first := c.summary()
		c.sink.events = nil
		e.stream(t, c.dec)
		if got := c.summary(); strings.Join(got, "\n") != strings.Join(first, "\n") {
			t.Errorf("after reconnecting:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(first, "\n"))
		}
		if fmt.Sprint(c.unprotected) != "[public.audit]" {
			t.Errorf("OnUnprotect calls after reconnecting = %v", c.unprotected)
		}
	})

	t.Run("control_messages", func(t *testing.T) {
		t.Parallel()
		e := newPGEnv(t, pg, "control")
		c := e.decoder(t, e.table(t, "audit", appendOnly))
		k, d, o := strings.Repeat("11", 32), strings.Repeat("22", 32), strings.Repeat("33", 32)
		accept := seal(t, testKey, control.Message{Op: control.OpAccept, Table: "public.audit", Slot: "control", Seq: 7, Key: k, Data: d, OldData: o, By: "operator/admin", Reason: "fix typo"})
		e.emit(t, true, "witnz", accept)                                                                                                       // accepted
		e.emit(t, true, "witnz", accept)                                                                                                       // replayed
		e.emit(t, true, "witnz", seal(t, commitment.Key{9}, control.Message{Op: control.OpUnprotect, Table: "public.audit", Slot: "control"})) // forged
		e.emit(t, true, "witnz", []byte(`{"v":1,"op":"unprotect"`))                                                                            // malformed
		e.emit(t, false, "witnz", seal(t, commitment.Key{9}, control.Message{Op: control.OpHeartbeat, Slot: "another"}))                       // another deployment
		e.emit(t, true, "other", []byte("not ours"))                                                                                           // another prefix
		e.emit(t, false, "witnz", seal(t, testKey, control.Message{Op: control.OpHeartbeat, Slot: "control"}))                                 // heartbeat
		e.emit(t, false, "witnz", seal(t, commitment.Key{9}, control.Message{Op: control.OpHeartbeat, Slot: "control"}))                       // forged heartbeat
		e.stream(t, c.dec)
		wantSummary(t, c,
			"entry public.audit OP_ACCEPT 0",
			"alert cdc.change_accepted MEDIUM public.audit",
			"alert cdc.forged_control_message CRITICAL ",
			"alert cdc.forged_control_message CRITICAL ",
			"alert cdc.forged_control_message CRITICAL ",
			"alert cdc.forged_control_message CRITICAL ",
		)
		acc := c.entries(witnessv1.Op_OP_ACCEPT)[0]
		if fmt.Sprintf("%x %x %x", acc.GetKeyCommit(), acc.GetDataCommit(), acc.GetOldDataCommit()) != k+" "+d+" "+o {
			t.Errorf("ACCEPT entry = %v", acc)
		}
		if a := c.alerts(alerts.TypeChangeAccepted)[0]; field(a, "by") != "operator/admin" || field(a, "seq") != 7.0 || field(a, "reason") != "fix typo" {
			t.Errorf("accept alert = %v", a)
		}
		forged := c.alerts(alerts.TypeForgedControlMessage)
		for i, want := range []string{"replayed", "MAC does not verify", "malformed", "MAC does not verify"} {
			if r, _ := field(forged[i], "reason").(string); !strings.Contains(r, want) {
				t.Errorf("forged alert %d: reason %q, want %q", i, r, want)
			}
		}
		if len(c.heartbeats) != 1 {
			t.Errorf("heartbeats = %v", c.heartbeats)
		}
		observed := 0
		for _, ev := range c.sink.events {
			if ev.Kind == "observe" {
				observed++
			}
		}
		if observed < 3 {
			t.Errorf("%d Observe calls for the non-transactional messages", observed)
		}

		// Reading the same WAL again (a reconnect) is no replay: the same
		// entries and alerts, with the same ids.
		first := c.sink.events
		c.sink.events = nil
		e.stream(t, c.dec)
		if got, want := c.summary(), (&captured{sink: &recordSink{events: first}}).summary(); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("second read gave\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if got, want := alertIDs(c.sink.events), alertIDs(first); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("alert ids changed on the second read:\n%v\n%v", want, got)
		}
	})

	t.Run("seam", func(t *testing.T) {
		t.Parallel()
		e := newPGEnv(t, pg, "seam")
		e.exec(t, `INSERT INTO audit VALUES (1, 'a')`)
		e.exec(t, `TRUNCATE audit`)
		e.emit(t, true, "witnz", seal(t, testKey, control.Message{Op: control.OpUnprotect, Table: "public.audit", Slot: "seam"}))
		audit := e.table(t, "audit", appendOnly)
		audit.Seam = e.lsn(t)
		c := e.decoder(t, audit)
		e.exec(t, `INSERT INTO audit VALUES (2, 'b')`)
		e.stream(t, c.dec)
		wantSummary(t, c, "entry public.audit OP_INSERT 0")
		if len(c.unprotected) != 0 {
			t.Errorf("an unprotect before the seam was carried out: %v", c.unprotected)
		}
	})
}
