package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/testing/protocmp"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/testenv"
)

// fakeAlert is an AgentService that records what agents send. It
// acknowledges events only when ack is set, and ends its streams when its
// server shuts down.
type fakeAlert struct {
	ack      bool
	stopping <-chan struct{}

	mu          sync.Mutex
	peers       []mtls.Identity
	registers   []*alertv1.RegisterAgentRequest
	events      []*alertv1.AgentEvent
	heartbeats  []*alertv1.Heartbeat
	cleanCloses int
}

func (f *fakeAlert) RegisterAgent(ctx context.Context, req *connect.Request[alertv1.RegisterAgentRequest]) (*connect.Response[alertv1.RegisterAgentResponse], error) {
	id, _ := mtls.PeerIdentity(ctx)
	if id.Kind != mtls.KindAgent {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("agent identity required"))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers = append(f.peers, id)
	f.registers = append(f.registers, req.Msg)
	return connect.NewResponse(&alertv1.RegisterAgentResponse{
		HostId: "host-" + req.Msg.GetHostname(),
		Rules:  []*alertv1.TripwireRule{{RuleId: "r1", Name: "pg_hba.conf", TargetType: alertv1.TargetType_TARGET_TYPE_FILE, Target: "/etc/postgresql/*/main/pg_hba.conf", Enabled: true}},
	}), nil
}

func (f *fakeAlert) StreamEvents(ctx context.Context, stream *connect.BidiStream[alertv1.StreamEventsRequest, alertv1.StreamEventsResponse]) error {
	done := make(chan struct{})
	defer close(done)
	msgs := make(chan *alertv1.StreamEventsRequest)
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Receive()
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- m:
			case <-done:
				return
			}
		}
	}()
	for {
		select {
		case <-f.stopping:
			return connect.NewError(connect.CodeUnavailable, errors.New("shutting down"))
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				f.mu.Lock()
				f.cleanCloses++
				f.mu.Unlock()
				return nil
			}
			return err
		case m := <-msgs:
			f.mu.Lock()
			switch {
			case m.GetEvent() != nil:
				f.events = append(f.events, m.GetEvent())
			case m.GetHeartbeat() != nil:
				f.heartbeats = append(f.heartbeats, m.GetHeartbeat())
			}
			f.mu.Unlock()
			if ev := m.GetEvent(); ev != nil && f.ack {
				ack := &alertv1.ServerCommand{Command: &alertv1.ServerCommand_AckEventId{AckEventId: ev.GetEventId()}}
				if err := stream.Send(&alertv1.StreamEventsResponse{Command: ack}); err != nil {
					return err
				}
			}
		}
	}
}

type snapshot struct {
	peers       []mtls.Identity
	registers   []*alertv1.RegisterAgentRequest
	events      []*alertv1.AgentEvent
	heartbeats  []*alertv1.Heartbeat
	cleanCloses int
}

func (f *fakeAlert) snapshot() snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return snapshot{
		peers:       append([]mtls.Identity(nil), f.peers...),
		registers:   append([]*alertv1.RegisterAgentRequest(nil), f.registers...),
		events:      append([]*alertv1.AgentEvent(nil), f.events...),
		heartbeats:  append([]*alertv1.Heartbeat(nil), f.heartbeats...),
		cleanCloses: f.cleanCloses,
	}
}

