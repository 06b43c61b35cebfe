package monitor

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/witnz/witnz/libs/commitment"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/services/cdc-ingest/internal/alerts"
	"github.com/witnz/witnz/services/cdc-ingest/internal/capture"
	"github.com/witnz/witnz/services/cdc-ingest/internal/config"
	"github.com/witnz/witnz/services/cdc-ingest/internal/pgsource"
	"github.com/witnz/witnz/services/cdc-ingest/internal/schema"
)

var testKey = commitment.Key{7, 7, 7}

// recorder is the alert sink.
type recorder struct {
	mu     sync.Mutex
	alerts []*alertv1.Alert
}

func (r *recorder) Send(_ context.Context, batch []*alertv1.Alert) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.alerts = append(r.alerts, batch...)
	return nil
}

func (r *recorder) all() []*alertv1.Alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.alerts)
}

func (r *recorder) count(typ string) int {
	n := 0
	for _, a := range r.all() {
		if a.GetType() == typ {
			n++
		}
	}
	return n
}

// env is a database with a protected table public.audit, a table
// public.other that is not protected, the publication and the slot.
type env struct {
	pg         *testenv.PG
	db         string
	pool       *pgxpool.Pool
	slot, pub  string
	protected  []capture.Table
	tablesLock sync.Mutex
}

func newEnv(t *testing.T, pg *testenv.PG, db string) *env {
	t.Helper()
	pg.CreateDatabase(t, db)
	pg.Exec(t, db, `CREATE TABLE audit (id int8 PRIMARY KEY, body text);
		CREATE TABLE other (id int4 PRIMARY KEY);
		CREATE PUBLICATION pub FOR TABLE audit WITH (publish_via_partition_root = true)`)
	pg.Exec(t, db, `SELECT pg_create_logical_replication_slot('`+db+`', 'pgoutput')`)
	pool, err := pgxpool.New(t.Context(), pg.DSN(db)+"&pool_max_conns=3")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e := &env{pg: pg, db: db, pool: pool, slot: db, pub: "pub"}
	e.protected = []capture.Table{e.table(t, "audit", witnessv1.TableMode_TABLE_MODE_APPEND_ONLY)}
	return e
}

// table describes public.<name> as a protected table whose log expects
// its current schema.
func (e *env) table(t *testing.T, name string, mode witnessv1.TableMode) capture.Table {
	t.Helper()
	var oid uint32
	var ident string
	if err := e.pool.QueryRow(t.Context(), `SELECT oid, relreplident::text FROM pg_class WHERE oid = $1::regclass`, "public."+name).Scan(&oid, &ident); err != nil {
		t.Fatal(err)
	}
	s, err := schema.Load(t.Context(), e.pool, oid)
	if err != nil {
		t.Fatal(err)
	}
	return capture.Table{
		Table: pgsource.Table{
			Table: config.Table{Schema: "public", Name: name, Mode: mode},
			OID:   oid, KeyColumns: s.KeyColumns(), ReplIdent: ident[0],
		},
		SchemaCommit:   s.Commit(testKey.ForTable("public", name).NewCommitter()),
		ExpectedSchema: &s,
	}
}

func (e *env) tables() []capture.Table {
	e.tablesLock.Lock()
	defer e.tablesLock.Unlock()
	return slices.Clone(e.protected)
}

func (e *env) options(rec *recorder) Options {
	return Options{
		DB:                e.pool,
		Key:               testKey,
		Slot:              e.slot,
		Publication:       e.pub,
		Interval:          50 * time.Millisecond,
		HeartbeatInterval: 50 * time.Millisecond,
		HeartbeatTimeout:  time.Hour,
		MaxLagBytes:       1 << 30,
		Tables:            e.tables,
		Alerts:            rec,
		Log:               slog.New(slog.DiscardHandler),
	}
}

