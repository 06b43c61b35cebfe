package alerts

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/services/cdc-ingest/internal/config"
)

// Alert types of the tamper signals.
const (
	TypeTruncate               = "cdc.truncate"
	TypeSchemaChanged          = "cdc.schema_changed"
	TypeTableRenamed           = "cdc.table_renamed"
	TypeTableDropped           = "cdc.table_dropped"
	TypeReplicaIdentityChanged = "cdc.replica_identity_changed"
	TypePublicationChanged     = "cdc.publication_changed"
	TypeSlotMissing            = "cdc.slot_missing"
	TypeSlotInvalidated        = "cdc.slot_invalidated"
	TypeSlotLag                = "cdc.slot_lag"
	TypeHeartbeatMissing       = "cdc.heartbeat_missing"
	TypeTableProtected         = "cdc.table_protected"
	TypeTableUnprotected       = "cdc.table_unprotected"
	TypeChangeAccepted         = "cdc.change_accepted"
	TypeForgedControlMessage   = "cdc.forged_control_message"
)

// WAL is the place in the replication stream an alert comes from.
type WAL struct {
	XID uint32
	// CommitLSN is the commit record of the transaction (zero for a
	// non-transactional message).
	CommitLSN  pglogrepl.LSN
	CommitTime time.Time
	// LSN is the message that raised the alert.
	LSN pglogrepl.LSN
	// TxIndex is the tx_index of the log entry the alert goes with.
	TxIndex uint32
}

// Where says how a condition was found: in the replication stream (WAL
// set; the alert id derives from the WAL position) or by a catalog check
// (WAL nil; the id derives from the slot, the table, the type and a
// fingerprint of the observed state, so finding the same condition again
// after a restart stores nothing new).
type Where struct {
	Slot string
	WAL  *WAL
	// At is when a catalog check found the condition.
	At time.Time
	// Episode tells apart two occurrences of an otherwise identical
	// condition found by a catalog check (e.g. the catalog row version of
	// a renamed table); part of the fingerprint.
	Episode string
}

