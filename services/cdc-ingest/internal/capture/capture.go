// Package capture turns pgoutput messages (protocol 1, binary mode) into
// witness log entries and alerts.
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
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"
	"unicode/utf8"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/witnz/witnz/libs/commitment"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/services/cdc-ingest/internal/alerts"
	"github.com/witnz/witnz/services/cdc-ingest/internal/pgsource"
)

// Sink receives what the decoder produces, in stream order. Every Entry and
// Alert falls between a BeginTx and its CommitTx.
type Sink interface {
	BeginTx(commitLSN uint64)
	Entry(table string, e *witnessv1.Entry)
	Alert(a *alertv1.Alert)
	CommitTx(endLSN uint64, commitTime time.Time)
}

// KeyColumnsFunc returns the primary-key columns of a relation in key
// order, or none.
type KeyColumnsFunc func(ctx context.Context, oid uint32) ([]string, error)

// Options configure a Decoder.
type Options struct {
	// Slot names the replication slot; it goes into alert ids.
	Slot string
	Key  commitment.Key
	// Tables are the protected tables, found by OID in relation messages.
	Tables     []pgsource.Table
	KeyColumns KeyColumnsFunc
	Sink       Sink
	Log        *slog.Logger
}

type table struct {
	pgsource.Table
	name      string
	committer *commitment.Committer
	// txIndex is the position of the table's next change in transaction
	// txSeq (the decoder's count of transactions).
	txIndex uint32
	txSeq   uint64
}

type relation struct {
	table *table // nil when the relation is not protected
	cols  []*pglogrepl.RelationMessageColumn
	// keyPos are the positions of the key columns in cols, in key order;
	// nil means the whole row is the key.
	keyPos     []int
	warnedText bool
}

// Decoder decodes one replication stream. It is not safe for concurrent
// use.
type Decoder struct {
	opts   Options
	tables map[uint32]*table
	rels   map[uint32]*relation
	types  *pgtype.Map

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
}

// New returns a decoder for the protected tables.
func New(opts Options) *Decoder {
	d := &Decoder{opts: opts, tables: map[uint32]*table{}, rels: map[uint32]*relation{}, types: pgtype.NewMap()}
	for _, t := range opts.Tables {
		d.tables[t.OID] = &table{Table: t, name: t.String(), committer: opts.Key.ForTable(t.Schema, t.Name).NewCommitter()}
	}
	return d
}

// Reset forgets relations and any transaction being read, for a new
// replication connection.
func (d *Decoder) Reset() {
	clear(d.rels)
	d.inTx = false
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
	case *pglogrepl.RelationMessage:
		return d.relation(ctx, m)
	case *pglogrepl.InsertMessage:
		return d.change(m.RelationID, func(rel *relation) error { return d.insert(rel, m) })
	case *pglogrepl.UpdateMessage:
		return d.change(m.RelationID, func(rel *relation) error { return d.update(rel, lsn, m) })
	case *pglogrepl.DeleteMessage:
		return d.change(m.RelationID, func(rel *relation) error { return d.delete(rel, lsn, m) })
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			if rel := d.rels[id]; rel != nil && rel.table != nil {
				d.opts.Log.Error("TRUNCATE of a protected table is not logged yet", "table", rel.table.name, "xid", d.tx.xid, "lsn", lsn.String())
			}
		}
	}
	// Type, origin and logical decoding messages carry nothing to log.
	return nil
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

// checkLengths walks the variable-length parts of change and truncate
// messages, whose declared lengths the decoder library trusts.
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

func (d *Decoder) relation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	rel := &relation{cols: m.Columns, table: d.tables[m.RelationID]}
	d.rels[m.RelationID] = rel
	if rel.table == nil {
		d.opts.Log.Warn("publication carries a table that is not protected; its changes are ignored", "table", m.Namespace+"."+m.RelationName)
		return nil
	}
	keyCols, err := d.opts.KeyColumns(ctx, m.RelationID)
	if err != nil {
		return fmt.Errorf("look up the primary key of %s: %w", rel.table.name, err)
	}
	for _, name := range keyCols {
		pos := -1
		for i, c := range m.Columns {
			if c.Name == name {
				pos = i
				break
			}
		}
		if pos < 0 {
			return fmt.Errorf("primary-key column %q of %s is not in the published columns", name, rel.table.name)
		}
		rel.keyPos = append(rel.keyPos, pos)
	}
	return nil
}

func (d *Decoder) change(relID uint32, fn func(*relation) error) error {
	if !d.inTx {
		return fmt.Errorf("%w: change outside a transaction", ErrProtocol)
	}
	rel := d.rels[relID]
	if rel == nil {
		return fmt.Errorf("%w: change for relation %d before its RELATION message", ErrProtocol, relID)
	}
	if rel.table == nil {
		return nil
	}
	return fn(rel)
}

// values extracts a tuple's column values (nil for NULL). missing reports
// unchanged TOASTed values pgoutput did not send.
func (d *Decoder) values(rel *relation, td *pglogrepl.TupleData) (vals [][]byte, missing bool, err error) {
	if td == nil || len(td.Columns) != len(rel.cols) {
		n := 0
		if td != nil {
			n = len(td.Columns)
		}
		return nil, false, fmt.Errorf("%w: tuple of %s has %d columns, relation has %d", ErrProtocol, rel.table.name, n, len(rel.cols))
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
				d.opts.Log.Warn("column arrives as text: its type has no binary send function, so scans cannot reproduce its encoding", "table", rel.table.name, "column", rel.cols[i].Name)
			}
		default:
			return nil, false, fmt.Errorf("%w: column kind %q in %s", ErrProtocol, c.DataType, rel.table.name)
		}
	}
	return vals, missing, nil
}