// start runs m until the test ends.
func start(t *testing.T, m *Monitor) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitChecks waits until m has run n more checks.
func waitChecks(t *testing.T, m *Monitor, n uint64) {
	t.Helper()
	target := m.Status().Checks + n
	waitFor(t, fmt.Sprintf("%d checks", n), func() bool { return m.Status().Checks >= target })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func detail(a *alertv1.Alert, k string) any {
	v := a.GetDetail().GetFields()[k]
	if v == nil {
		return nil
	}
	return v.AsInterface()
}

// TestMonitor runs every scenario on one PostgreSQL, each in its own
// database with its own slot.
func TestMonitor(t *testing.T) {
	pg := testenv.PostgreSQL(t, testenv.WithSetting("max_replication_slots", "30"), testenv.WithSetting("max_wal_senders", "30"))
	// WAL is shared by every database: the lag scenario runs alone.
	t.Run("lag", func(t *testing.T) { testLag(t, pg) })
	t.Run("signals", func(t *testing.T) { testSignals(t, pg) })
	t.Run("rename_recurs", func(t *testing.T) { t.Parallel(); testRenameRecurs(t, pg) })
	t.Run("schema_recurs", func(t *testing.T) { t.Parallel(); testSchemaRecurs(t, pg) })
	t.Run("quiet_then_heartbeat_missing", func(t *testing.T) { t.Parallel(); testQuietAndHeartbeatMissing(t, pg) })
	t.Run("pause", func(t *testing.T) { t.Parallel(); testPause(t, pg) })
}

// testSignals checks that each change raises its alerts exactly once.
func testSignals(t *testing.T, pg *testenv.PG) {
	tests := []struct {
		name string
		sql  string
		// want counts alerts per type.
		want map[string]int
		// severity of the first alert; check inspects the alerts.
		severity alertv1.Severity
		check    func(t *testing.T, got []*alertv1.Alert)
		// restartSafe: a fresh monitor finding the condition raises
		// alerts with the same ids.
		restartSafe bool
	}{
		{
			name: "slot_dropped", sql: `SELECT pg_drop_replication_slot('slot_dropped')`,
			want: map[string]int{alerts.TypeSlotMissing: 1}, severity: alertv1.Severity_SEVERITY_CRITICAL,
			check: func(t *testing.T, got []*alertv1.Alert) {
				if v, _ := detail(got[0], "last_confirmed_flush_lsn").(string); v == "" || v == "never seen" {
					t.Errorf("last_confirmed_flush_lsn = %q", v)
				}
			},
		},
		{
			name: "table_dropped", sql: `DROP TABLE audit`,
			want: map[string]int{alerts.TypeTableDropped: 1}, severity: alertv1.Severity_SEVERITY_CRITICAL, restartSafe: true,
		},
		{
			name: "renamed", sql: `ALTER TABLE audit RENAME TO audit_old`,
			want: map[string]int{alerts.TypeTableRenamed: 1}, severity: alertv1.Severity_SEVERITY_CRITICAL, restartSafe: true,
			check: func(t *testing.T, got []*alertv1.Alert) {
				if v := detail(got[0], "new_name"); v != "public.audit_old" {
					t.Errorf("new_name = %v", v)
				}
			},
		},
		{
			name: "moved", sql: `CREATE SCHEMA hidden; ALTER TABLE audit SET SCHEMA hidden`,
			want: map[string]int{alerts.TypeTableRenamed: 1}, severity: alertv1.Severity_SEVERITY_CRITICAL, restartSafe: true,
		},
		{
			name: "replica_identity", sql: `ALTER TABLE audit REPLICA IDENTITY NOTHING`,
			want:     map[string]int{alerts.TypeSchemaChanged: 1, alerts.TypeReplicaIdentityChanged: 1},
			severity: alertv1.Severity_SEVERITY_HIGH, restartSafe: true,
			check: func(t *testing.T, got []*alertv1.Alert) {
				for _, a := range got {
					if a.GetType() != alerts.TypeReplicaIdentityChanged {
						continue
					}
					if detail(a, "old_replica_identity") != "default" || detail(a, "new_replica_identity") != "nothing" || detail(a, "identifies_rows") != false {
						t.Errorf("detail = %v", a.GetDetail())
					}
				}
			},
		},
		{
			name: "column_added", sql: `ALTER TABLE audit ADD COLUMN note varchar(20)`,
			want: map[string]int{alerts.TypeSchemaChanged: 1}, severity: alertv1.Severity_SEVERITY_HIGH, restartSafe: true,
			check: func(t *testing.T, got []*alertv1.Alert) {
				if v := detail(got[0], "diff"); v != "column note added (varchar(20))" {
					t.Errorf("diff = %v", v)
				}
				if v := detail(got[0], "new_schema"); v != "id int8 key, body text, note varchar(20), replica identity default" {
					t.Errorf("new_schema = %v", v)
				}
			},
		},
		{
			name: "removed_from_publication", sql: `ALTER PUBLICATION pub DROP TABLE audit`,
			want: map[string]int{alerts.TypePublicationChanged: 1}, severity: alertv1.Severity_SEVERITY_CRITICAL,
			check: func(t *testing.T, got []*alertv1.Alert) {
				if detail(got[0], "change") != alerts.PublicationTableRemoved || got[0].GetTable() != "public.audit" {
					t.Errorf("alert = %v", got[0])
				}
			},
		},
		{
			name: "foreign_table_added", sql: `ALTER PUBLICATION pub ADD TABLE other`,
			want: map[string]int{alerts.TypePublicationChanged: 1}, severity: alertv1.Severity_SEVERITY_HIGH, restartSafe: true,
			check: func(t *testing.T, got []*alertv1.Alert) {
				if detail(got[0], "change") != alerts.PublicationTableAdded || got[0].GetTable() != "public.other" {
					t.Errorf("alert = %v", got[0])
				}
			},
		},
		{
			name: "publication_dropped", sql: `DROP PUBLICATION pub`,
			want: map[string]int{alerts.TypePublicationChanged: 1}, severity: alertv1.Severity_SEVERITY_CRITICAL,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, pg, tc.name)
			rec := &recorder{}
			m := New(e.options(rec))
			start(t, m)
			waitChecks(t, m, 3)
			if got := rec.all(); len(got) != 0 {
				t.Fatalf("alerts before anything changed: %v", got)
			}

			pg.Exec(t, tc.name, tc.sql)
			total := 0
			for _, n := range tc.want {
				total += n
			}
			waitFor(t, "the alerts", func() bool { return len(rec.all()) >= total })
			waitChecks(t, m, 5)
			got := rec.all()
			counts := map[string]int{}
			for _, a := range got {
				counts[a.GetType()]++
				if a.GetSource() != alerts.Source || a.GetMessage() == "" || a.GetAlertId() == "" || detail(a, "slot") != e.slot {
					t.Errorf("incomplete alert: %v", a)
				}
			}
			if fmt.Sprint(counts) != fmt.Sprint(tc.want) {
				t.Fatalf("alerts by type = %v, want %v:\n%v", counts, tc.want, got)
			}
			if got[0].GetSeverity() != tc.severity {
				t.Errorf("severity = %v, want %v", got[0].GetSeverity(), tc.severity)
			}
			if tc.check != nil {
				tc.check(t, got)
			}
			if !tc.restartSafe {
				return
			}
			rec2 := &recorder{}
			m2 := New(e.options(rec2))
			start(t, m2)
			waitFor(t, "the alerts of a fresh monitor", func() bool { return len(rec2.all()) >= total })
			ids := func(as []*alertv1.Alert) []string {
				var out []string
				for _, a := range as {
					out = append(out, a.GetAlertId())
				}
				slices.Sort(out)
				return out
			}
			if a, b := ids(got), ids(rec2.all()); !slices.Equal(a, b) {
				t.Errorf("a fresh monitor raised other ids: %v, then %v", a, b)
			}
		})
	}
}