// StateID derives a UUID (version 8) from SHA-256 of the slot, the table,
// the alert type and a fingerprint of the observed state: the id of a
// condition found by polling, the same whenever the same state is found.
func StateID(slot, table, typ, fingerprint string) string {
	h := sha256.New()
	for _, s := range []string{"witnz/alert/cdc-state/v1", slot, table, typ, fingerprint} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x80
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// spec is what every signal alert is built from.
type spec struct {
	where    Where
	typ      string
	severity alertv1.Severity
	table    string
	message  string
	// fingerprint of the observed state, for catalog-check ids.
	fingerprint []string
	// byMessage derives a stream id from the message's own LSN rather than
	// its transaction's commit LSN.
	byMessage bool
	detail    map[string]any
}

func (s spec) build() *alertv1.Alert {
	d := map[string]any{"slot": s.where.Slot}
	if s.table != "" {
		d["table"] = s.table
	}
	for k, v := range s.detail {
		d[k] = v
	}
	var id string
	var at time.Time
	if w := s.where.WAL; w != nil {
		d["xid"] = w.XID
		d["commit_lsn"] = w.CommitLSN.String()
		if w.LSN != 0 {
			d["lsn"] = w.LSN.String()
		}
		d["commit_time"] = rfc3339(w.CommitTime)
		d["found_by"] = "replication stream"
		pos := w.CommitLSN
		if pos == 0 || s.byMessage {
			pos = w.LSN
		}
		id = ID(s.where.Slot, s.table, pos, w.TxIndex, s.typ)
		at = w.CommitTime
	} else {
		d["checked_at"] = rfc3339(s.where.At)
		d["found_by"] = "catalog check"
		fp := strings.Join(append(s.fingerprint, s.where.Episode), "\x00")
		id = StateID(s.where.Slot, s.table, s.typ, fp)
		at = s.where.At
	}
	detail, err := structpb.NewStruct(d)
	if err != nil {
		// Only strings, numbers and bools go in: NewStruct cannot fail.
		detail = &structpb.Struct{}
	}
	a := &alertv1.Alert{
		AlertId:  id,
		Type:     s.typ,
		Severity: s.severity,
		Message:  s.message,
		Source:   Source,
		Table:    s.table,
		Detail:   detail,
	}
	if !at.IsZero() {
		a.OccurredAt = timestamppb.New(at)
	}
	return a
}

// at is " at LSN" for a condition found in the stream, else "".
func (w Where) at() string {
	switch {
	case w.WAL == nil:
		return ""
	case w.WAL.LSN != 0:
		return " at " + w.WAL.LSN.String()
	case w.WAL.CommitLSN != 0:
		// pgoutput sends a RELATION message without a WAL position of
		// its own.
		return " in the transaction committed at " + w.WAL.CommitLSN.String()
	}
	return ""
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// Truncate describes a TRUNCATE of a protected table.
type Truncate struct {
	Where
	Table string
	Mode  witnessv1.TableMode
	// Cascade and RestartIdentity are the statement's options.
	Cascade, RestartIdentity bool
	// Relations are all the relations the statement truncated.
	Relations []string
}

// TruncateAlert is CRITICAL on an append-only table (every logged row is
// gone but still expected), HIGH on a mutable one.
func TruncateAlert(t Truncate) *alertv1.Alert {
	sev, fix := alertv1.Severity_SEVERITY_CRITICAL, "every logged row is still expected, so verification reports them missing: restore them from a backup, or accept their removal with `witnz accept`"
	if t.Mode == witnessv1.TableMode_TABLE_MODE_MUTABLE {
		sev, fix = alertv1.Severity_SEVERITY_HIGH, "the expected state is now empty: confirm the TRUNCATE was authorized"
	}
	var opts []string
	if t.Cascade {
		opts = append(opts, "CASCADE")
	}
	if t.RestartIdentity {
		opts = append(opts, "RESTART IDENTITY")
	}
	stmt := "TRUNCATE"
	if len(opts) > 0 {
		stmt += " " + strings.Join(opts, " ")
	}
	xid := uint32(0)
	if t.WAL != nil {
		xid = t.WAL.XID
	}
	return spec{
		where: t.Where, typ: TypeTruncate, severity: sev, table: t.Table,
		message: fmt.Sprintf("%s of %s table %s in xid %d%s: %s", stmt, config.ModeName(t.Mode), t.Table, xid, t.at(), fix),
		detail: map[string]any{
			"mode": config.ModeName(t.Mode), "cascade": t.Cascade, "restart_identity": t.RestartIdentity,
			"relations": strings.Join(t.Relations, ", "), "fix": fix,
		},
	}.build()
}

// SchemaChange describes a protected table whose schema differs from the
// one its log expects.
type SchemaChange struct {
	Where
	Table string
	// Old is the expected schema described (empty when only its
	// commitment is known); New is the schema found.
	Old, New string
	Diff     string
	// OldCommit and NewCommit are the schema commitments, hex.
	OldCommit, NewCommit string
}

// SchemaChanged is HIGH.
func SchemaChanged(c SchemaChange) *alertv1.Alert {
	old, diff := c.Old, c.Diff
	if old == "" {
		old = "unknown (only its commitment " + c.OldCommit + " is logged)"
	}
	if diff == "" {
		diff = "the previous schema is not known here; compare with the table's definition"
	}
	verb := "is now"
	if c.WAL != nil {
		verb = "was logged as"
	}
	return spec{
		where: c.Where, typ: TypeSchemaChanged, severity: alertv1.Severity_SEVERITY_HIGH, table: c.Table,
		message:     fmt.Sprintf("schema of protected table %s changed (%s)%s; it %s: %s. If the change was not planned, investigate who ran the DDL", c.Table, diff, c.at(), verb, c.New),
		fingerprint: []string{c.OldCommit, c.NewCommit},
		detail: map[string]any{
			"old_schema": old, "new_schema": c.New, "diff": diff,
			"old_schema_commit": c.OldCommit, "new_schema_commit": c.NewCommit,
		},
	}.build()
}

// ReplicaIdentityChange describes a protected table whose replica identity
// differs from the expected one.
type ReplicaIdentityChange struct {
	Where
	Table string
	Mode  witnessv1.TableMode
	// Old and New are the replica identities ("default", "full", ...);
	// Old is "unknown" when only the schema commitment is known.
	Old, New string
	// Identifies reports whether the new identity still identifies every
	// row in UPDATE and DELETE for the table's mode.
	Identifies bool
	// Fix is the statement that restores what the mode needs.
	Fix string
	// SchemaCommit is the new schema commitment, hex.
	SchemaCommit string
}

// ReplicaIdentityChanged is HIGH.
func ReplicaIdentityChanged(c ReplicaIdentityChange) *alertv1.Alert {
	effect := "rows are still identified"
	if !c.Identifies {
		effect = "UPDATE and DELETE no longer carry what identifies the row"
	}
	return spec{
		where: c.Where, typ: TypeReplicaIdentityChanged, severity: alertv1.Severity_SEVERITY_HIGH, table: c.Table,
		message:     fmt.Sprintf("replica identity of %s table %s changed from %s to %s%s (%s): %s", config.ModeName(c.Mode), c.Table, c.Old, c.New, c.at(), effect, c.Fix),
		fingerprint: []string{c.Old, c.New, c.SchemaCommit},
		detail: map[string]any{
			"mode": config.ModeName(c.Mode), "old_replica_identity": c.Old, "new_replica_identity": c.New,
			"identifies_rows": c.Identifies, "fix": c.Fix, "schema_commit": c.SchemaCommit,
		},
	}.build()
}

// Rename describes a protected table found under another name.
type Rename struct {
	Where
	// Table is the protected name (the name of its log).
	Table   string
	OID     uint32
	NewName string
}

// TableRenamed is CRITICAL: the log keeps following the table by OID, and
// anything now created under the old name is not protected.
func TableRenamed(r Rename) *alertv1.Alert {
	return spec{
		where: r.Where, typ: TypeTableRenamed, severity: alertv1.Severity_SEVERITY_CRITICAL, table: r.Table,
		message:     fmt.Sprintf("protected table %s was renamed to %s%s; witnz keeps logging it (OID %d) under %s: rename it back (ALTER TABLE %s RENAME ...), or unprotect it and protect the new name; a table created under the old name is NOT protected", r.Table, r.NewName, r.at(), r.OID, r.Table, r.NewName),
		fingerprint: []string{fmt.Sprint(r.OID), r.NewName},
		detail:      map[string]any{"oid": r.OID, "new_name": r.NewName},
	}.build()
}

// Dropped describes a protected table that no longer exists.
type Dropped struct {
	Where
	Table string
	OID   uint32
}

// TableDropped is CRITICAL.
func TableDropped(d Dropped) *alertv1.Alert {
	return spec{
		where: d.Where, typ: TypeTableDropped, severity: alertv1.Severity_SEVERITY_CRITICAL, table: d.Table,
		message:     fmt.Sprintf("protected table %s (OID %d) was dropped: its log keeps every row it had; restore it from a backup and verify against the log, or unprotect it if the drop was intended", d.Table, d.OID),
		fingerprint: []string{fmt.Sprint(d.OID)},
		detail:      map[string]any{"oid": d.OID},
	}.build()
}

// How a publication changed.
const (
	// PublicationTableRemoved: a protected table is no longer published.
	PublicationTableRemoved = "removed"
	// PublicationTableAdded: a table that is not protected is published.
	PublicationTableAdded = "added"
	// PublicationDropped: the publication is gone.
	PublicationDropped = "dropped"
	// PublicationTableRestored: a protected table found outside the
	// publication at start-up was added back.
	PublicationTableRestored = "restored"
)

// PublicationChange describes a change of the deployment's publication
// made by someone else.
type PublicationChange struct {
	Where
	Publication string
	Change      string
	// Table and OID name the table removed or added.
	Table string
	OID   uint32
}

// PublicationChanged is CRITICAL when a protected table is no longer
// streamed (removed, or the publication dropped), HIGH when a table that
// is not protected was added.
func PublicationChanged(c PublicationChange) *alertv1.Alert {
	sev := alertv1.Severity_SEVERITY_CRITICAL
	var msg string
	switch c.Change {
	case PublicationTableAdded:
		sev = alertv1.Severity_SEVERITY_HIGH
		msg = fmt.Sprintf("table %s was added to publication %s%s but is not protected: its changes are streamed and ignored; remove it (ALTER PUBLICATION %s DROP TABLE %s) or protect it with `witnz protect %s`", c.Table, c.Publication, c.at(), quoteIdent(c.Publication), c.Table, c.Table)
	case PublicationTableRestored:
		msg = fmt.Sprintf("protected table %s was removed from publication %s while cdc-ingest was not running; it has been added back, but changes made while it was out are not in its log: run `witnz verify %s` to find the rows they touched", c.Table, c.Publication, c.Table)
	case PublicationDropped:
		msg = fmt.Sprintf("publication %s was dropped: no protected table's changes are streamed; restart cdc-ingest to recreate it, and investigate who dropped it", c.Publication)
	default:
		msg = fmt.Sprintf("protected table %s was removed from publication %s: its changes are no longer streamed; add it back with ALTER PUBLICATION %s ADD TABLE %s and verify the table", c.Table, c.Publication, quoteIdent(c.Publication), c.Table)
	}
	return spec{
		where: c.Where, typ: TypePublicationChanged, severity: sev, table: c.Table,
		message:     msg,
		fingerprint: []string{c.Change, fmt.Sprint(c.OID)},
		detail:      map[string]any{"publication": c.Publication, "change": c.Change, "oid": c.OID},
	}.build()
}

func quoteIdent(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
		}
	}
	return s
}

