// Package monitor finds the tamper signals that do not come with a change
// in the replication stream, by polling the catalog: the replication slot
// (missing, invalidated, falling behind), every protected table (dropped,
// renamed, schema or replica identity changed) and the publication
// (protected table removed, other table added, publication dropped). It
// also writes heartbeats through the WAL and raises an alert when they
// stop coming back through the stream.
//
// A condition is reported once: when a later poll finds the same state
// nothing is sent again, and the alert id derives from the slot, the
// table, the type and a fingerprint of the state, so the alert service
// stores it once even when a restart finds it again. When the condition
// clears and comes back it is reported again.
package monitor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/witnz/witnz/libs/commitment"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/services/cdc-ingest/internal/alerts"
	"github.com/witnz/witnz/services/cdc-ingest/internal/capture"
	"github.com/witnz/witnz/services/cdc-ingest/internal/control"
	"github.com/witnz/witnz/services/cdc-ingest/internal/schema"
)

// Querier runs a query returning one row (*pgxpool.Pool satisfies it).
type Querier = schema.Querier

// Sender delivers alerts (alerts.Sender satisfies it).
type Sender interface {
	Send(ctx context.Context, batch []*alertv1.Alert) error
}

// Options configure a Monitor.
type Options struct {
	// DB is a normal (non-replication) connection pool to the protected
	// database.
	DB  Querier
	Key commitment.Key
	// Guard seals the heartbeats (so that it knows them as this process's
	// own); nil seals with control.Seal.
	Guard       *control.ReplayGuard
	Slot        string
	Publication string
	// Interval is how often the catalog is checked.
	Interval time.Duration
	// HeartbeatInterval is how often a heartbeat is written; one that has
	// not come back through the stream for HeartbeatTimeout raises an
	// alert.
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
	// MaxLagBytes is the slot lag that raises an alert.
	MaxLagBytes uint64
	// Tables returns the protected tables and what their logs expect; it
	// is called at every check.
	Tables func() []capture.Table
	// Streaming, when set, reports whether this process streams the slot;
	// heartbeats are written only while it does. A heartbeat no stream of
	// this process will read is of no use, and another cdc-ingest holding
	// the slot would refuse it as a control message it did not seal.
	Streaming func() bool
	// Announced is told of every schema change and rename whose alert was
	// delivered, so that the decoder does not alert it again when the
	// stream reaches it.
	Announced *capture.Announcements
	Alerts    Sender
	Log       *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Status is what the monitor last found.
type Status struct {
	// LastHeartbeat is when the newest heartbeat seen in the stream was
	// written (zero before the first); LastHeartbeatLSN is its position.
	LastHeartbeat    time.Time
	LastHeartbeatLSN pglogrepl.LSN
	// HeartbeatAge is the time since the newest heartbeat (or since the
	// monitor started or resumed, when that is later) as of the last
	// check.
	HeartbeatAge time.Duration
	// LagBytes is the slot's lag behind the server at the last check.
	LagBytes          uint64
	ConfirmedFlushLSN pglogrepl.LSN
	// LastCheck is when the last check ended; Checks counts them.
	LastCheck time.Time
	Checks    uint64
	// Paused is the reason given to Pause, empty when running.
	Paused string
}

// Monitor polls the catalog and writes heartbeats.
type Monitor struct {
	opts    Options
	started time.Time

	mu          sync.Mutex
	hbAt        time.Time
	hbLSN       pglogrepl.LSN
	paused      int
	pauseReason string
	resumedAt   time.Time
	status      Status

	// Only the check goroutine uses what follows.
	active        map[string]string // condition key → state reported
	lag           *lagEpisode
	lastConfirmed pglogrepl.LSN
	pubOID        int64
	prrel         map[uint32]int64 // protected table OID → its pg_publication_rel row
	checkFailed   bool
}

// lagEpisode is a stretch of checks with the slot lag over MaxLagBytes.
// Its level counts the doublings of the threshold the lag reached: it is
// reported again only when it reaches a higher level.
type lagEpisode struct {
	start   pglogrepl.LSN // confirmed flush LSN when the lag first went over
	level   int           // highest level reported, -1 before the first
	pending int           // level of the alert being sent
}

// New returns a monitor; Run starts it.
func New(opts Options) *Monitor {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Monitor{opts: opts, active: map[string]string{}, prrel: map[uint32]int64{}}
}

// HeartbeatSeen records a heartbeat that came back through the stream: it
// was written at sentAt and read at lsn. Safe for concurrent use.
func (m *Monitor) HeartbeatSeen(sentAt time.Time, lsn pglogrepl.LSN) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if sentAt.After(m.hbAt) {
		m.hbAt, m.hbLSN = sentAt, lsn
		m.status.LastHeartbeat, m.status.LastHeartbeatLSN = sentAt, lsn
	}
}

