// Package fsm is the witness cluster's replicated state machine. It holds
// only hashes: per protected table, the keyed commitments cdc-ingest sent
// (as encoded log entries), the table's RFC 6962 log with its hash chain,
// the state digest of the rows the log says should exist (package
// statedigest), where the table stands in its protection epochs, and the
// position of the last change applied. Row data never reaches it.
//
// Protection epochs: a PROTECT entry starts an epoch (the table is then
// BASELINING and its expected state restarts empty), BASELINE entries carry
// the rows of the snapshot the table was protected at, and a SCHEMA entry
// ends the baseline (PROTECTED). Changes are accepted only while a table is
// PROTECTED or was never protected (PROTECTION_UNSPECIFIED); an UNPROTECT
// entry makes it UNPROTECTED until the next PROTECT. The whole state of a
// table is a function of its entries: Restore rebuilds it by replaying
// them through the same code Apply uses.
//
// Apply is deterministic: no clock, no randomness, no I/O. A command that
// breaks a business rule is rejected as a returned value and recorded; a
// command that cannot be decoded panics, because a replica that silently
// diverges is worse than one that stops.
package fsm

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"unicode/utf8"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/witnz/witnz/libs/commitment"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/statedigest"
	"github.com/witnz/witnz/libs/tlog"
)

// Limits and defaults.
const (
	// MaxBatch is the most entries one Append command may carry.
	MaxBatch = 10000
	// DefaultBuckets is the state-digest bucket count of a table
	// registered with 0 buckets.
	DefaultBuckets = statedigest.DefaultBuckets
	// MaxBuckets bounds the bucket count of a table.
	MaxBuckets = statedigest.MaxBuckets
	// MaxTableName bounds the length of a "schema.table" name in bytes.
	MaxTableName = 255
	// KeepRejections is how many rejections the state remembers.
	KeepRejections = 100
	// CommitmentSize is the size of every commitment.
	CommitmentSize = 32
)

// Errors of rejected commands. Result.Err wraps one of them.
var (
	ErrUnknownTable  = errors.New("table is not registered")
	ErrTableConflict = errors.New("table is already registered with different settings")
	ErrInvalid       = errors.New("invalid command")
	ErrOutOfOrder    = errors.New("entries are not in (commit_lsn, tx_index) order")
	// ErrProtection rejects a batch holding an entry the table's protection
	// state does not admit: a BASELINE outside a baseline, or a change
	// while the table is BASELINING or UNPROTECTED.
	ErrProtection = errors.New("entry not allowed in the table's protection state")
	// ErrPredecessorPending refuses a batch that names a predecessor the
	// table's log has not reached yet (AppendCommand.after_*): the batch
	// sent before it failed or is still on its way. It is flow control,
	// not an attack, so it is not recorded as a rejection; the client
	// sends the batch again once its predecessor is acknowledged.
	ErrPredecessorPending = errors.New("the batch this one follows is not in the log yet")
)

// ErrDigestUnavailable is wrapped by StateDigest errors about a table whose
// state digest could not follow its log. The log itself is unaffected.
var ErrDigestUnavailable = errors.New("state digest is unavailable")

// ErrBeforeReset is wrapped by StateDigest errors about a size before the
// last entry that reset the table's expected state (a PROTECT, or a
// TRUNCATE on a mutable table): the state before it is not kept. It wraps
// ErrDigestUnavailable.
var ErrBeforeReset = fmt.Errorf("%w before the table's last reset", ErrDigestUnavailable)

// Position orders the changes of one table: the commit LSN of the
// transaction and the change's index inside it.
type Position struct {
	CommitLSN uint64
	TxIndex   uint32
}

// After reports whether p comes strictly after q.
func (p Position) After(q Position) bool {
	return p.CommitLSN > q.CommitLSN || (p.CommitLSN == q.CommitLSN && p.TxIndex > q.TxIndex)
}

func positionOf(e *witnessv1.Entry) Position {
	return Position{CommitLSN: e.GetCommitLsn(), TxIndex: e.GetTxIndex()}
}

