package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/services/alert/internal/livefeed"
	"github.com/witnz/witnz/services/alert/internal/store"
)

// HostAlertSource is the source of alerts raised from agent events.
const HostAlertSource = "host-agent"

// AgentService implements alertv1connect.AgentServiceHandler.
type AgentService struct {
	store    *store.Store
	feed     *livefeed.Publisher
	log      *slog.Logger
	stopping <-chan struct{}
}

var _ alertv1connect.AgentServiceHandler = (*AgentService)(nil)

// NewAgentService returns the AgentService handler. Event streams end when
// stopping is closed.
func NewAgentService(st *store.Store, feed *livefeed.Publisher, log *slog.Logger, stopping <-chan struct{}) *AgentService {
	return &AgentService{store: st, feed: feed, log: log, stopping: stopping}
}

// RegisterAgent records the caller's host and returns its enabled rules.
// The hostname must be the name in the agent's certificate.
func (s *AgentService) RegisterAgent(ctx context.Context, req *connect.Request[alertv1.RegisterAgentRequest]) (*connect.Response[alertv1.RegisterAgentResponse], error) {
	id, err := requireKind(ctx, "RegisterAgent", mtls.KindAgent)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	if m.GetHostname() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("hostname is empty; send %q, the name in this agent's certificate", id.Name))
	}
	if m.GetHostname() != id.Name {
		return nil, connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("hostname %q does not match the certificate identity %s: run the agent with --hostname %s or issue it a certificate for agent/%s",
				m.GetHostname(), id, id.Name, m.GetHostname()))
	}
	hostID, err := s.store.UpsertHost(ctx, store.Host{
		Hostname: m.GetHostname(), IP: m.GetIpAddress(), OS: m.GetOs(), AgentVersion: m.GetAgentVersion(),
	})
	if err != nil {
		s.log.Error("register agent", "host", id.Name, "error", err)
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("the alert database could not record the host; retry later"))
	}
	rules, err := s.store.EnabledRules(ctx)
	if err != nil {
		s.log.Error("register agent: load rules", "host", id.Name, "error", err)
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("the alert database could not load the rules; retry later"))
	}
	s.log.Info("agent registered", "host", id.Name, "host_id", hostID, "agent_version", m.GetAgentVersion(), "rules", len(rules))
	return connect.NewResponse(&alertv1.RegisterAgentResponse{HostId: hostID, Rules: rules}), nil
}

type received struct {
	msg *alertv1.StreamEventsRequest
	err error
}

// StreamEvents stores each event the agent sends (idempotently, by
// event_id), raises an alert for events of severity MEDIUM or above, and
// acknowledges each event once stored. Heartbeats refresh the host's
// last_seen. The stream ends when the agent closes it or the server stops.
func (s *AgentService) StreamEvents(ctx context.Context, stream *connect.BidiStream[alertv1.StreamEventsRequest, alertv1.StreamEventsResponse]) error {
	id, err := requireKind(ctx, "StreamEvents", mtls.KindAgent)
	if err != nil {
		return err
	}
	hostID, err := s.store.HostID(ctx, id.Name)
	if errors.Is(err, store.ErrHostNotFound) {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("host %s is not registered: call RegisterAgent first", id.Name))
	}
	if err != nil {
		s.log.Error("stream events: look up host", "host", id.Name, "error", err)
		return connect.NewError(connect.CodeUnavailable, errors.New("the alert database could not answer; reconnect later"))
	}

	// Receive blocks, so it runs on its own goroutine and the loop below
	// can also watch for shutdown.
	in := make(chan received)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			msg, err := stream.Receive()
			select {
			case in <- received{msg, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()

	for {
		var r received
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return connect.NewError(connect.CodeUnavailable, errors.New("the alert service is shutting down; reconnect"))
		case r = <-in:
		}
		if errors.Is(r.err, io.EOF) {
			return nil
		}
		if r.err != nil {
			return r.err
		}
		switch m := r.msg.GetMessage().(type) {
		case *alertv1.StreamEventsRequest_Event:
			if err := s.handleEvent(ctx, id, hostID, m.Event); err != nil {
				return err
			}
			ack := &alertv1.StreamEventsResponse{Command: &alertv1.ServerCommand{
				Command: &alertv1.ServerCommand_AckEventId{AckEventId: m.Event.GetEventId()},
			}}
			if err := stream.Send(ack); err != nil {
				return err
			}
		case *alertv1.StreamEventsRequest_Heartbeat:
			if h := m.Heartbeat.GetHostId(); h != "" && h != hostID {
				return hostMismatch(id, h, hostID)
			}
			if err := s.store.TouchHost(ctx, hostID); err != nil {
				s.log.Error("heartbeat", "host", id.Name, "error", err)
				return connect.NewError(connect.CodeUnavailable, errors.New("the alert database could not record the heartbeat; reconnect later"))
			}
		default:
			return connect.NewError(connect.CodeInvalidArgument, errors.New("message is empty; send an event or a heartbeat"))
		}
	}
}