// SlotState describes the replication slot for slot alerts.
type SlotState struct {
	Where
	// ConfirmedFlush is the slot's confirmed_flush_lsn (for a missing slot:
	// the last one seen, zero if never).
	ConfirmedFlush pglogrepl.LSN
	WALStatus      string
}

// SlotMissing is CRITICAL.
func SlotMissing(s SlotState) *alertv1.Alert {
	last := "never seen"
	if s.ConfirmedFlush != 0 {
		last = s.ConfirmedFlush.String()
	}
	return spec{
		where: s.Where, typ: TypeSlotMissing, severity: alertv1.Severity_SEVERITY_CRITICAL,
		message:     fmt.Sprintf("replication slot %s does not exist: changes made while it is gone are lost to witnz; cdc-ingest recreates it when it reconnects — investigate who dropped it and verify every protected table", s.Slot),
		fingerprint: []string{last},
		detail:      map[string]any{"last_confirmed_flush_lsn": last},
	}.build()
}

// SlotInvalidated is CRITICAL.
func SlotInvalidated(s SlotState) *alertv1.Alert {
	return spec{
		where: s.Where, typ: TypeSlotInvalidated, severity: alertv1.Severity_SEVERITY_CRITICAL,
		message:     fmt.Sprintf("replication slot %s was invalidated by PostgreSQL (wal_status %s): the WAL after %s is gone and those changes cannot be logged; drop and recreate the slot with SELECT pg_drop_replication_slot('%s'); then verify every protected table, and raise max_slot_wal_keep_size", s.Slot, s.WALStatus, s.ConfirmedFlush, s.Slot),
		fingerprint: []string{s.WALStatus, s.ConfirmedFlush.String()},
		detail:      map[string]any{"wal_status": s.WALStatus, "confirmed_flush_lsn": s.ConfirmedFlush.String()},
	}.build()
}