// TableInfo describes one table's log.
type TableInfo struct {
	Name      string
	Mode      witnessv1.TableMode
	Buckets   uint32
	Size      uint64
	Root      [tlog.HashSize]byte
	ChainHead [tlog.HashSize]byte
	// Last is the position of the last change applied; HasLast is false
	// until the first one.
	Last    Position
	HasLast bool
	// DigestUnavailable is set once an entry could not be applied to the
	// table's state digest; UnavailableSeq is that entry's seq. A reset of
	// the expected state clears it.
	DigestUnavailable bool
	UnavailableSeq    uint64
	// Protection is where the table stands in its protection epochs.
	Protection witnessv1.Protection
	// EpochSeq and BaselineLSN are the seq and commit_lsn of the current
	// epoch's PROTECT entry (zero while Protection is UNSPECIFIED).
	EpochSeq    uint64
	BaselineLSN uint64
	// BaselineRows counts the BASELINE entries of the current epoch; it is
	// final once the epoch is PROTECTED.
	BaselineRows uint64
	// SchemaCommit is the data_commit of the last SCHEMA entry;
	// HasSchemaCommit is false when there is none or it had none.
	SchemaCommit    commitment.Commitment
	HasSchemaCommit bool
	// ResetSeq is the seq of the last entry that reset the expected state
	// to empty (a PROTECT, or a TRUNCATE on a mutable table); HasReset is
	// false until the first one. The state digest is not available as of
	// a size at or below ResetSeq.
	ResetSeq uint64
	HasReset bool
}

// Result is what Apply returns for every command; raft hands it back
// through ApplyFuture.Response.
type Result struct {
	// Table is the table as it is after the command.
	Table TableInfo
	// Created is set when RegisterTable created the table.
	Created bool
	// Appended and Duplicates count the entries of an Append command that
	// were logged and that were skipped as replays.
	Appended, Duplicates uint32
	// Err is non-nil when the command was rejected (it wraps one of the
	// Err* values); Rejection is the record kept in the state.
	Err       error
	Rejection *witnessv1.Rejection
}

// table is the state of one protected table. Everything but the name and
// the registration settings follows from its entries (see apply).
type table struct {
	name    string
	mode    witnessv1.TableMode
	buckets uint32
	// entries holds the encoded entries, EntrySize bytes each, in chunks
	// that are never reallocated. It only grows, so a prefix handed to a
	// snapshot or a reader never changes under it.
	entries entryStore
	log     *tlog.Log
	last    Position
	hasLast bool
	expected
	protection      witnessv1.Protection
	epochSeq        uint64
	baselineLSN     uint64
	baselineRows    uint64
	schemaCommit    commitment.Commitment
	hasSchemaCommit bool
	resetSeq        uint64
	hasReset        bool
}

// expected is a table's expected state: digest is the state the entries
// after the last reset produce ([resetSeq+1, size), or [0, size) before
// any reset), or, once unavailable is set, those before unavailableSeq:
// the first entry it could not apply, for unavailableReason, freezes it
// until the next reset.
type expected struct {
	digest            *statedigest.Digest
	unavailable       bool
	unavailableSeq    uint64
	unavailableReason string
}

func (t *table) info() TableInfo {
	st := t.log.State()
	return TableInfo{
		Name: t.name, Mode: t.mode, Buckets: t.buckets,
		Size: st.Size, Root: st.Root, ChainHead: st.ChainHead,
		Last: t.last, HasLast: t.hasLast,
		DigestUnavailable: t.unavailable, UnavailableSeq: t.unavailableSeq,
		Protection: t.protection, EpochSeq: t.epochSeq, BaselineLSN: t.baselineLSN, BaselineRows: t.baselineRows,
		SchemaCommit: t.schemaCommit, HasSchemaCommit: t.hasSchemaCommit,
		ResetSeq: t.resetSeq, HasReset: t.hasReset,
	}
}

// newTable returns an empty table; mode and buckets must be valid.
func newTable(name string, mode witnessv1.TableMode, buckets uint32) *table {
	return &table{name: name, mode: mode, buckets: buckets, log: tlog.New(), expected: newExpected(name, buckets)}
}

func newExpected(name string, buckets uint32) expected {
	d, err := statedigest.New(int(buckets))
	if err != nil {
		// NormalizeRegister admits only bucket counts New accepts.
		panic(fmt.Sprintf("witness fsm: table %s: %v", name, err))
	}
	return expected{digest: d}
}

