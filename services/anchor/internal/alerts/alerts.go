// Package alerts builds the anchor service's alerts and delivers them to
// the alert service through libs/alertqueue (in the background, retrying
// with backoff). Alert ids are derived from what the alert is about, so the
// same finding raised again is stored once.
package alerts

import (
	"context"
	"log/slog"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/witnz/witnz/libs/alertqueue"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
)

// Source names the anchor service in alerts.
const Source = "anchor"

// Alert types raised by the anchor service.
const (
	// TypeFailed: an anchoring attempt failed after its retries.
	TypeFailed = "anchor.failed"
	// TypeLate: nothing was anchored for more than twice the interval.
	TypeLate = "anchor.late"
	// TypeHistoryRewritten: a witness log no longer extends what was
	// anchored (no consistency proof, or a smaller log).
	TypeHistoryRewritten = "anchor.history_rewritten"
	// TypeObjectDamaged: an anchored object is missing, changed or not
	// readable.
	TypeObjectDamaged = "anchor.object_damaged"
	// TypeCheckFailed: another check failed (a cosignature that does not
	// meet the policy, a receipt that disagrees with its object, no
	// witness answering).
	TypeCheckFailed = "anchor.check_failed"
)

// Alerter queues alerts and delivers them; a nil *Alerter logs only.
type Alerter struct {
	q *alertqueue.Queue
}

// queueSize bounds the alerts waiting for delivery.
const queueSize = 256

// New returns an alerter for the alert service at url; "" returns nil.
func New(tlsCfg *mtls.Config, url string, log *slog.Logger) *Alerter {
	if url == "" {
		return nil
	}
	client := alertv1connect.NewAlertServiceClient(tlsCfg.HTTPClient(), url, rpcserver.ClientOptions()...)
	return &Alerter{q: alertqueue.New(client, log, alertqueue.WithSize(queueSize))}
}

// Alert builds an alert whose id is derived from the parts given.
func Alert(typ string, sev alertv1.Severity, table, message string, detail map[string]any, idParts ...string) *alertv1.Alert {
	d, err := structpb.NewStruct(detail)
	if err != nil {
		d = &structpb.Struct{}
	}
	return &alertv1.Alert{
		AlertId:    alertqueue.ID(append([]string{"witnz/alert/anchor/v1", typ, table}, idParts...)...),
		Type:       typ,
		Severity:   sev,
		Message:    message,
		Source:     Source,
		Table:      table,
		Detail:     d,
		OccurredAt: timestamppb.Now(),
	}
}

// Raise queues an alert without waiting; it is logged in any case.
func (a *Alerter) Raise(log *slog.Logger, al *alertv1.Alert) {
	log.Warn("alert", "type", al.GetType(), "severity", al.GetSeverity().String(), "table", al.GetTable(), "message", al.GetMessage(), "alert_id", al.GetAlertId())
	if a == nil {
		return
	}
	a.q.Raise(al)
}

// Run delivers queued alerts until ctx ends.
func (a *Alerter) Run(ctx context.Context) error {
	if a == nil {
		return nil
	}
	return a.q.Run(ctx)
}