// rowCommit computes a row's key and data commitments.
func (d *Decoder) rowCommit(rel *relation, vals [][]byte) (key, data commitment.Commitment, err error) {
	if data, err = d.dataCommit(rel, vals); err != nil {
		return key, data, err
	}
	if rel.keyPos == nil {
		return rel.table.committer.KeyCommit(d.rowBuf), data, nil
	}
	key, err = d.keyCommit(rel, vals)
	return key, data, err
}

// keyCommit computes the key commitment from a row's values (only its key
// columns need to be present).
func (d *Decoder) keyCommit(rel *relation, vals [][]byte) (commitment.Commitment, error) {
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
		return commitment.Commitment{}, fmt.Errorf("encode key of %s: %w", rel.table.name, err)
	}
	return rel.table.committer.KeyCommit(d.keyBuf), nil
}

// dataCommit encodes the row into rowBuf and commits to it.
func (d *Decoder) dataCommit(rel *relation, vals [][]byte) (commitment.Commitment, error) {
	var err error
	if d.rowBuf, err = commitment.AppendRow(d.rowBuf[:0], vals); err != nil {
		return commitment.Commitment{}, fmt.Errorf("encode row of %s: %w", rel.table.name, err)
	}
	return rel.table.committer.DataCommit(d.rowBuf), nil
}

// emit hands an entry to the sink and returns its tx_index: the position of
// the change among the table's changes in the transaction. Counting per
// table keeps (commit_lsn, tx_index) the same on every replay, whichever
// other tables are protected.
func (d *Decoder) emit(rel *relation, op witnessv1.Op, key, data, old *commitment.Commitment) uint32 {
	t := rel.table
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

func (d *Decoder) insert(rel *relation, m *pglogrepl.InsertMessage) error {
	vals, missing, err := d.values(rel, m.Tuple)
	if err != nil {
		return err
	}
	if missing {
		return fmt.Errorf("%w: INSERT into %s with an unchanged-TOAST column", ErrProtocol, rel.table.name)
	}
	key, data, err := d.rowCommit(rel, vals)
	if err != nil {
		return err
	}
	d.emit(rel, witnessv1.Op_OP_INSERT, &key, &data, nil)
	return nil
}

func (d *Decoder) update(rel *relation, lsn pglogrepl.LSN, m *pglogrepl.UpdateMessage) error {
	newVals, missing, err := d.values(rel, m.NewTuple)
	if err != nil {
		return err
	}
	var oldVals [][]byte
	var oldFull bool
	if m.OldTuple != nil {
		if oldVals, _, err = d.values(rel, m.OldTuple); err != nil {
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
		c, err := d.dataCommit(rel, oldVals)
		if err != nil {
			return err
		}
		oldData = &c
	}
	var key, data *commitment.Commitment
	if missing {
		// Without the unchanged TOASTed values the new row cannot be
		// encoded; REPLICA IDENTITY FULL avoids this.
		d.opts.Log.Warn("UPDATE left a TOASTed column unchanged and the table's replica identity is not FULL: the new row's data commitment is omitted", "table", rel.table.name, "xid", d.tx.xid)
		if rel.keyPos != nil {
			k, err := d.keyCommit(rel, newVals)
			if err != nil {
				return err
			}
			key = &k
		}
	} else {
		k, dc, err := d.rowCommit(rel, newVals)
		if err != nil {
			return err
		}
		key, data = &k, &dc
	}
	idx := d.emit(rel, witnessv1.Op_OP_UPDATE, key, data, oldData)
	if rel.table.Mode == witnessv1.TableMode_TABLE_MODE_APPEND_ONLY {
		// The row's identity is its old key when the key changed.
		keyVals := newVals
		if oldVals != nil && (rel.keyPos != nil || oldFull) {
			keyVals = oldVals
		}
		d.alert(rel, "UPDATE", keyVals, lsn, idx)
	}
	return nil
}

func (d *Decoder) delete(rel *relation, lsn pglogrepl.LSN, m *pglogrepl.DeleteMessage) error {
	oldVals, _, err := d.values(rel, m.OldTuple)
	if err != nil {
		return err
	}
	oldFull := m.OldTupleType == pglogrepl.DeleteMessageTupleTypeOld
	if rel.keyPos == nil && !oldFull {
		return fmt.Errorf("DELETE on %s, which has no primary key, came without the old row: set ALTER TABLE %s REPLICA IDENTITY FULL", rel.table.name, rel.table.name)
	}
	key, err := d.keyCommit(rel, oldVals)
	if err != nil {
		return err
	}
	var oldData *commitment.Commitment
	if oldFull {
		c, err := d.dataCommit(rel, oldVals)
		if err != nil {
			return err
		}
		oldData = &c
	}
	idx := d.emit(rel, witnessv1.Op_OP_DELETE, &key, nil, oldData)
	if rel.table.Mode == witnessv1.TableMode_TABLE_MODE_APPEND_ONLY {
		d.alert(rel, "DELETE", oldVals, lsn, idx)
	}
	return nil
}

func (d *Decoder) alert(rel *relation, op string, vals [][]byte, lsn pglogrepl.LSN, txIndex uint32) {
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
		Table:      rel.table.name,
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