// transition is the one definition of the protection rules: the state an
// entry of op leaves a table in protection, and whether the op is
// admitted there at all.
func transition(p witnessv1.Protection, op commitment.Op) (next witnessv1.Protection, ok bool) {
	switch op {
	case commitment.OpProtect:
		return witnessv1.Protection_PROTECTION_BASELINING, true
	case commitment.OpBaseline:
		return p, p == witnessv1.Protection_PROTECTION_BASELINING
	case commitment.OpSchema:
		if p == witnessv1.Protection_PROTECTION_BASELINING {
			return witnessv1.Protection_PROTECTION_PROTECTED, true
		}
		return p, true
	case commitment.OpUnprotect:
		return witnessv1.Protection_PROTECTION_UNPROTECTED, true
	case commitment.OpInsert, commitment.OpUpdate, commitment.OpDelete, commitment.OpTruncate, commitment.OpAccept:
		return p, p != witnessv1.Protection_PROTECTION_BASELINING && p != witnessv1.Protection_PROTECTION_UNPROTECTED
	}
	// HEARTBEAT and ANCHOR say nothing about the table's rows.
	return p, true
}

// resets reports whether an entry of op empties the expected state of a
// table of mode: a PROTECT starts an epoch from an empty state that its
// BASELINE entries fill; after a TRUNCATE a mutable table is empty, and
// its expected state follows the table. On an append-only table a
// TRUNCATE leaves every row expected, so verification reports them.
func resets(op commitment.Op, mode witnessv1.TableMode) bool {
	return op == commitment.OpProtect || (op == commitment.OpTruncate && mode == witnessv1.TableMode_TABLE_MODE_MUTABLE)
}

// apply brings the table's protection state and expected state past the
// logged entry at seq. Apply checks the protection rules before it logs
// anything; apply itself never refuses an entry, so Restore can replay any
// log through it.
func (t *table) apply(seq uint64, e *commitment.Entry) {
	next, ok := transition(t.protection, e.Op)
	switch e.Op {
	case commitment.OpProtect:
		t.epochSeq, t.baselineLSN, t.baselineRows = seq, e.CommitLSN, 0
	case commitment.OpBaseline:
		if ok {
			t.baselineRows++
		}
	case commitment.OpSchema:
		t.schemaCommit, t.hasSchemaCommit = commitment.Commitment{}, e.DataCommit != nil
		if e.DataCommit != nil {
			t.schemaCommit = *e.DataCommit
		}
	}
	t.protection = next
	if resets(e.Op, t.mode) {
		t.expected = newExpected(t.name, t.buckets)
		t.resetSeq, t.hasReset = seq, true
		return
	}
	t.expected.applyDigest(t.name, t.mode, seq, e)
}

// applyDigest applies the entry at seq to the state digest. An entry the digest
// cannot take does not reject anything: the log records what happened
// whatever it is; the digest stops following the log and says why,
// deterministically on every replica.
func (x *expected) applyDigest(name string, tableMode witnessv1.TableMode, seq uint64, e *commitment.Entry) {
	if x.unavailable {
		return
	}
	c := statedigest.ChangeOf(e)
	mode := statedigest.Mode(tableMode)
	if mode == statedigest.Mutable && (c.Op == commitment.OpUpdate || c.Op == commitment.OpDelete) && c.OldData.IsZero() {
		x.markUnavailable(seq, fmt.Sprintf("entry %d is a %v without old_data_commit; cdc-ingest sends it only for tables with REPLICA IDENTITY FULL: run ALTER TABLE %s REPLICA IDENTITY FULL, then re-baseline the table", seq, c.Op, name))
		return
	}
	switch err := x.digest.Apply(c, mode); {
	case errors.Is(err, statedigest.ErrUnderflow):
		x.markUnavailable(seq, fmt.Sprintf("entry %d removes a row from an empty bucket (%v): the log does not hold the table's rows from a baseline; re-baseline the table", seq, err))
	case err != nil:
		x.markUnavailable(seq, fmt.Sprintf("entry %d cannot be applied (%v): cdc-ingest must send every commitment the op needs", seq, err))
	}
}

func (x *expected) markUnavailable(seq uint64, reason string) {
	x.unavailable, x.unavailableSeq, x.unavailableReason = true, seq, reason
}

