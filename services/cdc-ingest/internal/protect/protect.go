// Package protect changes what cdc-ingest protects while it runs: protect
// (publication membership, witness registration and the baseline of the
// rows a table already holds), unprotect and accept. The last two travel
// through the WAL as authenticated control messages, so that they take
// their exact place among the changes the stream delivers.
//
// The protect flow (docs/design/0008-cdc-contract.md): with the replication
// stream paused, the table joins the publication; a temporary slot exports
// a snapshot whose consistent point X is where the deployment's slot starts
// streaming the table; every row of that snapshot is committed as a
// BASELINE entry at position B = X - 1, between a PROTECT entry that opens
// a new epoch of the table's log and a SCHEMA entry that closes the
// baseline; the decoder then skips the table's changes committed before X.
// No row is missed or doubled at the seam, and a crash in the middle
// leaves an unfinished epoch that the next attempt replaces.
package protect

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/witnz/witnz/libs/commitment"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/pgcopy"
	"github.com/witnz/witnz/libs/pgsetup"
	"github.com/witnz/witnz/services/cdc-ingest/internal/alerts"
	"github.com/witnz/witnz/services/cdc-ingest/internal/config"
	"github.com/witnz/witnz/services/cdc-ingest/internal/control"
	"github.com/witnz/witnz/services/cdc-ingest/internal/pgsource"
	"github.com/witnz/witnz/services/cdc-ingest/internal/schema"
)

// Witness is what the protect flow needs from the witness cluster.
type Witness interface {
	RegisterTable(ctx context.Context, table string, mode witnessv1.TableMode) (*witnessv1.RegisterTableResponse, error)
	AppendChecked(ctx context.Context, table string, entries []*witnessv1.Entry) (*witnessv1.AppendResponse, error)
	TableInfo(ctx context.Context, table string) (*witnessv1.TableInfo, error)
	Entries(ctx context.Context, table string, start, end uint64, fn func(*witnessv1.LoggedEntry) error) error
}

// Stream is the replication stream, paused while a baseline is taken.
type Stream interface {
	Exclusive(ctx context.Context, fn func(context.Context) error) error
}

// AlertSender delivers alerts.
type AlertSender interface {
	Send(ctx context.Context, alerts []*alertv1.Alert) error
}

// SchemaFunc reads a table's schema as the catalog in q describes it.
type SchemaFunc func(ctx context.Context, q pgx.Tx, oid uint32) (*schema.Schema, error)

// Tracked is a table cdc-ingest streams: changes committed at or after
// Seam are logged; SchemaCommit is the schema the log last recorded, and
// ExpectedSchema that schema itself when known.
type Tracked struct {
	pgsource.Table
	Seam           pglogrepl.LSN
	SchemaCommit   commitment.Commitment
	ExpectedSchema *schema.Schema
}

// Options configure a Manager.
type Options struct {
	DB      *pgsource.DB
	Witness Witness
	Stream  Stream
	Alerts  AlertSender
	Key     commitment.Key
	// Guard seals the control messages (so that it knows them as this
	// process's own); nil seals with control.Seal.
	Guard       *control.ReplayGuard
	Slot        string
	Publication string
	// BatchMax is the most entries per Append.
	BatchMax int
	Schema   SchemaFunc
	// Track starts streaming a table, while the stream is paused.
	Track func(Tracked)
	// Pause and Resume bracket a deliberate change of the publication, so
	// that the catalog checks do not report it.
	Pause  func(reason string)
	Resume func()
	Log    *slog.Logger
}

// Manager holds the protected tables and changes them.
type Manager struct {
	opts Options

	mu sync.Mutex
	// tables are the tables being streamed, by "schema.table".
	tables map[string]Tracked
	// busy names tables a protect or unprotect is changing: the monitor
	// does not report their publication membership meanwhile.
	busy map[string]string
}

// New returns a Manager with no tables.
func New(opts Options) *Manager {
	return &Manager{opts: opts, tables: map[string]Tracked{}, busy: map[string]string{}}
}

// Tables lists the tables being streamed, sorted by name.
func (m *Manager) Tables() []Tracked {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Tracked, 0, len(m.tables))
	for _, t := range m.tables {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// Busy reports the tables a protection change is in progress for, with
// what is being done ("protecting", "unprotecting").
func (m *Manager) Busy() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(m.busy))
	for k, v := range m.busy {
		out[k] = v
	}
	return out
}

func (m *Manager) setBusy(name, what string) func() {
	m.mu.Lock()
	m.busy[name] = what
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		delete(m.busy, name)
		m.mu.Unlock()
	}
}

// Untracked is called when the stream stopped tracking a table (its
// UNPROTECT entry is logged).
func (m *Manager) Untracked(name string) {
	m.mu.Lock()
	delete(m.tables, name)
	m.mu.Unlock()
}

