// Package agent keeps a host known to the alert service. It registers the
// host, holds a StreamEvents stream open with a heartbeat every interval,
// delivers events until the service acknowledges them, and reconnects with
// exponential backoff and jitter whenever the stream fails.
//
// The only event this version raises is EVENT_TYPE_AGENT_STARTED, once per
// process. File, process and network watchers, the durable queue and the
// chained audit log are not built yet.
package agent

import (
	"context"
	cryptorand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
)

// Defaults of Options.
const (
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultMinBackoff        = 500 * time.Millisecond
	DefaultMaxBackoff        = 30 * time.Second
)

// closeGrace bounds how long a closing stream waits for the service to end
// it in turn.
const closeGrace = 2 * time.Second

// Host describes this host to the alert service.
type Host struct {
	Hostname string
	OS       string
	Version  string
}

// Options configure an Agent.
type Options struct {
	// Client reaches the alert service's AgentService over mutual TLS.
	Client alertv1connect.AgentServiceClient
	// AlertAddr is the host:port of the alert service. The address this
	// host uses to reach it is reported as the host's IP address.
	AlertAddr string
	Host      Host
	Logger    *slog.Logger
	// Registry receives the agent's metrics; nil keeps them unregistered.
	Registry prometheus.Registerer
	// HeartbeatInterval is the time between heartbeats; zero means
	// DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait before reconnecting; zero
	// means the defaults.
	MinBackoff, MaxBackoff time.Duration
}

// Agent is the connection of one host to the alert service.
type Agent struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics

	mu         sync.Mutex
	hostID     string
	registered bool
	streamUp   bool
	lastErr    error
	rules      []*alertv1.TripwireRule
	pending    []*alertv1.AgentEvent // sent until acknowledged, oldest first
}

// New prepares an agent; nothing is sent until Run. The agent-started event
// is queued at once, so it is delivered on the first stream that comes up.
func New(opts Options) *Agent {
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	a := &Agent{opts: opts, log: opts.Logger, metrics: newMetrics(opts.Registry)}
	a.pending = append(a.pending, &alertv1.AgentEvent{
		EventId:   NewEventID(),
		EventType: alertv1.EventType_EVENT_TYPE_AGENT_STARTED,
		Severity:  alertv1.Severity_SEVERITY_INFO,
		Target:    opts.Host.Hostname,
		Detail: map[string]string{
			"version": opts.Host.Version,
			"os":      opts.Host.OS,
			"pid":     strconv.Itoa(os.Getpid()),
		},
		OccurredAt: timestamppb.Now(),
	})
	a.metrics.pending.Set(1)
	return a
}

// Ready reports nil once the host is registered and the event stream is up,
// otherwise why not.
func (a *Agent) Ready(context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case !a.registered && a.lastErr != nil:
		return fmt.Errorf("not registered with the alert service: %w", a.lastErr)
	case !a.registered:
		return errors.New("not registered with the alert service yet")
	case !a.streamUp && a.lastErr != nil:
		return fmt.Errorf("event stream to the alert service is down: %w", a.lastErr)
	case !a.streamUp:
		return errors.New("event stream to the alert service is not up yet")
	}
	return nil
}

// HostID is the id the alert service gave this host, empty before the first
// registration.
func (a *Agent) HostID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hostID
}

// Pending is the number of events not yet acknowledged by the alert service.
func (a *Agent) Pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pending)
}

// Rules are the tripwire rules last received from the alert service.
func (a *Agent) Rules() []*alertv1.TripwireRule {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rules
}