// checkProtection walks the batch through the protection rules from the
// table's current state, skipping the replays Apply will skip, and
// rejects the whole batch at the first entry its state does not admit.
func (t *table) checkProtection(batch []*witnessv1.Entry) error {
	p, seq := t.protection, t.log.Size()
	epochSeq, epochLSN := t.epochSeq, t.baselineLSN
	for i, e := range batch {
		if t.hasLast && !positionOf(e).After(t.last) {
			continue
		}
		op := commitment.Op(e.GetOp())
		next, ok := transition(p, op)
		if !ok {
			return protectionError(t.name, i, seq, e, p, epochSeq, epochLSN)
		}
		if op == commitment.OpProtect {
			epochSeq, epochLSN = seq, e.GetCommitLsn()
		}
		p = next
		seq++
	}
	return nil
}

// protectionError says which entry was refused, in which state, and what
// the client has to do instead.
func protectionError(name string, i int, seq uint64, e *witnessv1.Entry, p witnessv1.Protection, epochSeq, epochLSN uint64) error {
	op := commitment.Op(e.GetOp())
	at := fmt.Sprintf("entry %d of the batch (%v at commit_lsn %s, tx_index %d; it would be seq %d)", i, op, formatLSN(e.GetCommitLsn()), e.GetTxIndex(), seq)
	switch {
	case op == commitment.OpBaseline:
		return fmt.Errorf("%w: %s: table %s is %s, and BASELINE entries belong only to a baseline, between a PROTECT and the SCHEMA that ends it; run the protect flow from its start (PROTECT, BASELINE rows, SCHEMA)", ErrProtection, at, name, protectionName(p))
	case p == witnessv1.Protection_PROTECTION_BASELINING:
		return fmt.Errorf("%w: %s: table %s is baselining (the epoch started by the PROTECT at seq %d, commit_lsn %s) and accepts no changes until the baseline's SCHEMA entry ends it; send the rest of the baseline and its SCHEMA first, or restart the protect flow with a new PROTECT", ErrProtection, at, name, epochSeq, formatLSN(epochLSN))
	default:
		return fmt.Errorf("%w: %s: table %s is %s and accepts no changes; protect it again (PROTECT, its BASELINE rows, SCHEMA) before sending its changes", ErrProtection, at, name, protectionName(p))
	}
}

func protectionName(p witnessv1.Protection) string {
	switch p {
	case witnessv1.Protection_PROTECTION_UNSPECIFIED:
		return "not protected by an epoch (PROTECTION_UNSPECIFIED)"
	case witnessv1.Protection_PROTECTION_BASELINING:
		return "baselining"
	case witnessv1.Protection_PROTECTION_PROTECTED:
		return "protected"
	case witnessv1.Protection_PROTECTION_UNPROTECTED:
		return "unprotected"
	}
	return p.String()
}

// formatLSN writes a WAL position as PostgreSQL does (X/X, hexadecimal).
func formatPosition(p Position) string {
	return fmt.Sprintf("(%s, %d)", formatLSN(p.CommitLSN), p.TxIndex)
}

func formatLSN(lsn uint64) string {
	return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn))
}

// state is everything a snapshot captures.
type state struct {
	applied    uint64
	tables     map[string]*table
	rejections []*witnessv1.Rejection
	rejected   uint64
	checkpointState
	membership membership
	anchors    anchorState
}

func newState() *state { return &state{tables: map[string]*table{}} }

// FSM implements raft.FSM.
type FSM struct {
	mu sync.RWMutex
	st *state
	// cluster and policy check stored checkpoints (WithCheckpoints).
	cluster string
	policy  CheckpointPolicy
}

// New returns an empty state machine.
func New(opts ...Option) *FSM {
	f := &FSM{st: newState()}
	for _, o := range opts {
		o(f)
	}
	return f
}

var _ raft.FSM = (*FSM)(nil)