// testRenameRecurs checks that a condition that clears and comes back is
// reported again, with a new id.
func testRenameRecurs(t *testing.T, pg *testenv.PG) {
	e := newEnv(t, pg, "recur")
	rec := &recorder{}
	m := New(e.options(rec))
	start(t, m)
	pg.Exec(t, "recur", `ALTER TABLE audit RENAME TO x`)
	waitFor(t, "the first alert", func() bool { return rec.count(alerts.TypeTableRenamed) == 1 })
	pg.Exec(t, "recur", `ALTER TABLE x RENAME TO audit`)
	waitChecks(t, m, 3)
	pg.Exec(t, "recur", `ALTER TABLE audit RENAME TO x`)
	waitFor(t, "the second alert", func() bool { return rec.count(alerts.TypeTableRenamed) == 2 })
	waitChecks(t, m, 3)
	got := rec.all()
	if len(got) != 2 || got[0].GetAlertId() == got[1].GetAlertId() {
		t.Fatalf("alerts = %v", got)
	}
}

// testSchemaRecurs checks that the same schema change made again by
// another statement (column added, dropped, added again: the same schema
// each time) is a new alert with a new id, and that every delivered
// change is announced to the decoder.
func testSchemaRecurs(t *testing.T, pg *testenv.PG) {
	e := newEnv(t, pg, "schema_recur")
	rec := &recorder{}
	opts := e.options(rec)
	opts.Announced = capture.NewAnnouncements()
	m := New(opts)
	start(t, m)
	pg.Exec(t, "schema_recur", `ALTER TABLE audit ADD COLUMN note text`)
	waitFor(t, "the first alert", func() bool { return rec.count(alerts.TypeSchemaChanged) == 1 })
	pg.Exec(t, "schema_recur", `ALTER TABLE audit DROP COLUMN note`)
	waitChecks(t, m, 3)
	pg.Exec(t, "schema_recur", `ALTER TABLE audit ADD COLUMN note text`)
	waitFor(t, "the second alert", func() bool { return rec.count(alerts.TypeSchemaChanged) == 2 })
	waitChecks(t, m, 3)
	got := rec.all()
	if len(got) != 2 || got[0].GetAlertId() == got[1].GetAlertId() {
		t.Fatalf("alerts = %v", got)
	}
	if detail(got[0], "new_schema_commit") != detail(got[1], "new_schema_commit") {
		t.Fatalf("the two changes reached different schemas: %v", got)
	}
	if _, _, ok := opts.Announced.Schema(e.tables()[0].String()); !ok {
		t.Error("the delivered schema change was not announced to the decoder")
	}
}

