package store

import (
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/testenv"
)

// TestStore shares one PostgreSQL cluster between its parts; each uses its
// own database.
func TestStore(t *testing.T) {
	pg := testenv.PostgreSQL(t)
	t.Run("Migrations", func(t *testing.T) { testMigrations(t, pg) })
	t.Run("OpenErrors", func(t *testing.T) { testOpenErrors(t, pg) })
	t.Run("RecordEventIdempotent", func(t *testing.T) { testRecordEventIdempotent(t, pg) })
}

func testMigrations(t *testing.T, pg *testenv.PG) {
	pg.CreateDatabase(t, "alert")
	ctx := t.Context()

	t.Run("ConcurrentFirstStart", func(t *testing.T) {
		// Two instances starting together: each migration runs once.
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			applied [][]int
		)
		for range 2 {
			wg.Go(func() {
				st, err := Open(ctx, pg.DSN("alert"))
				if err != nil {
					t.Error(err)
					return
				}
				defer st.Close()
				v, err := Migrate(ctx, st.Pool())
				if err != nil {
					t.Errorf("Migrate: %v", err)
					return
				}
				mu.Lock()
				applied = append(applied, v)
				mu.Unlock()
			})
		}
		wg.Wait()
		ms, err := Migrations()
		if err != nil {
			t.Fatal(err)
		}
		var all []int
		for _, v := range applied {
			all = append(all, v...)
		}
		if len(all) != len(ms) {
			t.Errorf("versions applied by the two instances: %v; want each of %d once", applied, len(ms))
		}
	})

	st, err := Open(ctx, pg.DSN("alert"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	t.Run("SecondRunIsNoOp", func(t *testing.T) {
		var before time.Time
		if err := st.Pool().QueryRow(ctx, "SELECT max(applied_at) FROM schema_migrations").Scan(&before); err != nil {
			t.Fatal(err)
		}
		v, err := Migrate(ctx, st.Pool())
		if err != nil || len(v) != 0 {
			t.Fatalf("Migrate again = %v, %v; want nothing applied", v, err)
		}
		var after time.Time
		if err := st.Pool().QueryRow(ctx, "SELECT max(applied_at) FROM schema_migrations").Scan(&after); err != nil || !after.Equal(before) {
			t.Errorf("schema_migrations changed: %v -> %v (%v)", before, after, err)
		}
	})

	t.Run("SchemaNewerThanBinary", func(t *testing.T) {
		pg.CreateDatabase(t, "newer")
		other, err := Open(ctx, pg.DSN("newer"))
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		if _, err := Migrate(ctx, other.Pool()); err != nil {
			t.Fatal(err)
		}
		pg.Exec(t, "newer", "INSERT INTO schema_migrations (version) VALUES (999)")
		_, err = Migrate(ctx, other.Pool())
		if err == nil || !strings.Contains(err.Error(), "999") || !strings.Contains(err.Error(), "newer alert service") {
			t.Fatalf("Migrate on a newer schema = %v; want an error naming version 999", err)
		}
	})

	t.Run("FailedMigrationLeavesNothing", func(t *testing.T) {
		pg.CreateDatabase(t, "broken")
		other, err := Open(ctx, pg.DSN("broken"))
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		ms, err := loadMigrations(fstest.MapFS{
			"m/0001_ok.sql":  {Data: []byte("CREATE TABLE t1 (id int)")},
			"m/0002_bad.sql": {Data: []byte("CREATE TABLE t2 (id no_such_type)")},
		}, "m")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := migrate(ctx, other.Pool(), ms); err == nil || !strings.Contains(err.Error(), "0002_bad") {
			t.Fatalf("migrate = %v; want an error naming 0002_bad", err)
		}
		var exists bool
		if err := other.Pool().QueryRow(ctx, "SELECT to_regclass('t1') IS NOT NULL").Scan(&exists); err != nil || exists {
			t.Errorf("t1 exists after a failed migration run (%v)", err)
		}
	})
}

func TestLoadMigrationsRejectsBadNames(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"no number": {"m/init.sql": {}},
		"gap":       {"m/0001_a.sql": {}, "m/0003_c.sql": {}},
		"zero":      {"m/0000_a.sql": {}},
	} {
		if _, err := loadMigrations(fsys, "m"); err == nil {
			t.Errorf("%s: loadMigrations accepted %v", name, fsys)
		}
	}
}

func testOpenErrors(t *testing.T, pg *testenv.PG) {
	ctx := t.Context()
	closed := testenv.FreeAddr(t)
	for _, tc := range []struct {
		name string
		dsn  string
		want []string
	}{
		{"unreachable", "postgres://postgres@" + closed + "/alert?connect_timeout=2", []string{closed, "unreachable", "--pg-dsn"}},
		{"no database", pg.DSN("missing"), []string{"no database \"missing\"", "CREATE DATABASE"}},
	} {
		_, err := Open(ctx, tc.dsn)
		if err == nil {
			t.Errorf("%s: Open succeeded", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: Open = %v; want it to mention %q", tc.name, err, w)
			}
		}
	}
}

func testRecordEventIdempotent(t *testing.T, pg *testenv.PG) {
	pg.CreateDatabase(t, "events")
	ctx := t.Context()
	st, err := Open(ctx, pg.DSN("events"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := Migrate(ctx, st.Pool()); err != nil {
		t.Fatal(err)
	}
	hostID, err := st.UpsertHost(ctx, Host{Hostname: "db1"})
	if err != nil {
		t.Fatal(err)
	}
	ev := Event{
		EventID: "88888888-8888-4888-8888-888888888888", HostID: hostID, EventType: "file_deleted",
		Severity: alertv1.Severity_SEVERITY_CRITICAL, Target: "/etc/x", Detail: map[string]string{"uid": "0"},
		OccurredAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	alert := &alertv1.Alert{AlertId: ev.EventID, Type: "host.file_deleted", Severity: ev.Severity, Message: "m", Host: "db1"}
	first, err := st.RecordEvent(ctx, ev, alert)
	if err != nil || first == nil || first.GetReceivedAt() == nil || !first.GetOccurredAt().AsTime().Equal(first.GetReceivedAt().AsTime()) {
		t.Fatalf("first RecordEvent = %v, %v; want the stored alert with occurred_at defaulted to received_at", first, err)
	}
	second, err := st.RecordEvent(ctx, ev, alert)
	if err != nil || second != nil {
		t.Fatalf("second RecordEvent = %v, %v; want nothing newly stored", second, err)
	}
	rows, err := st.Pool().Query(ctx, "SELECT event_type, target, detail->>'uid' FROM audit_entries")
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ Type, Target, UID string }
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]row{{"file_deleted", "/etc/x", "0"}}, got); diff != "" {
		t.Errorf("audit_entries (-want +got):\n%s", diff)
	}
}