// Pause suspends the heartbeat and publication checks, e.g. while a table
// is being protected or unprotected (the stream is paused and the
// publication changes on purpose). Pauses nest; each needs a Resume.
func (m *Monitor) Pause(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.paused++
	m.pauseReason = reason
	m.status.Paused = reason
}

// Resume ends a Pause. The heartbeat age counts from the last Resume at
// most, so a long pause does not raise an alert by itself.
func (m *Monitor) Resume() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.paused == 0 {
		return
	}
	m.paused--
	if m.paused == 0 {
		m.pauseReason, m.status.Paused = "", ""
		m.resumedAt = m.opts.Now()
	}
}

// Status reports what the last check found. Safe for concurrent use.
func (m *Monitor) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

// Run writes heartbeats and checks the catalog until ctx ends; it returns
// nil then. Failing queries are logged and retried at the next interval.
func (m *Monitor) Run(ctx context.Context) error {
	m.mu.Lock()
	m.started = m.opts.Now()
	m.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { m.every(ctx, m.opts.HeartbeatInterval, m.beat) })
	wg.Go(func() { m.every(ctx, m.opts.Interval, m.Check) })
	wg.Wait()
	return nil
}

func (m *Monitor) every(ctx context.Context, d time.Duration, fn func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		fn(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// awaitStreaming reports whether this process streams the slot, waiting
// up to one heartbeat interval for a reconnecting stream, so that a short
// interruption does not delay the next heartbeat by a whole interval.
func (m *Monitor) awaitStreaming(ctx context.Context) bool {
	if m.opts.Streaming == nil || m.opts.Streaming() {
		return true
	}
	deadline := time.NewTimer(m.opts.HeartbeatInterval)
	defer deadline.Stop()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return false
		case <-poll.C:
			if m.opts.Streaming() {
				return true
			}
		}
	}
}

// beat writes one heartbeat: a non-transactional logical decoding
// message, which the stream sees at once, outside any transaction.
func (m *Monitor) beat(ctx context.Context) {
	if !m.awaitStreaming(ctx) {
		return
	}
	seal := control.Seal
	if m.opts.Guard != nil {
		seal = m.opts.Guard.Seal
	}
	payload, err := seal(m.opts.Key, control.Message{Op: control.OpHeartbeat, Slot: m.opts.Slot})
	if err != nil {
		m.opts.Log.Error("seal heartbeat", "error", err)
		return
	}
	var lsn string
	err = m.opts.DB.QueryRow(ctx, `SELECT pg_logical_emit_message(false, $1, $2::text)::text`, control.Prefix, string(payload)).Scan(&lsn)
	if err != nil && ctx.Err() == nil {
		m.opts.Log.Warn("heartbeat not written", "error", err)
		return
	}
	m.opts.Log.Debug("heartbeat written", "lsn", lsn)
}

// finding is a condition found by a check: key identifies it, state is
// what was observed (reported again only when it changes).
type finding struct {
	key, state string
	alerts     []*alertv1.Alert
	// delivered, when set, is called once the alerts were delivered.
	delivered func()
}

// Check runs every check once and sends the alerts for new conditions.
// Run calls it every Interval.
func (m *Monitor) Check(ctx context.Context) {
	now := m.opts.Now()
	m.mu.Lock()
	paused := m.paused > 0
	m.mu.Unlock()

	var found []finding
	scopes := map[string]bool{} // scopes checked completely this time
	var errs []error
	tables := m.opts.Tables()

	f, err := m.checkSlot(ctx, now)
	if err == nil {
		scopes["slot"] = true
		found = append(found, f...)
	}
	errs = append(errs, err)

	existing := map[uint32]bool{}
	for _, t := range tables {
		f, exists, err := m.checkTable(ctx, t, now)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		scopes["table\x00"+t.String()] = true
		existing[t.OID] = exists
		found = append(found, f...)
	}
	if !paused {
		f, err := m.checkPublication(ctx, tables, existing, now)
		if err == nil {
			scopes["publication"] = true
			found = append(found, f...)
		}
		errs = append(errs, err)
		if f := m.checkHeartbeat(now); f != nil {
			found = append(found, *f)
		}
		scopes["heartbeat"] = true
	}
	if err := errors.Join(errs...); err != nil {
		if !m.checkFailed && ctx.Err() == nil {
			m.opts.Log.Warn("catalog check failed; retrying at the next interval", "error", err)
		}
		m.checkFailed = true
	} else {
		m.checkFailed = false
	}

	m.report(ctx, found, scopes)
	if m.lag != nil && m.active[key("slot", "lag")] == lagState(m.lag.start, m.lag.pending) {
		m.lag.level = max(m.lag.level, m.lag.pending)
	}
	m.mu.Lock()
	m.status.LastCheck = m.opts.Now()
	m.status.Checks++
	m.mu.Unlock()
}