// testLag checks the lag alert, and that it comes again when the lag
// doubles.
func testLag(t *testing.T, pg *testenv.PG) {
	e := newEnv(t, pg, "lag")
	fill := `CREATE TABLE IF NOT EXISTS filler (v text); INSERT INTO filler SELECT repeat('x', 200) FROM generate_series(1, 4000)`
	pg.Exec(t, "lag", fill)
	var lag uint64
	err := e.pool.QueryRow(t.Context(), `SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::int8 FROM pg_replication_slots WHERE slot_name = 'lag'`).Scan(&lag)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	opts := e.options(rec)
	opts.MaxLagBytes = lag * 2 / 3 // the lag is between 1× and 2× the threshold
	m := New(opts)
	start(t, m)
	waitFor(t, "the lag alert", func() bool { return rec.count(alerts.TypeSlotLag) == 1 })
	waitChecks(t, m, 5)
	got := rec.all()
	if len(got) != 1 {
		t.Fatalf("alerts = %v", got)
	}
	a := got[0]
	if a.GetSeverity() != alertv1.Severity_SEVERITY_HIGH || detail(a, "max_lag_bytes") != float64(opts.MaxLagBytes) || detail(a, "lag_bytes").(float64) < float64(lag) {
		t.Errorf("alert = %v", a)
	}
	if s := m.Status(); s.LagBytes < lag {
		t.Errorf("Status().LagBytes = %d, want >= %d", s.LagBytes, lag)
	}

	// Twice as far behind (about 3× the threshold): reported again.
	pg.Exec(t, "lag", fill)
	waitFor(t, "the second lag alert", func() bool { return rec.count(alerts.TypeSlotLag) == 2 })
	waitChecks(t, m, 5)
	if got := rec.all(); len(got) != 2 || detail(got[1], "level").(float64) < 1 {
		t.Fatalf("alerts = %v", got)
	}
}