// Result reports a protect.
type Result struct {
	Table        string
	Mode         witnessv1.TableMode
	BaselineRows uint64
	Seam         pglogrepl.LSN
	LogSize      uint64
	Already      bool
	Duration     time.Duration
}

// Errors of Protect that name a problem with the request.
var (
	ErrModeConflict = errors.New("the table's witness log has another mode")
	ErrNotProtected = errors.New("table is not protected")
)

// Resume starts streaming a table the witness log says is protected, from
// its seam, without a new baseline. It is used at start-up.
func (m *Manager) Resume(ctx context.Context, t config.Table, info *witnessv1.TableInfo) error {
	pt, err := m.opts.DB.CheckTable(ctx, t)
	if err != nil {
		return err
	}
	var sc commitment.Commitment
	copy(sc[:], info.GetSchemaCommit())
	tr := Tracked{Table: pt, Seam: pglogrepl.LSN(info.GetBaselineLsn() + 1), SchemaCommit: sc}
	// The catalog's schema is the expected one only when it is the one the
	// log recorded; otherwise the decoder reports the difference.
	if cur, err := m.currentSchema(ctx, pt.OID); err == nil && cur.Commit(m.opts.Key.ForTable(pt.Schema, pt.Name).NewCommitter()) == sc {
		tr.ExpectedSchema = cur
	}
	m.track(tr)
	return nil
}

// currentSchema reads a table's schema from the catalog now.
func (m *Manager) currentSchema(ctx context.Context, oid uint32) (*schema.Schema, error) {
	var out *schema.Schema
	err := pgx.BeginTxFunc(ctx, m.opts.DB.Pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		out, err = m.opts.Schema(ctx, tx, oid)
		return err
	})
	return out, err
}

func (m *Manager) track(tr Tracked) {
	m.mu.Lock()
	m.tables[tr.String()] = tr
	m.mu.Unlock()
	m.opts.Track(tr)
}

// Protect protects t: see the package comment. A table already protected
// in the same mode is only reported. The stream is paused meanwhile.
func (m *Manager) Protect(ctx context.Context, t config.Table, by string) (Result, error) {
	var res Result
	err := m.opts.Stream.Exclusive(ctx, func(ctx context.Context) error {
		var err error
		res, err = m.ProtectPaused(ctx, t, by)
		return err
	})
	return res, err
}

// ProtectPaused is Protect for a caller that already holds the stream
// paused (or has not started it). by names who asked, for the record.
func (m *Manager) ProtectPaused(ctx context.Context, t config.Table, by string) (Result, error) {
	start := time.Now()
	name := t.String()
	res := Result{Table: name, Mode: t.Mode}
	defer m.setBusy(name, "protecting")()
	info, err := m.opts.Witness.TableInfo(ctx, name)
	if err != nil {
		return res, err
	}
	if info != nil && info.GetMode() != t.Mode {
		return res, fmt.Errorf("%w: the witness log of %s is %s, and a log's mode never changes: protect it %s", ErrModeConflict, name, config.ModeName(info.GetMode()), config.ModeName(info.GetMode()))
	}
	pt, err := m.opts.DB.CheckTable(ctx, t)
	if err != nil {
		return res, err
	}
	m.mu.Lock()
	_, tracked := m.tables[name]
	m.mu.Unlock()
	if tracked && info.GetProtection() == witnessv1.Protection_PROTECTION_PROTECTED {
		inPub, err := m.opts.DB.PublicationTables(ctx, m.opts.Publication)
		if err != nil {
			return res, err
		}
		if inPub[name] {
			res.Already, res.LogSize, res.BaselineRows = true, info.GetSize(), info.GetBaselineRows()
			res.Seam = pglogrepl.LSN(info.GetBaselineLsn() + 1)
			return res, nil
		}
	}
	if _, err := m.opts.Witness.RegisterTable(ctx, name, t.Mode); err != nil {
		return res, err
	}
	m.opts.Pause("protecting " + name)
	defer m.opts.Resume()
	if err := m.opts.DB.AddToPublication(ctx, m.opts.Publication, pt); err != nil {
		return res, err
	}
	tr, rows, size, err := m.baseline(ctx, pt)
	if err != nil {
		return res, fmt.Errorf("baseline of %s: %w (nothing is lost: run `witnz protect %s` again, or restart cdc-ingest, to take a new baseline)", name, err, name)
	}
	m.track(tr)
	res.BaselineRows, res.Seam, res.LogSize, res.Duration = rows, tr.Seam, size, time.Since(start)
	m.opts.Log.Info("table protected", "table", name, "mode", config.ModeName(t.Mode), "baseline_rows", rows, "seam_lsn", tr.Seam.String(), "log_size", size, "duration", res.Duration.Round(time.Millisecond).String())
	m.alert(ctx, alerts.TableProtected(alerts.Protection{
		Where:        alerts.Where{Slot: m.opts.Slot, WAL: &alerts.WAL{CommitLSN: tr.Seam - 1, LSN: tr.Seam - 1, CommitTime: time.Now()}},
		Table:        name,
		Mode:         t.Mode,
		By:           by,
		BaselineRows: rows,
	}))
	return res, nil
}

