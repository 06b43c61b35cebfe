package verify

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/witnz/witnz/libs/commitment"
	"github.com/witnz/witnz/libs/pgcopy"
	"github.com/witnz/witnz/libs/statedigest"
	"github.com/witnz/witnz/libs/testenv"
)

// B4 (/work/shared/BENCHMARKS.md): the full scan of a verification — COPY
// (FORMAT binary), key and data commitments per row, LtHash into the
// bucket digest — against `COPY … TO STDOUT (FORMAT binary)` into
// io.Discard measured in the same run, and the peak RSS of a process that
// does only the scan.
//
//	WITNZ_B4_ROWS=10000000 go test -run '^$' -bench B4 -benchtime 1x ./internal/verify/
//
// WITNZ_B4_ROWS defaults to 1,000,000. Metrics: rows/s, copy-rows/s (the
// baseline), ratio (rows/s over copy-rows/s), peak-rss-MB (of the child
// process that scans once), bytes/row (of the COPY stream).
func BenchmarkB4(b *testing.B) {
	rows := 1_000_000
	if v := os.Getenv("WITNZ_B4_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("WITNZ_B4_ROWS=%q: want a row count", v)
		}
		rows = n
	}
	pg := testenv.PostgreSQL(b)
	pg.CreateDatabase(b, "bench")
	dsn := pg.DSN("bench")
	start := time.Now()
	// UNLOGGED only to make the table faster to fill; a scan reads the
	// same heap pages either way.
	pg.Exec(b, "bench", `CREATE UNLOGGED TABLE public.audit_log (
		id bigint PRIMARY KEY, actor text NOT NULL, action text NOT NULL, detail jsonb, at timestamptz NOT NULL)`)
	for first := 1; first <= rows; first += 1_000_000 {
		last := min(first+999_999, rows)
		pg.Exec(b, "bench", fmt.Sprintf(`INSERT INTO public.audit_log
			SELECT g, 'user-' || g || '@example.com', 'login-success', jsonb_build_object('n', g, 'ip', '10.0.0.1', 'agent', 'curl/8.5'), TIMESTAMPTZ '2026-01-01' + g * interval '1 second'
			FROM generate_series(%d, %d) g`, first, last))
	}
	pg.Exec(b, "bench", `VACUUM (FREEZE, ANALYZE) public.audit_log`)
	b.Logf("%d rows generated in %s", rows, time.Since(start).Round(time.Second))

	ctx := b.Context()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	desc, err := pgcopy.Describe(ctx, conn, "public", "audit_log")
	if err != nil {
		b.Fatal(err)
	}
	query := desc.CopyQuery()
	var key commitment.Key
	key[0] = 7
	tk := key.ForTable("public", "audit_log")

	// Warm the page cache, then the baseline.
	copyRate, bytesPerRow := copyBaseline(b, conn, query)
	copyRate, bytesPerRow = copyBaseline(b, conn, query)

	var scanned time.Duration
	for b.Loop() {
		t0 := time.Now()
		_, n, err := scanDigest(ctx, conn.PgConn(), query, tk, desc.Key, statedigest.DefaultBuckets, runtime.GOMAXPROCS(0))
		scanned += time.Since(t0)
		if err != nil || n != uint64(rows) {
			b.Fatalf("scan: %d rows, %v", n, err)
		}
	}
	rate := float64(rows) * float64(b.N) / scanned.Seconds()
	rss, childRate := scanInChild(b, dsn)
	b.ReportMetric(rate, "rows/s")
	b.ReportMetric(copyRate, "copy-rows/s")
	b.ReportMetric(rate/copyRate, "ratio")
	b.ReportMetric(float64(rss)/(1<<20), "peak-rss-MB")
	b.ReportMetric(bytesPerRow, "bytes/row")
	b.Logf("B4 %d rows: scan %.0f rows/s (child process %.0f rows/s), COPY baseline %.0f rows/s, ratio %.2f, peak RSS %.1f MiB, %.0f bytes/row, GOMAXPROCS %d",
		rows, rate, childRate, copyRate, rate/copyRate, float64(rss)/(1<<20), bytesPerRow, runtime.GOMAXPROCS(0))
}

// copyBaseline is the rate of the bare binary COPY into io.Discard.
func copyBaseline(b *testing.B, conn *pgx.Conn, query string) (rowsPerSec, bytesPerRow float64) {
	b.Helper()
	cw := &countWriter{}
	t0 := time.Now()
	tag, err := conn.PgConn().CopyTo(b.Context(), cw, query)
	if err != nil {
		b.Fatal(err)
	}
	n := float64(tag.RowsAffected())
	return n / time.Since(t0).Seconds(), float64(cw.n) / n
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return io.Discard.Write(p)
}

// scanInChild runs TestB4Child in a new process and returns its peak RSS
// (bytes) and its scan rate.
func scanInChild(b *testing.B, dsn string) (int64, float64) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestB4Child$", "-test.v")
	cmd.Env = append(os.Environ(), "WITNZ_B4_CHILD_DSN="+dsn)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("child scan: %v\n%s", err, out)
	}
	var rate float64
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "B4CHILD rows/s "); ok {
			rate, _ = strconv.ParseFloat(v, 64)
		}
	}
	if rate == 0 {
		b.Fatalf("child scan printed no rate:\n%s", out)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return ru.Maxrss * 1024, rate
}

// TestB4Child is the scan BenchmarkB4 runs in a process of its own to
// measure its peak RSS; it does nothing in a normal test run.
func TestB4Child(t *testing.T) {
	dsn := os.Getenv("WITNZ_B4_CHILD_DSN")
	if dsn == "" {
		t.Skip("run by BenchmarkB4")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	desc, err := pgcopy.Describe(ctx, conn, "public", "audit_log")
	if err != nil {
		t.Fatal(err)
	}
	var key commitment.Key
	key[0] = 7
	t0 := time.Now()
	_, n, err := scanDigest(ctx, conn.PgConn(), desc.CopyQuery(), key.ForTable("public", "audit_log"), desc.Key, statedigest.DefaultBuckets, runtime.GOMAXPROCS(0))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("B4CHILD rows/s %.0f\n", float64(n)/time.Since(t0).Seconds())
}
