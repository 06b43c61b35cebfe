// Package capture turns pgoutput messages (protocol 1, binary mode) into
// witness log entries and alerts: row changes, TRUNCATE, schema changes
// (SCHEMA entries), and the control messages that unprotect a table or
// accept a change; it raises the tamper signals the stream carries.
//
// Row encoding: the values pgoutput sends for a row are PostgreSQL's binary
// send format of every column it publishes, in attnum order; pgoutput
// leaves out dropped columns and (in PostgreSQL 15) generated columns. That
// list, passed to commitment.AppendRow, is the row encoding, byte for byte
// the tuple of `COPY (SELECT <those columns>) TO STDOUT (FORMAT binary)`.
// The key encoding is AppendRow over the primary-key columns in key order
// (pg_index.indkey), or the whole row for a table without a primary key.
package capture

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/witnz/witnz/libs/commitment"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/services/cdc-ingest/internal/alerts"
	"github.com/witnz/witnz/services/cdc-ingest/internal/control"
	"github.com/witnz/witnz/services/cdc-ingest/internal/pgsource"
	"github.com/witnz/witnz/services/cdc-ingest/internal/schema"
)

// Sink receives what the decoder produces, in stream order. Every Entry and
// Alert falls between a BeginTx and its CommitTx. An alert raised by a
// non-transactional message (a refused control message) comes in a
// BeginTx(lsn) / CommitTx(lsn+1) pair of its own at the message's position.
type Sink interface {
	BeginTx(commitLSN uint64)
	Entry(table string, e *witnessv1.Entry)
	Alert(a *alertv1.Alert)
	CommitTx(endLSN uint64, commitTime time.Time)
	// Observe records that the stream is past lsn outside any
	// transaction (after a non-transactional message): every transaction
	// committed before lsn has been handed over.
	Observe(lsn uint64)
}

// KeyColumnsFunc returns the primary-key columns of a relation in key
// order, or none.
type KeyColumnsFunc func(ctx context.Context, oid uint32) ([]string, error)

// Table is a protected table and what its witness log expects.
type Table struct {
	pgsource.Table
	// Seam is the first commit LSN the table's log takes from the stream:
	// changes of transactions committed below it are in the baseline (or
	// an earlier protection epoch) and are skipped. Zero takes everything.
	Seam pglogrepl.LSN
	// SchemaCommit is the schema commitment the log expects (the
	// data_commit of its last SCHEMA entry). Zero adopts the first
	// Relation message seen: it is logged as a SCHEMA entry, without an
	// alert.
	SchemaCommit commitment.Commitment
	// ExpectedSchema is the expected schema itself, when known: the one
	// whose commitment is SchemaCommit (it is ignored otherwise). It lets
	// alerts say what changed and which replica identity was expected.
	ExpectedSchema *schema.Schema
}

// Options configure a Decoder.
type Options struct {
	// Slot names the replication slot; it goes into alert ids, and control
	// messages for other slots are ignored.
	Slot string
	// Publication names the publication, for alerts.
	Publication string
	Key         commitment.Key
	// Tables are the protected tables, found by OID in relation messages.
	Tables []Table
	// KeyColumns looks up a relation's primary key when its Relation
	// message arrives; nil uses Table.KeyColumns.
	KeyColumns KeyColumnsFunc
	Sink       Sink
	Log        *slog.Logger
	// ReplayGuard refuses control messages written to the WAL twice; nil
	// gives the decoder its own.
	ReplayGuard *control.ReplayGuard
	// Announced holds the schema changes and renames the catalog check
	// already alerted; the decoder logs them without alerting again. Nil
	// alerts every one.
	Announced *Announcements
	// OnHeartbeat is called for every authentic heartbeat with the time it
	// was sealed and its WAL position.
	OnHeartbeat func(sentAt time.Time, lsn pglogrepl.LSN)
	// OnUnprotect is called once the transaction that carried an unprotect
	// control message for table has been handed to the Sink; the decoder
	// no longer tracks the table.
	OnUnprotect func(table string)
	// Now is the clock for non-transactional control messages; nil is
	// time.Now.
	Now func() time.Time
}

type table struct {
	Table
	name      string
	committer *commitment.Committer
	// txIndex is the position of the table's next change in transaction
	// txSeq (the decoder's count of transactions).
	txIndex uint32
	txSeq   uint64
	// schemas are the schemas the log expects, from the one given (at
	// position 0) through every SCHEMA entry logged since, in WAL order.
	// A transaction is checked against the one in force before its commit
	// LSN, so a transaction read again after a reconnect gives the same
	// entries.
	schemas []expectation
	// renamedTo is the other name the table was last reported under.
	renamedTo string
	// until is the commit LSN of the transaction whose control message
	// unprotected the table (zero while protected): later transactions are
	// not logged, and nor are its changes after the message (in the
	// transaction stopSeq).
	until    pglogrepl.LSN
	stopSeq  uint64
	notified bool
}