func (s *AgentService) handleEvent(ctx context.Context, id mtls.Identity, hostID string, ev *alertv1.AgentEvent) error {
	eventID, ok := canonicalUUID(ev.GetEventId())
	if !ok {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("event.event_id %q is not a UUID", ev.GetEventId()))
	}
	if h := ev.GetHostId(); h != "" && h != hostID {
		return hostMismatch(id, h, hostID)
	}
	if _, known := alertv1.EventType_name[int32(ev.GetEventType())]; !known || ev.GetEventType() == alertv1.EventType_EVENT_TYPE_UNSPECIFIED {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("event %s: event_type %d is not a known event type", eventID, ev.GetEventType()))
	}
	occurred := time.Now()
	if ev.GetOccurredAt() != nil && ev.GetOccurredAt().CheckValid() == nil {
		occurred = ev.GetOccurredAt().AsTime()
	}
	severity := ev.GetSeverity()
	if ev.GetRuleId() != "" {
		// The server's copy of the rule decides, not what the agent says.
		sev, found, err := s.store.RuleSeverity(ctx, ev.GetRuleId())
		if err != nil {
			s.log.Error("stream events: look up rule", "host", id.Name, "rule_id", ev.GetRuleId(), "error", err)
			return connect.NewError(connect.CodeUnavailable, errors.New("the alert database could not answer; reconnect later"))
		}
		if found {
			severity = sev
		}
	}
	if severity < 0 || severity > alertv1.Severity_SEVERITY_CRITICAL {
		severity = alertv1.Severity_SEVERITY_CRITICAL
	}
	rec := store.Event{
		EventID:    eventID,
		HostID:     hostID,
		EventType:  eventTypeName(ev.GetEventType()),
		RuleID:     ev.GetRuleId(),
		Severity:   severity,
		Target:     ev.GetTarget(),
		Detail:     ev.GetDetail(),
		OccurredAt: occurred,
	}
	var alert *alertv1.Alert
	if severity >= alertv1.Severity_SEVERITY_MEDIUM {
		alert = hostAlert(id.Name, rec)
	}
	stored, err := s.store.RecordEvent(ctx, rec, alert)
	if err != nil {
		s.log.Error("stream events: record event", "host", id.Name, "event_id", eventID, "error", err)
		return connect.NewError(connect.CodeUnavailable, errors.New("the alert database could not store the event; reconnect and resend it"))
	}
	if stored != nil {
		s.feed.Publish(ctx, []*alertv1.Alert{stored})
	}
	return nil
}

// hostAlert is the alert an agent event raises. Its alert_id is the
// event_id, so a replayed event never raises a second alert.
func hostAlert(hostname string, ev store.Event) *alertv1.Alert {
	msg := fmt.Sprintf("%s on host %s: %s", strings.ReplaceAll(ev.EventType, "_", " "), hostname, ev.Target)
	if ev.RuleID != "" {
		msg += " (rule " + ev.RuleID + ")"
	}
	fields := map[string]any{
		"event_id":   ev.EventID,
		"event_type": ev.EventType,
		"target":     ev.Target,
	}
	if ev.RuleID != "" {
		fields["rule_id"] = ev.RuleID
	}
	if len(ev.Detail) > 0 {
		d := make(map[string]any, len(ev.Detail))
		for k, v := range ev.Detail {
			d[k] = v
		}
		fields["detail"] = d
	}
	detail, _ := structpb.NewStruct(fields) // strings and maps of strings always convert
	return &alertv1.Alert{
		AlertId:    ev.EventID,
		Type:       "host." + ev.EventType,
		Severity:   ev.Severity,
		Message:    msg,
		Source:     HostAlertSource,
		Host:       hostname,
		Detail:     detail,
		OccurredAt: timestamppb.New(ev.OccurredAt),
	}
}

// eventTypeName turns EVENT_TYPE_FILE_MODIFIED into file_modified.
func eventTypeName(t alertv1.EventType) string {
	return strings.ToLower(strings.TrimPrefix(t.String(), "EVENT_TYPE_"))
}

func hostMismatch(id mtls.Identity, got, want string) error {
	return connect.NewError(connect.CodePermissionDenied,
		fmt.Errorf("host_id %s is not the host of %s (%s); send the host_id RegisterAgent returned", got, id, want))
}
