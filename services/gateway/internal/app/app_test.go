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
	gatewayv1 "github.com/witnz/witnz/libs/gen/witnz/gateway/v1"
	"github.com/witnz/witnz/libs/gen/witnz/gateway/v1/gatewayv1connect"
	ingestv1 "github.com/witnz/witnz/libs/gen/witnz/ingest/v1"
	"github.com/witnz/witnz/libs/gen/witnz/ingest/v1/ingestv1connect"
	"github.com/witnz/witnz/libs/gen/witnz/verifier/v1/verifierv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/services/gateway/internal/api"
	"github.com/witnz/witnz/services/gateway/internal/config"
	"github.com/witnz/witnz/services/gateway/internal/livefeed"
)

var (
	idGateway = mtls.Service("gateway")
	idAlert   = mtls.Service("alert")
	idIngest  = mtls.Service("cdc-ingest")
	idW1      = mtls.Witness("w1")
	idW2      = mtls.Witness("w2")
	idW3      = mtls.Witness("w3")
	idAdmin   = mtls.Identity{Kind: mtls.KindOperator, Name: "admin"}
	idVerify  = mtls.Service("verifier")
)

const channel = "test:alerts"

// Buffer and grace of the gateway under test: small, so a slow subscriber
// is dropped quickly.
const (
	testBuffer    = 8
	testDropGrace = 300 * time.Millisecond
	statusTimeout = 700 * time.Millisecond
)

type env struct {
	app     *App
	url     string
	pkiDir  string
	redis   *redis.Client
	closed  string // a witness URL nothing listens on
	hung    string // a witness URL that never answers
	alerts  *fakeAlert
	witness map[string]string // node id -> URL
	ingest  string
	// verifier answers the verification RPCs the gateway forwards.
	verifier *fakeVerifier
	stop     func() error
}

func quietLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func tlsFor(t *testing.T, dir string, id mtls.Identity) *mtls.Config {
	t.Helper()
	p := pki.PathsFor(dir, id)
	c, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serve runs a small Connect server over mutual TLS as id, standing in for
// another witnz service, and returns its URL.
func serve(t *testing.T, dir string, id mtls.Identity, mount func(*rpcserver.Server)) string {
	t.Helper()
	srv, err := rpcserver.New(rpcserver.Config{Name: id.Name, Addr: "127.0.0.1:0", TLS: tlsFor(t, dir, id).Server(), Logger: quietLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	mount(srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Run(ctx); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return "https://" + srv.Addr().String()
}

type fakeWitness struct {
	witnessv1connect.UnimplementedWitnessServiceHandler
	id   string
	hang bool
}

func (w *fakeWitness) GetStatus(ctx context.Context, _ *connect.Request[witnessv1.GetStatusRequest]) (*connect.Response[witnessv1.GetStatusResponse], error) {
	if w.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return connect.NewResponse(witnessStatus(w.id)), nil
}

func witnessStatus(id string) *witnessv1.GetStatusResponse {
	return &witnessv1.GetStatusResponse{NodeId: id, State: "Follower", LeaderId: "w1", AppliedIndex: 42, CommitIndex: 42, Term: 3}
}

type fakeIngest struct {
	ingestv1connect.UnimplementedIngestServiceHandler
}

var ingestStatus = &ingestv1.GetStatusResponse{SlotName: "witnz", Publication: "witnz", ServerLsn: "0/1A2B3C", Streaming: true}

func (fakeIngest) GetStatus(context.Context, *connect.Request[ingestv1.GetStatusRequest]) (*connect.Response[ingestv1.GetStatusResponse], error) {
	return connect.NewResponse(ingestStatus), nil
}

// fakeAlert answers ListAlerts with the alerts it holds and records who
// asked what.
type fakeAlert struct {
	alertv1connect.UnimplementedAlertServiceHandler
	alerts []*alertv1.Alert

	mu      sync.Mutex
	callers []string
	filters []*alertv1.AlertFilter
}

func (f *fakeAlert) ListAlerts(ctx context.Context, req *connect.Request[alertv1.ListAlertsRequest]) (*connect.Response[alertv1.ListAlertsResponse], error) {
	id, _ := mtls.PeerIdentity(ctx)
	f.mu.Lock()
	f.callers = append(f.callers, id.String())
	f.filters = append(f.filters, req.Msg.GetFilter())
	f.mu.Unlock()
	if req.Msg.GetFilter().GetLimit() > 5000 {
		return nil, connect.NewError(connect.CodeInvalidArgument, errorString("filter.limit too large"))
	}
	return connect.NewResponse(&alertv1.ListAlertsResponse{Alerts: f.alerts}), nil
}

type errorString string

func (e errorString) Error() string { return string(e) }

// startEnv starts a gateway in front of fake backends; adjust changes its
// configuration before it starts.
func startEnv(t *testing.T, adjust ...func(*config.Config)) *env {
	t.Helper()
	rs := testenv.Redis(t)
	dir := t.TempDir()
	if err := pki.Init(dir, []mtls.Identity{idGateway, idAlert, idIngest, idW1, idW2, idW3, idAdmin, idVerify}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	e := &env{pkiDir: dir, witness: map[string]string{}, alerts: &fakeAlert{alerts: []*alertv1.Alert{newAlert("a1", alertv1.Severity_SEVERITY_HIGH)}}}
	for _, id := range []mtls.Identity{idW1, idW2} {
		e.witness[id.Name] = serve(t, dir, id, func(s *rpcserver.Server) {
			s.Handle(witnessv1connect.NewWitnessServiceHandler(&fakeWitness{id: id.Name}, s.HandlerOptions()...))
		})
	}
	e.hung = serve(t, dir, idW3, func(s *rpcserver.Server) {
		s.Handle(witnessv1connect.NewWitnessServiceHandler(&fakeWitness{id: "w3", hang: true}, s.HandlerOptions()...))
	})
	e.closed = "https://" + testenv.FreeAddr(t)
	e.ingest = serve(t, dir, idIngest, func(s *rpcserver.Server) {
		s.Handle(ingestv1connect.NewIngestServiceHandler(fakeIngest{}, s.HandlerOptions()...))
	})
	alertURL := serve(t, dir, idAlert, func(s *rpcserver.Server) {
		s.Handle(alertv1connect.NewAlertServiceHandler(e.alerts, s.HandlerOptions()...))
	})
	e.verifier = &fakeVerifier{}
	verifierURL := serve(t, dir, idVerify, func(s *rpcserver.Server) {
		s.Handle(verifierv1connect.NewVerifierServiceHandler(e.verifier, s.HandlerOptions()...))
	})

	p := pki.PathsFor(dir, idGateway)
	cfg := config.Config{
		Listen:       "127.0.0.1:0",
		AdminListen:  "127.0.0.1:0",
		TLS:          mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA},
		Witnesses:    []string{e.witness["w1"], e.closed, e.hung, e.witness["w2"]},
		Ingest:       e.ingest,
		Alert:        alertURL,
		Verifier:     verifierURL,
		RedisAddr:    rs.Addr(),
		RedisChannel: channel,
	}
	for _, fn := range adjust {
		fn(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := New(ctx, cfg, quietLog(t), Options{
		API:  api.Options{StatusTimeout: statusTimeout, DropGrace: testDropGrace},
		Feed: livefeed.Options{Buffer: testBuffer},
	})
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	e.stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() {
		if err := e.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	e.app = a
	e.url = "https://" + a.Addr().String()
	e.redis = redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { e.redis.Close() })
	waitUntil(t, "the gateway has subscribed to redis", a.Feed().Subscribed)
	return e
}

// client returns a gateway client with its own connection. It does not ask
// for compressed responses, so big test alerts fill HTTP/2 windows quickly.
func (e *env) client(t *testing.T, id mtls.Identity) gatewayv1connect.GatewayServiceClient {
	hc := tlsFor(t, e.pkiDir, id).HTTPClient()
	t.Cleanup(hc.CloseIdleConnections)
	return gatewayv1connect.NewGatewayServiceClient(hc, e.url,
		rpcserver.ClientOptions(connect.WithAcceptCompression("gzip", nil, nil))...)
}

// connectClient speaks the Connect protocol instead of gRPC.
func (e *env) connectClient(t *testing.T, id mtls.Identity) gatewayv1connect.GatewayServiceClient {
	hc := tlsFor(t, e.pkiDir, id).HTTPClient()
	t.Cleanup(hc.CloseIdleConnections)
	return gatewayv1connect.NewGatewayServiceClient(hc, e.url)
}

// metric returns the value of one series on the gateway's /metrics, or "".
func (e *env) metric(t *testing.T, series string) string {
	t.Helper()
	resp, err := http.Get("http://" + e.app.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// waitUntil polls cond until it holds or 5 s pass.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newAlert(id string, sev alertv1.Severity) *alertv1.Alert {
	detail, _ := structpb.NewStruct(map[string]any{"table": "public.audit_log", "op": "UPDATE"})
	return &alertv1.Alert{
		AlertId: id, Type: "cdc.update_on_append_only", Severity: sev,
		Message: "UPDATE on append-only table public.audit_log (id=42)", Source: "cdc-ingest",
		Table: "public.audit_log", Detail: detail,
		OccurredAt: timestamppb.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)),
		ReceivedAt: timestamppb.New(time.Date(2026, 3, 1, 12, 0, 1, 0, time.UTC)),
	}
}

// publish puts an alert on the channel the way the alert service does.
func (e *env) publish(t *testing.T, a *alertv1.Alert) {
	t.Helper()
	b, err := protojson.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.redis.Publish(t.Context(), channel, b).Err(); err != nil {
		t.Fatal(err)
	}
}

// subscription is an open SubscribeAlerts stream whose messages are read
// into a channel.
type subscription struct {
	stream *connect.ServerStreamForClient[gatewayv1.SubscribeAlertsResponse]
	alerts chan *alertv1.Alert
	err    chan error
}

// idle waits until the streams of earlier subtests have ended on the
// gateway's side.
func (e *env) idle(t *testing.T) {
	t.Helper()
	waitUntil(t, "the gateway has no subscribers left", func() bool { return e.app.Feed().Subscribers() == 0 })
}

// subscribe opens a stream and waits until the gateway counts want
// subscribers (this one included).
func (e *env) subscribe(t *testing.T, minSev alertv1.Severity, want int) *subscription {
	t.Helper()
	return e.subscribeWith(t, e.client(t, idAdmin), minSev, want)
}

func (e *env) subscribeWith(t *testing.T, client gatewayv1connect.GatewayServiceClient, minSev alertv1.Severity, want int) *subscription {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.SubscribeAlerts(ctx, connect.NewRequest(&gatewayv1.SubscribeAlertsRequest{MinSeverity: minSev}))
	if err != nil {
		cancel()
		t.Fatalf("SubscribeAlerts: %v", err)
	}
	s := &subscription{stream: stream, alerts: make(chan *alertv1.Alert, 1000), err: make(chan error, 1)}
	go func() {
		for stream.Receive() {
			s.alerts <- stream.Msg().GetAlert()
		}
		s.err <- stream.Err()
	}()
	t.Cleanup(func() { cancel(); stream.Close() })
	waitUntil(t, "the gateway counts the subscriber", func() bool { return e.app.Feed().Subscribers() >= want })
	return s
}

// next returns the next alert of s, failing if none arrives within 2 s.
func (s *subscription) next(t *testing.T) *alertv1.Alert {
	t.Helper()
	select {
	case a := <-s.alerts:
		return a
	case err := <-s.err:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(2 * time.Second):
		t.Fatal("no alert within 2 s")
	}
	return nil
}

func TestGateway(t *testing.T) {
	e := startEnv(t)

	t.Run("FanOut", func(t *testing.T) {
		e.idle(t)
		var subs []*subscription
		for i := range 3 {
			subs = append(subs, e.subscribe(t, alertv1.Severity_SEVERITY_UNSPECIFIED, i+1))
		}
		subs = append(subs, e.subscribeWith(t, e.connectClient(t, idAdmin), alertv1.Severity_SEVERITY_UNSPECIFIED, 4))
		a := newAlert("fanout-1", alertv1.Severity_SEVERITY_CRITICAL)
		e.publish(t, a)
		for i, s := range subs {
			if diff := cmp.Diff(a, s.next(t), protocmp.Transform()); diff != "" {
				t.Errorf("subscriber %d (-want +got):\n%s", i, diff)
			}
		}
	})

	t.Run("MinSeverity", func(t *testing.T) {
		e.idle(t)
		high := e.subscribe(t, alertv1.Severity_SEVERITY_HIGH, 1)
		all := e.subscribe(t, alertv1.Severity_SEVERITY_UNSPECIFIED, 2)
		e.publish(t, newAlert("sev-low", alertv1.Severity_SEVERITY_LOW))
		e.publish(t, newAlert("sev-high", alertv1.Severity_SEVERITY_HIGH))
		e.publish(t, newAlert("sev-critical", alertv1.Severity_SEVERITY_CRITICAL))
		var gotHigh, gotAll []string
		for range 2 {
			gotHigh = append(gotHigh, high.next(t).GetAlertId())
		}
		for range 3 {
			gotAll = append(gotAll, all.next(t).GetAlertId())
		}
		if diff := cmp.Diff([]string{"sev-high", "sev-critical"}, gotHigh); diff != "" {
			t.Errorf("min_severity HIGH (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"sev-low", "sev-high", "sev-critical"}, gotAll); diff != "" {
			t.Errorf("no min_severity (-want +got):\n%s", diff)
		}
		stream, err := e.client(t, idAdmin).SubscribeAlerts(t.Context(), connect.NewRequest(&gatewayv1.SubscribeAlertsRequest{MinSeverity: 42}))
		if err == nil {
			// A server stream reports its status on Receive.
			for stream.Receive() {
			}
			err = stream.Err()
		}
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("min_severity 42: %v; want InvalidArgument", err)
		}
	})

	t.Run("UndecodableMessageIgnored", func(t *testing.T) {
		e.idle(t)
		s := e.subscribe(t, alertv1.Severity_SEVERITY_UNSPECIFIED, 1)
		if err := e.redis.Publish(t.Context(), channel, "not json").Err(); err != nil {
			t.Fatal(err)
		}
		e.publish(t, newAlert("after-garbage", alertv1.Severity_SEVERITY_INFO))
		if got := s.next(t).GetAlertId(); got != "after-garbage" {
			t.Errorf("got %s, want after-garbage", got)
		}
	})

	t.Run("SlowSubscriberDropped", func(t *testing.T) {
		e.idle(t)
		fast := e.subscribe(t, alertv1.Severity_SEVERITY_UNSPECIFIED, 1)
		// The slow subscriber never reads: its HTTP/2 window fills, the
		// gateway's Send blocks and its buffer fills.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		slow, err := e.client(t, idAdmin).SubscribeAlerts(ctx, connect.NewRequest(&gatewayv1.SubscribeAlertsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Close()
		waitUntil(t, "the slow subscriber is counted", func() bool { return e.app.Feed().Subscribers() == 2 })

		dropped := e.app.Feed().DroppedTotal()
		big := newAlert("", alertv1.Severity_SEVERITY_HIGH)
		big.Message = strings.Repeat("x", 64<<10)
		published := 0
		deadline := time.Now().Add(20 * time.Second)
		for e.app.Feed().DroppedTotal() == dropped {
			if time.Now().After(deadline) {
				t.Fatalf("slow subscriber not dropped after %d alerts of 64 KiB", published)
			}
			published++
			big.AlertId = "big-" + string(rune('a'+published%26))
			e.publish(t, big)
			// The fast subscriber keeps up with every one.
			if got := fast.next(t); got.GetAlertId() != big.AlertId {
				t.Fatalf("fast subscriber got %s, want %s", got.GetAlertId(), big.AlertId)
			}
		}
		t.Logf("slow subscriber dropped after %d alerts of 64 KiB", published)
		waitUntil(t, "the dropped subscriber is no longer counted", func() bool { return e.app.Feed().Subscribers() == 1 })
		if got := e.metric(t, "witnz_gateway_alert_subscribers_dropped_total"); got != "1" {
			t.Errorf("witnz_gateway_alert_subscribers_dropped_total = %q, want 1", got)
		}

		// Others carry on.
		e.publish(t, newAlert("after-drop", alertv1.Severity_SEVERITY_HIGH))
		if got := fast.next(t); got.GetAlertId() != "after-drop" {
			t.Errorf("fast subscriber got %s after the drop, want after-drop", got.GetAlertId())
		}

		// The gateway ends the stuck stream without waiting for the client
		// to read anything.
		waitUntil(t, "the slow stream's handler has returned ResourceExhausted", func() bool {
			return e.metric(t, `witnz_rpc_server_requests_total{code="resource_exhausted",procedure="/witnz.gateway.v1.GatewayService/SubscribeAlerts"}`) == "1"
		})
		end := make(chan error, 1)
		go func() {
			for slow.Receive() {
			}
			end <- slow.Err()
		}()
		select {
		case err := <-end:
			if err == nil {
				t.Error("slow stream ended without an error")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("slow stream still open 5 s after the drop")
		}
	})

	t.Run("GetStatus", func(t *testing.T) {
		start := time.Now()
		resp, err := e.client(t, idAdmin).GetStatus(t.Context(), connect.NewRequest(&gatewayv1.GetStatusRequest{}))
		if err != nil {
			t.Fatalf("GetStatus: %v", err)
		}
		took := time.Since(start)
		ws := resp.Msg.GetWitnesses()
		if len(ws) != 4 {
			t.Fatalf("got %d witness entries, want 4: %v", len(ws), resp.Msg)
		}
		want := &gatewayv1.GetStatusResponse{
			Witnesses: []*gatewayv1.WitnessNodeStatus{
				{Address: e.witness["w1"], Status: witnessStatus("w1")},
				{Address: e.closed, Error: ws[1].GetError()},
				{Address: e.hung, Error: ws[2].GetError()},
				{Address: e.witness["w2"], Status: witnessStatus("w2")},
			},
			Ingest: ingestStatus,
		}
		if diff := cmp.Diff(want, resp.Msg, protocmp.Transform()); diff != "" {
			t.Errorf("status (-want +got):\n%s", diff)
		}
		if !strings.Contains(ws[1].GetError(), "unreachable") || !strings.Contains(ws[1].GetError(), e.closed) {
			t.Errorf("closed port entry error = %q; want it unreachable, naming the address", ws[1].GetError())
		}
		if !strings.Contains(ws[2].GetError(), "did not answer in time") {
			t.Errorf("hung node entry error = %q; want a timeout", ws[2].GetError())
		}
		// The nodes are asked concurrently: one timeout, not several.
		if took > statusTimeout+time.Second {
			t.Errorf("GetStatus took %v; the per-node timeout is %v", took, statusTimeout)
		}
	})

	t.Run("ListAlertsProxied", func(t *testing.T) {
		filter := &alertv1.AlertFilter{Host: "db1", MinSeverity: alertv1.Severity_SEVERITY_MEDIUM, Limit: 10}
		resp, err := e.client(t, idAdmin).ListAlerts(t.Context(), connect.NewRequest(&gatewayv1.ListAlertsRequest{Filter: filter}))
		if err != nil {
			t.Fatalf("ListAlerts: %v", err)
		}
		if diff := cmp.Diff(&gatewayv1.ListAlertsResponse{Alerts: e.alerts.alerts}, resp.Msg, protocmp.Transform()); diff != "" {
			t.Errorf("alerts (-want +got):\n%s", diff)
		}
		e.alerts.mu.Lock()
		caller, got := e.alerts.callers[len(e.alerts.callers)-1], e.alerts.filters[len(e.alerts.filters)-1]
		e.alerts.mu.Unlock()
		if caller != idGateway.String() {
			t.Errorf("the alert service saw caller %s, want %s", caller, idGateway)
		}
		if diff := cmp.Diff(filter, got, protocmp.Transform()); diff != "" {
			t.Errorf("filter passed on (-want +got):\n%s", diff)
		}
		_, err = e.client(t, idAdmin).ListAlerts(t.Context(), connect.NewRequest(&gatewayv1.ListAlertsRequest{Filter: &alertv1.AlertFilter{Limit: 9999}}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "filter.limit") {
			t.Errorf("invalid filter: %v; want the alert service's InvalidArgument", err)
		}
	})

	t.Run("NoClientCertificateRefused", func(t *testing.T) {
		tc := tlsFor(t, e.pkiDir, idAdmin).Client()
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

	t.Run("ResubscribesAfterConnectionLoss", func(t *testing.T) {
		e.idle(t)
		s := e.subscribe(t, alertv1.Severity_SEVERITY_UNSPECIFIED, 1)
		if err := e.redis.Do(t.Context(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the gateway has subscribed again", func() bool {
			n, err := e.redis.PubSubNumSub(t.Context(), channel).Result()
			return err == nil && n[channel] == 1
		})
		e.publish(t, newAlert("after-reconnect", alertv1.Severity_SEVERITY_HIGH))
		if got := s.next(t).GetAlertId(); got != "after-reconnect" {
			t.Errorf("got %s, want after-reconnect", got)
		}
	})

	t.Run("StreamsEndAtShutdown", func(t *testing.T) {
		e.idle(t)
		s := e.subscribe(t, alertv1.Severity_SEVERITY_UNSPECIFIED, 1)
		start := time.Now()
		if err := e.stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		// The drain waits up to 10 s for handlers; an open stream must not
		// hold it up.
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("shutdown with an open stream took %v", took)
		}
		select {
		case err := <-s.err:
			if connect.CodeOf(err) != connect.CodeUnavailable {
				t.Errorf("stream ended with %v; want Unavailable", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("stream still open after shutdown")
		}
	})
}