// Run keeps the agent connected until ctx ends, then closes the stream and
// returns nil.
func (a *Agent) Run(ctx context.Context) error {
	b := backoff{min: a.opts.MinBackoff, max: a.opts.MaxBackoff}
	for {
		wasUp, err := a.runConnection(ctx)
		a.setDown(err)
		if ctx.Err() != nil {
			return nil
		}
		if wasUp {
			b.reset()
		}
		delay := b.next()
		a.metrics.failures.Inc()
		a.log.Warn("no connection to the alert service; retrying", "error", err, "retry_in", delay.String())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

type eventStream = connect.BidiStreamForClient[alertv1.StreamEventsRequest, alertv1.StreamEventsResponse]

// runConnection registers the host and serves one event stream until it
// fails or ctx ends. It reports whether the stream came up.
func (a *Agent) runConnection(ctx context.Context) (up bool, err error) {
	resp, err := a.opts.Client.RegisterAgent(ctx, connect.NewRequest(&alertv1.RegisterAgentRequest{
		Hostname:     a.opts.Host.Hostname,
		IpAddress:    localIP(a.opts.AlertAddr),
		Os:           a.opts.Host.OS,
		AgentVersion: a.opts.Host.Version,
	}))
	if err != nil {
		return false, fmt.Errorf("register: %w", err)
	}
	hostID := resp.Msg.GetHostId()
	a.setRegistered(hostID, resp.Msg.GetRules())
	a.log.Info("registered with the alert service", "host_id", hostID, "rules", len(resp.Msg.GetRules()))

	// The stream outlives ctx briefly so that shutdown can close it
	// cleanly instead of resetting it.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stream := a.opts.Client.StreamEvents(sctx)
	recvErr := make(chan error, 1)
	go func() { recvErr <- a.receive(stream) }()

	failed := func(err error) (bool, error) {
		// A failed Send only reports that the stream is gone; Receive
		// has the reason.
		if errors.Is(err, io.EOF) {
			select {
			case err = <-recvErr:
			case <-time.After(closeGrace):
			}
		}
		return up, fmt.Errorf("event stream: %w", err)
	}

	for _, ev := range a.pendingEvents(hostID) {
		if err := stream.Send(&alertv1.StreamEventsRequest{Message: &alertv1.StreamEventsRequest_Event{Event: ev}}); err != nil {
			return failed(err)
		}
		a.log.Info("event sent", "event_id", ev.GetEventId(), "event_type", ev.GetEventType().String())
	}
	if err := a.heartbeat(stream, hostID); err != nil {
		return failed(err)
	}
	up = true
	a.setStreamUp()
	a.log.Info("event stream up", "heartbeat_interval", a.opts.HeartbeatInterval.String())

	tick := time.NewTicker(a.opts.HeartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = stream.CloseRequest()
			select {
			case <-recvErr:
			case <-time.After(closeGrace):
			}
			return true, ctx.Err()
		case err := <-recvErr:
			return true, fmt.Errorf("event stream: %w", err)
		case <-tick.C:
			if err := a.heartbeat(stream, hostID); err != nil {
				return failed(err)
			}
		}
	}
}

func (a *Agent) heartbeat(stream *eventStream, hostID string) error {
	err := stream.Send(&alertv1.StreamEventsRequest{Message: &alertv1.StreamEventsRequest_Heartbeat{Heartbeat: &alertv1.Heartbeat{
		HostId: hostID,
		SentAt: timestamppb.Now(),
		Queued: uint64(a.Pending()),
	}}})
	if err == nil {
		a.metrics.heartbeats.Inc()
	}
	return err
}

// receive handles the service's commands until the stream ends.
func (a *Agent) receive(stream *eventStream) error {
	for {
		msg, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			return errors.New("the alert service closed the stream")
		}
		if err != nil {
			return err
		}
		switch c := msg.GetCommand().GetCommand().(type) {
		case *alertv1.ServerCommand_AckEventId:
			if a.ack(c.AckEventId) {
				a.log.Info("event acknowledged", "event_id", c.AckEventId)
			}
		case *alertv1.ServerCommand_UpdateRules:
			a.mu.Lock()
			a.rules = c.UpdateRules.GetRules()
			a.mu.Unlock()
			a.log.Info("tripwire rules updated", "rules", len(c.UpdateRules.GetRules()))
		case *alertv1.ServerCommand_Rescan:
			a.log.Info("rescan requested; this version has no file watchers to rescan", "reason", c.Rescan.GetReason())
		default:
			a.log.Warn("ignoring an unknown command from the alert service")
		}
	}
}

// pendingEvents copies the unacknowledged events, stamped with hostID.
func (a *Agent) pendingEvents(hostID string) []*alertv1.AgentEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*alertv1.AgentEvent, 0, len(a.pending))
	for _, ev := range a.pending {
		ev = proto.Clone(ev).(*alertv1.AgentEvent)
		ev.HostId = hostID
		out = append(out, ev)
	}
	return out
}

// ack forgets the event with id and reports whether it was pending.
func (a *Agent) ack(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, ev := range a.pending {
		if ev.GetEventId() == id {
			a.pending = append(a.pending[:i], a.pending[i+1:]...)
			a.metrics.pending.Set(float64(len(a.pending)))
			a.metrics.acked.Inc()
			return true
		}
	}
	return false
}

func (a *Agent) setRegistered(hostID string, rules []*alertv1.TripwireRule) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.hostID, a.registered, a.rules, a.lastErr = hostID, true, rules, nil
	a.metrics.registrations.Inc()
}

func (a *Agent) setStreamUp() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.streamUp, a.lastErr = true, nil
	a.metrics.streamUp.Set(1)
}

func (a *Agent) setDown(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.registered, a.streamUp, a.lastErr = false, false, err
	a.metrics.streamUp.Set(0)
}

// backoff yields exponentially growing waits with jitter.
type backoff struct {
	min, max time.Duration
	attempt  int
}

func (b *backoff) reset() { b.attempt = 0 }

func (b *backoff) next() time.Duration {
	d := b.max
	if b.attempt < 32 {
		if e := b.min << b.attempt; e > 0 && e < b.max {
			d = e
		}
	}
	b.attempt++
	// Half fixed, half random: agents that lost the service together
	// spread their reconnects, and none retries at once.
	return d/2 + rand.N(d/2+1)
}

// localIP is the address this host uses to reach addr. Connecting a UDP
// socket only picks the route and sends nothing.
func localIP(addr string) string {
	c, err := net.DialTimeout("udp", addr, 2*time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	if ua, ok := c.LocalAddr().(*net.UDPAddr); ok {
		return ua.IP.String()
	}
	return ""
}

// OSDescription names the operating system, architecture and kernel, e.g.
// "linux/amd64 6.1.0-18-amd64".
func OSDescription() string {
	s := runtime.GOOS + "/" + runtime.GOARCH
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		s += " " + strings.TrimSpace(string(b))
	}
	return s
}

// NewEventID returns a random (version 4) UUID.
func NewEventID() string {
	var b [16]byte
	_, _ = cryptorand.Read(b[:]) // never fails on supported platforms
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