// expectation is a schema the log expects from a commit LSN on.
type expectation struct {
	from   pglogrepl.LSN
	commit commitment.Commitment // zero: adopt the first schema seen
	schema *schema.Schema        // nil when only the commitment is known
}

// maxSchemas bounds the schema history kept per table; a reconnect replays
// only what the witness has not acknowledged, far less than this many
// schema changes.
const maxSchemas = 64

// expected is the expectation in force for a transaction committed at lsn.
func (t *table) expected(lsn pglogrepl.LSN) expectation {
	i := len(t.schemas) - 1
	for i > 0 && t.schemas[i].from >= lsn {
		i--
	}
	return t.schemas[i]
}

// latest is the expectation after everything read so far.
func (t *table) latest() expectation { return t.schemas[len(t.schemas)-1] }

// logged records the schema logged by a SCHEMA entry at lsn, replacing
// what a first read recorded from there on.
func (t *table) logged(lsn pglogrepl.LSN, c commitment.Commitment, s *schema.Schema) {
	i := len(t.schemas)
	for i > 1 && t.schemas[i-1].from >= lsn {
		i--
	}
	t.schemas = append(t.schemas[:i], expectation{from: lsn, commit: c, schema: s})
	if len(t.schemas) > maxSchemas {
		t.schemas = append(t.schemas[:0], t.schemas[len(t.schemas)-maxSchemas:]...)
	}
}

// stopped reports whether the table's changes are no longer logged at
// this point of the current transaction.
func (t *table) stopped(commitLSN pglogrepl.LSN, seq uint64) bool {
	return t.until != 0 && (commitLSN > t.until || t.stopSeq == seq)
}

type relation struct {
	name   string
	cols   []*pglogrepl.RelationMessageColumn
	schema schema.Schema
	lsn    pglogrepl.LSN
	// prepared is the protected table keyPos was computed and the schema
	// checked for; nil until the relation's first change after its seam.
	prepared *table
	// keyPos are the positions of the key columns in cols, in key order;
	// nil means the whole row is the key.
	keyPos     []int
	warnedText bool
	// quiet marks a relation unprotected here: its changes are ignored
	// without a publication alert.
	quiet bool
}

// Decoder decodes one replication stream. It is not safe for concurrent
// use, except Tables.
type Decoder struct {
	opts   Options
	guard  *control.ReplayGuard
	tables map[uint32]*table
	rels   map[uint32]*relation
	types  *pgtype.Map
	// foreign holds the OIDs of published tables that are not protected
	// and were already reported.
	foreign map[uint32]bool

	inTx bool
	tx   struct {
		commitLSN  pglogrepl.LSN
		commitTime time.Time
		xid        uint32
		seq        uint64
	}
	rowBuf  []byte
	keyBuf  []byte
	keyVals [][]byte

	mu       sync.Mutex
	snapshot []Table
}

// New returns a decoder for the protected tables.
func New(opts Options) *Decoder {
	d := &Decoder{
		opts:    opts,
		guard:   opts.ReplayGuard,
		tables:  map[uint32]*table{},
		rels:    map[uint32]*relation{},
		types:   pgtype.NewMap(),
		foreign: map[uint32]bool{},
	}
	if d.guard == nil {
		d.guard = control.NewReplayGuard()
	}
	if d.opts.Now == nil {
		d.opts.Now = time.Now
	}
	for _, t := range opts.Tables {
		d.tables[t.OID] = d.newTable(t)
	}
	d.publish()
	return d
}

func (d *Decoder) newTable(t Table) *table {
	nt := &table{Table: t, name: t.String(), committer: d.opts.Key.ForTable(t.Schema, t.Name).NewCommitter()}
	first := expectation{commit: t.SchemaCommit}
	if t.ExpectedSchema != nil && !t.SchemaCommit.IsZero() {
		if t.ExpectedSchema.Commit(nt.committer) == t.SchemaCommit {
			first.schema = t.ExpectedSchema
		} else {
			d.opts.Log.Warn("the expected schema given for a protected table does not match its expected schema commitment; only the commitment is used", "table", nt.name)
		}
	}
	nt.schemas = []expectation{first}
	return nt
}

// Protect starts tracking t, or replaces what is known about the table
// with the same OID. Call it between Handle calls.
func (d *Decoder) Protect(t Table) {
	d.tables[t.OID] = d.newTable(t)
	delete(d.foreign, t.OID)
	if rel := d.rels[t.OID]; rel != nil {
		rel.prepared, rel.quiet = nil, false
	}
	d.publish()
}

// Unprotect stops tracking the table named "schema.table" (its protected
// name). Call it between Handle calls.
func (d *Decoder) Unprotect(name string) {
	for oid, t := range d.tables {
		if t.name == name {
			d.untrack(oid)
		}
	}
	d.publish()
}

func (d *Decoder) untrack(oid uint32) {
	delete(d.tables, oid)
	if rel := d.rels[oid]; rel != nil {
		rel.prepared, rel.quiet = nil, true
	}
}

