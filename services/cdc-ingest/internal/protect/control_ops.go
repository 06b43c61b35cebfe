package protect

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/witnz/witnz/libs/commitment"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/services/cdc-ingest/internal/control"
)

// ControlTimeout bounds how long Unprotect and Accept wait for their entry
// to reach the witness log.
const ControlTimeout = time.Minute

// Errors of Accept.
var (
	ErrNoEntry       = errors.New("no such entry")
	ErrNotAcceptable = errors.New("entry cannot be accepted")
)

// UnprotectResult reports an unprotect.
type UnprotectResult struct {
	Table   string
	LSN     pglogrepl.LSN
	LogSize uint64
}

// Unprotect stops protecting a table: it leaves the publication, and an
// authenticated control message in the same transaction makes the stream
// log UNPROTECT exactly where the table stopped being published. It
// returns once the entry is in the witness log.
func (m *Manager) Unprotect(ctx context.Context, name, reason, by string) (UnprotectResult, error) {
	res := UnprotectResult{Table: name}
	m.mu.Lock()
	tr, ok := m.tables[name]
	m.mu.Unlock()
	if !ok {
		return res, fmt.Errorf("%w: %s is not being protected by this cdc-ingest (see `witnz status`)", ErrNotProtected, name)
	}
	done := m.setBusy(name, "unprotecting")
	m.opts.Pause("unprotecting " + name)
	defer m.opts.Resume()
	payload, err := m.seal(control.Message{Op: control.OpUnprotect, Table: name, Slot: m.opts.Slot, By: by, Reason: reason})
	if err != nil {
		done()
		return res, err
	}
	lsn, err := m.opts.DB.DropFromPublication(ctx, m.opts.Publication, tr.Table.Table, control.Prefix, payload)
	if err != nil {
		done()
		return res, err
	}
	res.LSN = lsn
	info, err := m.waitFor(ctx, name, func(t *witnessv1.TableInfo) bool {
		return t.GetProtection() == witnessv1.Protection_PROTECTION_UNPROTECTED && t.GetLastCommitLsn() >= uint64(lsn)
	})
	done()
	if err != nil {
		return res, fmt.Errorf("%s left the publication at %s but its UNPROTECT entry has not reached the witness log yet (%w): it will when the stream reaches it; check `witnz status`", name, lsn, err)
	}
	res.LogSize = info.GetSize()
	m.opts.Log.Warn("table unprotected", "table", name, "by", by, "reason", reason, "lsn", lsn.String())
	return res, nil
}

// AcceptResult reports an accept.
type AcceptResult struct {
	Table   string
	Seq     uint64
	Op      string
	LSN     pglogrepl.LSN
	LogSize uint64
}