// consumer streams the slot through a decoder, confirming as it goes, as
// cdc-ingest's stream does.
type consumer struct {
	mu  sync.Mutex
	pos uint64
}

func (c *consumer) BeginTx(uint64)                   {}
func (c *consumer) Entry(string, *witnessv1.Entry)   {}
func (c *consumer) Alert(*alertv1.Alert)             {}
func (c *consumer) CommitTx(end uint64, _ time.Time) { c.Observe(end) }
func (c *consumer) Observe(lsn uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pos = max(c.pos, lsn)
}

// consume streams e's slot until the returned stop is called.
func consume(t *testing.T, e *env, m *Monitor) (stop func()) {
	t.Helper()
	c := &consumer{}
	dec := capture.New(capture.Options{
		Slot: e.slot, Publication: e.pub, Key: testKey, Tables: e.tables(), Sink: c,
		Log: slog.New(slog.DiscardHandler), OnHeartbeat: m.HeartbeatSeen,
	})
	cfg, err := pgconn.ParseConfig(e.pg.DSN(e.db))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = pglogrepl.StartReplication(t.Context(), conn, e.slot, 0, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names 'pub'", "binary 'true'", "messages 'true'"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		var sent uint64
		for ctx.Err() == nil {
			rctx, rcancel := context.WithTimeout(ctx, 50*time.Millisecond)
			raw, err := conn.ReceiveMessage(rctx)
			rcancel()
			if err == nil {
				if cd, ok := raw.(*pgproto3.CopyData); ok && len(cd.Data) > 0 && cd.Data[0] == pglogrepl.XLogDataByteID {
					xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
					if err == nil {
						err = dec.Handle(ctx, xld.WALStart, xld.WALData)
					}
					if err != nil {
						done <- err
						return
					}
				}
			} else if !pgconn.Timeout(err) {
				done <- err
				return
			}
			c.mu.Lock()
			pos := c.pos
			c.mu.Unlock()
			if pos > sent {
				if err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: pglogrepl.LSN(pos)}); err != nil {
					done <- err
					return
				}
				sent = pos
			}
		}
		done <- nil
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Errorf("consumer: %v", err)
		}
		conn.Close(context.Background())
	}
	t.Cleanup(stop)
	return stop
}

// testQuietAndHeartbeatMissing checks that a healthy deployment raises
// nothing over many checks and longer than the heartbeat timeout, then
// that heartbeats stopping raise exactly one alert.
func testQuietAndHeartbeatMissing(t *testing.T, pg *testenv.PG) {
	e := newEnv(t, pg, "quiet")
	rec := &recorder{}
	opts := e.options(rec)
	opts.HeartbeatTimeout = time.Second
	opts.MaxLagBytes = 16 << 20
	m := New(opts)
	stop := consume(t, e, m)
	start(t, m)
	began := time.Now()
	pg.Exec(t, "quiet", `INSERT INTO audit SELECT g, 'x' FROM generate_series(1, 1000) g`)
	waitFor(t, "a heartbeat", func() bool { return !m.Status().LastHeartbeat.IsZero() })
	waitFor(t, "twice the heartbeat timeout", func() bool { return time.Since(began) > 2*opts.HeartbeatTimeout })
	waitChecks(t, m, 10)
	if got := rec.all(); len(got) != 0 {
		t.Fatalf("false alarms: %v", got)
	}
	if s := m.Status(); s.HeartbeatAge > opts.HeartbeatTimeout || s.LastHeartbeatLSN == 0 || s.LastCheck.IsZero() {
		t.Errorf("status = %+v", s)
	}

	stop()
	last := m.Status().LastHeartbeat
	waitFor(t, "the heartbeat alert", func() bool { return rec.count(alerts.TypeHeartbeatMissing) == 1 })
	waitChecks(t, m, 10)
	got := rec.all()
	if len(got) != 1 {
		t.Fatalf("alerts = %v", got)
	}
	a := got[0]
	if a.GetSeverity() != alertv1.Severity_SEVERITY_HIGH || detail(a, "timeout_seconds") != 1.0 ||
		detail(a, "age_seconds").(float64) <= 1 || detail(a, "last_heartbeat_lsn") == "none since start" {
		t.Errorf("alert = %v", a)
	}
	if a.GetOccurredAt().AsTime().Before(last.Add(opts.HeartbeatTimeout)) {
		t.Errorf("alert at %s, the last heartbeat was sent at %s", a.GetOccurredAt().AsTime(), last)
	}
}