// Tables returns the tracked tables with what their logs expect now,
// including schema changes logged since they were given. It is safe for
// concurrent use.
func (d *Decoder) Tables() []Table {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.snapshot)
}

// publish refreshes the snapshot Tables returns.
func (d *Decoder) publish() {
	out := make([]Table, 0, len(d.tables))
	for _, t := range d.tables {
		if t.until != 0 {
			continue
		}
		e := t.Table
		last := t.latest()
		e.SchemaCommit, e.ExpectedSchema = last.commit, last.schema
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Table) int { return cmp.Compare(a.OID, b.OID) })
	d.mu.Lock()
	d.snapshot = out
	d.mu.Unlock()
}

// Reset forgets relations and any transaction being read, for a new
// replication connection.
func (d *Decoder) Reset() {
	clear(d.rels)
	d.inTx = false
	for _, t := range d.tables {
		if t.until != 0 && !t.notified {
			// Its transaction did not finish: it comes again.
			t.until = 0
		}
	}
}

// ErrProtocol wraps errors in the message stream itself.
var ErrProtocol = errors.New("unexpected pgoutput stream")

// Handle decodes one pgoutput message that started at WAL position lsn.
func (d *Decoder) Handle(ctx context.Context, lsn pglogrepl.LSN, data []byte) error {
	msg, err := parse(data)
	if err != nil {
		return err
	}
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		if d.inTx {
			return fmt.Errorf("%w: BEGIN of xid %d inside xid %d", ErrProtocol, m.Xid, d.tx.xid)
		}
		d.inTx = true
		d.tx.commitLSN, d.tx.commitTime, d.tx.xid = m.FinalLSN, m.CommitTime, m.Xid
		d.tx.seq++
		d.opts.Sink.BeginTx(uint64(m.FinalLSN))
	case *pglogrepl.CommitMessage:
		if !d.inTx {
			return fmt.Errorf("%w: COMMIT at %s outside a transaction", ErrProtocol, m.CommitLSN)
		}
		if m.CommitLSN != d.tx.commitLSN {
			return fmt.Errorf("%w: COMMIT at %s but BEGIN announced %s", ErrProtocol, m.CommitLSN, d.tx.commitLSN)
		}
		d.inTx = false
		d.opts.Sink.CommitTx(uint64(m.TransactionEndLSN), m.CommitTime)
		d.afterCommit()
	case *pglogrepl.RelationMessage:
		d.rels[m.RelationID] = &relation{
			name:   m.Namespace + "." + m.RelationName,
			cols:   m.Columns,
			schema: schema.FromRelation(m),
			lsn:    lsn,
		}
	case *pglogrepl.InsertMessage:
		return d.change(ctx, lsn, m.RelationID, func(rel *relation, t *table) error { return d.insert(rel, t, m) })
	case *pglogrepl.UpdateMessage:
		return d.change(ctx, lsn, m.RelationID, func(rel *relation, t *table) error { return d.update(rel, t, lsn, m) })
	case *pglogrepl.DeleteMessage:
		return d.change(ctx, lsn, m.RelationID, func(rel *relation, t *table) error { return d.delete(rel, t, lsn, m) })
	case *pglogrepl.TruncateMessage:
		return d.truncate(ctx, lsn, m)
	case *pglogrepl.LogicalDecodingMessage:
		return d.message(lsn, m)
	}
	// Type and origin messages carry nothing to log.
	return nil
}

// afterCommit reports the tables the transaction unprotected. They stay
// known (not logged past the transaction) so that a reconnect reading
// the transactions before it again logs them the same way.
func (d *Decoder) afterCommit() {
	var done []string
	for _, t := range d.tables {
		if t.until != 0 && !t.notified {
			t.notified = true
			done = append(done, t.name)
		}
	}
	if len(done) == 0 {
		return
	}
	d.publish()
	slices.Sort(done)
	for _, name := range done {
		d.opts.Log.Warn("table unprotected by a control message: its changes are no longer logged", "table", name)
		if d.opts.OnUnprotect != nil {
			d.opts.OnUnprotect(name)
		}
	}
}

// parse decodes a pgoutput message; a malformed message is an error, not a
// panic or a huge allocation in the decoder library.
func parse(data []byte) (msg pglogrepl.Message, err error) {
	if err := checkLengths(data); err != nil {
		return nil, fmt.Errorf("%w: malformed message %q: %v", ErrProtocol, firstByte(data), err)
	}
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("%w: malformed message %q: %v", ErrProtocol, firstByte(data), r)
		}
	}()
	msg, err = pglogrepl.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return msg, nil
}

var errShort = errors.New("message shorter than its contents")

