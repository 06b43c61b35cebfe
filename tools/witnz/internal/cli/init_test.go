package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/witnz/witnz/libs/testenv"
)

// TestInit runs `witnz init` against real PostgreSQL: with a prerequisite
// missing it prints the failed check with its fix and creates nothing; with
// all met it creates the publication and the slot, and a second run finds
// them; a publication made by someone else is refused.
func TestInit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	t.Parallel()
	t.Run("wal_level replica", func(t *testing.T) {
		t.Parallel()
		pg := testenv.PostgreSQL(t, testenv.WithSetting("wal_level", "replica"))
		var out bytes.Buffer
		err := Run(t.Context(), []string{"init", "--pg-dsn", pg.DSN("postgres")}, noEnv, &out, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "wal_level") || !strings.Contains(err.Error(), "nothing was created") {
			t.Fatalf("init = %v, want a wal_level failure", err)
		}
		if !strings.Contains(out.String(), "FAIL wal_level") || !strings.Contains(out.String(), "fix: run ALTER SYSTEM SET wal_level = logical;") || !strings.Contains(out.String(), "ok   server version") {
			t.Errorf("output lacks the failed check and its fix:\n%s", out.String())
		}
		if n := count(t, pg.DSN("postgres"), `SELECT count(*) FROM pg_publication`); n != 0 {
			t.Errorf("%d publications after a failed init", n)
		}
	})
	t.Run("creates then finds", func(t *testing.T) {
		t.Parallel()
		pg := testenv.PostgreSQL(t)
		dsn := pg.DSN("postgres")
		run := func() InitResult {
			var out bytes.Buffer
			if err := Run(t.Context(), []string{"init", "--pg-dsn", dsn, "--json"}, noEnv, &out, &bytes.Buffer{}); err != nil {
				t.Fatalf("init: %v\n%s", err, out.String())
			}
			var res InitResult
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatalf("init --json: %v\n%s", err, out.String())
			}
			return res
		}
		first := run()
		if !first.OK || !first.PublicationCreated || !first.SlotCreated || len(first.Checks) < 7 {
			t.Fatalf("first init = %+v, want every check ok and both created", first)
		}
		second := run()
		if !second.OK || second.PublicationCreated || second.SlotCreated {
			t.Errorf("second init = %+v, want both found", second)
		}
		if n := count(t, dsn, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'witnz' AND plugin = 'pgoutput' AND NOT temporary`); n != 1 {
			t.Errorf("%d witnz slots", n)
		}
		pg.Exec(t, "postgres", `CREATE PUBLICATION theirs FOR ALL TABLES`)
		err := Run(t.Context(), []string{"init", "--pg-dsn", dsn, "--publication", "theirs"}, noEnv, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "FOR ALL TABLES") || !strings.Contains(err.Error(), "pick another --publication") {
			t.Errorf("init with a foreign publication = %v, want a refusal naming the fix", err)
		}
	})
}

func count(t *testing.T, dsn, query string) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	var n int
	if err := conn.QueryRow(t.Context(), query).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
