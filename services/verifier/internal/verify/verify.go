package verify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/witnz/witnz/libs/checkpoint"
	"github.com/witnz/witnz/libs/commitment"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/pgcopy"
	"github.com/witnz/witnz/libs/statedigest"
)

// Errors. Every error of Verify wraps one of them; a table is reported
// clean only by a Result without findings, never by an error.
var (
	// ErrTableName: the table is not named SCHEMA.TABLE.
	ErrTableName = errors.New("name the table as SCHEMA.TABLE")
	// ErrNotProtected: the witness cluster has no protected log for the
	// table.
	ErrNotProtected = errors.New("table is not protected")
	// ErrWitness: the witness cluster could not answer (unreachable, no
	// leader, a malformed answer).
	ErrWitness = errors.New("witness cluster")
	// ErrNotCaughtUp: the witnesses did not reach the snapshot's position
	// in time (is cdc-ingest running?).
	ErrNotCaughtUp = errors.New("the witnesses have not caught up with the snapshot")
	// ErrDatabase: PostgreSQL refused or failed (connection, permission,
	// missing table).
	ErrDatabase = errors.New("database")
	// ErrEvidence: an evidence bundle could not be written.
	ErrEvidence = errors.New("cannot write evidence")
)

// errRetry means the pass must be run again on a fresh snapshot (the
// table's expected state was reset after the snapshot's position).
var errRetry = errors.New("retry on a fresh snapshot")

// maxAttempts bounds the passes started again after errRetry.
const maxAttempts = 3

// Options configure a Verifier.
type Options struct {
	// Key is the commitment key K.
	Key commitment.Key
	// Slot is cdc-ingest's replication slot, whose confirmed position
	// tells when the witnesses hold every change below a position.
	Slot string
	// EvidenceDir receives the evidence bundles, one directory per table.
	EvidenceDir string
	// CatchUpTimeout bounds the wait for the witnesses to reach the
	// snapshot's position (default 60 s).
	CatchUpTimeout time.Duration
	// CheckpointWait bounds the wait for a cosigned checkpoint that holds a
	// finding's entry (default 0: use the latest one if it holds it).
	CheckpointWait time.Duration
	// MaxFindings bounds the findings of one run (default 1000).
	MaxFindings int
	// Workers hash rows in parallel during the full scan (default
	// GOMAXPROCS).
	Workers int
	// Policy is the checkpoint policy (--policy); nil skips the
	// checkpoint checks (a warning says so on every run).
	Policy *checkpoint.Policy
	// Checkpoints keeps the last checkpoint accepted per table (default:
	// in memory).
	Checkpoints CheckpointStore
	Log         *slog.Logger
}

// Verifier verifies tables of one database against one witness cluster.
type Verifier struct {
	pool    *pgxpool.Pool
	witness *cluster
	opts    Options
}