// checkLengths walks the variable-length parts of change, truncate and
// logical decoding messages, whose declared lengths the decoder library trusts.
func checkLengths(data []byte) error {
	if len(data) == 0 {
		return errors.New("empty message")
	}
	p := data[1:]
	switch data[0] {
	case 'I', 'U', 'D':
		if len(p) < 5 {
			return errShort
		}
		kind, p := data[0], p[4:]
		var err error
		switch {
		case kind != 'I' && (p[0] == 'K' || p[0] == 'O'):
			if p, err = skipTuple(p[1:]); err != nil || kind == 'D' {
				return err
			}
		case kind == 'D':
			return fmt.Errorf("DELETE without an old tuple (tag %q)", p[0])
		}
		if len(p) == 0 || p[0] != 'N' {
			return errors.New("change without a new tuple")
		}
		_, err = skipTuple(p[1:])
		return err
	case 'M':
		// flags, LSN, prefix (NUL-terminated), content length, content.
		if len(p) < 9 {
			return errShort
		}
		end := bytes.IndexByte(p[9:], 0)
		if end < 0 {
			return errors.New("message prefix not terminated")
		}
		p = p[9+end+1:]
		if len(p) < 4 || uint64(len(p)-4) < uint64(binary.BigEndian.Uint32(p)) {
			return errShort
		}
	case 'T':
		if len(p) < 5 {
			return errShort
		}
		if n := binary.BigEndian.Uint32(p); uint64(len(p)-5) < 4*uint64(n) {
			return errShort
		}
	}
	return nil
}

// skipTuple returns what follows a TupleData.
func skipTuple(p []byte) ([]byte, error) {
	if len(p) < 2 {
		return nil, errShort
	}
	n := int(binary.BigEndian.Uint16(p))
	p = p[2:]
	for range n {
		if len(p) < 1 {
			return nil, errShort
		}
		kind := p[0]
		p = p[1:]
		if kind != pglogrepl.TupleDataTypeText && kind != pglogrepl.TupleDataTypeBinary {
			continue
		}
		if len(p) < 4 {
			return nil, errShort
		}
		l := binary.BigEndian.Uint32(p)
		if uint64(len(p)-4) < uint64(l) {
			return nil, errShort
		}
		p = p[4+l:]
	}
	return p, nil
}

func firstByte(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return string(b[:1])
}

// use returns the relation of a change and, when its changes are logged,
// the protected table; the table is nil for a relation that is not
// protected (reported once as a publication change) and for a change
// before the table's seam. The first change of a relation after its
// Relation message prepares it: key positions, then the rename and schema
// checks, which may log a SCHEMA entry ahead of the change.
func (d *Decoder) use(ctx context.Context, lsn pglogrepl.LSN, relID uint32) (*relation, *table, error) {
	if !d.inTx {
		return nil, nil, fmt.Errorf("%w: change outside a transaction", ErrProtocol)
	}
	rel := d.rels[relID]
	if rel == nil {
		return nil, nil, fmt.Errorf("%w: change for relation %d before its RELATION message", ErrProtocol, relID)
	}
	t := d.tables[relID]
	if t == nil {
		if !rel.quiet && !d.foreign[relID] {
			d.foreign[relID] = true
			d.opts.Log.Warn("publication carries a table that is not protected; its changes are ignored", "table", rel.name, "publication", d.opts.Publication)
			d.opts.Sink.Alert(alerts.PublicationChanged(alerts.PublicationChange{
				Where:       d.where(lsn, 0),
				Publication: d.opts.Publication,
				Change:      alerts.PublicationTableAdded,
				Table:       rel.name,
				OID:         relID,
			}))
		}
		return rel, nil, nil
	}
	if d.tx.commitLSN < t.Seam || t.stopped(d.tx.commitLSN, d.tx.seq) {
		return rel, nil, nil
	}
	if rel.prepared != t {
		if err := d.prepare(ctx, rel, relID, t); err != nil {
			return nil, nil, err
		}
	}
	return rel, t, nil
}