// Apply applies one committed Raft log entry.
func (f *FSM) Apply(l *raft.Log) any {
	var cmd witnessv1.Command
	if err := proto.Unmarshal(l.Data, &cmd); err != nil {
		panic(fmt.Sprintf("witness fsm: raft log %d is not a witness command (%v): refusing to diverge", l.Index, err))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.applied = l.Index
	switch c := cmd.GetCommand().(type) {
	case *witnessv1.Command_Append:
		return f.applyAppend(l.Index, cmd.GetProposedAtMicros(), c.Append)
	case *witnessv1.Command_RegisterTable:
		return f.applyRegister(l.Index, cmd.GetProposedAtMicros(), c.RegisterTable)
	case *witnessv1.Command_StoreCheckpoint:
		return f.applyStoreCheckpoint(l.Index, cmd.GetProposedAtMicros(), c.StoreCheckpoint)
	case *witnessv1.Command_RecordCosignRefusals:
		return f.applyCosignRefusals(l.Index, cmd.GetProposedAtMicros(), c.RecordCosignRefusals)
	case *witnessv1.Command_Membership:
		return f.applyMembership(l.Index, cmd.GetProposedAtMicros(), c.Membership)
	case *witnessv1.Command_RecordAnchor:
		return f.applyRecordAnchor(l.Index, cmd.GetProposedAtMicros(), c.RecordAnchor)
	default:
		panic(fmt.Sprintf("witness fsm: raft log %d carries an unknown command (a newer version wrote it?): refusing to diverge", l.Index))
	}
}

// reject records a rejection and returns it as a Result.
func (f *FSM) reject(index uint64, at int64, tableName string, err error) *Result {
	r := &witnessv1.Rejection{RaftIndex: index, Table: tableName, Reason: err.Error(), AtMicros: at}
	f.st.rejected++
	f.st.rejections = append(f.st.rejections, r)
	if n := len(f.st.rejections); n > KeepRejections {
		f.st.rejections = append([]*witnessv1.Rejection(nil), f.st.rejections[n-KeepRejections:]...)
	}
	res := &Result{Err: err, Rejection: proto.Clone(r).(*witnessv1.Rejection)}
	if t := f.st.tables[tableName]; t != nil {
		res.Table = t.info()
	}
	return res
}

// NormalizeRegister fills in the defaults of a RegisterTable command (mode
// append-only, DefaultBuckets) and checks it.
func NormalizeRegister(c *witnessv1.RegisterTableCommand) (mode witnessv1.TableMode, buckets uint32, err error) {
	if err := ValidateTableName(c.GetTable()); err != nil {
		return 0, 0, err
	}
	mode = c.GetMode()
	switch mode {
	case witnessv1.TableMode_TABLE_MODE_UNSPECIFIED:
		mode = witnessv1.TableMode_TABLE_MODE_APPEND_ONLY
	case witnessv1.TableMode_TABLE_MODE_APPEND_ONLY, witnessv1.TableMode_TABLE_MODE_MUTABLE:
	default:
		return 0, 0, fmt.Errorf("%w: unknown table mode %d", ErrInvalid, mode)
	}
	buckets = c.GetBuckets()
	if buckets == 0 {
		buckets = DefaultBuckets
	}
	if buckets > MaxBuckets || buckets&(buckets-1) != 0 {
		return 0, 0, fmt.Errorf("%w: buckets %d is not a power of two between 1 and %d", ErrInvalid, buckets, MaxBuckets)
	}
	return mode, buckets, nil
}

// ValidateTableName accepts "schema.table" names.
func ValidateTableName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: table name is empty (want schema.table)", ErrInvalid)
	case len(name) > MaxTableName:
		return fmt.Errorf("%w: table name of %d bytes exceeds %d", ErrInvalid, len(name), MaxTableName)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: table name is not valid UTF-8", ErrInvalid)
	}
	schema, tbl, ok := cutDot(name)
	if !ok || schema == "" || tbl == "" {
		return fmt.Errorf("%w: table name %q is not schema.table", ErrInvalid, name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: table name %q contains a control character", ErrInvalid, name)
		}
	}
	return nil
}

func cutDot(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			return s[:i], s[i+1:], true
		}
	}
	return "", "", false
}

func (f *FSM) applyRegister(index uint64, at int64, c *witnessv1.RegisterTableCommand) *Result {
	mode, buckets, err := NormalizeRegister(c)
	if err != nil {
		return f.reject(index, at, c.GetTable(), err)
	}
	if t, ok := f.st.tables[c.GetTable()]; ok {
		if t.mode != mode || t.buckets != buckets {
			return f.reject(index, at, c.GetTable(), fmt.Errorf("%w: %s has mode %s and %d buckets", ErrTableConflict, t.name, t.mode, t.buckets))
		}
		return &Result{Table: t.info()}
	}
	t := newTable(c.GetTable(), mode, buckets)
	f.st.tables[t.name] = t
	return &Result{Table: t.info(), Created: true}
}