// Accept records an operator's acceptance of the UPDATE or DELETE at seq:
// an ACCEPT entry carrying the transition (key, new data for an UPDATE,
// and the original data the expected state still holds) goes through the
// WAL as an authenticated control message and is logged in order with
// every other change. It returns once the entry is in the witness log.
func (m *Manager) Accept(ctx context.Context, name string, seq uint64, reason, by string) (AcceptResult, error) {
	res := AcceptResult{Table: name, Seq: seq}
	info, err := m.opts.Witness.TableInfo(ctx, name)
	if err != nil {
		return res, err
	}
	if info == nil {
		return res, fmt.Errorf("%w: %s has no witness log", ErrNotProtected, name)
	}
	if seq >= info.GetSize() {
		return res, fmt.Errorf("%w: %s has %d entries; seq %d is beyond them (the seq is in the alert's detail and in `witnz status`)", ErrNoEntry, name, info.GetSize(), seq)
	}
	if seq < info.GetEpochSeq() {
		return res, fmt.Errorf("%w: entry %d of %s is before the table's current baseline (seq %d), which already reflects it", ErrNotAcceptable, seq, name, info.GetEpochSeq())
	}
	e, err := m.entry(ctx, name, seq)
	if err != nil {
		return res, err
	}
	msg := control.Message{Op: control.OpAccept, Table: name, Slot: m.opts.Slot, Seq: seq, By: by, Reason: reason, Key: hex.EncodeToString(e.GetKeyCommit())}
	switch e.GetOp() {
	case witnessv1.Op_OP_UPDATE:
		res.Op = "UPDATE"
		if len(e.GetDataCommit()) == 0 {
			return res, fmt.Errorf("%w: the UPDATE at seq %d of %s carries no data commitment (an unchanged TOASTed value without REPLICA IDENTITY FULL): re-baseline the table with `witnz protect` instead", ErrNotAcceptable, seq, name)
		}
		msg.Data = hex.EncodeToString(e.GetDataCommit())
	case witnessv1.Op_OP_DELETE:
		res.Op = "DELETE"
	default:
		return res, fmt.Errorf("%w: entry %d of %s is a %s; only an UPDATE or DELETE can be accepted (for a TRUNCATE, re-baseline with `witnz protect`)", ErrNotAcceptable, seq, name, e.GetOp())
	}
	old := e.GetOldDataCommit()
	if len(old) == 0 {
		if old, err = m.expectedData(ctx, name, info.GetEpochSeq(), seq, e.GetKeyCommit()); err != nil {
			return res, err
		}
	}
	if len(old) != 0 {
		msg.OldData = hex.EncodeToString(old)
	}
	payload, err := m.seal(msg)
	if err != nil {
		return res, err
	}
	lsn, err := m.opts.DB.EmitMessage(ctx, true, control.Prefix, payload)
	if err != nil {
		return res, err
	}
	res.LSN = lsn
	after, err := m.waitFor(ctx, name, func(t *witnessv1.TableInfo) bool { return t.GetLastCommitLsn() >= uint64(lsn) })
	if err != nil {
		return res, fmt.Errorf("the acceptance of entry %d of %s was written to the WAL at %s but has not reached the witness log yet (%w): it will when the stream reaches it", seq, name, lsn, err)
	}
	res.LogSize = after.GetSize()
	m.opts.Log.Warn("change accepted", "table", name, "seq", seq, "op", res.Op, "by", by, "reason", reason, "lsn", lsn.String())
	return res, nil
}

// entry reads one logged entry.
func (m *Manager) entry(ctx context.Context, name string, seq uint64) (*witnessv1.Entry, error) {
	var out *witnessv1.Entry
	err := m.opts.Witness.Entries(ctx, name, seq, seq+1, func(le *witnessv1.LoggedEntry) error {
		out = le.GetEntry()
		return nil
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		return nil, fmt.Errorf("%w: the witness returned no entry %d of %s", ErrNoEntry, seq, name)
	}
	return out, nil
}

// expectedData finds the data the expected state holds for key before seq:
// the newest BASELINE, INSERT or ACCEPT (with data) of that key in the
// current epoch. On an append-only table UPDATE and DELETE leave it
// unchanged, and the entry being accepted may not carry it.
func (m *Manager) expectedData(ctx context.Context, name string, from, seq uint64, key []byte) ([]byte, error) {
	var found []byte
	want := commitment.Commitment{}
	copy(want[:], key)
	err := m.opts.Witness.Entries(ctx, name, from, seq, func(le *witnessv1.LoggedEntry) error {
		e := le.GetEntry()
		var k commitment.Commitment
		copy(k[:], e.GetKeyCommit())
		if !k.Equal(want) {
			return nil
		}
		switch e.GetOp() {
		case witnessv1.Op_OP_BASELINE, witnessv1.Op_OP_INSERT:
			found = e.GetDataCommit()
		case witnessv1.Op_OP_ACCEPT:
			found = e.GetDataCommit() // nil after an accepted DELETE
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return found, nil
}

// waitFor polls the leader's view of a table until cond holds.
func (m *Manager) waitFor(ctx context.Context, name string, cond func(*witnessv1.TableInfo) bool) (*witnessv1.TableInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, ControlTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		info, err := m.opts.Witness.TableInfo(ctx, name)
		if err == nil && info != nil && cond(info) {
			return info, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// seal seals a control message, through the replay guard when there is one.
func (m *Manager) seal(msg control.Message) ([]byte, error) {
	if m.opts.Guard != nil {
		return m.opts.Guard.Seal(m.opts.Key, msg)
	}
	return control.Seal(m.opts.Key, msg)
}