func (d *Decoder) prepare(ctx context.Context, rel *relation, oid uint32, t *table) error {
	keyCols := t.KeyColumns
	if d.opts.KeyColumns != nil {
		var err error
		if keyCols, err = d.opts.KeyColumns(ctx, oid); err != nil {
			return fmt.Errorf("look up the primary key of %s: %w", t.name, err)
		}
	}
	rel.keyPos = nil
	for _, name := range keyCols {
		pos := slices.IndexFunc(rel.cols, func(c *pglogrepl.RelationMessageColumn) bool { return c.Name == name })
		if pos < 0 {
			// The catalog is ahead of (or behind) this Relation message: a
			// DDL renamed or dropped a key column. Keep streaming with the
			// key columns pgoutput flags; the schema check below reports
			// the change.
			d.opts.Log.Error("primary-key column is not in the published columns; using the columns pgoutput flags as the key", "table", t.name, "column", name)
			rel.keyPos = nil
			for i, c := range rel.cols {
				if c.Flags&1 != 0 && rel.schema.ReplIdent != schema.ReplIdentFull {
					rel.keyPos = append(rel.keyPos, i)
				}
			}
			break
		}
		rel.keyPos = append(rel.keyPos, pos)
	}
	rel.prepared = t

	switch {
	case rel.name == t.name:
		t.renamedTo = ""
	case rel.name != t.renamedTo:
		t.renamedTo = rel.name
		if d.opts.Announced.takeRename(t.name, rel.name) {
			d.opts.Log.Info("protected table renamed; the catalog check already alerted it", "table", t.name, "new_name", rel.name)
			break
		}
		d.opts.Sink.Alert(alerts.TableRenamed(alerts.Rename{
			Where: d.where(rel.lsn, t.nextIndex(d.tx.seq)), Table: t.name, OID: oid, NewName: rel.name,
		}))
	}

	got := rel.schema.Commit(t.committer)
	want := t.expected(d.tx.commitLSN)
	if got == want.commit {
		if want.schema == nil {
			for i := range t.schemas {
				if t.schemas[i].commit == got {
					t.schemas[i].schema = &rel.schema
				}
			}
			d.publish()
		}
		return nil
	}
	idx := d.emit(t, witnessv1.Op_OP_SCHEMA, nil, &got, nil)
	announced := d.opts.Announced.takeSchema(t.name, want.commit, got)
	if !want.commit.IsZero() {
		exp := t.Table
		exp.SchemaCommit, exp.ExpectedSchema = want.commit, want.schema
		if !announced {
			for _, a := range SchemaAlerts(exp, rel.schema, got, d.where(rel.lsn, idx)) {
				d.opts.Sink.Alert(a)
			}
		}
		d.opts.Log.Warn("schema of a protected table changed; logged as a SCHEMA entry", "table", t.name, "schema", rel.schema.Describe(), "commit_lsn", d.tx.commitLSN.String(), "alerted_by_catalog_check", announced)
	}
	t.logged(d.tx.commitLSN, got, &rel.schema)
	d.publish()
	return nil
}

// nextIndex is the tx_index the table's next entry in transaction seq
// gets.
func (t *table) nextIndex(seq uint64) uint32 {
	if t.txSeq != seq {
		return 0
	}
	return t.txIndex
}

// where places an alert raised by the message at lsn in the current
// transaction, with the entry at txIndex.
func (d *Decoder) where(lsn pglogrepl.LSN, txIndex uint32) alerts.Where {
	return alerts.Where{Slot: d.opts.Slot, WAL: &alerts.WAL{
		XID: d.tx.xid, CommitLSN: d.tx.commitLSN, CommitTime: d.tx.commitTime, LSN: lsn, TxIndex: txIndex,
	}}
}

func (d *Decoder) change(ctx context.Context, lsn pglogrepl.LSN, relID uint32, fn func(*relation, *table) error) error {
	rel, t, err := d.use(ctx, lsn, relID)
	if err != nil || t == nil {
		return err
	}
	return fn(rel, t)
}

// truncate logs a TRUNCATE entry and raises an alert for every protected
// table the statement truncated.
func (d *Decoder) truncate(ctx context.Context, lsn pglogrepl.LSN, m *pglogrepl.TruncateMessage) error {
	names := make([]string, len(m.RelationIDs))
	for i, id := range m.RelationIDs {
		names[i] = fmt.Sprintf("relation %d", id)
		if rel := d.rels[id]; rel != nil {
			names[i] = rel.name
		}
	}
	for _, id := range m.RelationIDs {
		_, t, err := d.use(ctx, lsn, id)
		if err != nil {
			return err
		}
		if t == nil {
			continue
		}
		idx := d.emit(t, witnessv1.Op_OP_TRUNCATE, nil, nil, nil)
		d.opts.Sink.Alert(alerts.TruncateAlert(alerts.Truncate{
			Where:           d.where(lsn, idx),
			Table:           t.name,
			Mode:            t.Mode,
			Cascade:         m.Option&truncateCascade != 0,
			RestartIdentity: m.Option&truncateRestartSeqs != 0,
			Relations:       names,
		}))
	}
	return nil
}

// Option bits of a TRUNCATE message.
const (
	truncateCascade     = 1
	truncateRestartSeqs = 2
)