// baseline takes the table's snapshot and commits it: PROTECT, a BASELINE
// per row, SCHEMA.
func (m *Manager) baseline(ctx context.Context, pt pgsource.Table) (Tracked, uint64, uint64, error) {
	name := pt.String()
	var nonce [4]byte
	_, _ = rand.Read(nonce[:])
	snap, err := pgsetup.ExportSnapshot(ctx, m.opts.DB.DSN, m.opts.Slot+"_baseline_"+hex.EncodeToString(nonce[:]))
	if err != nil {
		return Tracked{}, 0, 0, err
	}
	defer snap.Close()
	x := snap.ConsistentPoint
	b := uint64(x) - 1
	committer := m.opts.Key.ForTable(pt.Schema, pt.Name).NewCommitter()
	tr := Tracked{Table: pt, Seam: x}

	conn, err := m.opts.DB.Pool.Acquire(ctx)
	if err != nil {
		return tr, 0, 0, err
	}
	defer conn.Release()
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return tr, 0, 0, fmt.Errorf("begin the snapshot transaction: %w", pgsetup.ErrLine(err))
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+pgsetup.QuoteLiteral(snap.Name)); err != nil {
		return tr, 0, 0, fmt.Errorf("import snapshot %s: %w", snap.Name, pgsetup.ErrLine(err))
	}
	// Binary send functions of text types convert to the client encoding;
	// the stream pins UTF8, so the scan does too.
	if _, err := tx.Exec(ctx, "SET LOCAL client_encoding = 'UTF8'"); err != nil {
		return tr, 0, 0, pgsetup.ErrLine(err)
	}
	desc, err := pgcopy.Describe(ctx, tx, pt.Schema, pt.Name)
	if err != nil {
		return tr, 0, 0, err
	}
	sc, err := m.opts.Schema(ctx, tx, pt.OID)
	if err != nil {
		return tr, 0, 0, fmt.Errorf("read the schema of %s: %w", name, err)
	}
	schemaCommit := sc.Commit(committer)
	tr.SchemaCommit, tr.ExpectedSchema = schemaCommit, sc

	batch := make([]*witnessv1.Entry, 0, m.opts.BatchMax)
	var size uint64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		resp, err := m.opts.Witness.AppendChecked(ctx, name, batch)
		if err != nil {
			return err
		}
		size = resp.GetSize()
		batch = batch[:0]
		return nil
	}
	add := func(e *witnessv1.Entry) error {
		batch = append(batch, e)
		if len(batch) == m.opts.BatchMax {
			return flush()
		}
		return nil
	}
	idx := uint32(0)
	entry := func(op witnessv1.Op) *witnessv1.Entry {
		e := &witnessv1.Entry{CommitLsn: b, TxIndex: idx, Op: op}
		idx++
		return e
	}
	if err := add(entry(witnessv1.Op_OP_PROTECT)); err != nil {
		return tr, 0, 0, err
	}
	var keyBuf []byte
	rows, err := pgcopy.Scan(ctx, conn.Conn().PgConn(), desc.CopyQuery(), func(row []byte) error {
		var kc commitment.Commitment
		if desc.Key == nil {
			kc = committer.KeyCommit(row)
		} else {
			var err error
			if keyBuf, err = pgcopy.AppendKey(keyBuf[:0], row, desc.Key); err != nil {
				return err
			}
			kc = committer.KeyCommit(keyBuf)
		}
		dc := committer.DataCommit(row)
		e := entry(witnessv1.Op_OP_BASELINE)
		e.KeyCommit, e.DataCommit = kc[:], dc[:]
		return add(e)
	})
	if err != nil {
		return tr, 0, 0, err
	}
	e := entry(witnessv1.Op_OP_SCHEMA)
	e.DataCommit = schemaCommit[:]
	if err := add(e); err != nil {
		return tr, 0, 0, err
	}
	if err := flush(); err != nil {
		return tr, 0, 0, err
	}
	return tr, uint64(rows), size, nil
}

func (m *Manager) alert(ctx context.Context, a *alertv1.Alert) {
	if err := m.opts.Alerts.Send(ctx, []*alertv1.Alert{a}); err != nil {
		m.opts.Log.Warn("alert not delivered", "type", a.GetType(), "error", err)
	}
}
