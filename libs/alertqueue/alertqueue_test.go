package alertqueue

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
)

// The ids the services derived before this package existed (their own
// uuid8/alertID); alerts are deduplicated by id, so these must not change.
func TestID(t *testing.T) {
	for _, tc := range []struct {
		parts []string
		want  string
	}{
		{nil, "e3b0c442-98fc-8c14-9afb-f4c8996fb924"},
		{[]string{""}, "6e340b9c-ffb3-8a98-9ca5-44e6bb780a2c"},
		{[]string{"a", "b"}, "8fb20ef6-3ced-8145-bc2e-983ffe597d1d"},
		{[]string{"ab"}, "969caaeb-3626-80d5-a95e-efa6aea53305"},
		{[]string{"witnz/alert/verifier/anchor-check/v1", "s3", "bucket", "key", "v1", "abc", "orders"}, "527bdeb4-6a1e-8c73-afd8-e7d07809111a"},
		{[]string{"witnz/alert/verifier/anchor-unavailable/v1", "https://anchor:7060", "2026-11-22T07:29:00Z"}, "1ad56bed-3397-8266-be51-00132c67a2e8"},
	} {
		if got := ID(tc.parts...); got != tc.want {
			t.Errorf("ID(%q) = %s, want %s", tc.parts, got, tc.want)
		}
	}
}

func TestIDFromSum(t *testing.T) {
	sum := sha256.Sum256([]byte("a\x00b\x00"))
	if got, want := IDFromSum(sum[:]), ID("a", "b"); got != want {
		t.Errorf("IDFromSum = %s, want %s", got, want)
	}
	all := make([]byte, 32)
	for i := range all {
		all[i] = 0xff
	}
	if got, want := IDFromSum(all), "ffffffff-ffff-8fff-bfff-ffffffffffff"; got != want {
		t.Errorf("IDFromSum(ff...) = %s, want %s", got, want)
	}
}

// alertService is a real AlertService handler whose IngestAlerts answer is
// chosen per call by ingest.
type alertService struct {
	alertv1connect.UnimplementedAlertServiceHandler
	ingest func(al *alertv1.Alert, attempt int) error

	mu       sync.Mutex
	attempts map[string]int
	stored   []*alertv1.Alert
}

func (s *alertService) IngestAlerts(_ context.Context, req *connect.Request[alertv1.IngestAlertsRequest]) (*connect.Response[alertv1.IngestAlertsResponse], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, al := range req.Msg.GetAlerts() {
		s.attempts[al.GetAlertId()]++
		if err := s.ingest(al, s.attempts[al.GetAlertId()]); err != nil {
			return nil, err
		}
		s.stored = append(s.stored, al)
	}
	return connect.NewResponse(&alertv1.IngestAlertsResponse{}), nil
}

func (s *alertService) snapshot() ([]*alertv1.Alert, map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	attempts := make(map[string]int, len(s.attempts))
	for k, v := range s.attempts {
		attempts[k] = v
	}
	return append([]*alertv1.Alert(nil), s.stored...), attempts
}

// serve starts the alert service over HTTP and returns a client to it.
func serve(t *testing.T, ingest func(*alertv1.Alert, int) error) (*alertService, alertv1connect.AlertServiceClient) {
	t.Helper()
	svc := &alertService{ingest: ingest, attempts: map[string]int{}}
	mux := http.NewServeMux()
	mux.Handle(alertv1connect.NewAlertServiceHandler(svc))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return svc, alertv1connect.NewAlertServiceClient(srv.Client(), srv.URL)
}

// run starts q.Run and stops it when the test ends, checking it returns nil.
func run(t *testing.T, q *Queue) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func fast(q *Queue) *Queue {
	q.minWait, q.maxWait = time.Millisecond, 4*time.Millisecond
	return q
}

func alert(id string) *alertv1.Alert {
	return &alertv1.Alert{AlertId: id, Type: "test.alert", Severity: alertv1.Severity_SEVERITY_HIGH, Message: "m " + id, Source: "test"}
}

// waitStored polls until the service stored n alerts.
func waitStored(t *testing.T, svc *alertService, n int) []*alertv1.Alert {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		stored, _ := svc.snapshot()
		if len(stored) >= n {
			return stored
		}
		if time.Now().After(deadline) {
			t.Fatalf("the alert service stored %d alerts, want %d", len(stored), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestRetriesUntilDelivered(t *testing.T) {
	svc, client := serve(t, func(_ *alertv1.Alert, attempt int) error {
		if attempt <= 3 {
			return connect.NewError(connect.CodeUnavailable, errors.New("not yet"))
		}
		return nil
	})
	q := fast(New(client, quiet()))
	run(t, q)
	want := alert(ID("retry"))
	q.Raise(want)
	stored := waitStored(t, svc, 1)
	if diff := cmp.Diff([]*alertv1.Alert{want}, stored, protocmp.Transform()); diff != "" {
		t.Errorf("stored (-want +got):\n%s", diff)
	}
	if _, attempts := svc.snapshot(); attempts[want.GetAlertId()] != 4 {
		t.Errorf("attempts = %d, want 4", attempts[want.GetAlertId()])
	}
}

func TestDropsOnPermanentCodes(t *testing.T) {
	for _, code := range []connect.Code{connect.CodeInvalidArgument, connect.CodePermissionDenied, connect.CodeUnauthenticated} {
		t.Run(code.String(), func(t *testing.T) {
			svc, client := serve(t, func(al *alertv1.Alert, _ int) error {
				if al.GetAlertId() == "refused" {
					return connect.NewError(code, errors.New("no"))
				}
				return nil
			})
			q := fast(New(client, quiet()))
			run(t, q)
			q.Raise(alert("refused"), alert("next"))
			// The queue delivers in order, so once "next" is stored the
			// refused alert has been given up.
			stored := waitStored(t, svc, 1)
			if diff := cmp.Diff([]*alertv1.Alert{alert("next")}, stored, protocmp.Transform()); diff != "" {
				t.Errorf("stored (-want +got):\n%s", diff)
			}
			if _, attempts := svc.snapshot(); attempts["refused"] != 1 {
				t.Errorf("the refused alert was sent %d times, want once", attempts["refused"])
			}
		})
	}
}

func TestRaiseDropsWhenFull(t *testing.T) {
	svc, client := serve(t, func(*alertv1.Alert, int) error { return nil })
	q := New(client, quiet(), WithSize(2))
	q.Raise(alert("1"), alert("2"), alert("3")) // nothing delivers yet: "3" is dropped
	run(t, q)
	waitStored(t, svc, 2)
	q.Raise(alert("4"))
	stored := waitStored(t, svc, 3)
	want := []*alertv1.Alert{alert("1"), alert("2"), alert("4")}
	if diff := cmp.Diff(want, stored, protocmp.Transform()); diff != "" {
		t.Errorf("stored (-want +got):\n%s", diff)
	}
}

func TestRunStopsWhileRetrying(t *testing.T) {
	svc, client := serve(t, func(*alertv1.Alert, int) error {
		return connect.NewError(connect.CodeUnavailable, errors.New("down"))
	})
	q := New(client, quiet()) // the real backoff: Run is waiting when cancelled
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	q.Raise(alert("x"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, attempts := svc.snapshot(); attempts["x"] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no delivery attempt")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestNilQueue(t *testing.T) {
	var q *Queue
	q.Raise(alert("x"))
	if err := q.Run(t.Context()); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}