// startFakeAlert serves a fakeAlert on addr with the certificate of id, and
// returns a function that shuts it down and waits until it has.
func startFakeAlert(t *testing.T, addr string, tlsCfg *mtls.Config, ack bool) (*fakeAlert, func()) {
	t.Helper()
	srv, err := rpcserver.New(rpcserver.Config{Name: "alert", Addr: addr, TLS: tlsCfg.Server(), Logger: testLogger(t, "alert")})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAlert{ack: ack, stopping: srv.Stopping()}
	path, h := alertv1connect.NewAgentServiceHandler(f, srv.HandlerOptions()...)
	srv.Handle(path, h, alertv1connect.AgentServiceName)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("fake alert service: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return f, stop
}

func testLogger(t *testing.T, name string) *slog.Logger {
	t.Helper()
	l, err := logging.New(t.Output(), name, logging.Options{Level: "debug", Format: "text"})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mustTLS(t *testing.T, dir string, id mtls.Identity) *mtls.Config {
	t.Helper()
	p := pki.PathsFor(dir, id)
	c, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startAgent(t *testing.T, opts Options) (*Agent, context.CancelFunc) {
	t.Helper()
	a := New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return a, stop
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestRegistersStreamsAndReconnects(t *testing.T) {
	dir := t.TempDir()
	agentID := mtls.Identity{Kind: mtls.KindAgent, Name: "db1"}
	if err := pki.Init(dir, []mtls.Identity{AlertIdentity, agentID}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	alertTLS := mustTLS(t, dir, AlertIdentity)
	addr := testenv.FreeAddr(t)

	// The first alert service never acknowledges, so the started event
	// stays pending across the restart.
	first, stopFirst := startFakeAlert(t, addr, alertTLS, false)
	a, stopAgent := startAgent(t, Options{
		Client:            NewClient(mustTLS(t, dir, agentID), "https://"+addr),
		AlertAddr:         addr,
		Host:              Host{Hostname: "db1", OS: "linux/amd64 test", Version: "v0.0.1-test"},
		Logger:            testLogger(t, "host-agent"),
		Registry:          prometheus.NewRegistry(),
		HeartbeatInterval: 20 * time.Millisecond,
		MinBackoff:        10 * time.Millisecond,
		MaxBackoff:        100 * time.Millisecond,
	})

	waitFor(t, "three heartbeats on the first stream", func() bool { return len(first.snapshot().heartbeats) >= 3 })
	s := first.snapshot()
	wantRegister := &alertv1.RegisterAgentRequest{Hostname: "db1", IpAddress: "127.0.0.1", Os: "linux/amd64 test", AgentVersion: "v0.0.1-test"}
	if diff := cmp.Diff(wantRegister, s.registers[0], protocmp.Transform()); diff != "" {
		t.Errorf("RegisterAgent request (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(agentID, s.peers[0]); diff != "" {
		t.Errorf("agent identity (-want +got):\n%s", diff)
	}
	if len(s.events) != 1 {
		t.Fatalf("events on the first stream = %d, want the one started event", len(s.events))
	}
	started := s.events[0]
	if !uuidRE.MatchString(started.GetEventId()) {
		t.Errorf("event_id %q is not a random UUID", started.GetEventId())
	}
	if started.GetEventType() != alertv1.EventType_EVENT_TYPE_AGENT_STARTED || started.GetHostId() != "host-db1" || started.GetTarget() != "db1" || started.GetDetail()["version"] != "v0.0.1-test" {
		t.Errorf("started event = %v", started)
	}
	for _, hb := range s.heartbeats {
		if hb.GetHostId() != "host-db1" || hb.GetSentAt() == nil || hb.GetQueued() != 1 {
			t.Errorf("heartbeat = %v, want host-db1, a time, and 1 queued event", hb)
		}
	}
	if err := a.Ready(t.Context()); err != nil {
		t.Errorf("Ready with the stream up: %v", err)
	}
	if diff := cmp.Diff([]string{"r1"}, ruleIDs(a.Rules())); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}

	// While the service is down, registrations fail and are retried.
	stopFirst()
	waitFor(t, "a failed registration while the service is down", func() bool {
		err := a.Ready(t.Context())
		return err != nil && strings.Contains(err.Error(), "not registered with the alert service: register:")
	})

	// The restarted service acknowledges: the same event arrives again and
	// is then forgotten.
	second, stopSecond := startFakeAlert(t, addr, alertTLS, true)
	waitFor(t, "the started event to be acknowledged", func() bool { return a.Pending() == 0 })
	waitFor(t, "heartbeats on the second stream", func() bool { return len(second.snapshot().heartbeats) >= 2 })
	s = second.snapshot()
	if len(s.registers) == 0 || len(s.events) != 1 || s.events[0].GetEventId() != started.GetEventId() {
		t.Fatalf("second service saw %d registrations and events %v, want the same started event %s again", len(s.registers), s.events, started.GetEventId())
	}
	waitFor(t, "the agent to be ready again", func() bool { return a.Ready(t.Context()) == nil })

	// Once acknowledged, the event is never sent again.
	stopSecond()
	third, _ := startFakeAlert(t, addr, alertTLS, true)
	waitFor(t, "heartbeats on the third stream", func() bool { return len(third.snapshot().heartbeats) >= 2 })
	if s := third.snapshot(); len(s.events) != 0 {
		t.Errorf("third service received %v after the ack", s.events)
	}
	if hb := third.snapshot().heartbeats[0]; hb.GetQueued() != 0 {
		t.Errorf("heartbeat after the ack reports %d queued", hb.GetQueued())
	}

	// Shutting the agent down closes its stream cleanly.
	stopAgent()
	waitFor(t, "a clean close of the stream", func() bool { return third.snapshot().cleanCloses == 1 })
}

func ruleIDs(rules []*alertv1.TripwireRule) []string {
	var ids []string
	for _, r := range rules {
		ids = append(ids, r.GetRuleId())
	}
	return ids
}

func TestRefusesServerWithAnotherIdentity(t *testing.T) {
	dir := t.TempDir()
	agentID := mtls.Identity{Kind: mtls.KindAgent, Name: "db1"}
	impostor := mtls.Service("gateway")
	if err := pki.Init(dir, []mtls.Identity{impostor, agentID}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	fake, _ := startFakeAlert(t, addr, mustTLS(t, dir, impostor), true)
	a, _ := startAgent(t, Options{
		Client:     NewClient(mustTLS(t, dir, agentID), "https://"+addr),
		AlertAddr:  addr,
		Host:       Host{Hostname: "db1"},
		Logger:     testLogger(t, "host-agent"),
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond,
	})
	want := "is spiffe://witnz/service/gateway, not the alert service spiffe://witnz/service/alert"
	waitFor(t, "Ready to name the wrong identity", func() bool {
		err := a.Ready(t.Context())
		return err != nil && strings.Contains(err.Error(), want)
	})
	if s := fake.snapshot(); len(s.registers) != 0 {
		t.Errorf("the agent registered with an impostor: %v", s.registers)
	}
}

func TestBackoffGrowsWithJitterAndResets(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: time.Second}
	for i, ceiling := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		ceiling *= time.Millisecond
		for range 20 {
			c := b
			if d := c.next(); d < ceiling/2 || d > ceiling {
				t.Fatalf("attempt %d: wait %v outside [%v, %v]", i, d, ceiling/2, ceiling)
			}
		}
		b.next()
	}
	b.attempt = 1000
	if d := b.next(); d < 500*time.Millisecond || d > time.Second {
		t.Errorf("after many attempts: wait %v, want within [max/2, max]", d)
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Errorf("after reset: wait %v, want at most min", d)
	}
}

func TestNewEventIDIsRandomUUID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewEventID()
		if !uuidRE.MatchString(id) {
			t.Fatalf("%q is not a version 4 UUID", id)
		}
		if seen[id] {
			t.Fatalf("%q repeated", id)
		}
		seen[id] = true
	}
}