// message handles a logical decoding message: control messages (prefix
// "witnz") are authenticated and carried out, others ignored.
func (d *Decoder) message(lsn pglogrepl.LSN, m *pglogrepl.LogicalDecodingMessage) error {
	if m.Transactional && !d.inTx {
		return fmt.Errorf("%w: transactional message outside a transaction", ErrProtocol)
	}
	pos := m.LSN
	if pos == 0 {
		pos = lsn
	}
	if !m.Transactional && !d.inTx {
		// Whatever the message, the stream is past it: the slot may be
		// confirmed beyond it once everything before it is acknowledged.
		defer d.opts.Sink.Observe(uint64(pos) + 1)
	}
	if m.Prefix != control.Prefix {
		return nil
	}
	claimed, err := control.Parse(m.Content)
	if err == nil && claimed.Slot != d.opts.Slot {
		// Another deployment's message (its MAC is under its own key).
		d.opts.Log.Debug("control message for another slot ignored", "slot", claimed.Slot, "lsn", pos.String())
		return nil
	}
	msg, err := control.Open(d.opts.Key, m.Content)
	if err != nil {
		d.refuse(pos, m.Transactional, claimed, err.Error())
		return nil
	}
	at := d.opts.Now()
	if m.Transactional {
		at = d.tx.commitTime
	}
	if err := d.guard.Check(msg, uint64(pos), at); err != nil {
		if msg.Op == control.OpHeartbeat && errors.Is(err, control.ErrStale) {
			// An old heartbeat read from a backlog proves nothing new.
			d.opts.Log.Debug("stale heartbeat ignored", "lsn", pos.String(), "error", err)
			return nil
		}
		d.refuse(pos, m.Transactional, msg, err.Error())
		return nil
	}
	switch msg.Op {
	case control.OpHeartbeat:
		if d.opts.OnHeartbeat != nil {
			d.opts.OnHeartbeat(msg.Issued(), pos)
		}
		return nil
	}
	if !m.Transactional {
		d.refuse(pos, false, msg, msg.Op+" must be emitted in a transaction (pg_logical_emit_message(true, ...))")
		return nil
	}
	t := d.byName(msg.Table)
	if t == nil || d.tx.commitLSN < t.Seam || t.stopped(d.tx.commitLSN, d.tx.seq) {
		// Replayed from before the table's protection epoch, or for a
		// table no longer tracked: its log already has it or wants none.
		d.opts.Log.Info("control message for a table not protected at this position; ignored", "op", msg.Op, "table", msg.Table, "lsn", pos.String())
		return nil
	}
	switch msg.Op {
	case control.OpUnprotect:
		idx := d.emit(t, witnessv1.Op_OP_UNPROTECT, nil, nil, nil)
		t.until, t.stopSeq = d.tx.commitLSN, d.tx.seq
		d.opts.Sink.Alert(alerts.TableUnprotected(alerts.Protection{
			Where: d.where(pos, idx), Table: t.name, Mode: t.Mode, By: msg.By, Reason: msg.Reason,
		}))
	case control.OpAccept:
		key, err1 := control.Commitment(msg.Key)
		data, err2 := control.Commitment(msg.Data)
		old, err3 := control.Commitment(msg.OldData)
		if err := errors.Join(err1, err2, err3); err != nil || key == nil {
			// Open checked the fields; this cannot happen.
			d.refuse(pos, true, msg, fmt.Sprintf("accept without valid commitments: %v", err))
			return nil
		}
		idx := d.emit(t, witnessv1.Op_OP_ACCEPT, key, data, old)
		d.opts.Sink.Alert(alerts.ChangeAccepted(alerts.Accept{
			Where: d.where(pos, idx), Table: t.name, Seq: msg.Seq,
			Key: msg.Key, Data: msg.Data, OldData: msg.OldData, By: msg.By, Reason: msg.Reason,
		}))
	}
	return nil
}

// byName finds the table a control message in the current transaction
// names: the one protected at this position, preferably, or one
// unprotected later (a transaction read again after a reconnect).
func (d *Decoder) byName(name string) *table {
	var found *table
	for _, t := range d.tables {
		if t.name != name {
			continue
		}
		if t.until == 0 && d.tx.commitLSN >= t.Seam {
			return t
		}
		if t.until != 0 && d.tx.commitLSN <= t.until {
			found = t
		}
	}
	return found
}

// refuse raises the alert for a control message that is ignored.
func (d *Decoder) refuse(pos pglogrepl.LSN, transactional bool, claimed control.Message, reason string) {
	d.opts.Log.Error("refused a control message", "lsn", pos.String(), "reason", reason, "claimed_op", claimed.Op, "claimed_table", claimed.Table)
	w := alerts.Where{Slot: d.opts.Slot, WAL: &alerts.WAL{LSN: pos, CommitTime: d.opts.Now()}}
	if d.inTx {
		w = d.where(pos, 0)
	}
	a := alerts.ForgedControlMessage(alerts.Forged{
		Where: w, Reason: reason, Transactional: transactional, Op: claimed.Op, Table: claimed.Table, By: claimed.By,
	})
	if d.inTx {
		d.opts.Sink.Alert(a)
		return
	}
	d.opts.Sink.BeginTx(uint64(pos))
	d.opts.Sink.Alert(a)
	d.opts.Sink.CommitTx(uint64(pos)+1, w.WAL.CommitTime)
}

