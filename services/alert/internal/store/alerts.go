package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
)

// InsertAlerts stores a batch of alerts in one transaction, skipping those
// whose alert_id is already stored (including repeats within the batch). It
// returns copies of the alerts stored by this call, in batch order, with
// received_at set (and occurred_at set to received_at where it was
// missing). The alerts must be valid: alert_id a UUID, severity 1..5.
func (s *Store) InsertAlerts(ctx context.Context, alerts []*alertv1.Alert) ([]*alertv1.Alert, error) {
	if len(alerts) == 0 {
		return nil, nil
	}
	var stored []*alertv1.Alert
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		stored, err = insertAlerts(ctx, tx, alerts)
		return err
	})
	if err != nil {
		return nil, err
	}
	return stored, nil
}

const insertAlertSQL = `
INSERT INTO alerts (alert_id, type, severity, message, source, host, table_name, detail, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, coalesce($9, now()))
ON CONFLICT (alert_id) DO NOTHING
RETURNING occurred_at, received_at`

func insertAlerts(ctx context.Context, tx pgx.Tx, alerts []*alertv1.Alert) ([]*alertv1.Alert, error) {
	b := &pgx.Batch{}
	for _, a := range alerts {
		detail, err := detailJSON(a.GetDetail())
		if err != nil {
			return nil, fmt.Errorf("alert %s: encode detail: %w", a.GetAlertId(), err)
		}
		var occurred *time.Time
		if a.GetOccurredAt() != nil {
			t := a.GetOccurredAt().AsTime()
			occurred = &t
		}
		b.Queue(insertAlertSQL, a.GetAlertId(), a.GetType(), int16(a.GetSeverity()), a.GetMessage(),
			a.GetSource(), a.GetHost(), a.GetTable(), detail, occurred)
	}
	br := tx.SendBatch(ctx, b)
	var stored []*alertv1.Alert
	for _, a := range alerts {
		var occurred, received time.Time
		err := br.QueryRow().Scan(&occurred, &received)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			br.Close()
			return nil, fmt.Errorf("insert alert %s: %w", a.GetAlertId(), err)
		}
		c := proto.CloneOf(a)
		c.OccurredAt = timestamppb.New(occurred)
		c.ReceivedAt = timestamppb.New(received)
		stored = append(stored, c)
	}
	if err := br.Close(); err != nil {
		return nil, fmt.Errorf("insert alerts: %w", err)
	}
	return stored, nil
}

func detailJSON(d *structpb.Struct) ([]byte, error) {
	if d == nil {
		return nil, nil
	}
	return protojson.Marshal(d)
}

// AlertFilter selects stored alerts. Zero fields do not filter.
type AlertFilter struct {
	Host  string
	Type  string
	Table string
	// MinSeverity keeps alerts at or above this severity.
	MinSeverity alertv1.Severity
	// From and To bound occurred_at (inclusive).
	From, To time.Time
	// Limit is the page size (must be positive); Offset skips that many.
	Limit, Offset int
}

// ListAlerts returns the alerts that match f, newest (occurred_at) first.
func (s *Store) ListAlerts(ctx context.Context, f AlertFilter) ([]*alertv1.Alert, error) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if f.Host != "" {
		add("host = ?", f.Host)
	}
	if f.Type != "" {
		add("type = ?", f.Type)
	}
	if f.Table != "" {
		add("table_name = ?", f.Table)
	}
	if f.MinSeverity > alertv1.Severity_SEVERITY_UNSPECIFIED {
		add("severity >= ?", int16(f.MinSeverity))
	}
	if !f.From.IsZero() {
		add("occurred_at >= ?", f.From)
	}
	if !f.To.IsZero() {
		add("occurred_at <= ?", f.To)
	}
	q := "SELECT alert_id::text, type, severity, message, source, host, table_name, detail, occurred_at, received_at FROM alerts"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, f.Limit, f.Offset)
	q += fmt.Sprintf(" ORDER BY occurred_at DESC, alert_id LIMIT $%d OFFSET $%d", len(args)-1, len(args))

	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list alerts: %w", err)
	}
	defer rows.Close()
	var out []*alertv1.Alert
	for rows.Next() {
		var (
			a                  alertv1.Alert
			severity           int16
			detail             []byte
			occurred, received time.Time
		)
		if err := rows.Scan(&a.AlertId, &a.Type, &severity, &a.Message, &a.Source, &a.Host, &a.Table, &detail, &occurred, &received); err != nil {
			return nil, fmt.Errorf("list alerts: %w", err)
		}
		a.Severity = alertv1.Severity(severity)
		if detail != nil {
			a.Detail = new(structpb.Struct)
			if err := protojson.Unmarshal(detail, a.Detail); err != nil {
				return nil, fmt.Errorf("alert %s: decode detail: %w", a.AlertId, err)
			}
		}
		a.OccurredAt = timestamppb.New(occurred)
		a.ReceivedAt = timestamppb.New(received)
		out = append(out, &a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list alerts: %w", err)
	}
	return out, nil
}
