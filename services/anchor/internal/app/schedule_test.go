package app_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/services/anchor/internal/config"
)

// alertSink is an alert service that keeps what it is sent.
type alertSink struct {
	alertv1connect.UnimplementedAlertServiceHandler
	mu     sync.Mutex
	alerts []*alertv1.Alert
}

func (a *alertSink) IngestAlerts(_ context.Context, req *connect.Request[alertv1.IngestAlertsRequest]) (*connect.Response[alertv1.IngestAlertsResponse], error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.alerts = append(a.alerts, req.Msg.GetAlerts()...)
	return connect.NewResponse(&alertv1.IngestAlertsResponse{Stored: uint32(len(req.Msg.GetAlerts()))}), nil
}

func (a *alertSink) types() map[string]*alertv1.Alert {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]*alertv1.Alert{}
	for _, al := range a.alerts {
		out[al.GetType()] = al
	}
	return out
}

func startAlertSink(t *testing.T, s *stack) (*alertSink, string) {
	t.Helper()
	addr := testenv.FreeAddr(t)
	srv, err := rpcserver.New(rpcserver.Config{Name: "alert", Addr: addr, TLS: s.tls(t, mtls.Service("alert")).Server(), Logger: testLogger(t, "alert")})
	if err != nil {
		t.Fatal(err)
	}
	sink := &alertSink{}
	path, h := alertv1connect.NewAlertServiceHandler(sink, srv.HandlerOptions()...)
	srv.Handle(path, h, alertv1connect.AlertServiceName)
	runInBackground(t, srv.Run)
	return sink, "https://" + addr
}

// TestScheduleAlertsFailedAndLate runs the schedule with a 2s interval
// against witnesses that never answer: each attempt fails after its
// retries (an anchor.failed alert) and, past twice the interval without an
// anchor, anchor.late is raised too.
func TestScheduleAlertsFailedAndLate(t *testing.T) {
	s := newStack(t, 1)
	alerts, alertURL := startAlertSink(t, s)
	startAnchor(t, s, config.Config{
		Witnesses: []string{"https://" + testenv.FreeAddr(t)}, Sink: config.SinkDir, SinkDir: filepath.Join(t.TempDir(), "a"),
		DataDir: t.TempDir(), Interval: 2 * time.Second, AlertURL: alertURL,
	})
	waitFor(t, "anchor.failed and anchor.late alerts", func() (bool, string) {
		got := alerts.types()
		f, l := got["anchor.failed"], got["anchor.late"]
		if f == nil || l == nil {
			return false, "have " + func() string {
				var k string
				for typ := range got {
					k += typ + " "
				}
				return k
			}()
		}
		if f.GetSeverity() != alertv1.Severity_SEVERITY_HIGH || f.GetSource() != "anchor" || l.GetSeverity() != alertv1.Severity_SEVERITY_HIGH {
			t.Fatalf("alerts %v %v", f, l)
		}
		return true, ""
	})
}