// values extracts a tuple's column values (nil for NULL). missing reports
// unchanged TOASTed values pgoutput did not send.
func (d *Decoder) values(rel *relation, t *table, td *pglogrepl.TupleData) (vals [][]byte, missing bool, err error) {
	if td == nil || len(td.Columns) != len(rel.cols) {
		n := 0
		if td != nil {
			n = len(td.Columns)
		}
		return nil, false, fmt.Errorf("%w: tuple of %s has %d columns, relation has %d", ErrProtocol, t.name, n, len(rel.cols))
	}
	vals = make([][]byte, len(td.Columns))
	for i, c := range td.Columns {
		switch c.DataType {
		case pglogrepl.TupleDataTypeBinary:
			vals[i] = c.Data
		case pglogrepl.TupleDataTypeNull:
		case pglogrepl.TupleDataTypeToast:
			missing = true
		case pglogrepl.TupleDataTypeText:
			// pgoutput falls back to text for a type without a binary
			// send function; a binary COPY of such a type fails anyway.
			vals[i] = c.Data
			if !rel.warnedText {
				rel.warnedText = true
				d.opts.Log.Warn("column arrives as text: its type has no binary send function, so scans cannot reproduce its encoding", "table", t.name, "column", rel.cols[i].Name)
			}
		default:
			return nil, false, fmt.Errorf("%w: column kind %q in %s", ErrProtocol, c.DataType, t.name)
		}
	}
	return vals, missing, nil
}

// rowCommit computes a row's key and data commitments.
func (d *Decoder) rowCommit(rel *relation, t *table, vals [][]byte) (key, data commitment.Commitment, err error) {
	if data, err = d.dataCommit(t, vals); err != nil {
		return key, data, err
	}
	if rel.keyPos == nil {
		return t.committer.KeyCommit(d.rowBuf), data, nil
	}
	key, err = d.keyCommit(rel, t, vals)
	return key, data, err
}

// keyCommit computes the key commitment from a row's values (only its key
// columns need to be present).
func (d *Decoder) keyCommit(rel *relation, t *table, vals [][]byte) (commitment.Commitment, error) {
	keyVals := vals
	if rel.keyPos != nil {
		d.keyVals = d.keyVals[:0]
		for _, p := range rel.keyPos {
			d.keyVals = append(d.keyVals, vals[p])
		}
		keyVals = d.keyVals
	}
	var err error
	if d.keyBuf, err = commitment.AppendRow(d.keyBuf[:0], keyVals); err != nil {
		return commitment.Commitment{}, fmt.Errorf("encode key of %s: %w", t.name, err)
	}
	return t.committer.KeyCommit(d.keyBuf), nil
}

// dataCommit encodes the row into rowBuf and commits to it.
func (d *Decoder) dataCommit(t *table, vals [][]byte) (commitment.Commitment, error) {
	var err error
	if d.rowBuf, err = commitment.AppendRow(d.rowBuf[:0], vals); err != nil {
		return commitment.Commitment{}, fmt.Errorf("encode row of %s: %w", t.name, err)
	}
	return t.committer.DataCommit(d.rowBuf), nil
}

// emit hands an entry to the sink and returns its tx_index: the position of
// the change among the table's changes in the transaction. Counting per
// table keeps (commit_lsn, tx_index) the same on every replay, whichever
// other tables are protected.
func (d *Decoder) emit(t *table, op witnessv1.Op, key, data, old *commitment.Commitment) uint32 {
	if t.txSeq != d.tx.seq {
		t.txSeq, t.txIndex = d.tx.seq, 0
	}
	e := &witnessv1.Entry{
		CommitLsn:        uint64(d.tx.commitLSN),
		TxIndex:          t.txIndex,
		Op:               op,
		CommitTimeMicros: d.tx.commitTime.UnixMicro(),
		Xid:              d.tx.xid,
	}
	if key != nil {
		e.KeyCommit = key[:]
	}
	if data != nil {
		e.DataCommit = data[:]
	}
	if old != nil {
		e.OldDataCommit = old[:]
	}
	d.opts.Sink.Entry(t.name, e)
	t.txIndex++
	return e.TxIndex
}

func (d *Decoder) insert(rel *relation, t *table, m *pglogrepl.InsertMessage) error {
	vals, missing, err := d.values(rel, t, m.Tuple)
	if err != nil {
		return err
	}
	if missing {
		return fmt.Errorf("%w: INSERT into %s with an unchanged-TOAST column", ErrProtocol, t.name)
	}
	key, data, err := d.rowCommit(rel, t, vals)
	if err != nil {
		return err
	}
	d.emit(t, witnessv1.Op_OP_INSERT, &key, &data, nil)
	return nil
}

