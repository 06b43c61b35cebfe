package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
)

// Host is what an agent reports about its host when it registers.
type Host struct {
	Hostname     string
	IP           string
	OS           string
	AgentVersion string
}

// UpsertHost records a host, or refreshes its facts and last_seen if the
// hostname is known, and returns its host_id.
func (s *Store) UpsertHost(ctx context.Context, h Host) (string, error) {
	var id string
	err := s.pool.QueryRow(ctx, `
		INSERT INTO hosts (hostname, ip, os, agent_version)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (hostname) DO UPDATE
		SET ip = excluded.ip, os = excluded.os, agent_version = excluded.agent_version, last_seen = now()
		RETURNING host_id::text`,
		h.Hostname, h.IP, h.OS, h.AgentVersion).Scan(&id)
	if err != nil {
		return "", fmt.Errorf("upsert host %s: %w", h.Hostname, err)
	}
	return id, nil
}

// HostID returns the host_id of a registered hostname, or ErrHostNotFound.
func (s *Store) HostID(ctx context.Context, hostname string) (string, error) {
	var id string
	err := s.pool.QueryRow(ctx, "SELECT host_id::text FROM hosts WHERE hostname = $1", hostname).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("%w: %s", ErrHostNotFound, hostname)
	}
	if err != nil {
		return "", fmt.Errorf("look up host %s: %w", hostname, err)
	}
	return id, nil
}

// TouchHost sets a host's last_seen to now.
func (s *Store) TouchHost(ctx context.Context, hostID string) error {
	if _, err := s.pool.Exec(ctx, "UPDATE hosts SET last_seen = now() WHERE host_id = $1", hostID); err != nil {
		return fmt.Errorf("touch host %s: %w", hostID, err)
	}
	return nil
}

// PutRule creates or replaces a tripwire rule.
func (s *Store) PutRule(ctx context.Context, r *alertv1.TripwireRule) error {
	_, err := s.pool.Exec(ctx, `
		INSERT INTO tripwire_rules (rule_id, name, target_type, target, severity, enabled)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (rule_id) DO UPDATE
		SET name = excluded.name, target_type = excluded.target_type, target = excluded.target,
		    severity = excluded.severity, enabled = excluded.enabled`,
		r.GetRuleId(), r.GetName(), int16(r.GetTargetType()), r.GetTarget(), int16(r.GetSeverity()), r.GetEnabled())
	if err != nil {
		return fmt.Errorf("put rule %s: %w", r.GetRuleId(), err)
	}
	return nil
}

// EnabledRules returns every enabled tripwire rule, ordered by rule_id.
func (s *Store) EnabledRules(ctx context.Context) ([]*alertv1.TripwireRule, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT rule_id, name, target_type, target, severity, enabled
		FROM tripwire_rules WHERE enabled ORDER BY rule_id`)
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	defer rows.Close()
	var out []*alertv1.TripwireRule
	for rows.Next() {
		var (
			r                    alertv1.TripwireRule
			targetType, severity int16
		)
		if err := rows.Scan(&r.RuleId, &r.Name, &targetType, &r.Target, &severity, &r.Enabled); err != nil {
			return nil, fmt.Errorf("list rules: %w", err)
		}
		r.TargetType = alertv1.TargetType(targetType)
		r.Severity = alertv1.Severity(severity)
		out = append(out, &r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	return out, nil
}

// RuleSeverity returns the severity of a stored rule; ok is false when no
// rule has that id.
func (s *Store) RuleSeverity(ctx context.Context, ruleID string) (sev alertv1.Severity, ok bool, err error) {
	var v int16
	err = s.pool.QueryRow(ctx, "SELECT severity FROM tripwire_rules WHERE rule_id = $1", ruleID).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("look up rule %s: %w", ruleID, err)
	}
	return alertv1.Severity(v), true, nil
}

// Event is one agent event to record.
type Event struct {
	EventID    string
	HostID     string
	EventType  string
	RuleID     string
	Severity   alertv1.Severity
	Target     string
	Detail     map[string]string
	OccurredAt time.Time
}

// RecordEvent stores an agent event in audit_entries and, when alert is not
// nil, the alert it raises, in one transaction; both are idempotent on their
// ids. It also moves the host's last_seen. It returns the alert as stored
// by this call (with received_at set), or nil when there was none or it was
// already stored.
func (s *Store) RecordEvent(ctx context.Context, ev Event, alert *alertv1.Alert) (*alertv1.Alert, error) {
	var detail []byte
	if len(ev.Detail) > 0 {
		var err error
		if detail, err = json.Marshal(ev.Detail); err != nil {
			return nil, fmt.Errorf("event %s: encode detail: %w", ev.EventID, err)
		}
	}
	var stored *alertv1.Alert
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
			INSERT INTO audit_entries (event_id, host_id, event_type, rule_id, severity, target, detail, occurred_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (event_id) DO NOTHING`,
			ev.EventID, ev.HostID, ev.EventType, ev.RuleID, int16(ev.Severity), ev.Target, detail, ev.OccurredAt)
		if err != nil {
			return fmt.Errorf("insert event %s: %w", ev.EventID, err)
		}
		if _, err := tx.Exec(ctx, "UPDATE hosts SET last_seen = now() WHERE host_id = $1", ev.HostID); err != nil {
			return fmt.Errorf("touch host %s: %w", ev.HostID, err)
		}
		if alert == nil {
			return nil
		}
		as, err := insertAlerts(ctx, tx, []*alertv1.Alert{alert})
		if err != nil {
			return err
		}
		if len(as) == 1 {
			stored = as[0]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return stored, nil
}
