// Package alerts builds the alerts cdc-ingest raises and delivers them to
// the alert service, retrying until it has them.
package alerts

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pglogrepl"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	"github.com/witnz/witnz/services/cdc-ingest/internal/backoff"
)

// Source is the source of every alert cdc-ingest raises.
const Source = "cdc-ingest"

// Alert types.
const (
	TypeUpdateOnAppendOnly = "cdc.update_on_append_only"
	TypeDeleteOnAppendOnly = "cdc.delete_on_append_only"
)

// KeyValue is one primary-key column of a row and its value as text.
type KeyValue struct {
	Column string
	Value  string
}

// Change describes an UPDATE or DELETE on an append-only table.
type Change struct {
	Slot       string
	Table      string
	Op         string // "UPDATE" or "DELETE"
	Key        []KeyValue
	XID        uint32
	CommitLSN  pglogrepl.LSN
	LSN        pglogrepl.LSN
	CommitTime time.Time
	// TxIndex is the change's position among the table's changes in its
	// transaction.
	TxIndex uint32
}

// ForbiddenChange is the CRITICAL alert for a change on an append-only
// table. Its id is derived from the slot and the change's place in the WAL,
// so a replay after a crash raises the same alert, which the alert service
// stores once.
func ForbiddenChange(c Change) *alertv1.Alert {
	typ := TypeUpdateOnAppendOnly
	if c.Op == "DELETE" {
		typ = TypeDeleteOnAppendOnly
	}
	keyText := make([]string, len(c.Key))
	keyObj := make(map[string]any, len(c.Key))
	for i, kv := range c.Key {
		keyText[i] = kv.Column + "=" + kv.Value
		keyObj[kv.Column] = kv.Value
	}
	detail, err := structpb.NewStruct(map[string]any{
		"table":       c.Table,
		"op":          c.Op,
		"key":         keyObj,
		"xid":         c.XID,
		"commit_lsn":  c.CommitLSN.String(),
		"commit_time": c.CommitTime.UTC().Format(time.RFC3339Nano),
		"lsn":         c.LSN.String(),
	})
	if err != nil {
		// Only strings and numbers go in: NewStruct cannot fail on them.
		detail = &structpb.Struct{}
	}
	return &alertv1.Alert{
		AlertId:    ID(c.Slot, c.Table, c.CommitLSN, c.TxIndex, c.Op),
		Type:       typ,
		Severity:   alertv1.Severity_SEVERITY_CRITICAL,
		Message:    fmt.Sprintf("%s on append-only table %s (%s) in xid %d at %s", c.Op, c.Table, strings.Join(keyText, ", "), c.XID, c.LSN),
		Source:     Source,
		Table:      c.Table,
		Detail:     detail,
		OccurredAt: timestamppb.New(c.CommitTime),
	}
}

// ID derives a UUID (version 8, RFC 9562) from SHA-256 of the slot, the
// table, the commit LSN, the change's position and the operation: the
// place of the change in the WAL, the same on every replay.
func ID(slot, table string, commitLSN pglogrepl.LSN, txIndex uint32, op string) string {
	h := sha256.New()
	h.Write([]byte("witnz/alert/cdc/v1\x00"))
	h.Write([]byte(slot))
	h.Write([]byte{0})
	h.Write([]byte(table))
	h.Write([]byte{0})
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(commitLSN))
	binary.BigEndian.PutUint32(b[8:], txIndex)
	h.Write(b[:])
	h.Write([]byte(op))
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x80 // version 8
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// Sender delivers alerts to the alert service.
type Sender struct {
	client alertv1connect.AlertServiceClient
	log    *slog.Logger
	retry  backoff.Policy
}

// NewSender returns a Sender that calls client.
func NewSender(client alertv1connect.AlertServiceClient, log *slog.Logger) *Sender {
	return &Sender{client: client, log: log, retry: backoff.Default}
}

// Send delivers a batch, retrying with backoff until the alert service has
// stored it or ctx ends. Ingestion is idempotent on alert ids, so a retry
// after a lost answer stores nothing twice.
func (s *Sender) Send(ctx context.Context, batch []*alertv1.Alert) error {
	for attempt := 0; ; attempt++ {
		_, err := s.client.IngestAlerts(ctx, connect.NewRequest(&alertv1.IngestAlertsRequest{Alerts: batch}))
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.Warn("alert delivery failed; retrying", "alerts", len(batch), "attempt", attempt+1, "code", connect.CodeOf(err).String(), "error", err)
		if err := s.retry.Wait(ctx, attempt); err != nil {
			return err
		}
	}
}
