package app

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/services/alert/internal/config"
)

var (
	idAlert   = mtls.Service("alert")
	idIngest  = mtls.Service("cdc-ingest")
	idGateway = mtls.Service("gateway")
	idWitness = mtls.Witness("w1")
	idAdmin   = mtls.Identity{Kind: mtls.KindOperator, Name: "admin"}
	idAgent   = mtls.Identity{Kind: mtls.KindAgent, Name: "db1"}
)

// env is a running alert service with real PostgreSQL, Redis and
// certificates.
type env struct {
	app     *App
	url     string
	pkiDir  string
	redis   *redis.Client
	channel string
	stop    func() error
}

func startEnv(t *testing.T) *env {
	t.Helper()
	pg := testenv.PostgreSQL(t)
	pg.CreateDatabase(t, "alert")
	rs := testenv.Redis(t)

	dir := t.TempDir()
	if err := pki.Init(dir, []mtls.Identity{idAlert, idIngest, idGateway, idWitness, idAdmin, idAgent}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	p := pki.PathsFor(dir, idAlert)
	cfg := config.Config{
		Listen:       "127.0.0.1:0",
		AdminListen:  "127.0.0.1:0",
		TLS:          mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA},
		PGDSN:        pg.DSN("alert"),
		RedisAddr:    rs.Addr(),
		RedisChannel: "test:alerts",
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stop := sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return &env{app: a, url: "https://" + a.Addr().String(), pkiDir: dir, redis: rdb, channel: cfg.RedisChannel, stop: stop}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (e *env) httpClient(t *testing.T, id mtls.Identity) *http.Client {
	t.Helper()
	p := pki.PathsFor(e.pkiDir, id)
	c, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	hc := c.HTTPClient()
	t.Cleanup(hc.CloseIdleConnections)
	return hc
}

func (e *env) alertClient(t *testing.T, id mtls.Identity, opts ...connect.ClientOption) alertv1connect.AlertServiceClient {
	return alertv1connect.NewAlertServiceClient(e.httpClient(t, id), e.url, append(rpcserver.ClientOptions(), opts...)...)
}

func (e *env) agentClient(t *testing.T, id mtls.Identity) alertv1connect.AgentServiceClient {
	return alertv1connect.NewAgentServiceClient(e.httpClient(t, id), e.url, rpcserver.ClientOptions()...)
}

// subscribe subscribes to the alert channel and returns once Redis has
// confirmed the subscription.
func (e *env) subscribe(t *testing.T) *redis.PubSub {
	t.Helper()
	sub := e.redis.Subscribe(t.Context(), e.channel)
	t.Cleanup(func() { sub.Close() })
	if _, err := sub.Receive(t.Context()); err != nil {
		t.Fatalf("SUBSCRIBE: %v", err)
	}
	return sub
}

// receive returns the next alert published on sub, or fails after 5 s.
func receive(t *testing.T, sub *redis.PubSub) *alertv1.Alert {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatalf("no alert published: %v", err)
	}
	var a alertv1.Alert
	if err := protojson.Unmarshal([]byte(msg.Payload), &a); err != nil {
		t.Fatalf("published payload %q: %v", msg.Payload, err)
	}
	return &a
}

// expectNothing fails if sub receives a message within wait.
func expectNothing(t *testing.T, sub *redis.PubSub, wait time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	if msg, err := sub.ReceiveMessage(ctx); err == nil {
		t.Fatalf("unexpected publication %s", msg.Payload)
	}
}

func newAlert(id string, sev alertv1.Severity, host string, at time.Time) *alertv1.Alert {
	detail, _ := structpb.NewStruct(map[string]any{"table": "public.audit_log", "op": "UPDATE", "key": map[string]any{"id": "42"}, "xid": 1234.0})
	return &alertv1.Alert{
		AlertId:    id,
		Type:       "cdc.update_on_append_only",
		Severity:   sev,
		Message:    "UPDATE on append-only table public.audit_log (id=42) in xid 1234 at 0/1A2B3C",
		Source:     "cdc-ingest",
		Host:       host,
		Table:      "public.audit_log",
		Detail:     detail,
		OccurredAt: timestamppb.New(at),
	}
}

var ignoreReceivedAt = protocmp.IgnoreFields(&alertv1.Alert{}, "received_at")

func TestAlertService(t *testing.T) {
	e := startEnv(t)
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

	t.Run("Ready", func(t *testing.T) {
		resp, err := http.Get("http://" + e.app.AdminAddr().String() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("/readyz = %d %s", resp.StatusCode, body)
		}
	})

	t.Run("IngestStoresAndPublishes", func(t *testing.T) {
		for name, client := range map[string]alertv1connect.AlertServiceClient{
			"grpc":    e.alertClient(t, idIngest),
			"connect": alertv1connect.NewAlertServiceClient(e.httpClient(t, idIngest), e.url),
		} {
			t.Run(name, func(t *testing.T) {
				sub := e.subscribe(t)
				id := "11111111-1111-4111-8111-00000000000" + map[string]string{"grpc": "1", "connect": "2"}[name]
				a := newAlert(id, alertv1.Severity_SEVERITY_CRITICAL, "", base)
				resp, err := client.IngestAlerts(t.Context(), connect.NewRequest(&alertv1.IngestAlertsRequest{Alerts: []*alertv1.Alert{a}}))
				if err != nil {
					t.Fatalf("IngestAlerts: %v", err)
				}
				if diff := cmp.Diff(&alertv1.IngestAlertsResponse{Stored: 1}, resp.Msg, protocmp.Transform()); diff != "" {
					t.Errorf("response (-want +got):\n%s", diff)
				}
				got := receive(t, sub)
				if diff := cmp.Diff(a, got, protocmp.Transform(), ignoreReceivedAt); diff != "" {
					t.Errorf("published alert (-want +got):\n%s", diff)
				}
				if got.GetReceivedAt() == nil {
					t.Error("published alert has no received_at")
				}
				list, err := e.alertClient(t, idGateway).ListAlerts(t.Context(), connect.NewRequest(&alertv1.ListAlertsRequest{
					Filter: &alertv1.AlertFilter{From: timestamppb.New(base), To: timestamppb.New(base)},
				}))
				if err != nil {
					t.Fatalf("ListAlerts: %v", err)
				}
				var stored *alertv1.Alert
				for _, s := range list.Msg.GetAlerts() {
					if s.GetAlertId() == id {
						stored = s
					}
				}
				if diff := cmp.Diff(got, stored, protocmp.Transform()); diff != "" {
					t.Errorf("stored alert differs from the published one (-published +stored):\n%s", diff)
				}
			})
		}
	})

	t.Run("DuplicateStoredAndPublishedOnce", func(t *testing.T) {
		sub := e.subscribe(t)
		client := e.alertClient(t, idIngest)
		a := newAlert("22222222-2222-4222-8222-222222222222", alertv1.Severity_SEVERITY_HIGH, "", base)
		// Upper case is the same UUID.
		again := newAlert(strings.ToUpper(a.AlertId), alertv1.Severity_SEVERITY_HIGH, "", base)
		resp, err := client.IngestAlerts(t.Context(), connect.NewRequest(&alertv1.IngestAlertsRequest{Alerts: []*alertv1.Alert{a, again}}))
		if err != nil {
			t.Fatalf("IngestAlerts: %v", err)
		}
		if diff := cmp.Diff(&alertv1.IngestAlertsResponse{Stored: 1, Duplicates: 1}, resp.Msg, protocmp.Transform()); diff != "" {
			t.Errorf("first call (-want +got):\n%s", diff)
		}
		resp, err = client.IngestAlerts(t.Context(), connect.NewRequest(&alertv1.IngestAlertsRequest{Alerts: []*alertv1.Alert{a}}))
		if err != nil {
			t.Fatalf("IngestAlerts again: %v", err)
		}
		if diff := cmp.Diff(&alertv1.IngestAlertsResponse{Duplicates: 1}, resp.Msg, protocmp.Transform()); diff != "" {
			t.Errorf("second call (-want +got):\n%s", diff)
		}
		if got := receive(t, sub); got.GetAlertId() != a.AlertId {
			t.Errorf("published %s, want %s", got.GetAlertId(), a.AlertId)
		}
		// A marker published after the calls proves nothing else was
		// published in between.
		if err := e.redis.Publish(t.Context(), e.channel, "marker").Err(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		msg, err := sub.ReceiveMessage(ctx)
		if err != nil || msg.Payload != "marker" {
			t.Fatalf("next publication = %v, %v; want only the marker", msg, err)
		}
		var n int
		if err := e.app.store.Pool().QueryRow(t.Context(), "SELECT count(*) FROM alerts WHERE alert_id = $1", a.AlertId).Scan(&n); err != nil || n != 1 {
			t.Errorf("rows with the alert_id = %d, %v; want 1", n, err)
		}
	})

	t.Run("InvalidAlertRejected", func(t *testing.T) {
		client := e.alertClient(t, idIngest)
		good := newAlert("33333333-3333-4333-8333-333333333333", alertv1.Severity_SEVERITY_LOW, "", base)
		for _, tc := range []struct {
			name   string
			modify func(*alertv1.Alert)
			want   string
		}{
			{"alert_id", func(a *alertv1.Alert) { a.AlertId = "not-a-uuid" }, "alerts[1].alert_id"},
			{"type", func(a *alertv1.Alert) { a.Type = "" }, "alerts[1].type"},
			{"severity", func(a *alertv1.Alert) { a.Severity = alertv1.Severity_SEVERITY_UNSPECIFIED }, "alerts[1].severity"},
			{"unknown severity", func(a *alertv1.Alert) { a.Severity = 9 }, "alerts[1].severity"},
			{"message", func(a *alertv1.Alert) { a.Message = "" }, "alerts[1].message"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				bad := newAlert("33333333-3333-4333-8333-444444444444", alertv1.Severity_SEVERITY_LOW, "", base)
				tc.modify(bad)
				_, err := client.IngestAlerts(t.Context(), connect.NewRequest(&alertv1.IngestAlertsRequest{Alerts: []*alertv1.Alert{good, bad}}))
				if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("IngestAlerts = %v; want InvalidArgument naming %s", err, tc.want)
				}
			})
		}
		var n int
		if err := e.app.store.Pool().QueryRow(t.Context(), "SELECT count(*) FROM alerts WHERE alert_id = $1", good.AlertId).Scan(&n); err != nil || n != 0 {
			t.Errorf("the valid alert of a rejected batch was stored (%d rows, %v)", n, err)
		}
	})

	t.Run("PermissionDenied", func(t *testing.T) {
		a := newAlert("44444444-4444-4444-8444-444444444444", alertv1.Severity_SEVERITY_LOW, "", base)
		for _, id := range []mtls.Identity{idAgent, idAdmin} {
			_, err := e.alertClient(t, id).IngestAlerts(t.Context(), connect.NewRequest(&alertv1.IngestAlertsRequest{Alerts: []*alertv1.Alert{a}}))
			if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "service identity") || !strings.Contains(err.Error(), "witness identity") {
				t.Errorf("IngestAlerts as %s = %v; want PermissionDenied naming the service and witness identities", id, err)
			}
		}
		// Witness nodes report cosigning disagreements.
		if _, err := e.alertClient(t, idWitness).IngestAlerts(t.Context(), connect.NewRequest(&alertv1.IngestAlertsRequest{Alerts: []*alertv1.Alert{a}})); err != nil {
			t.Errorf("IngestAlerts as %s: %v", idWitness, err)
		}
		for _, id := range []mtls.Identity{idIngest, idWitness, idAgent} {
			_, err := e.alertClient(t, id).ListAlerts(t.Context(), connect.NewRequest(&alertv1.ListAlertsRequest{}))
			if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "spiffe://witnz/service/gateway") {
				t.Errorf("ListAlerts as %s = %v; want PermissionDenied naming the gateway identity", id, err)
			}
		}
		if _, err := e.alertClient(t, idAdmin).ListAlerts(t.Context(), connect.NewRequest(&alertv1.ListAlertsRequest{})); err != nil {
			t.Errorf("ListAlerts as operator: %v", err)
		}
	})

	t.Run("NoClientCertificateRefused", func(t *testing.T) {
		p := pki.PathsFor(e.pkiDir, idIngest)
		c, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
		if err != nil {
			t.Fatal(err)
		}
		tc := c.Client()
		tc.Certificates = nil
		conn, err := tls.Dial("tcp", e.app.Addr().String(), tc)
		if err == nil {
			// TLS 1.3 reports the server's rejection on the first read.
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "certificate required") {
			t.Fatalf("handshake without a client certificate: %v; want it refused (certificate required)", err)
		}
	})

	t.Run("ListAlertsFilters", func(t *testing.T) {
		host := "filters.example"
		mk := func(n int, sev alertv1.Severity, typ, table string, at time.Time) *alertv1.Alert {
			a := newAlert("55555555-5555-4555-8555-00000000000"+string(rune('0'+n)), sev, host, at)
			a.Type, a.Table = typ, table
			return a
		}
		t0 := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
		all := []*alertv1.Alert{
			mk(1, alertv1.Severity_SEVERITY_INFO, "cdc.heartbeat_missing", "", t0),
			mk(2, alertv1.Severity_SEVERITY_CRITICAL, "cdc.update_on_append_only", "public.audit_log", t0.Add(time.Hour)),
			mk(3, alertv1.Severity_SEVERITY_HIGH, "cdc.delete_on_append_only", "public.audit_log", t0.Add(2*time.Hour)),
			mk(4, alertv1.Severity_SEVERITY_MEDIUM, "cdc.update_on_append_only", "public.payments", t0.Add(3*time.Hour)),
			mk(5, alertv1.Severity_SEVERITY_LOW, "verify.mismatch", "public.payments", t0.Add(4*time.Hour)),
		}
		if _, err := e.alertClient(t, idIngest).IngestAlerts(t.Context(), connect.NewRequest(&alertv1.IngestAlertsRequest{Alerts: all})); err != nil {
			t.Fatal(err)
		}
		ids := func(as []*alertv1.Alert) []string {
			var out []string
			for _, a := range as {
				out = append(out, a.GetAlertId()[len(a.GetAlertId())-1:])
			}
			return out
		}
		ts := timestamppb.New
		for _, tc := range []struct {
			name   string
			filter *alertv1.AlertFilter
			want   []string
		}{
			{"host, newest first", &alertv1.AlertFilter{Host: host}, []string{"5", "4", "3", "2", "1"}},
			{"type", &alertv1.AlertFilter{Host: host, Type: "cdc.update_on_append_only"}, []string{"4", "2"}},
			{"min severity", &alertv1.AlertFilter{Host: host, MinSeverity: alertv1.Severity_SEVERITY_HIGH}, []string{"3", "2"}},
			{"table", &alertv1.AlertFilter{Host: host, Table: "public.payments"}, []string{"5", "4"}},
			{"from", &alertv1.AlertFilter{Host: host, From: ts(t0.Add(3 * time.Hour))}, []string{"5", "4"}},
			{"to", &alertv1.AlertFilter{Host: host, To: ts(t0.Add(time.Hour))}, []string{"2", "1"}},
			{"from and to", &alertv1.AlertFilter{Host: host, From: ts(t0.Add(time.Hour)), To: ts(t0.Add(2 * time.Hour))}, []string{"3", "2"}},
			{"limit", &alertv1.AlertFilter{Host: host, Limit: 2}, []string{"5", "4"}},
			{"offset", &alertv1.AlertFilter{Host: host, Limit: 2, Offset: 2}, []string{"3", "2"}},
			{"limit above max", &alertv1.AlertFilter{Host: host, Limit: 5000}, []string{"5", "4", "3", "2", "1"}},
			{"other host", &alertv1.AlertFilter{Host: "nobody.example"}, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, err := e.alertClient(t, idGateway).ListAlerts(t.Context(), connect.NewRequest(&alertv1.ListAlertsRequest{Filter: tc.filter}))
				if err != nil {
					t.Fatalf("ListAlerts: %v", err)
				}
				if diff := cmp.Diff(tc.want, ids(resp.Msg.GetAlerts())); diff != "" {
					t.Errorf("alerts (-want +got):\n%s", diff)
				}
			})
		}
		for _, tc := range []struct {
			name   string
			filter *alertv1.AlertFilter
			want   string
		}{
			{"from after to", &alertv1.AlertFilter{From: ts(t0.Add(time.Hour)), To: ts(t0)}, "filter.from"},
			{"unknown severity", &alertv1.AlertFilter{MinSeverity: 7}, "filter.min_severity"},
		} {
			_, err := e.alertClient(t, idGateway).ListAlerts(t.Context(), connect.NewRequest(&alertv1.ListAlertsRequest{Filter: tc.filter}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: ListAlerts = %v; want InvalidArgument naming %s", tc.name, err, tc.want)
			}
		}
	})

	t.Run("ConcurrentIngestOfTheSameAlert", func(t *testing.T) {
		sub := e.subscribe(t)
		a := newAlert("66666666-6666-4666-8666-666666666666", alertv1.Severity_SEVERITY_HIGH, "", base)
		client := e.alertClient(t, idIngest)
		var (
			wg     sync.WaitGroup
			mu     sync.Mutex
			stored uint32
		)
		for range 8 {
			wg.Go(func() {
				resp, err := client.IngestAlerts(context.Background(), connect.NewRequest(&alertv1.IngestAlertsRequest{Alerts: []*alertv1.Alert{a}}))
				if err != nil {
					t.Errorf("IngestAlerts: %v", err)
					return
				}
				mu.Lock()
				stored += resp.Msg.GetStored()
				mu.Unlock()
			})
		}
		wg.Wait()
		if stored != 1 {
			t.Errorf("stored %d times in total, want 1", stored)
		}
		receive(t, sub)
		expectNothing(t, sub, 200*time.Millisecond)
	})
}

