package verify_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	"github.com/witnz/witnz/libs/commitment"
	ingestv1 "github.com/witnz/witnz/libs/gen/witnz/ingest/v1"
	"github.com/witnz/witnz/libs/gen/witnz/ingest/v1/ingestv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/statedigest"
	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/services/verifier/internal/testcluster"
	"github.com/witnz/witnz/services/verifier/internal/verify"
)

// auditDDL is the shape of the append-only audit tables, one per scenario
// so that each starts clean.
const auditDDL = `CREATE TABLE public.%s (
	id bigint PRIMARY KEY,
	actor text NOT NULL,
	action text NOT NULL,
	detail jsonb,
	at timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00'
);
INSERT INTO public.%[1]s (id, actor, action, detail)
	SELECT g, 'actor-' || lpad(g::text, 5, '0'), 'login', CASE WHEN g %% 3 <> 0 THEN jsonb_build_object('n', g) END
	FROM generate_series(1, 200) g;
`

var auditTables = []string{"t_clean", "t_update", "t_anchored", "t_replica", "t_delete", "t_pub", "t_bypass", "t_accept", "t_trunc", "t_load", "t_perm"}

const otherDDL = `
CREATE TABLE public.composite (
	tenant text, n integer, day date, note text, amount numeric(12,2),
	PRIMARY KEY (tenant, n, day)
);
INSERT INTO public.composite
	SELECT 'tenant ' || (g % 7), g, DATE '2026-01-01' + (g % 30), CASE WHEN g % 4 <> 0 THEN 'note ' || g END, g * 1.25
	FROM generate_series(1, 300) g;

CREATE TABLE public.nokey (a integer, b text, c bytea);
ALTER TABLE public.nokey REPLICA IDENTITY FULL;
INSERT INTO public.nokey
	SELECT g % 50, CASE WHEN g % 5 <> 0 THEN 'b' || (g % 50) END, CASE WHEN g % 2 = 0 THEN decode(md5(g::text), 'hex') END
	FROM generate_series(1, 100) g; -- every row twice: duplicates count

CREATE TABLE public.wide (
	id integer PRIMARY KEY, big text, blob bytea, arr integer[], j jsonb, ts timestamptz,
	iv interval, u uuid, f float8, ok boolean, nums numeric, ch char(3)
);
INSERT INTO public.wide
	SELECT g,
		CASE WHEN g % 10 = 0 THEN repeat('ünïcødé ' || g || ' ', 25000) ELSE 'short ' || g END,
		CASE WHEN g % 3 = 0 THEN decode(repeat(md5(g::text), 100), 'hex') END,
		ARRAY[g, g + 1, NULL], jsonb_build_object('g', g, 'nested', jsonb_build_array(g, 'x')),
		TIMESTAMPTZ '2026-03-01 12:00:00+00' + g * interval '1 hour', g * interval '1 minute',
		md5(g::text)::uuid, g / 7.0, g % 2 = 0, CASE WHEN g % 5 <> 0 THEN g * 3.14159 END, 'c' || (g % 10)
	FROM generate_series(1, 50) g;

CREATE TABLE public.accounts (id integer PRIMARY KEY, owner text, balance numeric NOT NULL);
ALTER TABLE public.accounts REPLICA IDENTITY FULL;
INSERT INTO public.accounts SELECT g, 'owner ' || g, 100 FROM generate_series(1, 200) g;

CREATE TABLE public.acc_load (id integer PRIMARY KEY, owner text, balance numeric NOT NULL);
ALTER TABLE public.acc_load REPLICA IDENTITY FULL;
INSERT INTO public.acc_load SELECT g, 'owner ' || g, 100 FROM generate_series(1, 500) g;

CREATE TABLE public.mut_nokey (n integer, note text);
ALTER TABLE public.mut_nokey REPLICA IDENTITY FULL;
INSERT INTO public.mut_nokey VALUES (1, 'a'), (2, 'b'), (2, 'b'), (3, NULL);

CREATE TABLE public.unprotected (id integer PRIMARY KEY);
`

