// Package api implements the alert service's Connect handlers:
// AlertService (ingest and query alerts) and AgentService (host agents
// register and stream their tripwire events). Callers are authorized by the
// witnz identity of their client certificate.
package api

import (
	"context"
	"fmt"
	"log/slog"

	"connectrpc.com/connect"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/services/alert/internal/livefeed"
	"github.com/witnz/witnz/services/alert/internal/store"
)

// MaxIngestBatch bounds the alerts of one IngestAlerts call.
const MaxIngestBatch = 10000

// List page sizes.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// AlertService implements alertv1connect.AlertServiceHandler.
type AlertService struct {
	store *store.Store
	feed  *livefeed.Publisher
	log   *slog.Logger
}

var _ alertv1connect.AlertServiceHandler = (*AlertService)(nil)

// NewAlertService returns the AlertService handler.
func NewAlertService(st *store.Store, feed *livefeed.Publisher, log *slog.Logger) *AlertService {
	return &AlertService{store: st, feed: feed, log: log}
}

// IngestAlerts stores a batch of alerts idempotently and publishes the ones
// stored for the first time. Service and witness identities may call it
// (witness nodes report cosigning disagreements).
func (s *AlertService) IngestAlerts(ctx context.Context, req *connect.Request[alertv1.IngestAlertsRequest]) (*connect.Response[alertv1.IngestAlertsResponse], error) {
	id, ok := mtls.PeerIdentity(ctx)
	if !ok || (id.Kind != mtls.KindService && id.Kind != mtls.KindWitness) {
		return nil, connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("IngestAlerts requires a service identity (spiffe://witnz/service/<name>) or a witness identity (spiffe://witnz/witness/<id>); caller is %s", callerString(id, ok)))
	}
	alerts := req.Msg.GetAlerts()
	if len(alerts) > MaxIngestBatch {
		return nil, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("%d alerts in one call; send at most %d per IngestAlerts", len(alerts), MaxIngestBatch))
	}
	for i, a := range alerts {
		if err := normalizeAlert(a); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("alerts[%d].%w; nothing in this batch was stored", i, err))
		}
		if a.Source == "" {
			a.Source = id.Name
		}
		a.ReceivedAt = nil
	}
	stored, err := s.store.InsertAlerts(ctx, alerts)
	if err != nil {
		s.log.Error("store alerts", "caller", id.String(), "alerts", len(alerts), "error", err)
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("the alert database could not store the batch; retry it (it is idempotent)"))
	}
	s.feed.Publish(ctx, stored)
	return connect.NewResponse(&alertv1.IngestAlertsResponse{
		Stored:     uint32(len(stored)),
		Duplicates: uint32(len(alerts) - len(stored)),
	}), nil
}

// ListAlerts returns stored alerts, newest first. The gateway service and
// operators may call it.
func (s *AlertService) ListAlerts(ctx context.Context, req *connect.Request[alertv1.ListAlertsRequest]) (*connect.Response[alertv1.ListAlertsResponse], error) {
	id, ok := mtls.PeerIdentity(ctx)
	if !ok || !(id.Kind == mtls.KindOperator || id == mtls.Service("gateway")) {
		return nil, connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("ListAlerts requires the identity %s or an operator identity (spiffe://witnz/operator/<name>); caller is %s",
				mtls.Service("gateway"), callerString(id, ok)))
	}
	f, err := listFilter(req.Msg.GetFilter())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	alerts, err := s.store.ListAlerts(ctx, f)
	if err != nil {
		s.log.Error("list alerts", "caller", id.String(), "error", err)
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("the alert database could not answer; retry later"))
	}
	return connect.NewResponse(&alertv1.ListAlertsResponse{Alerts: alerts}), nil
}

func listFilter(in *alertv1.AlertFilter) (store.AlertFilter, error) {
	f := store.AlertFilter{
		Host:        in.GetHost(),
		Type:        in.GetType(),
		Table:       in.GetTable(),
		MinSeverity: in.GetMinSeverity(),
		Limit:       int(in.GetLimit()),
		Offset:      int(in.GetOffset()),
	}
	if _, known := alertv1.Severity_name[int32(f.MinSeverity)]; !known {
		return f, fmt.Errorf("filter.min_severity %d is not a known severity (1 INFO .. 5 CRITICAL)", f.MinSeverity)
	}
	if in.GetFrom() != nil {
		if err := in.GetFrom().CheckValid(); err != nil {
			return f, fmt.Errorf("filter.from: %v", err)
		}
		f.From = in.GetFrom().AsTime()
	}
	if in.GetTo() != nil {
		if err := in.GetTo().CheckValid(); err != nil {
			return f, fmt.Errorf("filter.to: %v", err)
		}
		f.To = in.GetTo().AsTime()
	}
	if !f.From.IsZero() && !f.To.IsZero() && f.From.After(f.To) {
		return f, fmt.Errorf("filter.from (%s) is after filter.to (%s)", f.From.Format("2006-01-02T15:04:05Z07:00"), f.To.Format("2006-01-02T15:04:05Z07:00"))
	}
	switch {
	case f.Limit == 0:
		f.Limit = DefaultListLimit
	case f.Limit > MaxListLimit:
		f.Limit = MaxListLimit
	}
	return f, nil
}

// normalizeAlert checks an incoming alert and puts its alert_id in
// canonical form. Its error starts with the field name.
func normalizeAlert(a *alertv1.Alert) error {
	id, ok := canonicalUUID(a.GetAlertId())
	if !ok {
		return fmt.Errorf("alert_id %q is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", a.GetAlertId())
	}
	a.AlertId = id
	switch {
	case a.GetType() == "":
		return fmt.Errorf("type is empty; set a machine-readable type such as cdc.update_on_append_only")
	case a.GetSeverity() == alertv1.Severity_SEVERITY_UNSPECIFIED:
		return fmt.Errorf("severity is not set; use INFO, LOW, MEDIUM, HIGH or CRITICAL")
	case a.GetSeverity() > alertv1.Severity_SEVERITY_CRITICAL || a.GetSeverity() < 0:
		return fmt.Errorf("severity %d is not a known severity (1 INFO .. 5 CRITICAL)", a.GetSeverity())
	case a.GetMessage() == "":
		return fmt.Errorf("message is empty; say what happened and where")
	}
	if a.GetOccurredAt() != nil {
		if err := a.GetOccurredAt().CheckValid(); err != nil {
			return fmt.Errorf("occurred_at: %v", err)
		}
	}
	return nil
}

// canonicalUUID accepts a UUID in the 8-4-4-4-12 hex form, any case, and
// returns it in lower case.
func canonicalUUID(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	b := []byte(s)
	for i, c := range b {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", false
			}
			continue
		}
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		case 'A' <= c && c <= 'F':
			b[i] = c + ('a' - 'A')
		default:
			return "", false
		}
	}
	return string(b), true
}

// requireKind returns the caller's identity if it is of the given kind, or
// a PermissionDenied error naming what is required.
func requireKind(ctx context.Context, rpc, kind string) (mtls.Identity, error) {
	id, ok := mtls.PeerIdentity(ctx)
	if !ok || id.Kind != kind {
		return id, connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("%s requires a %s identity (spiffe://witnz/%s/<name>); caller is %s", rpc, kind, kind, callerString(id, ok)))
	}
	return id, nil
}

func callerString(id mtls.Identity, ok bool) string {
	if !ok {
		return "unidentified"
	}
	return id.String()
}