func TestAgentService(t *testing.T) {
	e := startEnv(t)
	ctx := t.Context()
	rule := &alertv1.TripwireRule{
		RuleId: "pg-hba", Name: "PostgreSQL client authentication", TargetType: alertv1.TargetType_TARGET_TYPE_FILE,
		Target: "/etc/postgresql/15/main/pg_hba.conf", Severity: alertv1.Severity_SEVERITY_HIGH, Enabled: true,
	}
	disabled := &alertv1.TripwireRule{
		RuleId: "ssh", Name: "ssh port", TargetType: alertv1.TargetType_TARGET_TYPE_NETWORK,
		Target: "22", Severity: alertv1.Severity_SEVERITY_LOW, Enabled: false,
	}
	for _, r := range []*alertv1.TripwireRule{rule, disabled} {
		if err := e.app.store.PutRule(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	agent := e.agentClient(t, idAgent)

	t.Run("HostnameMismatchRefused", func(t *testing.T) {
		_, err := agent.RegisterAgent(ctx, connect.NewRequest(&alertv1.RegisterAgentRequest{Hostname: "db2"}))
		if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), `"db2"`) || !strings.Contains(err.Error(), "agent/db1") {
			t.Fatalf("RegisterAgent(db2) as agent/db1 = %v; want PermissionDenied naming both", err)
		}
		_, err = e.agentClient(t, idIngest).RegisterAgent(ctx, connect.NewRequest(&alertv1.RegisterAgentRequest{Hostname: "cdc-ingest"}))
		if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "agent identity") {
			t.Fatalf("RegisterAgent as a service = %v; want PermissionDenied naming the agent identity", err)
		}
	})

	t.Run("StreamBeforeRegisterRefused", func(t *testing.T) {
		stream := agent.StreamEvents(ctx)
		_ = stream.Send(&alertv1.StreamEventsRequest{Message: &alertv1.StreamEventsRequest_Heartbeat{Heartbeat: &alertv1.Heartbeat{}}})
		_, err := stream.Receive()
		if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "RegisterAgent") {
			t.Fatalf("StreamEvents before RegisterAgent = %v; want FailedPrecondition", err)
		}
		stream.CloseRequest()
		stream.CloseResponse()
	})

	var hostID string
	t.Run("Register", func(t *testing.T) {
		resp, err := agent.RegisterAgent(ctx, connect.NewRequest(&alertv1.RegisterAgentRequest{
			Hostname: "db1", IpAddress: "10.0.0.5", Os: "linux", AgentVersion: "0.1.0",
		}))
		if err != nil {
			t.Fatalf("RegisterAgent: %v", err)
		}
		hostID = resp.Msg.GetHostId()
		want := &alertv1.RegisterAgentResponse{HostId: hostID, Rules: []*alertv1.TripwireRule{rule}}
		if diff := cmp.Diff(want, resp.Msg, protocmp.Transform()); diff != "" || hostID == "" {
			t.Errorf("response (-want +got):\n%s", diff)
		}
		again, err := agent.RegisterAgent(ctx, connect.NewRequest(&alertv1.RegisterAgentRequest{Hostname: "db1", AgentVersion: "0.1.1"}))
		if err != nil || again.Msg.GetHostId() != hostID {
			t.Errorf("second RegisterAgent = %v, %v; want the same host_id %s", again, err, hostID)
		}
	})

	t.Run("StreamEvents", func(t *testing.T) {
		if hostID == "" {
			t.Skip("Register failed")
		}
		sub := e.subscribe(t)
		stream := agent.StreamEvents(ctx)
		defer stream.CloseResponse()
		at := time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)
		events := []*alertv1.AgentEvent{
			{ // raises an alert: the stored rule is HIGH even though the agent says INFO
				EventId: "77777777-7777-4777-8777-000000000001", HostId: hostID, EventType: alertv1.EventType_EVENT_TYPE_FILE_MODIFIED,
				RuleId: "pg-hba", Severity: alertv1.Severity_SEVERITY_INFO, Target: rule.Target,
				Detail: map[string]string{"sha256_before": "aa", "sha256_after": "bb"}, OccurredAt: timestamppb.New(at),
			},
			{ // below MEDIUM: stored, acked, no alert
				EventId: "77777777-7777-4777-8777-000000000002", EventType: alertv1.EventType_EVENT_TYPE_AGENT_STARTED,
				Severity: alertv1.Severity_SEVERITY_INFO, OccurredAt: timestamppb.New(at),
			},
		}
		send := func(m *alertv1.StreamEventsRequest) {
			t.Helper()
			if err := stream.Send(m); err != nil {
				t.Fatalf("Send: %v", err)
			}
		}
		expectAck := func(id string) {
			t.Helper()
			resp, err := stream.Receive()
			if err != nil {
				t.Fatalf("Receive: %v", err)
			}
			if got := resp.GetCommand().GetAckEventId(); got != id {
				t.Fatalf("got %v, want the ack of %s", resp, id)
			}
		}
		send(&alertv1.StreamEventsRequest{Message: &alertv1.StreamEventsRequest_Heartbeat{Heartbeat: &alertv1.Heartbeat{HostId: hostID, Queued: 2}}})
		for _, ev := range events {
			send(&alertv1.StreamEventsRequest{Message: &alertv1.StreamEventsRequest_Event{Event: ev}})
			expectAck(ev.EventId)
		}
		// A replay after a lost ack is acked again and stored once.
		send(&alertv1.StreamEventsRequest{Message: &alertv1.StreamEventsRequest_Event{Event: events[0]}})
		expectAck(events[0].EventId)

		got := receive(t, sub)
		detail, _ := structpb.NewStruct(map[string]any{
			"event_id": events[0].EventId, "event_type": "file_modified", "target": rule.Target, "rule_id": "pg-hba",
			"detail": map[string]any{"sha256_before": "aa", "sha256_after": "bb"},
		})
		want := &alertv1.Alert{
			AlertId: events[0].EventId, Type: "host.file_modified", Severity: alertv1.Severity_SEVERITY_HIGH,
			Message: "file modified on host db1: /etc/postgresql/15/main/pg_hba.conf (rule pg-hba)",
			Source:  "host-agent", Host: "db1", Detail: detail, OccurredAt: timestamppb.New(at),
		}
		if diff := cmp.Diff(want, got, protocmp.Transform(), ignoreReceivedAt); diff != "" {
			t.Errorf("published alert (-want +got):\n%s", diff)
		}
		expectNothing(t, sub, 200*time.Millisecond)

		var entries, alerts int
		pool := e.app.store.Pool()
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM audit_entries WHERE host_id = $1", hostID).Scan(&entries); err != nil || entries != 2 {
			t.Errorf("audit entries = %d, %v; want 2", entries, err)
		}
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM alerts WHERE host = 'db1'").Scan(&alerts); err != nil || alerts != 1 {
			t.Errorf("alerts for db1 = %d, %v; want 1", alerts, err)
		}

		// An event for another host is refused.
		send(&alertv1.StreamEventsRequest{Message: &alertv1.StreamEventsRequest_Event{Event: &alertv1.AgentEvent{
			EventId: "77777777-7777-4777-8777-000000000003", HostId: "00000000-0000-4000-8000-000000000000",
			EventType: alertv1.EventType_EVENT_TYPE_FILE_CREATED,
		}}})
		if _, err := stream.Receive(); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("event for another host: %v; want PermissionDenied", err)
		}
	})

	t.Run("StreamEndsAtShutdown", func(t *testing.T) {
		if hostID == "" {
			t.Skip("Register failed")
		}
		stream := agent.StreamEvents(context.Background())
		defer stream.CloseResponse()
		id := "77777777-7777-4777-8777-000000000009"
		if err := stream.Send(&alertv1.StreamEventsRequest{Message: &alertv1.StreamEventsRequest_Event{Event: &alertv1.AgentEvent{
			EventId: id, EventType: alertv1.EventType_EVENT_TYPE_PROCESS_EXEC, Target: "/usr/bin/psql",
		}}}); err != nil {
			t.Fatal(err)
		}
		if resp, err := stream.Receive(); err != nil || resp.GetCommand().GetAckEventId() != id {
			t.Fatalf("Receive = %v, %v; want the ack", resp, err)
		}
		start := time.Now()
		if err := e.stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		// The drain waits up to 10 s for handlers; an open stream must not
		// hold it up.
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("shutdown with an open event stream took %v", took)
		}
		if _, err := stream.Receive(); connect.CodeOf(err) != connect.CodeUnavailable {
			t.Errorf("stream after shutdown: %v; want Unavailable", err)
		}
	})
}