// TestVerify runs every scenario against one deployment: a witness with a
// cosigning key, cdc-ingest protecting the tables, PostgreSQL.
func TestVerify(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, a witness and cdc-ingest; skipped with -short")
	}
	var setup strings.Builder
	protect := []string{"public.composite:append-only", "public.nokey:append-only", "public.wide:append-only", "public.accounts:mutable", "public.acc_load:mutable", "public.mut_nokey:mutable"}
	for _, name := range auditTables {
		fmt.Fprintf(&setup, auditDDL, name)
		protect = append(protect, "public."+name+":append-only")
	}
	setup.WriteString(otherDDL)
	c := testcluster.Start(t, testcluster.Options{Setup: setup.String(), Protect: protect})
	v := newVerifier(t, c, "", nil)

	// Rows inserted after protection are INSERT entries, not BASELINE.
	for _, name := range auditTables {
		c.Exec(t, fmt.Sprintf(`INSERT INTO public.%s (id, actor, action) SELECT g, 'actor-' || g, 'logout' FROM generate_series(201, 260) g`, name))
	}
	c.Exec(t, `INSERT INTO public.composite VALUES ('tenant x', 1, '2026-02-02', NULL, NULL), ('tenant ''quoted''', 2, '2026-02-03', 'x', 0)`)
	c.Exec(t, `INSERT INTO public.nokey VALUES (NULL, NULL, NULL), (NULL, NULL, NULL), (7, 'seven', '\x00ff')`)
	c.Exec(t, `INSERT INTO public.wide (id, big) VALUES (51, repeat('x', 300000)), (52, NULL)`)

	t.Run("clean tables verify ok", func(t *testing.T) {
		for table, rows := range map[string]uint64{
			"public.t_clean": 260, "public.composite": 302, "public.nokey": 103, "public.wide": 52, "public.accounts": 200,
		} {
			res := mustVerify(t, v, table)
			if !res.OK() || res.Rows != rows {
				t.Errorf("%s: ok %v, %d rows (want %d)%s", table, res.OK(), res.Rows, rows, describe(res.Findings))
			}
			if res.LogSize == 0 || res.SnapshotLSN == 0 {
				t.Errorf("%s: log size %d, snapshot %s", table, res.LogSize, verify.FormatLSN(res.SnapshotLSN))
			}
		}
	})

	t.Run("UPDATE of an append-only table", func(t *testing.T) {
		c.Exec(t, `UPDATE public.t_update SET action = 'tampered' WHERE id = 42`)
		res := mustVerify(t, v, "public.t_update")
		f := only(t, res, verify.Modified)
		wantKey(t, f, "id", "42")
		if f.EntryOp.String() != "BASELINE" || f.Latest == nil || f.LatestOp.String() != "UPDATE" {
			t.Errorf("finding refers to entry %v (%v), latest %v (%v): want the BASELINE and the UPDATE", deref(f.Entry), f.EntryOp, deref(f.Latest), f.LatestOp)
		}
		checkBundle(t, c, f)
		waitAlert(t, c, "cdc.update_on_append_only")
	})

	t.Run("evidence carries the anchor receipt covering the entry", func(t *testing.T) {
		// What the anchor service records after writing the table's
		// cosigned checkpoint to write-once storage.
		w := c.Witness(t, 0)
		var cp *witnessv1.GetCheckpointResponse
		deadline := time.Now().Add(30 * time.Second)
		for cp == nil {
			resp, err := w.GetCheckpoint(t.Context(), connect.NewRequest(&witnessv1.GetCheckpointRequest{Table: "public.t_anchored"}))
			if err == nil && resp.Msg.GetSize() >= 200 {
				cp = resp.Msg
			} else if time.Now().After(deadline) {
				t.Fatalf("no cosigned checkpoint of public.t_anchored covering the baseline: %v", err)
			} else {
				time.Sleep(100 * time.Millisecond)
			}
		}
		receipt := &witnessv1.AnchorReceipt{
			Sink: "dir", Bucket: "/anchors", Key: "2026/11/22/anchor-test.json", Sha256: make([]byte, 32), AnchoredAtMicros: time.Now().UnixMicro(),
			Checkpoints: []*witnessv1.AnchoredCheckpoint{{Table: "public.t_anchored", Size: cp.GetSize(), Root: cp.GetRoot()}},
		}
		httpc := c.TLS(t, mtls.Service("anchor")).HTTPClient()
		var errs []error
		for _, url := range c.WitnessURLs { // the leader takes it
			anchor := witnessv1connect.NewWitnessServiceClient(httpc, url, rpcserver.ClientOptions()...)
			_, err := anchor.RecordAnchor(t.Context(), connect.NewRequest(&witnessv1.RecordAnchorRequest{Receipt: receipt}))
			if err == nil {
				errs = nil
				break
			}
			errs = append(errs, err)
		}
		if errs != nil {
			t.Fatalf("RecordAnchor: %v", errs)
		}
		c.Exec(t, `UPDATE public.t_anchored SET action = 'tampered' WHERE id = 7`)
		res := mustVerify(t, v, "public.t_anchored")
		f := only(t, res, verify.Modified)
		r := checkBundle(t, c, f)
		if r.Anchor == nil || r.Anchor.Key != receipt.Key || r.AnchorProven == nil {
			t.Fatalf("bundle %s carries anchor %+v, proven %+v; want the recorded receipt, proven", f.EvidencePath, r.Anchor, r.AnchorProven)
		}
		if !r.AnchorProven.Covers || r.AnchorProven.Size != cp.GetSize() {
			t.Errorf("anchor proven %+v: want it to cover entry %d at size %d", r.AnchorProven, deref(f.Entry), cp.GetSize())
		}
	})

	t.Run("UPDATE with session_replication_role replica", func(t *testing.T) {
		conn := mustConnect(t, c.DSN)
		if _, err := conn.Exec(t.Context(), `SET session_replication_role = replica`); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(t.Context(), `UPDATE public.t_replica SET actor = 'nobody' WHERE id = 230`); err != nil {
			t.Fatal(err)
		}
		res := mustVerify(t, v, "public.t_replica")
		f := only(t, res, verify.Modified)
		wantKey(t, f, "id", "230")
		if f.EntryOp.String() != "INSERT" {
			t.Errorf("finding refers to a %v entry, want the INSERT", f.EntryOp)
		}
		checkBundle(t, c, f)
	})

	t.Run("DELETE from an append-only table", func(t *testing.T) {
		c.Exec(t, `DELETE FROM public.t_delete WHERE id IN (7, 250)`)
		res := mustVerify(t, v, "public.t_delete")
		if len(res.Findings) != 2 {
			t.Fatalf("want 2 deleted rows:%s", describe(res.Findings))
		}
		var ops []string
		for _, f := range res.Findings {
			if f.Kind != verify.Deleted || len(f.KeyColumns) != 0 || f.Entry == nil || f.Expected == nil || f.Actual != nil {
				t.Errorf("want a deleted row with its entry and no key text:%s", describe([]verify.Finding{f}))
			}
			ops = append(ops, f.EntryOp.String())
			checkBundle(t, c, f)
		}
		slices.Sort(ops)
		if !slices.Equal(ops, []string{"BASELINE", "INSERT"}) {
			t.Errorf("deleted rows refer to %v entries, want one BASELINE and one INSERT", ops)
		}
	})

	t.Run("changes while the table was out of the publication", func(t *testing.T) {
		// One transaction: cdc-ingest's monitor puts the table back within
		// a second, and must not do so in the middle.
		c.Exec(t, `BEGIN;
			ALTER PUBLICATION witnz DROP TABLE public.t_pub;
			INSERT INTO public.t_pub (id, actor, action) VALUES (100001, 'ghost', 'insert');
			UPDATE public.t_pub SET detail = '{"forged": true}' WHERE id = 3;
			COMMIT`)
		waitAlert(t, c, "cdc.publication_changed")
		res := mustVerify(t, v, "public.t_pub")
		if len(res.Findings) != 2 {
			t.Fatalf("want 2 findings:%s", describe(res.Findings))
		}
		for _, f := range res.Findings {
			switch f.Kind {
			case verify.Phantom:
				wantKey(t, f, "id", "100001")
				if f.Entry != nil || f.Actual == nil || f.Expected != nil {
					t.Errorf("phantom with entry %v", deref(f.Entry))
				}
			case verify.Modified:
				wantKey(t, f, "id", "3")
			default:
				t.Errorf("unexpected %s", f.Kind)
			}
			// A phantom's bundle anchors the log's state.
			checkBundle(t, c, f)
		}
	})

	t.Run("composite key", func(t *testing.T) {
		c.Exec(t, `UPDATE public.composite SET note = NULL WHERE tenant = 'tenant 3' AND n = 10`)
		c.Exec(t, `UPDATE public.composite SET amount = 1 WHERE tenant = 'tenant ''quoted''' AND n = 2`)
		// An UPDATE that writes the same values changes nothing to verify.
		c.Exec(t, `UPDATE public.composite SET note = note WHERE n = 12`)
		c.Exec(t, `DELETE FROM public.composite WHERE n = 11`)
		res := mustVerify(t, v, "public.composite")
		var modified []map[string]string
		deleted := 0
		for _, f := range res.Findings {
			switch f.Kind {
			case verify.Modified:
				modified = append(modified, f.Key())
				if !slices.Equal(f.KeyColumns, []string{"tenant", "n", "day"}) {
					t.Errorf("key columns %v, want tenant, n, day in key order", f.KeyColumns)
				}
			case verify.Deleted:
				deleted++
			default:
				t.Errorf("unexpected %s", f.Kind)
			}
		}
		slices.SortFunc(modified, func(a, b map[string]string) int { return strings.Compare(a["n"], b["n"]) })
		want := []map[string]string{
			{"tenant": "tenant 3", "n": "10", "day": "2026-01-11"},
			{"tenant": "tenant 'quoted'", "n": "2", "day": "2026-02-03"},
		}
		if fmt.Sprint(modified) != fmt.Sprint(want) || deleted != 1 {
			t.Errorf("modified %v and %d deleted, want %v and 1:%s", modified, deleted, want, describe(res.Findings))
		}
	})

	t.Run("table without a primary key", func(t *testing.T) {
		// Every row is its own key: an UPDATE is the old row deleted and a
		// new row that was never committed. One of two identical rows.
		c.Exec(t, `UPDATE public.nokey SET b = 'changed' WHERE ctid = (SELECT min(ctid) FROM public.nokey WHERE a = 1)`)
		c.Exec(t, `DELETE FROM public.nokey WHERE ctid = (SELECT min(ctid) FROM public.nokey WHERE a IS NULL)`)
		res := mustVerify(t, v, "public.nokey")
		var kinds []string
		for _, f := range res.Findings {
			kinds = append(kinds, f.Kind.String())
			if f.Kind == verify.Phantom {
				if got := f.Key(); got["a"] != "1" || got["b"] != "changed" || got["c"] != "NULL" {
					t.Errorf("phantom key %v, want the whole new row a=1 b=changed c=NULL", got)
				}
			}
		}
		slices.Sort(kinds)
		if !slices.Equal(kinds, []string{"deleted", "deleted", "phantom"}) {
			t.Errorf("findings %v, want deleted, deleted, phantom:%s", kinds, describe(res.Findings))
		}
	})

	t.Run("wide rows", func(t *testing.T) {
		c.Exec(t, `UPDATE public.wide SET big = overlay(big placing 'Z' from 100000) WHERE id = 20`)
		c.Exec(t, `UPDATE public.wide SET arr = ARRAY[1, NULL, 3], iv = interval '1 day' WHERE id = 5`)
		res := mustVerify(t, v, "public.wide")
		var ids []string
		for _, f := range res.Findings {
			if f.Kind != verify.Modified {
				t.Errorf("unexpected %s", f.Kind)
			}
			ids = append(ids, f.Key()["id"])
			checkBundle(t, c, f)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, []string{"20", "5"}) {
			t.Errorf("modified ids %v, want 20 and 5:%s", ids, describe(res.Findings))
		}
	})

	t.Run("mutable table follows legitimate changes", func(t *testing.T) {
		c.Exec(t, `UPDATE public.accounts SET balance = balance + 10 WHERE id <= 50`)
		c.Exec(t, `DELETE FROM public.accounts WHERE id > 190`)
		c.Exec(t, `INSERT INTO public.accounts VALUES (1000, 'new', 0)`)
		if res := mustVerify(t, v, "public.accounts"); !res.OK() || res.Rows != 191 {
			t.Fatalf("ok %v, %d rows (want 191)%s", res.OK(), res.Rows, describe(res.Findings))
		}
		// A changed primary key, and an UPDATE of a table keyed by the
		// whole row: the row's identity changes; the log follows it.
		c.Exec(t, `UPDATE public.accounts SET id = id + 5000, balance = 1 WHERE id IN (3, 4)`)
		c.Exec(t, `UPDATE public.mut_nokey SET note = 'changed' WHERE n = 2`)
		if res := mustVerify(t, v, "public.accounts"); !res.OK() || res.Rows != 191 {
			t.Fatalf("after a primary key change: ok %v, %d rows (want 191)%s", res.OK(), res.Rows, describe(res.Findings))
		}
		if res := mustVerify(t, v, "public.mut_nokey"); !res.OK() || res.Rows != 4 {
			t.Fatalf("mutable table without a key after an UPDATE: ok %v, %d rows (want 4)%s", res.OK(), res.Rows, describe(res.Findings))
		}
		c.Exec(t, `BEGIN;
			ALTER PUBLICATION witnz DROP TABLE public.accounts;
			UPDATE public.accounts SET balance = 1000000 WHERE id = 7;
			COMMIT`)
		waitAlert(t, c, "cdc.publication_changed")
		res := mustVerify(t, v, "public.accounts")
		f := only(t, res, verify.Modified)
		wantKey(t, f, "id", "7")
		if f.EntryOp.String() != "UPDATE" {
			t.Errorf("finding refers to a %v entry, want the logged UPDATE of id 7", f.EntryOp)
		}
	})

	t.Run("ACCEPT makes an UPDATE the expected state", func(t *testing.T) {
		c.Exec(t, `UPDATE public.t_accept SET action = 'corrected' WHERE id = 9`)
		res := mustVerify(t, v, "public.t_accept")
		f := only(t, res, verify.Modified)
		if f.Latest == nil {
			t.Fatal("the finding does not name the UPDATE entry")
		}
		cl := ingestv1connect.NewIngestServiceClient(c.TLS(t, testcluster.Operator).HTTPClient(), c.IngestURL, rpcserver.ClientOptions()...)
		if _, err := cl.Accept(t.Context(), connect.NewRequest(&ingestv1.AcceptRequest{Table: "public.t_accept", Seq: *f.Latest, Reason: "test"})); err != nil {
			t.Fatalf("accept: %v", err)
		}
		if res := mustVerify(t, v, "public.t_accept"); !res.OK() {
			t.Errorf("after ACCEPT:%s", describe(res.Findings))
		}
	})

	t.Run("TRUNCATE of an append-only table, findings capped", func(t *testing.T) {
		c.Exec(t, `TRUNCATE public.t_trunc`)
		capped := newVerifierOpts(t, c, func(o *verify.Options) { o.MaxFindings = 5 })
		res := mustVerify(t, capped, "public.t_trunc")
		if len(res.Findings) != 5 || !res.Truncated || res.Rows != 0 {
			t.Fatalf("%d findings, truncated %v, %d rows: want 5 findings, truncated, 0 rows", len(res.Findings), res.Truncated, res.Rows)
		}
		for _, f := range res.Findings {
			if f.Kind != verify.Deleted {
				t.Errorf("unexpected %s", f.Kind)
			}
		}
	})

	t.Run("data file edited while PostgreSQL was stopped", func(t *testing.T) {
		var rel, ctid string
		conn := mustConnect(t, c.DSN)
		if err := conn.QueryRow(t.Context(), `SELECT pg_relation_filepath('public.t_bypass'), ctid::text FROM public.t_bypass WHERE id = 5`).Scan(&rel, &ctid); err != nil {
			t.Fatal(err)
		}
		conn.Close(context.Background())
		// A fast shutdown waits for the logical walsender's client to
		// confirm the end of the WAL: stop cdc-ingest first.
		c.StopIngest(t)
		c.PG.Stop(t)
		editTuple(t, filepath.Join(c.PG.Dir(), rel), ctid, []byte("actor-00005"), []byte("actor-99999"))
		c.PG.Start(t)
		c.StartIngest(t)
		res := mustVerify(t, v, "public.t_bypass")
		f := only(t, res, verify.Modified)
		wantKey(t, f, "id", "5")
		if f.Latest != nil {
			t.Errorf("the log has entry %d about the row: the edit went through the WAL", *f.Latest)
		}
		checkBundle(t, c, f)
	})

	t.Run("GetEntries bucket filter", func(t *testing.T) {
		w := c.Witness(t, 0)
		ti := c.TableInfo(t, 0, "public.accounts")
		digest, err := statedigest.New(int(ti.GetBuckets()))
		if err != nil {
			t.Fatal(err)
		}
		read := func(buckets []uint32) ([]*witnessv1.LoggedEntry, error) {
			stream, err := w.GetEntries(t.Context(), connect.NewRequest(&witnessv1.GetEntriesRequest{Table: "public.accounts", Buckets: buckets}))
			if err != nil {
				return nil, err
			}
			var out []*witnessv1.LoggedEntry
			for stream.Receive() {
				out = append(out, stream.Msg().GetEntries()...)
			}
			return out, stream.Err()
		}
		all, err := read(nil)
		if err != nil || uint64(len(all)) != ti.GetSize() {
			t.Fatalf("every entry: %d, %v; want %d", len(all), err, ti.GetSize())
		}
		want := []uint32{3, 100, ti.GetBuckets() - 1}
		var expect []uint64
		for _, le := range all {
			k := le.GetEntry().GetKeyCommit()
			if len(k) == 0 || slices.Contains(want, digest.BucketOf(commitment.Commitment(k))) {
				expect = append(expect, le.GetSeq())
			}
		}
		got, err := read(want)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		for _, le := range got {
			seqs = append(seqs, le.GetSeq())
		}
		if !slices.Equal(seqs, expect) || len(seqs) >= len(all) {
			t.Errorf("buckets %v: entries %v, want %v (of %d)", want, seqs, expect, len(all))
		}
		if _, err := read([]uint32{ti.GetBuckets()}); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("a bucket beyond the table's count: %v, want INVALID_ARGUMENT", err)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, tc := range []struct {
			table  string
			target error
			want   string
		}{
			{"public.unprotected", verify.ErrNotProtected, "the witness cluster has no log for public.unprotected; protect it with `witnz protect public.unprotected`"},
			{"public.missing", verify.ErrNotProtected, "no log for public.missing"},
			{"audit_log", verify.ErrTableName, `"audit_log" (e.g. public.audit_log)`},
		} {
			res, err := v.Verify(t.Context(), tc.table)
			if !isErr(err, tc.target) || !strings.Contains(err.Error(), tc.want) || res != nil {
				t.Errorf("Verify(%s) = %v, %v; want %v containing %q", tc.table, res, err, tc.target, tc.want)
			}
		}

		c.Exec(t, `CREATE ROLE reader LOGIN; GRANT SELECT ON public.t_clean TO reader`)
		dsn := strings.Replace(c.DSN, "postgres://postgres@", "postgres://reader@", 1)
		ro := newVerifier(t, c, dsn, nil)
		if res := mustVerify(t, ro, "public.t_clean"); !res.OK() {
			t.Errorf("a role with only SELECT:%s", describe(res.Findings))
		}
		_, err := ro.Verify(t.Context(), "public.t_perm")
		if !isErr(err, verify.ErrDatabase) || !strings.Contains(err.Error(), "permission denied on public.t_perm") || !strings.Contains(err.Error(), "GRANT SELECT ON public.t_perm TO <role>") {
			t.Errorf("without SELECT: %v", err)
		}

		nobody := newVerifier(t, c, "", []string{"https://" + testenv.FreeAddr(t)})
		_, err = nobody.Verify(t.Context(), "public.t_clean")
		if !isErr(err, verify.ErrWitness) || !strings.Contains(err.Error(), "no witness node answered") {
			t.Errorf("witness unreachable: %v", err)
		}

		// cdc-ingest stopped: the witnesses cannot catch up with a snapshot
		// taken after a change.
		c.StopIngest(t)
		c.Exec(t, `INSERT INTO public.t_clean (id, actor, action) VALUES (5000, 'a', 'b')`)
		slow := newVerifierOpts(t, c, func(o *verify.Options) { o.CatchUpTimeout = 2 * time.Second })
		_, err = slow.Verify(t.Context(), "public.t_clean")
		if !isErr(err, verify.ErrNotCaughtUp) || !strings.Contains(err.Error(), "is cdc-ingest running") {
			t.Errorf("cdc-ingest stopped: %v", err)
		}
		c.StartIngest(t)
		// The slot kept the change: once cdc-ingest is back it is logged.
		if res := mustVerify(t, v, "public.t_clean"); !res.OK() || res.Rows != 261 {
			t.Errorf("after cdc-ingest restarted: ok %v, %d rows%s", res.OK(), res.Rows, describe(res.Findings))
		}
	})

	t.Run("no false alarm under load", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		var inserted, changed atomic.Int64
		// Each load connection runs a transaction every 5 ms at most: a
		// sustained load that keeps the table's size (and the test's
		// duration) reasonable.
		load := func(fn func(ctx context.Context, conn *pgx.Conn, r *rand.Rand) error) {
			wg.Go(func() {
				conn := mustConnect(t, c.DSN)
				defer conn.Close(context.Background())
				r := rand.New(rand.NewPCG(rand.Uint64(), 1))
				pace := time.NewTicker(5 * time.Millisecond)
				defer pace.Stop()
				for ctx.Err() == nil {
					if err := fn(ctx, conn, r); err != nil && ctx.Err() == nil {
						t.Errorf("load: %v", err)
						return
					}
					select {
					case <-ctx.Done():
					case <-pace.C:
					}
				}
			})
		}
		var next atomic.Int64
		next.Store(1_000_000)
		for range 2 {
			load(func(ctx context.Context, conn *pgx.Conn, r *rand.Rand) error {
				first := next.Add(20) - 20
				_, err := conn.Exec(ctx, `INSERT INTO public.t_load (id, actor, action) SELECT g, 'load', 'insert' FROM generate_series($1::bigint, $1::bigint + 19) g`, first)
				if err == nil {
					inserted.Add(20)
				}
				return err
			})
		}
		var nextAcc atomic.Int64
		nextAcc.Store(10_000)
		load(func(ctx context.Context, conn *pgx.Conn, r *rand.Rand) error {
			var err error
			switch r.IntN(4) {
			case 0:
				_, err = conn.Exec(ctx, `INSERT INTO public.acc_load VALUES ($1, 'load', 1)`, nextAcc.Add(1))
			case 1:
				_, err = conn.Exec(ctx, `DELETE FROM public.acc_load WHERE id = (SELECT id FROM public.acc_load ORDER BY random() LIMIT 1)`)
			default:
				_, err = conn.Exec(ctx, `UPDATE public.acc_load SET balance = balance + 1 WHERE id IN (SELECT id FROM public.acc_load ORDER BY random() LIMIT 3)`)
			}
			if err == nil {
				changed.Add(1)
			}
			return err
		})
		defer func() {
			cancel()
			wg.Wait()
		}()
		for run := range 10 {
			for _, table := range []string{"public.t_load", "public.acc_load"} {
				res := mustVerify(t, v, table)
				if !res.OK() {
					t.Errorf("run %d of %s under load: false alarm:%s", run+1, table, describe(res.Findings))
				}
				t.Logf("run %d %s: %d rows at %s, log size %d, %d differing buckets in the first pass, %s", run+1, table, res.Rows,
					verify.FormatLSN(res.SnapshotLSN), res.LogSize, res.DifferingBuckets, res.Duration.Round(time.Millisecond))
			}
		}
		cancel()
		wg.Wait()
		if inserted.Load() < 1000 || changed.Load() < 50 {
			t.Errorf("the load was too light to mean anything: %d rows inserted, %d changes to the mutable table", inserted.Load(), changed.Load())
		}
		t.Logf("load during the runs: %d rows inserted, %d changes to the mutable table", inserted.Load(), changed.Load())
	})
}