// testPause checks that paused checks raise nothing and that the heartbeat
// age counts from Resume.
func testPause(t *testing.T, pg *testenv.PG) {
	e := newEnv(t, pg, "pause")
	rec := &recorder{}
	opts := e.options(rec)
	opts.HeartbeatTimeout = 500 * time.Millisecond
	m := New(opts)
	m.Pause("protecting public.other")
	start(t, m)
	pg.Exec(t, "pause", `ALTER PUBLICATION pub ADD TABLE other`)
	waitFor(t, "longer than the heartbeat timeout", func() bool { return m.Status().Checks > 20 })
	if got := rec.all(); len(got) != 0 {
		t.Fatalf("alerts while paused: %v", got)
	}
	if s := m.Status(); s.Paused != "protecting public.other" {
		t.Errorf("Status().Paused = %q", s.Paused)
	}
	// The protect flow finished: the table is protected now.
	e.tablesLock.Lock()
	e.protected = append(e.protected, e.table(t, "other", witnessv1.TableMode_TABLE_MODE_MUTABLE))
	e.tablesLock.Unlock()
	resumed := time.Now()
	m.Resume()
	waitFor(t, "the heartbeat alert", func() bool { return rec.count(alerts.TypeHeartbeatMissing) == 1 })
	got := rec.all()
	if len(got) != 1 {
		t.Fatalf("alerts = %v", got)
	}
	if at := got[0].GetOccurredAt().AsTime(); at.Before(resumed.Add(opts.HeartbeatTimeout)) {
		t.Errorf("heartbeat alert at %s, %s after Resume", at, at.Sub(resumed))
	}
}

func TestSlotInvalidated(t *testing.T) {
	pg := testenv.PostgreSQL(t, testenv.WithSetting("max_slot_wal_keep_size", "1MB"))
	e := newEnv(t, pg, "inval")
	rec := &recorder{}
	m := New(e.options(rec))
	start(t, m)
	waitChecks(t, m, 2)
	for i := 0; ; i++ {
		var status string
		if err := e.pool.QueryRow(t.Context(), `SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'inval'`).Scan(&status); err != nil {
			t.Fatal(err)
		}
		if status == "lost" {
			break
		}
		if i == 20 {
			t.Fatalf("slot still %s", status)
		}
		pg.Exec(t, "inval", `CREATE TABLE IF NOT EXISTS filler (v text); INSERT INTO filler SELECT repeat('x', 500) FROM generate_series(1, 2000); SELECT pg_switch_wal(); CHECKPOINT`)
	}
	waitFor(t, "the alert", func() bool { return rec.count(alerts.TypeSlotInvalidated) == 1 })
	waitChecks(t, m, 5)
	if got := rec.all(); rec.count(alerts.TypeSlotInvalidated) != 1 || got[0].GetSeverity() != alertv1.Severity_SEVERITY_CRITICAL || detail(got[0], "wal_status") != "lost" {
		t.Fatalf("alerts = %v", got)
	}
}
