package pgcopy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/witnz/witnz/libs/pgcopy"
	"github.com/witnz/witnz/libs/testenv"
)

// benchRow is a typical audit row of about 120 bytes: bigint, int,
// timestamptz, text, numeric, bool, bytea and a NULL.
func benchRow(i int) []byte {
	return tuple(
		binary.BigEndian.AppendUint64(nil, uint64(i)),
		binary.BigEndian.AppendUint32(nil, uint32(i%1000)),
		binary.BigEndian.AppendUint64(nil, uint64(789_000_000_000_000+i)),
		[]byte("user.login succeeded for alice@example.com from 10.0.0.1"),
		[]byte{0, 2, 0, 0, 0, 0, 0, 2, 0x04, 0xd2, 0x16, 0x2e},
		[]byte{1},
		bytes.Repeat([]byte{0xab}, 16),
		nil,
	)
}

// benchStream is a synthetic stream of n rows.
func benchStream(n int) (data []byte, rowBytes int) {
	data = header(0, nil)
	for i := range n {
		data = append(data, benchRow(i)...)
	}
	return append(data, trailer...), len(benchRow(0))
}

// BenchmarkNext measures tuple extraction per row against two baselines
// over the same bytes: a plain copy (io.Copy to io.Discard) and SHA-256 of
// every row (the order of cost of committing to it).
func BenchmarkNext(b *testing.B) {
	const rows = 100_000
	data, rowLen := benchStream(rows)
	perRow := func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/row")
	}
	b.Run("baseline=copy", func(b *testing.B) {
		buf := make([]byte, 64<<10)
		for b.Loop() {
			// The wrappers hide WriteTo and ReadFrom: every byte is copied.
			io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{bytes.NewReader(data)}, buf)
		}
		perRow(b)
	})
	b.Run("baseline=sha256", func(b *testing.B) {
		for b.Loop() {
			for p := data[19 : len(data)-2]; len(p) > 0; p = p[rowLen:] {
				sha256.Sum256(p[:rowLen])
			}
		}
		perRow(b)
	})
	b.Run("Reader", func(b *testing.B) {
		for b.Loop() {
			r := pgcopy.NewReader(bytes.NewReader(data))
			for {
				if _, err := r.Next(); err != nil {
					if err != io.EOF {
						b.Fatal(err)
					}
					break
				}
			}
		}
		perRow(b)
	})
	b.Run("Writer/row-per-write", func(b *testing.B) {
		for b.Loop() {
			w := pgcopy.NewWriter(func([]byte) error { return nil })
			w.Write(data[:19])
			for p := data[19:]; len(p) > 0; p = p[min(rowLen, len(p)):] {
				if _, err := w.Write(p[:min(rowLen, len(p))]); err != nil {
					b.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
		}
		perRow(b)
	})
}

// BenchmarkScan copies a 1M-row table out of PostgreSQL: Scan against the
// B4 baseline (the same COPY into io.Discard), and against reading the
// stream through an io.Pipe (a Reader in another goroutine).
func BenchmarkScan(b *testing.B) {
	const rows = 1_000_000
	pg := testenv.PostgreSQL(b)
	pg.CreateDatabase(b, "bench")
	pg.Exec(b, "bench", `
CREATE TABLE audit (id bigint PRIMARY KEY, n int, at timestamptz, msg text, amount numeric, ok bool, tag bytea, extra text);
INSERT INTO audit SELECT g, g % 1000, now(), 'user.login succeeded for alice@example.com from 10.0.0.1', 1234.5678, true,
  decode(md5(g::text), 'hex'), NULL FROM generate_series(1, 1000000) g;`)
	pg.Exec(b, "bench", `VACUUM ANALYZE audit`)
	conn := mustConnect(b, pg.DSN("bench"))
	ctx := context.Background()
	query, err := pgcopy.CopyQuery(ctx, conn, "public", "audit")
	if err != nil {
		b.Fatal(err)
	}
	perRow := func(b *testing.B) {
		b.ReportMetric(float64(b.N*rows)/b.Elapsed().Seconds(), "rows/s")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/row")
	}
	check := func(b *testing.B, n int64, err error) {
		if err != nil || n != rows {
			b.Fatalf("%d rows, %v", n, err)
		}
	}
	b.Run("baseline=CopyTo-discard", func(b *testing.B) {
		for b.Loop() {
			if _, err := conn.PgConn().CopyTo(ctx, io.Discard, query); err != nil {
				b.Fatal(err)
			}
		}
		perRow(b)
	})
	b.Run("Scan", func(b *testing.B) {
		for b.Loop() {
			n, err := pgcopy.Scan(ctx, conn.PgConn(), query, func([]byte) error { return nil })
			check(b, n, err)
		}
		perRow(b)
	})
	b.Run("Scan+sha256", func(b *testing.B) {
		for b.Loop() {
			n, err := pgcopy.Scan(ctx, conn.PgConn(), query, func(row []byte) error { sha256.Sum256(row); return nil })
			check(b, n, err)
		}
		perRow(b)
	})
	b.Run("pipe+Reader", func(b *testing.B) {
		for b.Loop() {
			n, err := scanViaPipe(ctx, conn.PgConn(), query, func([]byte) error { return nil })
			check(b, n, err)
		}
		perRow(b)
	})
	b.Run("pipe+Reader+sha256", func(b *testing.B) {
		for b.Loop() {
			n, err := scanViaPipe(ctx, conn.PgConn(), query, func(row []byte) error { sha256.Sum256(row); return nil })
			check(b, n, err)
		}
		perRow(b)
	})
}

// scanViaPipe is the alternative to Scan measured above: CopyTo writes into
// a buffered io.Pipe and a Reader parses in the calling goroutine.
func scanViaPipe(ctx context.Context, conn *pgconn.PgConn, query string, fn func([]byte) error) (int64, error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(pw, 64<<10)
		_, err := conn.CopyTo(ctx, bw, query)
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
		done <- err
	}()
	r := pgcopy.NewReader(pr)
	var err error
	for {
		var row []byte
		if row, err = r.Next(); err != nil {
			break
		}
		if err = fn(row); err != nil {
			break
		}
	}
	pr.CloseWithError(err)
	if copyErr := <-done; copyErr != nil && err == io.EOF {
		err = copyErr
	}
	if err == io.EOF {
		err = nil
	}
	return r.Rows(), err
}