// only returns the one finding of res, which must be of kind k.
func only(t *testing.T, res *verify.Result, k verify.Kind) verify.Finding {
	t.Helper()
	if len(res.Findings) != 1 || res.Findings[0].Kind != k {
		t.Fatalf("want one %s row, got:%s", k, describe(res.Findings))
	}
	if res.OK() || res.ConfirmLSN == 0 || res.ConfirmLSN < res.SnapshotLSN {
		t.Errorf("ok %v, confirmed at %s after %s", res.OK(), verify.FormatLSN(res.ConfirmLSN), verify.FormatLSN(res.SnapshotLSN))
	}
	return res.Findings[0]
}

func wantKey(t *testing.T, f verify.Finding, col, val string) {
	t.Helper()
	if got := f.Key(); len(got) != 1 || got[col] != val {
		t.Errorf("finding key %v, want %s=%s", got, col, val)
	}
}

func deref(p *uint64) any {
	if p == nil {
		return nil
	}
	return *p
}

func mustConnect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func waitAlert(t *testing.T, c *testcluster.Cluster, typ string) {
	t.Helper()
	waitFor(t, 30*time.Second, "alert "+typ, func() (bool, string) {
		types := c.Alerts.Types()
		return slices.Contains(types, typ), fmt.Sprint(types)
	})
}

