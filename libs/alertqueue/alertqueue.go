// Package alertqueue delivers a service's alerts to the alert service
// (AlertService.IngestAlerts) in the background: Raise queues without
// waiting, Run delivers one alert at a time and retries with backoff until
// the alert service has it or refuses it for good. It also derives alert
// ids from what an alert is about (ID), so the same finding raised again,
// or a retry after a lost answer, is stored once.
package alertqueue

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
)

// DefaultSize is how many alerts wait for delivery before Raise drops them.
const DefaultSize = 1024

// Backoff between delivery attempts: it doubles from minWait up to maxWait.
const (
	minWait = 200 * time.Millisecond
	maxWait = 30 * time.Second
)

// Queue holds alerts for delivery. A nil *Queue drops what it is given
// (callers that run without an alert service keep it nil).
type Queue struct {
	client  alertv1connect.AlertServiceClient
	log     *slog.Logger
	queue   chan *alertv1.Alert
	minWait time.Duration
	maxWait time.Duration
}

// Option configures a Queue.
type Option func(*Queue)

// WithSize bounds the alerts waiting for delivery (DefaultSize otherwise).
func WithSize(n int) Option {
	return func(q *Queue) {
		if n > 0 {
			q.queue = make(chan *alertv1.Alert, n)
		}
	}
}

// New returns a Queue delivering to client; Run delivers.
func New(client alertv1connect.AlertServiceClient, log *slog.Logger, opts ...Option) *Queue {
	q := &Queue{client: client, log: log, minWait: minWait, maxWait: maxWait}
	for _, o := range opts {
		o(q)
	}
	if q.queue == nil {
		q.queue = make(chan *alertv1.Alert, DefaultSize)
	}
	return q
}

// Raise queues alerts without waiting. When the queue is full an alert is
// dropped and logged.
func (q *Queue) Raise(alerts ...*alertv1.Alert) {
	if q == nil {
		return
	}
	for _, al := range alerts {
		select {
		case q.queue <- al:
		default:
			q.log.Error("alert queue full: alert dropped", "type", al.GetType(), "alert_id", al.GetAlertId(), "message", al.GetMessage())
		}
	}
}

// Run delivers queued alerts until ctx ends, and then returns nil (the
// error is there for an errgroup). Ingestion is idempotent on alert ids,
// so a retry after a lost answer stores nothing twice.
func (q *Queue) Run(ctx context.Context) error {
	if q == nil {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case al := <-q.queue:
			q.deliver(ctx, al)
		}
	}
}

func (q *Queue) deliver(ctx context.Context, al *alertv1.Alert) {
	wait := q.minWait
	for attempt := 1; ; attempt++ {
		_, err := q.client.IngestAlerts(ctx, connect.NewRequest(&alertv1.IngestAlertsRequest{Alerts: []*alertv1.Alert{al}}))
		if err == nil || ctx.Err() != nil {
			return
		}
		switch connect.CodeOf(err) {
		case connect.CodeInvalidArgument, connect.CodePermissionDenied, connect.CodeUnauthenticated:
			// Resending cannot help: the alert service refuses this alert
			// or this caller.
			q.log.Error("the alert service refused an alert; dropped", "alert_id", al.GetAlertId(), "type", al.GetType(), "message", al.GetMessage(), "error", err)
			return
		}
		q.log.Warn("alert delivery failed; retrying", "alert_id", al.GetAlertId(), "attempt", attempt, "code", connect.CodeOf(err).String(), "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, q.maxWait)
	}
}

// ID is an alert id derived from parts: a UUID (version 8, RFC 9562) from
// the SHA-256 of the parts, each followed by a 0 byte. Ids are stored and
// deduplicated across restarts, so this encoding must never change.
func ID(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return IDFromSum(h.Sum(nil))
}

// IDFromSum formats the first 16 bytes of a SHA-256 sum as a UUID (version
// 8, RFC 9562 variant), for ids whose hash takes more than strings (a size
// or a root appended after the parts).
func IDFromSum(sum []byte) string {
	var u [16]byte
	copy(u[:], sum)
	u[6] = u[6]&0x0f | 0x80 // version 8
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