// ValidateEntries checks what Apply re-checks for every Append batch: its
// size, each entry's op and commitment lengths, and that positions strictly
// increase. The leader runs it before proposing, so that a bad batch never
// costs a Raft round.
func ValidateEntries(entries []*witnessv1.Entry) error {
	if len(entries) == 0 {
		return fmt.Errorf("%w: the batch has no entries", ErrInvalid)
	}
	if len(entries) > MaxBatch {
		return fmt.Errorf("%w: the batch has %d entries; split it into batches of at most %d", ErrInvalid, len(entries), MaxBatch)
	}
	var prev Position
	for i, e := range entries {
		if e == nil {
			return fmt.Errorf("%w: entry %d is empty", ErrInvalid, i)
		}
		if op := e.GetOp(); op < witnessv1.Op_OP_BASELINE || op > witnessv1.Op_OP_ANCHOR {
			return fmt.Errorf("%w: entry %d has unknown op %d", ErrInvalid, i, op)
		}
		for _, c := range [...]struct {
			name string
			b    []byte
		}{{"key_commit", e.GetKeyCommit()}, {"data_commit", e.GetDataCommit()}, {"old_data_commit", e.GetOldDataCommit()}} {
			if len(c.b) != 0 && len(c.b) != CommitmentSize {
				return fmt.Errorf("%w: entry %d has a %s of %d bytes; commitments are %d bytes or empty", ErrInvalid, i, c.name, len(c.b), CommitmentSize)
			}
		}
		p := positionOf(e)
		if i > 0 && !p.After(prev) {
			return fmt.Errorf("%w: entry %d at (%d, %d) does not follow entry %d at (%d, %d)", ErrOutOfOrder, i, p.CommitLSN, p.TxIndex, i-1, prev.CommitLSN, prev.TxIndex)
		}
		prev = p
	}
	return nil
}

func commitmentOf(b []byte) *commitment.Commitment {
	if len(b) == 0 {
		return nil
	}
	var c commitment.Commitment
	copy(c[:], b)
	return &c
}

func (f *FSM) applyAppend(index uint64, at int64, c *witnessv1.AppendCommand) *Result {
	t, ok := f.st.tables[c.GetTable()]
	if !ok {
		return f.reject(index, at, c.GetTable(), fmt.Errorf("%w: %q", ErrUnknownTable, c.GetTable()))
	}
	if err := ValidateEntries(c.GetEntries()); err != nil {
		return f.reject(index, at, t.name, err)
	}
	if after := (Position{CommitLSN: c.GetAfterCommitLsn(), TxIndex: c.GetAfterTxIndex()}); after != (Position{}) && (!t.hasLast || after.After(t.last)) {
		// Applying it now could log entries past a change that is still
		// missing, and that change would then be skipped as a replay.
		last := "is empty"
		if t.hasLast {
			last = "ends at " + formatPosition(t.last)
		}
		return &Result{Table: t.info(), Err: fmt.Errorf("%w: the batch follows %s but the log of %s %s; send it again once that batch is acknowledged", ErrPredecessorPending, formatPosition(after), t.name, last)}
	}
	if err := t.checkProtection(c.GetEntries()); err != nil {
		return f.reject(index, at, t.name, err)
	}
	res := &Result{}
	for _, e := range c.GetEntries() {
		p := positionOf(e)
		if t.hasLast && !p.After(t.last) {
			// A replay of a change this table already logged (cdc-ingest
			// resent it after a crash): harmless, and counted.
			res.Duplicates++
			continue
		}
		ce := commitment.Entry{
			Seq:              t.log.Size(),
			CommitLSN:        e.GetCommitLsn(),
			TxIndex:          e.GetTxIndex(),
			Op:               commitment.Op(e.GetOp()),
			CommitTimeMicros: e.GetCommitTimeMicros(),
			XID:              e.GetXid(),
			KeyCommit:        commitmentOf(e.GetKeyCommit()),
			DataCommit:       commitmentOf(e.GetDataCommit()),
			OldDataCommit:    commitmentOf(e.GetOldDataCommit()),
		}
		if err := t.log.Append(ce.LeafHash()); err != nil {
			// The in-memory log cannot fail; a failing store would leave
			// this replica unlike the others.
			panic(fmt.Sprintf("witness fsm: raft log %d: append to %s: %v", index, t.name, err))
		}
		t.entries.add(&ce)
		t.apply(ce.Seq, &ce)
		t.last, t.hasLast = p, true
		res.Appended++
	}
	res.Table = t.info()
	return res
}