// editTuple overwrites old with new (the same length) inside the tuple at
// ctid "(block,item)" of a heap file, as someone editing the data file
// while the server is stopped would: the WAL never sees it.
func editTuple(t *testing.T, path, ctid string, old, new []byte) {
	t.Helper()
	var block, item int
	if _, err := fmt.Sscanf(ctid, "(%d,%d)", &block, &item); err != nil {
		t.Fatalf("ctid %q: %v", ctid, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const pageSize = 8192
	page := make([]byte, pageSize)
	if _, err := f.ReadAt(page, int64(block)*pageSize); err != nil {
		t.Fatal(err)
	}
	// Line pointer item (1-based) after the 24-byte page header:
	// lp_off:15, lp_flags:2, lp_len:15, little-endian on this machine.
	lp := binary.LittleEndian.Uint32(page[24+4*(item-1):])
	off, length := int(lp&0x7fff), int(lp>>17)
	tuple := page[off : off+length]
	i := bytes.Index(tuple, old)
	if i < 0 {
		t.Fatalf("%q not in the tuple at %s", old, ctid)
	}
	copy(tuple[i:], new)
	if _, err := f.WriteAt(page, int64(block)*pageSize); err != nil {
		t.Fatal(err)
	}
}

// TestWitnessQuorum verifies against a 3-node cluster: reads follow the
// leader when it changes, and a cluster without a majority is an error,
// never a clean result.
func TestWitnessQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, three witnesses and cdc-ingest; skipped with -short")
	}
	c := testcluster.Start(t, testcluster.Options{
		Witnesses: 3,
		Setup:     fmt.Sprintf(auditDDL, "audit_log"),
		Protect:   []string{"public.audit_log:append-only"},
	})
	v := newVerifier(t, c, "", nil)
	if res := mustVerify(t, v, "public.audit_log"); !res.OK() || res.Rows != 200 {
		t.Fatalf("ok %v, %d rows%s", res.OK(), res.Rows, describe(res.Findings))
	}

	leader := func() string {
		for i, id := range c.WitnessIDs {
			resp, err := c.Witness(t, i).GetStatus(t.Context(), connect.NewRequest(&witnessv1.GetStatusRequest{}))
			if err == nil && resp.Msg.GetState() == "Leader" {
				return id
			}
		}
		return ""
	}
	var first string
	waitFor(t, 30*time.Second, "a leader", func() (bool, string) { first = leader(); return first != "", "none" })
	c.StopWitness(t, first)
	c.Exec(t, `UPDATE public.audit_log SET action = 'tampered' WHERE id = 1`)
	waitFor(t, 30*time.Second, "a new leader", func() (bool, string) {
		l := leader()
		return l != "" && l != first, l
	})
	res := mustVerify(t, v, "public.audit_log")
	f := only(t, res, verify.Modified)
	wantKey(t, f, "id", "1")
	checkBundle(t, c, f)

	// Stop a second node: no majority is left.
	for _, id := range c.WitnessIDs {
		if id != first {
			c.StopWitness(t, id)
			break
		}
	}
	waitFor(t, 30*time.Second, "verification to refuse", func() (bool, string) {
		res, err := v.Verify(t.Context(), "public.audit_log")
		if err == nil {
			return false, fmt.Sprintf("result ok=%v", res.OK())
		}
		return isErr(err, verify.ErrWitness) && strings.Contains(err.Error(), "has no leader (no quorum?)"), err.Error()
	})
}

