package testenv_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/witnz/witnz/libs/testenv"
)

func mustConnect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustQueryString(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(t.Context(), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func mustCount(t *testing.T, pg *testenv.PG, db, sql string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.DSN(db))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func TestPostgreSQL(t *testing.T) {
	t.Parallel()
	pg := testenv.PostgreSQL(t)

	if _, err := os.Stat(filepath.Join(pg.Dir(), "PG_VERSION")); err != nil {
		t.Errorf("Dir() %s is not a data directory: %v", pg.Dir(), err)
	}
	if want := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/app?sslmode=disable", pg.Port()); pg.DSN("app") != want {
		t.Errorf("DSN(app) = %q, want %q", pg.DSN("app"), want)
	}

	pg.CreateDatabase(t, "app")
	pg.Exec(t, "app", `
		CREATE TABLE items (id bigint PRIMARY KEY, body text NOT NULL);
		INSERT INTO items VALUES (1, 'one'), (2, 'two');
		CREATE PUBLICATION pub FOR TABLE items;`)

	conn := mustConnect(t, pg.DSN("app"))
	if got := mustQueryString(t, conn, "SHOW wal_level"); got != "logical" {
		t.Errorf("wal_level = %q, want logical", got)
	}
	if got := mustQueryString(t, conn, "SHOW server_version_num"); got < "150000" {
		t.Errorf("server_version_num = %s, want >= 150000", got)
	}
	if got := mustQueryString(t, conn, "SHOW fsync"); got != "off" {
		t.Errorf("fsync = %q, want off", got)
	}
	if _, err := conn.Exec(t.Context(), "SELECT pg_create_logical_replication_slot('witnz_slot', 'pgoutput')"); err != nil {
		t.Fatalf("create pgoutput slot: %v", err)
	}
	if got := mustQueryString(t, conn, "SELECT plugin FROM pg_replication_slots WHERE slot_name = 'witnz_slot'"); got != "pgoutput" {
		t.Errorf("slot plugin = %q, want pgoutput", got)
	}

	// The slot decodes: a change after its creation shows up in pgoutput.
	pg.Exec(t, "app", "INSERT INTO items VALUES (3, 'three')")
	n := mustCount(t, pg, "app", `SELECT count(*) FROM pg_logical_slot_peek_binary_changes(
		'witnz_slot', NULL, NULL, 'proto_version', '1', 'publication_names', 'pub')`)
	if n == 0 {
		t.Error("pgoutput slot returned no changes after an INSERT")
	}

	// A replication connection (what the CDC ingester opens) is accepted.
	rc, err := pgconn.Connect(t.Context(), pg.DSN("app")+"&replication=database")
	if err != nil {
		t.Fatalf("replication connection: %v", err)
	}
	if _, err := rc.Exec(t.Context(), "IDENTIFY_SYSTEM").ReadAll(); err != nil {
		t.Errorf("IDENTIFY_SYSTEM: %v", err)
	}
	rc.Close(context.Background())
}

func TestPostgreSQLWithSetting(t *testing.T) {
	t.Parallel()
	pg := testenv.PostgreSQL(t, testenv.WithSetting("wal_level", "replica"), testenv.WithSetting("cluster_name", "it's quoted"))
	conn := mustConnect(t, pg.DSN("postgres"))
	if got := mustQueryString(t, conn, "SHOW wal_level"); got != "replica" {
		t.Errorf("wal_level = %q, want replica", got)
	}
	if got := mustQueryString(t, conn, "SHOW cluster_name"); got != "it's quoted" {
		t.Errorf("cluster_name = %q, want %q (quoting through pg_ctl -o)", got, "it's quoted")
	}
	_, err := conn.Exec(t.Context(), "SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		t.Fatalf("creating a logical slot with wal_level=replica: err = %v, want a server error", err)
	}
}

func TestPostgreSQLStopStart(t *testing.T) {
	t.Parallel()
	pg := testenv.PostgreSQL(t)
	pg.CreateDatabase(t, "app")
	pg.Exec(t, "app", `
		CREATE TABLE items (id bigint PRIMARY KEY);
		INSERT INTO items SELECT generate_series(1, 1000);`)
	pg.Exec(t, "app", "SELECT pg_create_logical_replication_slot('witnz_slot', 'pgoutput')")
	port := pg.Port()

	pg.Stop(t)
	if _, err := pgx.Connect(t.Context(), pg.DSN("app")); err == nil {
		t.Fatal("connect after Stop succeeded")
	}
	pg.Start(t)

	if pg.Port() != port {
		t.Errorf("Port() after restart = %d, want %d", pg.Port(), port)
	}
	if n := mustCount(t, pg, "app", "SELECT count(*) FROM items"); n != 1000 {
		t.Errorf("rows after restart = %d, want 1000", n)
	}
	if n := mustCount(t, pg, "app", "SELECT count(*) FROM pg_replication_slots"); n != 1 {
		t.Errorf("slots after restart = %d, want 1", n)
	}
}

func TestPostgreSQLKill(t *testing.T) {
	t.Parallel()
	pg := testenv.PostgreSQL(t)
	pg.CreateDatabase(t, "app")
	pg.Exec(t, "app", `
		CREATE TABLE items (id bigint PRIMARY KEY);
		INSERT INTO items SELECT generate_series(1, 1000);`)

	// Hold a connection open so Kill has a backend to wait for.
	conn := mustConnect(t, pg.DSN("app"))
	pg.Kill(t)
	if err := conn.Ping(t.Context()); err == nil {
		t.Error("ping on a connection to a killed server succeeded")
	}
	if _, err := pgx.Connect(t.Context(), pg.DSN("app")); err == nil {
		t.Fatal("connect after Kill succeeded")
	}

	pg.Start(t)
	if n := mustCount(t, pg, "app", "SELECT count(*) FROM items"); n != 1000 {
		t.Errorf("rows after crash recovery = %d, want 1000", n)
	}
	// A second crash cycle works as well.
	pg.Kill(t)
	pg.Start(t)
	pg.Exec(t, "app", "INSERT INTO items VALUES (1001)")
}

// TestPostgreSQLCleanup checks that a test's cluster is gone after it ends,
// and that clusters started concurrently get their own ports.
func TestPostgreSQLCleanup(t *testing.T) {
	t.Parallel()
	type cluster struct {
		dir  string
		port int
	}
	clusters := make(chan cluster, 3)
	t.Run("group", func(t *testing.T) {
		for i := range 3 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				pg := testenv.PostgreSQL(t)
				pg.Exec(t, "postgres", "SELECT 1")
				clusters <- cluster{pg.Dir(), pg.Port()}
			})
		}
	})
	close(clusters)
	ports := map[int]bool{}
	for c := range clusters {
		if ports[c.port] {
			t.Errorf("port %d handed to two clusters", c.port)
		}
		ports[c.port] = true
		if _, err := os.Stat(c.dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("data dir %s still exists after the test: %v", c.dir, err)
		}
		if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.port), time.Second); err == nil {
			conn.Close()
			t.Errorf("port %d still answers after the test", c.port)
		}
	}
	if len(ports) != 3 {
		t.Errorf("got %d clusters, want 3", len(ports))
	}
}