// report sends the alerts of conditions not reported yet, and forgets the
// conditions of checked scopes that are gone.
func (m *Monitor) report(ctx context.Context, found []finding, scopes map[string]bool) {
	current := map[string]bool{}
	var batch []*alertv1.Alert
	var keys []finding
	for _, f := range found {
		current[f.key] = true
		if m.active[f.key] == f.state {
			continue
		}
		batch = append(batch, f.alerts...)
		keys = append(keys, f)
	}
	for _, key := range slices.Collect(maps.Keys(m.active)) {
		scope, _, _ := strings.Cut(key, "\x01")
		if scopes[scope] && !current[key] {
			delete(m.active, key)
		}
	}
	if len(batch) == 0 {
		return
	}
	for _, a := range batch {
		m.opts.Log.Warn("tamper signal", "type", a.GetType(), "severity", a.GetSeverity().String(), "table", a.GetTable(), "message", a.GetMessage())
	}
	if err := m.opts.Alerts.Send(ctx, batch); err != nil {
		if ctx.Err() == nil {
			m.opts.Log.Error("alerts not delivered; the next check tries again", "alerts", len(batch), "error", err)
		}
		return
	}
	for _, f := range keys {
		m.active[f.key] = f.state
		if f.delivered != nil {
			f.delivered()
		}
	}
}

func key(scope string, parts ...string) string {
	return scope + "\x01" + strings.Join(parts, "\x00")
}

const slotSQL = `
SELECT pg_current_wal_lsn()::text, s.slot_name IS NOT NULL, coalesce(s.wal_status, ''), coalesce(s.confirmed_flush_lsn::text, '')
FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = $1`

func (m *Monitor) checkSlot(ctx context.Context, now time.Time) ([]finding, error) {
	var serverText, status, confirmedText string
	var exists bool
	if err := m.opts.DB.QueryRow(ctx, slotSQL, m.opts.Slot).Scan(&serverText, &exists, &status, &confirmedText); err != nil {
		return nil, fmt.Errorf("read replication slot %s: %w", m.opts.Slot, err)
	}
	where := alerts.Where{Slot: m.opts.Slot, At: now}
	if !exists {
		m.lag = nil
		where.Episode = m.lastConfirmed.String()
		return []finding{{
			key: key("slot", "missing"), state: m.lastConfirmed.String(),
			alerts: []*alertv1.Alert{alerts.SlotMissing(alerts.SlotState{Where: where, ConfirmedFlush: m.lastConfirmed})},
		}}, nil
	}
	server, err := pglogrepl.ParseLSN(serverText)
	if err != nil {
		return nil, err
	}
	var confirmed pglogrepl.LSN
	if confirmedText != "" {
		if confirmed, err = pglogrepl.ParseLSN(confirmedText); err != nil {
			return nil, err
		}
		m.lastConfirmed = confirmed
	}
	var out []finding
	if status == "lost" {
		out = append(out, finding{
			key: key("slot", "invalidated"), state: confirmed.String(),
			alerts: []*alertv1.Alert{alerts.SlotInvalidated(alerts.SlotState{Where: where, ConfirmedFlush: confirmed, WALStatus: status})},
		})
	}
	var lag uint64
	if confirmed != 0 && server > confirmed {
		lag = uint64(server - confirmed)
	}
	m.mu.Lock()
	m.status.LagBytes, m.status.ConfirmedFlushLSN = lag, confirmed
	m.mu.Unlock()
	if lag <= m.opts.MaxLagBytes || m.opts.MaxLagBytes == 0 {
		m.lag = nil
		return out, nil
	}
	level := 0
	for q := lag / m.opts.MaxLagBytes; q >= 2; q /= 2 {
		level++
	}
	if m.lag == nil {
		m.lag = &lagEpisode{start: confirmed, level: -1}
	}
	k := key("slot", "lag")
	if level <= m.lag.level {
		// Still over, but not twice as far as last reported: not news.
		return append(out, finding{key: k, state: m.active[k]}), nil
	}
	where.Episode = m.lag.start.String()
	m.lag.pending = level
	return append(out, finding{
		key: k, state: lagState(m.lag.start, level),
		alerts: []*alertv1.Alert{alerts.SlotLag(alerts.Lag{Where: where, LagBytes: lag, MaxLagBytes: m.opts.MaxLagBytes, ConfirmedFlush: confirmed, ServerLSN: server, Level: level})},
	}), nil
}

