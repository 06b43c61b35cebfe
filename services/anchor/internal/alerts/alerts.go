// Package alerts delivers the anchor service's alerts to the alert service
// (IngestAlerts), in the background, retrying with backoff. Alert ids are
// derived from what the alert is about, so the same finding raised again
// is stored once.
package alerts

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

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
	log    *slog.Logger
	client alertv1connect.AlertServiceClient
	queue  chan *alertv1.Alert
}

// New returns an alerter for the alert service at url; "" returns nil.
func New(tlsCfg *mtls.Config, url string, log *slog.Logger) *Alerter {
	if url == "" {
		return nil
	}
	return &Alerter{
		log:    log,
		client: alertv1connect.NewAlertServiceClient(tlsCfg.HTTPClient(), url, rpcserver.ClientOptions()...),
		queue:  make(chan *alertv1.Alert, 256),
	}
}

// Alert builds an alert whose id is derived from the parts given.
func Alert(typ string, sev alertv1.Severity, table, message string, detail map[string]any, idParts ...string) *alertv1.Alert {
	h := sha256.New()
	for _, p := range append([]string{"witnz/alert/anchor/v1", typ, table}, idParts...) {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	d, err := structpb.NewStruct(detail)
	if err != nil {
		d = &structpb.Struct{}
	}
	return &alertv1.Alert{
		AlertId:    uuid8(h.Sum(nil)),
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
	select {
	case a.queue <- al:
	default:
		a.log.Error("alert queue full: alert dropped", "type", al.GetType(), "alert_id", al.GetAlertId())
	}
}

// Run delivers queued alerts until ctx ends.
func (a *Alerter) Run(ctx context.Context) error {
	if a == nil {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case al := <-a.queue:
			a.deliver(ctx, al)
		}
	}
}

func (a *Alerter) deliver(ctx context.Context, al *alertv1.Alert) {
	wait := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		_, err := a.client.IngestAlerts(ctx, connect.NewRequest(&alertv1.IngestAlertsRequest{Alerts: []*alertv1.Alert{al}}))
		if err == nil || ctx.Err() != nil {
			return
		}
		switch connect.CodeOf(err) {
		case connect.CodeInvalidArgument, connect.CodePermissionDenied, connect.CodeUnauthenticated:
			a.log.Error("the alert service refused an alert; dropped", "alert_id", al.GetAlertId(), "type", al.GetType(), "error", err)
			return
		}
		a.log.Warn("alert delivery failed; retrying", "alert_id", al.GetAlertId(), "attempt", attempt, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// uuid8 formats the first 16 bytes of a hash as a UUID (version 8, RFC
// 9562 variant).
func uuid8(sum []byte) string {
	var b [16]byte
	copy(b[:], sum)
	b[6] = b[6]&0x0f | 0x80
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