// New returns a Verifier reading the database through pool and the
// witnesses at urls through hc (an mTLS HTTP/2 client).
func New(pool *pgxpool.Pool, hc *http.Client, urls []string, opts Options) *Verifier {
	if opts.CatchUpTimeout <= 0 {
		opts.CatchUpTimeout = 60 * time.Second
	}
	if opts.MaxFindings <= 0 {
		opts.MaxFindings = 1000
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Slot == "" {
		opts.Slot = "witnz"
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Checkpoints == nil {
		opts.Checkpoints = &memCheckpoints{m: map[string]SeenCheckpoint{}}
	}
	return &Verifier{pool: pool, witness: newCluster(hc, urls), opts: opts}
}

// Result is the outcome of one verification.
type Result struct {
	Table string
	// SnapshotLSN is the position X of the scanned snapshot and LogSize
	// the witness log size compared with.
	SnapshotLSN uint64
	LogSize     uint64
	Rows        uint64
	Started     time.Time
	Duration    time.Duration
	// DifferingBuckets counts the buckets whose digests differed in the
	// first pass.
	DifferingBuckets int
	// Findings are the differences found on the first snapshot and again
	// on the confirming one (ConfirmLSN).
	Findings   []Finding
	Truncated  bool
	ConfirmLSN uint64
	Warnings   []string
	// Integrity lists the failed log integrity checks.
	Integrity []IntegrityProblem

	// lv is the leader's view the table was compared with.
	lv *leaderView
}

// OK reports whether the table matched and the log passed its integrity
// checks.
func (r *Result) OK() bool { return len(r.Findings) == 0 && len(r.Integrity) == 0 }

// Verify verifies one table, "schema.table": the rows against the witness
// log, then the log itself (integrity checks).
func (v *Verifier) Verify(ctx context.Context, table string) (*Result, error) {
	res, err := v.verifyRows(ctx, table)
	if err != nil {
		return nil, err
	}
	problems, warnings, err := v.integrity(ctx, table, res.lv)
	if err != nil {
		return nil, err
	}
	if v.opts.Policy == nil {
		warnings = append(warnings, "no checkpoint policy (--policy): the cosigned checkpoints were not checked")
	}
	res.Integrity = problems
	res.Warnings = append(res.Warnings, warnings...)
	res.Duration = time.Since(res.Started)
	for _, p := range problems {
		v.opts.Log.Warn("log integrity check failed", "table", table, "witness", p.Witness, "url", p.URL, "kind", p.Kind.String(), "size", p.Size, "problem", p.Problem)
	}
	return res, nil
}

// Tables lists the tables the witness cluster holds a protected log for.
func (v *Verifier) Tables(ctx context.Context) ([]string, error) {
	lv, err := v.witness.leader(ctx, "")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range lv.status.GetTables() {
		if t.GetProtection() == witnessv1.Protection_PROTECTION_PROTECTED {
			out = append(out, t.GetName())
		}
	}
	return out, nil
}

// verifyRows compares the table's rows with the witness log.
func (v *Verifier) verifyRows(ctx context.Context, table string) (*Result, error) {
	schema, name, ok := strings.Cut(table, ".")
	if !ok || schema == "" || name == "" {
		return nil, fmt.Errorf("%w: %q (e.g. public.audit_log)", ErrTableName, table)
	}
	res := &Result{Table: table, Started: time.Now()}
	defer func() { res.Duration = time.Since(res.Started) }()
	t := target{table: table, schema: schema, name: name}

	first, err := retry(func() (*pass, error) { return v.pass(ctx, t, nil, nil) })
	if err != nil {
		return nil, err
	}
	res.SnapshotLSN, res.LogSize, res.Rows, res.lv = first.lsn, first.size, first.rows, first.lv
	res.DifferingBuckets = first.differing
	if len(first.findings) == 0 {
		res.Duration = time.Since(res.Started)
		return res, nil
	}

	// Confirm on a fresh snapshot, in the buckets of the findings only.
	var buckets []uint32
	seen := map[uint32]bool{}
	for _, f := range first.findings {
		if !seen[f.Bucket] {
			seen[f.Bucket] = true
			buckets = append(buckets, f.Bucket)
		}
	}
	second, err := retry(func() (*pass, error) { return v.pass(ctx, t, buckets, first.weight) })
	if err != nil {
		return nil, err
	}
	res.ConfirmLSN = second.lsn
	again := map[string]bool{}
	for _, f := range second.findings {
		again[f.identity()] = true
	}
	raced := 0
	for _, f := range first.findings {
		if again[f.identity()] {
			res.Findings = append(res.Findings, f)
		} else {
			raced++
		}
	}
	res.Truncated = first.truncated
	if raced > 0 {
		v.opts.Log.Info("differences gone on the confirming snapshot (concurrent writes)", "table", table, "count", raced,
			"snapshot_lsn", FormatLSN(first.lsn), "confirm_lsn", FormatLSN(second.lsn))
	}
	if len(res.Findings) == 0 {
		return res, nil
	}

	w := &bundleWriter{
		lv: second.lv, table: table, dir: v.opts.EvidenceDir, run: runID(res.Started),
		wait: v.opts.CheckpointWait, size: second.size, warned: map[string]bool{},
	}
	for i := range res.Findings {
		if err := w.write(ctx, i+1, &res.Findings[i]); err != nil {
			return nil, fmt.Errorf("evidence for %s: %w", table, err)
		}
	}
	res.Warnings = w.warnings
	return res, nil
}

func retry(fn func() (*pass, error)) (*pass, error) {
	for attempt := 1; ; attempt++ {
		p, err := fn()
		if errors.Is(err, errRetry) && attempt < maxAttempts {
			continue
		}
		if errors.Is(err, errRetry) {
			return nil, fmt.Errorf("%w: the table's expected state was reset after each of %d snapshots (a protect or a TRUNCATE running?): %v", ErrNotCaughtUp, attempt, err)
		}
		return p, err
	}
}

// runID names a run's bundles: its start time and a random suffix.
func runID(t time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

type target struct {
	table, schema, name string
}

// pass is one snapshot's comparison.
type pass struct {
	lsn, size, rows uint64
	differing       int
	findings        []Finding
	truncated       bool
	lv              *leaderView
	// weight estimates a bucket's rows plus entries, for grouping buckets
	// in a drill down.
	weight func(uint32) uint64
}

// pass compares the table in a new snapshot with the witness log. With
// only nil it scans the whole table and drills into the differing buckets;
// otherwise it drills into the given buckets only (the confirmation).
func (v *Verifier) pass(ctx context.Context, t target, only []uint32, weight func(uint32) uint64) (*pass, error) {
	// Fail fast, before touching the database, when the witnesses cannot
	// answer or do not protect the table.
	lv, err := v.witness.leader(ctx, t.table)
	if err != nil {
		return nil, err
	}
	if err := checkProtected(t.table, lv.table); err != nil {
		return nil, err
	}
	snap, err := openSnapshot(ctx, v.pool)
	if err != nil {
		return nil, err
	}
	defer snap.close()
	desc, err := pgcopy.Describe(ctx, snap.tx, t.schema, t.name)
	if err != nil {
		if errors.Is(err, pgcopy.ErrNoTable) {
			return nil, fmt.Errorf("%w: the witnesses protect %s but the database has no such table (or the role cannot see it)", ErrDatabase, t.table)
		}
		return nil, fmt.Errorf("%w: %s", ErrDatabase, oneLine(err))
	}
	began := time.Now()
	if lv, err = v.catchUp(ctx, t.table, snap.lsn); err != nil {
		return nil, err
	}
	caughtUp := time.Since(began)
	info := lv.table
	start := info.GetEpochSeq()
	lo := start
	if info.GetProtection() == witnessv1.Protection_PROTECTION_PROTECTED {
		lo = start + 1 // the PROTECT entry is at the baseline position, below X
	}
	size, tail, err := lv.boundary(ctx, lo, snap.lsn)
	if err != nil {
		return nil, err
	}
	mode := statedigest.Mode(info.GetMode())
	buckets := int(info.GetBuckets())
	if buckets == 0 {
		buckets = statedigest.DefaultBuckets
	}
	tk := v.opts.Key.ForTable(t.schema, t.name)
	p := &pass{lsn: snap.lsn, size: size, lv: lv}
	in := drillInput{table: t.table, snap: snap, lv: lv, desc: desc, tk: tk, mode: mode, buckets: buckets, start: start, size: size, limit: v.opts.MaxFindings}

	if only != nil {
		p.findings, p.truncated, err = drill(ctx, in, only, weight)
		v.opts.Log.Debug("confirming pass", "table", t.table, "snapshot_lsn", FormatLSN(snap.lsn), "log_size", size,
			"catch_up", caughtUp, "buckets", len(only), "findings", len(p.findings), "took", time.Since(began))
		return p, err
	}

	scanned, rows, err := scanDigest(ctx, snap.conn.Conn().PgConn(), desc.CopyQuery(), tk, desc.Key, buckets, v.opts.Workers)
	if err != nil {
		return nil, scanError(t.table, err)
	}
	p.rows = rows
	expected, err := lv.digest(ctx, size)
	if err != nil {
		return nil, err
	}
	if expected.Buckets() != buckets {
		return nil, fmt.Errorf("%w: the digest of %s has %d buckets, the table was registered with %d", ErrWitness, t.table, expected.Buckets(), buckets)
	}
	scannedAt := time.Since(began)
	// Entries of transactions that committed in the WAL below X but that
	// the snapshot does not see are in the witness digest as of size:
	// under write load there is often one. Take those of the log's tail
	// out of the expected digest (they are known by xid); any others are
	// left to the drill down, which decides by xid entry by entry.
	expected, raced := dropInvisible(in, tail, expected)
	if scanned.Root() == expected.Root() {
		v.opts.Log.Debug("pass", "table", t.table, "snapshot_lsn", FormatLSN(snap.lsn), "log_size", size, "rows", rows,
			"catch_up", caughtUp, "scanned", scannedAt, "raced_entries", raced, "differing_buckets", 0)
		return p, nil
	}
	diff, err := scanned.Diff(expected)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrWitness, err)
	}
	p.differing = len(diff)
	p.weight = func(b uint32) uint64 {
		x, _ := scanned.Bucket(b)
		y, _ := expected.Bucket(b)
		return x.Count + y.Count
	}
	p.findings, p.truncated, err = drill(ctx, in, diff, p.weight)
	v.opts.Log.Debug("pass", "table", t.table, "snapshot_lsn", FormatLSN(snap.lsn), "log_size", size, "rows", rows,
		"catch_up", caughtUp, "scanned", scannedAt, "raced_entries", raced, "differing_buckets", len(diff), "findings", len(p.findings), "took", time.Since(began))
	return p, err
}

// dropInvisible returns d, the witness digest as of in.size, without the
// effects of the entries of tail (the end of the log below in.size) whose
// transactions the snapshot does not see, and how many it took out. It is
// an optimisation only: when an entry cannot be undone (a reset) it returns
// d as the witnesses sent it, and the drill down decides, entry by entry.
func dropInvisible(in drillInput, tail []*commitment.Entry, d *statedigest.Digest) (*statedigest.Digest, int) {
	var undo []statedigest.Change
	for _, e := range tail {
		if in.snap.visible(e.XID, e.CommitLSN) {
			continue
		}
		if e.Op == commitment.OpProtect || (e.Op == commitment.OpTruncate && in.mode == statedigest.Mutable) {
			return d, 0
		}
		undo = append(undo, statedigest.ChangeOf(e))
	}
	if len(undo) == 0 {
		return d, 0
	}
	// AsOf takes a set of changes out of a digest whatever their order.
	out, err := d.AsOf(in.mode, slices.Values(undo))
	if err != nil {
		return d, 0
	}
	return out, len(undo)
}

// checkProtected refuses a table the witnesses do not protect.
func checkProtected(table string, info *witnessv1.TableInfo) error {
	if info == nil {
		return fmt.Errorf("%w: the witness cluster has no log for %s; protect it with `witnz protect %s`", ErrNotProtected, table, table)
	}
	switch info.GetProtection() {
	case witnessv1.Protection_PROTECTION_PROTECTED:
		return nil
	case witnessv1.Protection_PROTECTION_BASELINING:
		return fmt.Errorf("%w: %s is being protected (its baseline is not complete); verify it once `witnz protect` has finished", ErrNotProtected, table)
	case witnessv1.Protection_PROTECTION_UNPROTECTED:
		return fmt.Errorf("%w: protection of %s ended (an UNPROTECT entry); protect it again with `witnz protect %s`", ErrNotProtected, table, table)
	}
	if info.GetSize() == 0 {
		return fmt.Errorf("%w: the log of %s is empty; protect it with `witnz protect %s`", ErrNotProtected, table, table)
	}
	// Registered before protection epochs existed: its log starts at 0.
	return nil
}

// catchUp waits until the witness leader holds every entry of the table
// whose commit_lsn is below x, and returns its view then.
func (v *Verifier) catchUp(ctx context.Context, table string, x uint64) (*leaderView, error) {
	deadline := time.Now().Add(v.opts.CatchUpTimeout)
	tick := 20 * time.Millisecond
	var confirmed uint64
	for {
		// The slot first: a position it confirmed was acknowledged by the
		// witness leader of that moment, which had applied it; the status
		// read afterwards then includes it.
		var err error
		confirmed, err = v.slotConfirmed(ctx)
		if err != nil {
			return nil, err
		}
		lv, err := v.witness.leader(ctx, table)
		if err != nil {
			return nil, err
		}
		if err := checkProtected(table, lv.table); err != nil {
			return nil, err
		}
		if lv.table.GetProtection() == witnessv1.Protection_PROTECTION_PROTECTED && lv.table.GetBaselineLsn() >= x {
			return nil, fmt.Errorf("%w: %s was protected again after the snapshot (baseline at %s, snapshot at %s)", errRetry, table, FormatLSN(lv.table.GetBaselineLsn()), FormatLSN(x))
		}
		if lv.table.GetLastCommitLsn() >= x || (confirmed >= x && lv.status.GetAppliedIndex() >= lv.status.GetCommitIndex()) {
			return lv, nil
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("%w: after %s the witness log of %s reaches %s and slot %s is confirmed at %s, the snapshot is at %s; is cdc-ingest running and streaming? (`witnz status`)",
				ErrNotCaughtUp, v.opts.CatchUpTimeout, table, FormatLSN(lv.table.GetLastCommitLsn()), v.opts.Slot, FormatLSN(confirmed), FormatLSN(x))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(tick):
		}
		tick = min(2*tick, 500*time.Millisecond)
	}
}

// slotConfirmed reads cdc-ingest's slot's confirmed flush position.
func (v *Verifier) slotConfirmed(ctx context.Context) (uint64, error) {
	var lsn *string
	err := v.pool.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", v.opts.Slot).Scan(&lsn)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: read slot %s: %s", ErrDatabase, v.opts.Slot, oneLine(err))
	}
	if lsn == nil {
		// No slot (or not yet confirmed): only the table's own entries can
		// show that the witnesses caught up.
		return 0, nil
	}
	return parseLSN(*lsn)
}

// scanError names what to do about a failed COPY.
func scanError(table string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		return fmt.Errorf("%w: permission denied on %s: %s; grant the verifier's role SELECT on it (GRANT SELECT ON %s TO <role>)", ErrDatabase, table, pgErr.Message, table)
	}
	return fmt.Errorf("%w: scan %s: %s", ErrDatabase, table, oneLine(err))
}