func lagState(start pglogrepl.LSN, level int) string { return fmt.Sprintf("%s/%d", start, level) }

// tableSQL reads a table's name and the transaction ids that last wrote
// its catalog rows (pg_class, its columns, its indexes): every DDL leaves
// its own, so they tell apart two identical changes made by different
// statements.
const tableSQL = `
SELECT n.nspname::text || '.' || c.relname::text, c.xmin::text,
  c.xmin::text || '/' ||
  (SELECT coalesce(string_agg(a.xmin::text, ',' ORDER BY a.attnum), '') FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0) || '/' ||
  (SELECT coalesce(string_agg(i.xmin::text, ',' ORDER BY i.indexrelid), '') FROM pg_index i WHERE i.indrelid = c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1`

// checkTable checks that a protected table exists under its name with the
// schema its log expects.
func (m *Monitor) checkTable(ctx context.Context, t capture.Table, now time.Time) ([]finding, bool, error) {
	name := t.String()
	scope := "table\x00" + name
	where := alerts.Where{Slot: m.opts.Slot, At: now}
	var current, xmin, catalogVersion string
	err := m.opts.DB.QueryRow(ctx, tableSQL, t.OID).Scan(&current, &xmin, &catalogVersion)
	if errors.Is(err, pgx.ErrNoRows) {
		return []finding{{
			key: key(scope, "dropped"), state: "dropped",
			alerts: []*alertv1.Alert{alerts.TableDropped(alerts.Dropped{Where: where, Table: name, OID: t.OID})},
		}}, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("look up protected table %s (OID %d): %w", name, t.OID, err)
	}
	var out []finding
	if current != name {
		where.Episode = xmin
		out = append(out, finding{
			key: key(scope, "renamed"), state: current,
			alerts:    []*alertv1.Alert{alerts.TableRenamed(alerts.Rename{Where: where, Table: name, OID: t.OID, NewName: current})},
			delivered: func() { m.opts.Announced.RenameAlerted(name, current) },
		})
		where.Episode = ""
	}
	if t.SchemaCommit.IsZero() {
		return out, true, nil
	}
	got, err := schema.Load(ctx, m.opts.DB, t.OID)
	if errors.Is(err, schema.ErrNotFound) {
		return out, false, nil // dropped since the query above: the next check reports it
	}
	if err != nil {
		return nil, true, fmt.Errorf("read the schema of %s: %w", name, err)
	}
	c := got.Commit(m.opts.Key.ForTable(t.Schema, t.Name).NewCommitter())
	// The same change made again later (A → B, back, then A → B) is a new
	// alert: the DDL's transaction ids set it apart.
	v := sha256.Sum256([]byte(catalogVersion))
	where.Episode = hex.EncodeToString(v[:8])
	if as := capture.SchemaAlerts(t, got, c, where); len(as) > 0 {
		from := t.SchemaCommit
		out = append(out, finding{
			key: key(scope, "schema"), state: schema.Hex(t.SchemaCommit) + schema.Hex(c), alerts: as,
			delivered: func() { m.opts.Announced.SchemaAlerted(name, from, c) },
		})
	}
	return out, true, nil
}