// Applied is the index of the last Raft log entry applied.
func (f *FSM) Applied() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.applied
}

// Tables describes every table, sorted by name.
func (f *FSM) Tables() []TableInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]TableInfo, 0, len(f.st.tables))
	for _, t := range f.st.tables {
		out = append(out, t.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Rejections returns the last KeepRejections rejections, oldest first, and
// how many there have been in all.
func (f *FSM) Rejections() ([]*witnessv1.Rejection, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*witnessv1.Rejection, len(f.st.rejections))
	for i, r := range f.st.rejections {
		out[i] = proto.Clone(r).(*witnessv1.Rejection)
	}
	return out, f.st.rejected
}

// Table returns a read-only view of one table as it is now. The view stays
// valid and unchanged while later commands append to the table.
func (f *FSM) Table(name string) (*View, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	t, ok := f.st.tables[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTable, name)
	}
	info := t.info()
	return &View{Info: info, entries: t.entries.prefix(info.Size), log: t.log}, nil
}

// StateDigest returns a table's state digest as of the log size asOf (0
// means the current size) and the size it is at. The digest is a copy the
// caller owns. Going back costs one entry decode and one LtHash expansion
// per entry after asOf, plus copying the digest (about 2 MiB at the
// default bucket count); the FSM lock is held only for the copy. It fails
// with ErrUnknownTable, ErrOutOfRange (asOf beyond the log),
// ErrDigestUnavailable, or ErrBeforeReset (which wraps it) when asOf is at
// or below the seq of the last entry that reset the expected state: the
// state before that entry is not kept.
func (f *FSM) StateDigest(name string, asOf uint64) (*statedigest.Digest, uint64, error) {
	f.mu.RLock()
	t, ok := f.st.tables[name]
	if !ok {
		f.mu.RUnlock()
		return nil, 0, fmt.Errorf("%w: %q", ErrUnknownTable, name)
	}
	if t.unavailable {
		f.mu.RUnlock()
		return nil, 0, fmt.Errorf("%w for table %s: %s", ErrDigestUnavailable, t.name, t.unavailableReason)
	}
	size := t.log.Size()
	mode := statedigest.Mode(t.mode)
	entries := t.entries.prefix(size)
	if asOf == 0 {
		asOf = size
	}
	if asOf > size {
		f.mu.RUnlock()
		return nil, 0, fmt.Errorf("%w: as_of_size %d, log of %s has %d entries on this node", ErrOutOfRange, asOf, name, size)
	}
	// The digest holds only what followed the last reset, so it can be
	// rewound to any size after that entry; the entries walked back,
	// [asOf, size), then never include a reset.
	if t.hasReset && asOf <= t.resetSeq {
		resetSeq := t.resetSeq
		f.mu.RUnlock()
		return nil, 0, beforeResetError(name, asOf, resetSeq, entries)
	}
	// Bringing the live digest's cached tree up to date first means the
	// copy rehashes only the buckets the later changes touch, and the next
	// call only those changed since this one.
	t.digest.Root()
	d := t.digest.Clone()
	f.mu.RUnlock()
	if asOf == size {
		return d, size, nil
	}
	var decodeErr error
	later := func(yield func(statedigest.Change) bool) {
		for seq := asOf; seq < size; seq++ {
			e, err := commitment.DecodeEntry(entries.at(seq))
			if err != nil {
				decodeErr = fmt.Errorf("entry %d of %s: %w", seq, name, err)
				return
			}
			if !yield(statedigest.ChangeOf(e)) {
				return
			}
		}
	}
	old, err := d.AsOf(mode, later)
	if decodeErr != nil {
		return nil, 0, decodeErr
	}
	if err != nil {
		return nil, 0, fmt.Errorf("state digest of %s as of %d: %w", name, asOf, err)
	}
	return old, asOf, nil
}