// Lag describes a slot falling behind.
type Lag struct {
	Where
	LagBytes, MaxLagBytes uint64
	ConfirmedFlush        pglogrepl.LSN
	ServerLSN             pglogrepl.LSN
	// Level counts the doublings of MaxLagBytes the lag reached (0 for
	// over the threshold, 1 for over twice it, ...).
	Level int
}

// SlotLag is HIGH.
func SlotLag(l Lag) *alertv1.Alert {
	return spec{
		where: l.Where, typ: TypeSlotLag, severity: alertv1.Severity_SEVERITY_HIGH,
		message:     fmt.Sprintf("replication slot %s is %d bytes behind the server (threshold %d): PostgreSQL keeps that WAL on disk and protected changes reach the witness late; check that cdc-ingest streams and the witness cluster accepts appends", l.Slot, l.LagBytes, l.MaxLagBytes),
		fingerprint: []string{l.ConfirmedFlush.String(), fmt.Sprint(l.Level)},
		detail: map[string]any{
			"lag_bytes": float64(l.LagBytes), "max_lag_bytes": float64(l.MaxLagBytes), "level": l.Level,
			"confirmed_flush_lsn": l.ConfirmedFlush.String(), "server_lsn": l.ServerLSN.String(),
		},
	}.build()
}

// Heartbeat describes heartbeats that stopped coming back through the
// stream.
type Heartbeat struct {
	Where
	Age, Timeout time.Duration
	// LastLSN and LastSentAt are the newest heartbeat seen (zero: none
	// since start).
	LastLSN    pglogrepl.LSN
	LastSentAt time.Time
}

// HeartbeatMissing is HIGH.
func HeartbeatMissing(h Heartbeat) *alertv1.Alert {
	last := "none since start"
	if h.LastLSN != 0 {
		last = h.LastLSN.String()
	}
	return spec{
		where: h.Where, typ: TypeHeartbeatMissing, severity: alertv1.Severity_SEVERITY_HIGH,
		message:     fmt.Sprintf("no heartbeat came back through replication slot %s for %s (timeout %s, last at %s): the stream is stopped or stalled; check cdc-ingest's replication stream, the witness cluster and PostgreSQL", h.Slot, h.Age.Round(time.Second), h.Timeout, last),
		fingerprint: []string{last},
		detail: map[string]any{
			"age_seconds": h.Age.Seconds(), "timeout_seconds": h.Timeout.Seconds(),
			"last_heartbeat_lsn": last, "last_heartbeat_sent_at": rfc3339(h.LastSentAt),
		},
	}.build()
}