// BenchmarkB4Full is a whole verification — snapshot, catch-up, scan, the
// witness digest, comparison — of a table of WITNZ_B4_ROWS rows (default
// 1,000,000) protected through cdc-ingest and a witness, for comparison
// with BenchmarkB4's scan alone. Protecting the table commits every row
// to the witness first (a minute or so per million rows).
func BenchmarkB4Full(b *testing.B) {
	rows := 1_000_000
	if v := os.Getenv("WITNZ_B4_ROWS"); v != "" {
		if _, err := fmt.Sscan(v, &rows); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	c := testcluster.Start(b, testcluster.Options{
		Setup: fmt.Sprintf(`CREATE TABLE public.audit_log (id bigint PRIMARY KEY, actor text NOT NULL, action text NOT NULL, detail jsonb, at timestamptz NOT NULL);
			INSERT INTO public.audit_log SELECT g, 'user-' || g || '@example.com', 'login-success',
				jsonb_build_object('n', g, 'ip', '10.0.0.1', 'agent', 'curl/8.5'), TIMESTAMPTZ '2026-01-01' + g * interval '1 second'
			FROM generate_series(1, %d) g`, rows),
		Protect: []string{"public.audit_log:append-only"},
	})
	b.Logf("%d rows protected in %s", rows, time.Since(start).Round(time.Second))
	c.Exec(b, `VACUUM (FREEZE, ANALYZE) public.audit_log`)
	pool := mustPool(b, c.DSN)
	tlsCfg, err := mtls.Load(c.Files(mtls.Service("verifier")))
	if err != nil {
		b.Fatal(err)
	}
	v := verify.New(pool, tlsCfg.HTTPClient(), c.WitnessURLs, verify.Options{Key: c.Key, EvidenceDir: b.TempDir()})
	var took time.Duration
	for b.Loop() {
		res, err := v.Verify(b.Context(), "public.audit_log")
		if err != nil || !res.OK() || res.Rows != uint64(rows) {
			b.Fatalf("verify: %v, %+v", err, res)
		}
		took += res.Duration
	}
	rate := float64(rows) * float64(b.N) / took.Seconds()
	b.ReportMetric(rate, "rows/s")
	b.Logf("full verification of %d rows: %.0f rows/s (%s per run)", rows, rate, (took / time.Duration(b.N)).Round(time.Millisecond))
}