func (d *Decoder) update(rel *relation, t *table, lsn pglogrepl.LSN, m *pglogrepl.UpdateMessage) error {
	newVals, missing, err := d.values(rel, t, m.NewTuple)
	if err != nil {
		return err
	}
	var oldVals [][]byte
	var oldFull bool
	if m.OldTuple != nil {
		if oldVals, _, err = d.values(rel, t, m.OldTuple); err != nil {
			return err
		}
		oldFull = m.OldTupleType == pglogrepl.UpdateMessageTupleTypeOld
	}
	if missing && oldFull {
		// REPLICA IDENTITY FULL sends the whole old row: an unchanged
		// TOASTed value is the old one.
		for i, c := range m.NewTuple.Columns {
			if c.DataType == pglogrepl.TupleDataTypeToast {
				newVals[i] = oldVals[i]
			}
		}
		missing = false
	}
	var oldData *commitment.Commitment
	if oldFull {
		c, err := d.dataCommit(t, oldVals)
		if err != nil {
			return err
		}
		oldData = &c
	}
	var key, data *commitment.Commitment
	if missing {
		// Without the unchanged TOASTed values the new row cannot be
		// encoded; REPLICA IDENTITY FULL avoids this.
		d.opts.Log.Warn("UPDATE left a TOASTed column unchanged and the table's replica identity is not FULL: the new row's data commitment is omitted", "table", t.name, "xid", d.tx.xid)
		if rel.keyPos != nil {
			k, err := d.keyCommit(rel, t, newVals)
			if err != nil {
				return err
			}
			key = &k
		}
	} else {
		k, dc, err := d.rowCommit(rel, t, newVals)
		if err != nil {
			return err
		}
		key, data = &k, &dc
	}
	if t.Mode == witnessv1.TableMode_TABLE_MODE_MUTABLE && oldFull && key != nil && data != nil {
		oldKey, err := d.keyCommit(rel, t, oldVals)
		if err != nil {
			return err
		}
		if oldKey != *key {
			// The row's identity changed (its primary key, or any column
			// of a table keyed by the whole row). An UPDATE entry names
			// one key; logged as the old row deleted and the new one
			// inserted, the expected state follows the table.
			d.emit(t, witnessv1.Op_OP_DELETE, &oldKey, nil, oldData)
			d.emit(t, witnessv1.Op_OP_INSERT, key, data, nil)
			return nil
		}
	}
	idx := d.emit(t, witnessv1.Op_OP_UPDATE, key, data, oldData)
	if t.Mode == witnessv1.TableMode_TABLE_MODE_APPEND_ONLY {
		// The row's identity is its old key when the key changed.
		keyVals := newVals
		if oldVals != nil && (rel.keyPos != nil || oldFull) {
			keyVals = oldVals
		}
		d.alert(rel, t, "UPDATE", keyVals, lsn, idx)
	}
	return nil
}

func (d *Decoder) delete(rel *relation, t *table, lsn pglogrepl.LSN, m *pglogrepl.DeleteMessage) error {
	oldVals, _, err := d.values(rel, t, m.OldTuple)
	if err != nil {
		return err
	}
	oldFull := m.OldTupleType == pglogrepl.DeleteMessageTupleTypeOld
	if rel.keyPos == nil && !oldFull {
		return fmt.Errorf("DELETE on %s, which has no primary key, came without the old row: set ALTER TABLE %s REPLICA IDENTITY FULL", t.name, t.name)
	}
	key, err := d.keyCommit(rel, t, oldVals)
	if err != nil {
		return err
	}
	var oldData *commitment.Commitment
	if oldFull {
		c, err := d.dataCommit(t, oldVals)
		if err != nil {
			return err
		}
		oldData = &c
	}
	idx := d.emit(t, witnessv1.Op_OP_DELETE, &key, nil, oldData)
	if t.Mode == witnessv1.TableMode_TABLE_MODE_APPEND_ONLY {
		d.alert(rel, t, "DELETE", oldVals, lsn, idx)
	}
	return nil
}

func (d *Decoder) alert(rel *relation, t *table, op string, vals [][]byte, lsn pglogrepl.LSN, txIndex uint32) {
	pos := rel.keyPos
	if pos == nil {
		pos = make([]int, len(rel.cols))
		for i := range pos {
			pos[i] = i
		}
	}
	key := make([]alerts.KeyValue, len(pos))
	for i, p := range pos {
		key[i] = alerts.KeyValue{Column: rel.cols[p].Name, Value: d.render(rel.cols[p].DataType, vals[p])}
	}
	d.opts.Sink.Alert(alerts.ForbiddenChange(alerts.Change{
		Slot:       d.opts.Slot,
		Table:      t.name,
		Op:         op,
		Key:        key,
		XID:        d.tx.xid,
		CommitLSN:  d.tx.commitLSN,
		LSN:        lsn,
		CommitTime: d.tx.commitTime,
		TxIndex:    txIndex,
	}))
}

// maxRendered bounds a value rendered into an alert.
const maxRendered = 200

// render turns a binary column value into PostgreSQL's text form when
// pgx knows the type, else into bytea hex.
func (d *Decoder) render(oid uint32, v []byte) string {
	if v == nil {
		return "NULL"
	}
	s := `\x` + hex.EncodeToString(v)
	if t, ok := d.types.TypeForOID(oid); ok {
		if val, err := t.Codec.DecodeValue(d.types, oid, pgtype.BinaryFormatCode, v); err == nil {
			if txt, err := d.types.Encode(oid, pgtype.TextFormatCode, val, nil); err == nil && txt != nil {
				s = string(txt)
			}
		}
	}
	if len(s) > maxRendered {
		cut := maxRendered
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