// Protection describes a table protected or unprotected.
type Protection struct {
	Where
	Table string
	Mode  witnessv1.TableMode
	// By is the operator identity that asked, Reason what they gave.
	By, Reason string
	// BaselineRows counts the rows logged as the baseline (protect only).
	BaselineRows uint64
}

// TableProtected is MEDIUM.
func TableProtected(p Protection) *alertv1.Alert {
	return spec{
		where: p.Where, typ: TypeTableProtected, severity: alertv1.Severity_SEVERITY_MEDIUM, table: p.Table,
		message: fmt.Sprintf("table %s is now protected (%s, %d baseline rows)%s, requested by %s", p.Table, config.ModeName(p.Mode), p.BaselineRows, p.at(), orUnknown(p.By)),
		detail:  map[string]any{"mode": config.ModeName(p.Mode), "by": p.By, "reason": p.Reason, "baseline_rows": float64(p.BaselineRows)},
	}.build()
}

// TableUnprotected is HIGH: unprotecting is an attacker's first move.
func TableUnprotected(p Protection) *alertv1.Alert {
	return spec{
		where: p.Where, typ: TypeTableUnprotected, severity: alertv1.Severity_SEVERITY_HIGH, table: p.Table,
		message: fmt.Sprintf("table %s is no longer protected%s, requested by %s (reason: %s): its changes are not logged from here on; protect it again with `witnz protect %s` if this was not intended", p.Table, p.at(), orUnknown(p.By), orUnknown(p.Reason), p.Table),
		detail:  map[string]any{"mode": config.ModeName(p.Mode), "by": p.By, "reason": p.Reason},
	}.build()
}

// Accept describes an accepted change.
type Accept struct {
	Where
	Table string
	// Seq is the log entry accepted; Key, Data and OldData the
	// transition's commitments (hex).
	Seq                uint64
	Key, Data, OldData string
	By, Reason         string
}

// ChangeAccepted is MEDIUM.
func ChangeAccepted(a Accept) *alertv1.Alert {
	return spec{
		where: a.Where, typ: TypeChangeAccepted, severity: alertv1.Severity_SEVERITY_MEDIUM, table: a.Table,
		message: fmt.Sprintf("change at seq %d of %s accepted by %s (reason: %s)%s: the expected state now follows it", a.Seq, a.Table, orUnknown(a.By), orUnknown(a.Reason), a.at()),
		detail: map[string]any{
			"seq": float64(a.Seq), "key": a.Key, "data": a.Data, "old_data": a.OldData, "by": a.By, "reason": a.Reason,
		},
	}.build()
}

// Forged describes a control message that was refused.
type Forged struct {
	Where
	// Reason says why it was refused (bad MAC, malformed, replayed, ...).
	Reason        string
	Transactional bool
	// Op, Table and By are what the message claims, when it parsed.
	Op, Table, By string
}

// ForgedControlMessage is CRITICAL: someone who can write WAL (a database
// superuser) tried to steer witnz. The message changed nothing.
func ForgedControlMessage(f Forged) *alertv1.Alert {
	claim := ""
	if f.Op != "" {
		claim = fmt.Sprintf(" claiming %q", f.Op)
		if f.Table != "" {
			claim += " on " + f.Table
		}
		if f.By != "" {
			claim += " by " + f.By
		}
	}
	// The claimed table is evidence, not the alert's subject: keep it out
	// of the id and the table field.
	return spec{
		where: f.Where, typ: TypeForgedControlMessage, severity: alertv1.Severity_SEVERITY_CRITICAL, byMessage: true,
		message: fmt.Sprintf("refused a witnz control message%s%s: %s; it changed nothing — someone with the right to write WAL (pg_logical_emit_message) tried to steer witnz: investigate database superusers and replication roles", claim, f.at(), f.Reason),
		detail: map[string]any{
			"reason": f.Reason, "transactional": f.Transactional, "claimed_op": f.Op, "claimed_table": f.Table, "claimed_by": f.By,
		},
	}.build()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
