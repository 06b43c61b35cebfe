package alerts

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	"github.com/witnz/witnz/services/cdc-ingest/internal/backoff"
)

func TestID(t *testing.T) {
	id := ID("witnz", "public.t", 0x1A2B3C, 4, "UPDATE")
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(id) {
		t.Fatalf("ID = %q, not a version 8 UUID", id)
	}
	if again := ID("witnz", "public.t", 0x1A2B3C, 4, "UPDATE"); again != id {
		t.Errorf("ID is not deterministic: %q then %q", id, again)
	}
	for _, other := range []string{
		ID("other", "public.t", 0x1A2B3C, 4, "UPDATE"),
		ID("witnz", "public.u", 0x1A2B3C, 4, "UPDATE"),
		ID("witnz", "public.t", 0x1A2B3D, 4, "UPDATE"),
		ID("witnz", "public.t", 0x1A2B3C, 5, "UPDATE"),
		ID("witnz", "public.t", 0x1A2B3C, 4, "DELETE"),
	} {
		if other == id {
			t.Errorf("different changes share the id %q", id)
		}
	}
}

func TestForbiddenChange(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 890000000, time.UTC)
	got := ForbiddenChange(Change{
		Slot: "witnz", Table: "public.audit_log", Op: "UPDATE",
		Key: []KeyValue{{"id", "42"}}, XID: 1234, CommitLSN: 0x1A2B3C, LSN: 0x1A2B00, CommitTime: at, TxIndex: 2,
	})
	detail, err := structpb.NewStruct(map[string]any{
		"table": "public.audit_log", "op": "UPDATE", "key": map[string]any{"id": "42"}, "xid": 1234,
		"commit_lsn": "0/1A2B3C", "commit_time": "2026-03-04T05:06:07.89Z", "lsn": "0/1A2B00",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &alertv1.Alert{
		AlertId:    ID("witnz", "public.audit_log", 0x1A2B3C, 2, "UPDATE"),
		Type:       "cdc.update_on_append_only",
		Severity:   alertv1.Severity_SEVERITY_CRITICAL,
		Message:    "UPDATE on append-only table public.audit_log (id=42) in xid 1234 at 0/1A2B00",
		Source:     "cdc-ingest",
		Table:      "public.audit_log",
		Detail:     detail,
		OccurredAt: timestamppb.New(at),
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("alert (-want +got):\n%s", diff)
	}
}

type flakyAlerts struct {
	alertv1connect.UnimplementedAlertServiceHandler
	failures atomic.Int32
	stored   atomic.Int32
}

func (f *flakyAlerts) IngestAlerts(_ context.Context, req *connect.Request[alertv1.IngestAlertsRequest]) (*connect.Response[alertv1.IngestAlertsResponse], error) {
	if f.failures.Add(-1) >= 0 {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("down"))
	}
	f.stored.Add(int32(len(req.Msg.Alerts)))
	return connect.NewResponse(&alertv1.IngestAlertsResponse{Stored: uint32(len(req.Msg.Alerts))}), nil
}

func TestSenderRetries(t *testing.T) {
	svc := &flakyAlerts{}
	svc.failures.Store(3)
	mux := http.NewServeMux()
	mux.Handle(alertv1connect.NewAlertServiceHandler(svc))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()

	s := NewSender(alertv1connect.NewAlertServiceClient(srv.Client(), srv.URL, connect.WithGRPC()), slog.New(slog.DiscardHandler))
	s.retry = backoff.Policy{Min: time.Millisecond, Max: 5 * time.Millisecond}
	if err := s.Send(t.Context(), []*alertv1.Alert{{AlertId: "a"}, {AlertId: "b"}}); err != nil {
		t.Fatal(err)
	}
	if svc.stored.Load() != 2 {
		t.Errorf("stored %d alerts, want 2", svc.stored.Load())
	}

	svc.failures.Store(1 << 30)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := s.Send(ctx, []*alertv1.Alert{{AlertId: "c"}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Send to a service that is down = %v, want the context's error", err)
	}
}