// beforeResetError names the entry that reset a table's expected state
// after the size asked for.
func beforeResetError(name string, asOf, resetSeq uint64, entries entryRange) error {
	e, err := commitment.DecodeEntry(entries.at(resetSeq))
	if err != nil {
		return fmt.Errorf("entry %d of %s: %w", resetSeq, name, err)
	}
	what := "reset its expected state to empty"
	if e.Op == commitment.OpProtect {
		what = "started a new protection epoch, which resets the expected state to empty"
	}
	return fmt.Errorf("%w: table %s as of size %d: entry %d (%v at commit_lsn %s, tx_index %d) %s and the state before it is not kept; ask for a size above %d, or 0 for the current one", ErrBeforeReset, name, asOf, resetSeq, e.Op, formatLSN(e.CommitLSN), e.TxIndex, what, resetSeq)
}

// View is a table frozen at one size.
type View struct {
	Info    TableInfo
	entries entryRange
	log     *tlog.Log
}

// ErrOutOfRange is wrapped by View errors about an index or size beyond
// the view.
var ErrOutOfRange = errors.New("beyond the log")

// Entry returns the encoded entry at seq and its leaf hash.
func (v *View) Entry(seq uint64) (encoded []byte, leafHash [tlog.HashSize]byte, err error) {
	if seq >= v.Info.Size {
		return nil, leafHash, fmt.Errorf("%w: entry %d of a log of %d entries", ErrOutOfRange, seq, v.Info.Size)
	}
	leafHash, err = v.log.LeafHash(seq)
	return v.entries.at(seq), leafHash, err
}

// RootAt is the root of the tree of the first size entries.
func (v *View) RootAt(size uint64) ([tlog.HashSize]byte, error) {
	if size > v.Info.Size {
		return [tlog.HashSize]byte{}, fmt.Errorf("%w: size %d of a log of %d entries", ErrOutOfRange, size, v.Info.Size)
	}
	return v.log.RootAt(size)
}

// InclusionProof proves entry index is in the tree of size entries.
func (v *View) InclusionProof(index, size uint64) ([][]byte, error) {
	if size > v.Info.Size || index >= size {
		return nil, fmt.Errorf("%w: entry %d in a tree of size %d, log of %d entries", ErrOutOfRange, index, size, v.Info.Size)
	}
	return v.log.InclusionProof(index, size)
}

// ConsistencyProof proves the tree of size to extends the tree of size
// from.
func (v *View) ConsistencyProof(from, to uint64) ([][]byte, error) {
	if to > v.Info.Size || from > to {
		return nil, fmt.Errorf("%w: sizes %d to %d, log of %d entries", ErrOutOfRange, from, to, v.Info.Size)
	}
	return v.log.ConsistencyProof(from, to)
}

// Snapshot captures the state at this point. Apply is not running while it
// does, and the capture is cheap: entries and logs only grow, so prefixes
// are shared rather than copied; only the state digests are copied.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := &snapshot{applied: f.st.applied, rejected: f.st.rejected, checkpointSnapshot: f.st.checkpointState.snapshot(), anchors: f.st.anchors.snapshot()}
	mem, err := f.st.membership.marshal()
	if err != nil {
		return nil, fmt.Errorf("witness fsm: snapshot of the membership records: %w", err)
	}
	s.membership = mem
	for _, r := range f.st.rejections {
		s.rejections = append(s.rejections, proto.Clone(r).(*witnessv1.Rejection))
	}
	for _, t := range f.st.tables {
		info := t.info()
		// The digest changes in place, so it is copied (as its encoding,
		// about 2 MiB at the default bucket count) while Apply waits.
		digest, err := t.digest.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("witness fsm: snapshot of %s: %w", t.name, err)
		}
		s.tables = append(s.tables, tableSnapshot{
			info:              info,
			entries:           t.entries.prefix(info.Size),
			log:               t.log,
			digest:            digest,
			unavailableReason: t.unavailableReason,
		})
	}
	sort.Slice(s.tables, func(i, j int) bool { return s.tables[i].info.Name < s.tables[j].info.Name })
	return s, nil
}

// Restore replaces the state with a snapshot written by Persist. The new
// state is built and checked completely before it is swapped in.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := readSnapshot(rc)
	if err != nil {
		return fmt.Errorf("witness fsm: restore snapshot: %w", err)
	}
	f.mu.Lock()
	f.st = st
	f.mu.Unlock()
	return nil
}