// publicationSQL lists the members of publication $1 as top-level
// relations (a leaf partition published on its own counts as its root),
// with their pg_publication_rel row when they are listed by name.
const publicationSQL = `
WITH pub AS (
  SELECT oid, pubname FROM pg_publication WHERE pubname = $1
), members AS (
  SELECT DISTINCT coalesce(pg_partition_root(c.oid)::oid, c.oid) AS relid
  FROM pub
  JOIN pg_publication_tables pt ON pt.pubname = pub.pubname
  JOIN pg_namespace n ON n.nspname = pt.schemaname
  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
)
SELECT pub.oid::int8,
  coalesce(array_agg(m.relid::int8 ORDER BY m.relid) FILTER (WHERE m.relid IS NOT NULL), '{}'),
  coalesce(array_agg(rn.nspname::text || '.' || r.relname::text ORDER BY m.relid) FILTER (WHERE m.relid IS NOT NULL), '{}'),
  coalesce(array_agg(coalesce(pr.oid::int8, 0) ORDER BY m.relid) FILTER (WHERE m.relid IS NOT NULL), '{}')
FROM pub
LEFT JOIN members m ON true
LEFT JOIN pg_class r ON r.oid = m.relid
LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace
LEFT JOIN pg_publication_rel pr ON pr.prpubid = pub.oid AND pr.prrelid = m.relid
GROUP BY pub.oid`

// checkPublication compares the publication's members with the protected
// tables (existing says which of them still exist: a dropped table left
// the publication with it and is reported as dropped).
func (m *Monitor) checkPublication(ctx context.Context, tables []capture.Table, existing map[uint32]bool, now time.Time) ([]finding, error) {
	var pubOID int64
	var oids, prrels []int64
	var names []string
	err := m.opts.DB.QueryRow(ctx, publicationSQL, m.opts.Publication).Scan(&pubOID, &oids, &names, &prrels)
	where := alerts.Where{Slot: m.opts.Slot, At: now}
	if errors.Is(err, pgx.ErrNoRows) {
		where.Episode = fmt.Sprint(m.pubOID)
		return []finding{{
			key: key("publication", "dropped"), state: "dropped",
			alerts: []*alertv1.Alert{alerts.PublicationChanged(alerts.PublicationChange{Where: where, Publication: m.opts.Publication, Change: alerts.PublicationDropped})},
		}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list the tables of publication %s: %w", m.opts.Publication, err)
	}
	if len(names) != len(oids) || len(prrels) != len(oids) {
		return nil, fmt.Errorf("list the tables of publication %s: inconsistent catalog answer", m.opts.Publication)
	}
	m.pubOID = pubOID
	members := make(map[uint32]int, len(oids))
	for i, o := range oids {
		members[uint32(o)] = i
	}
	protected := make(map[uint32]bool, len(tables))
	var out []finding
	for _, t := range tables {
		protected[t.OID] = true
		if i, ok := members[t.OID]; ok {
			if prrels[i] != 0 {
				m.prrel[t.OID] = prrels[i]
			}
			continue
		}
		if exists, checked := existing[t.OID]; checked && !exists {
			continue
		}
		w := where
		w.Episode = fmt.Sprint(m.prrel[t.OID])
		out = append(out, finding{
			key: key("publication", "removed", fmt.Sprint(t.OID)), state: "removed",
			alerts: []*alertv1.Alert{alerts.PublicationChanged(alerts.PublicationChange{Where: w, Publication: m.opts.Publication, Change: alerts.PublicationTableRemoved, Table: t.String(), OID: t.OID})},
		})
	}
	for i, o := range oids {
		oid := uint32(o)
		if protected[oid] {
			continue
		}
		w := where
		w.Episode = fmt.Sprint(prrels[i])
		out = append(out, finding{
			key: key("publication", "added", fmt.Sprint(oid)), state: fmt.Sprint(prrels[i]),
			alerts: []*alertv1.Alert{alerts.PublicationChanged(alerts.PublicationChange{Where: w, Publication: m.opts.Publication, Change: alerts.PublicationTableAdded, Table: names[i], OID: oid})},
		})
	}
	return out, nil
}

func (m *Monitor) checkHeartbeat(now time.Time) *finding {
	m.mu.Lock()
	last, lsn := m.hbAt, m.hbLSN
	ref := last
	for _, t := range []time.Time{m.started, m.resumedAt} {
		if t.After(ref) {
			ref = t
		}
	}
	age := max(now.Sub(ref), 0)
	m.status.HeartbeatAge = age
	m.mu.Unlock()
	if age <= m.opts.HeartbeatTimeout {
		return nil
	}
	where := alerts.Where{Slot: m.opts.Slot, At: now}
	return &finding{
		key: key("heartbeat", "missing"), state: lsn.String(),
		alerts: []*alertv1.Alert{alerts.HeartbeatMissing(alerts.Heartbeat{Where: where, Age: age, Timeout: m.opts.HeartbeatTimeout, LastLSN: lsn, LastSentAt: last})},
	}
}
