package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	gatewayv1 "github.com/witnz/witnz/libs/gen/witnz/gateway/v1"
)

// Alert is one alert as `witnz alerts --json` prints it. Its shape is a
// public contract (see the README): fields are only ever added.
type Alert struct {
	AlertID  string `json:"alert_id"`
	Type     string `json:"type"`
	Severity string `json:"severity"`
	Message  string `json:"message"`
	Source   string `json:"source"`
	Host     string `json:"host"`
	Table    string `json:"table"`
	// Detail is the alert's evidence object (never null).
	Detail map[string]any `json:"detail"`
	// OccurredAt and ReceivedAt are RFC 3339 in UTC, empty when unknown.
	OccurredAt string `json:"occurred_at"`
	ReceivedAt string `json:"received_at"`
}

func alertFrom(a *alertv1.Alert) Alert {
	detail := a.GetDetail().AsMap()
	if detail == nil {
		detail = map[string]any{}
	}
	return Alert{
		AlertID:    a.GetAlertId(),
		Type:       a.GetType(),
		Severity:   severityName(a.GetSeverity()),
		Message:    a.GetMessage(),
		Source:     a.GetSource(),
		Host:       a.GetHost(),
		Table:      a.GetTable(),
		Detail:     detail,
		OccurredAt: rfc3339(a.GetOccurredAt()),
		ReceivedAt: rfc3339(a.GetReceivedAt()),
	}
}

// severityName is "critical", "high", "medium", "low", "info" or
// "unspecified".
func severityName(s alertv1.Severity) string {
	name, ok := alertv1.Severity_name[int32(s)]
	if !ok || s == alertv1.Severity_SEVERITY_UNSPECIFIED {
		return "unspecified"
	}
	return strings.ToLower(strings.TrimPrefix(name, "SEVERITY_"))
}

func rfc3339(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format(time.RFC3339Nano)
}

func runAlerts(ctx context.Context, c *invocation) error {
	fs := c.flagSet("alerts", "[--json] [--since DURATION] [--limit N] [--follow] [--stack FILE | --gateway URL ...]")
	asJSON := fs.Bool("json", false, "print a JSON array (with --follow: one JSON object per line); stable shape, see the README")
	since := fs.Duration("since", 24*time.Hour, "list alerts that occurred within this long before now")
	limit := fs.Uint("limit", 100, "list at most this many alerts, the newest (1..1000)")
	follow := fs.Bool("follow", false, "after the list, keep printing alerts as they are stored, until interrupted")
	gf := addGatewayFlags(fs)
	if err := parse(fs, c.args); err != nil {
		return err
	}
	if *since <= 0 {
		return fmt.Errorf("--since %s must be positive, e.g. --since 1h", *since)
	}
	if *limit < 1 || *limit > 1000 {
		return fmt.Errorf("--limit %d is out of range: pick 1..1000", *limit)
	}
	gw, err := gf.connect(c.getenv)
	if err != nil {
		return err
	}

	// Subscribe before listing, so nothing stored in between is missed;
	// alerts that are both listed and streamed are printed once.
	var stream *connect.ServerStreamForClient[gatewayv1.SubscribeAlertsResponse]
	if *follow {
		stream, err = gw.client.SubscribeAlerts(ctx, connect.NewRequest(&gatewayv1.SubscribeAlertsRequest{}))
		if err != nil {
			return gw.callError("SubscribeAlerts", err)
		}
		defer stream.Close()
	}
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := gw.client.ListAlerts(lctx, connect.NewRequest(&gatewayv1.ListAlertsRequest{Filter: &alertv1.AlertFilter{
		From:  timestamppb.New(time.Now().Add(-*since)),
		Limit: uint32(*limit),
	}}))
	if err != nil {
		return gw.callError("ListAlerts", err)
	}
	// The gateway answers newest first; print oldest first, like a log
	// that --follow continues.
	alerts := make([]Alert, 0, len(resp.Msg.GetAlerts()))
	for _, a := range slices.Backward(resp.Msg.GetAlerts()) {
		alerts = append(alerts, alertFrom(a))
	}
	out := alertPrinter{w: c.stdout, json: *asJSON}
	if !*follow {
		return out.list(alerts)
	}
	seen := map[string]bool{}
	for _, a := range alerts {
		seen[a.AlertID] = true
		if err := out.one(a); err != nil {
			return err
		}
	}
	for stream.Receive() {
		a := alertFrom(stream.Msg().GetAlert())
		if seen[a.AlertID] {
			continue
		}
		seen[a.AlertID] = true
		if err := out.one(a); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil // interrupted: the normal way to end --follow
	}
	if err := stream.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return gw.callError("SubscribeAlerts", err)
	}
	return errors.New("the gateway ended the alert stream (it is probably shutting down): run the command again")
}

// alertPrinter prints alerts as text lines, a JSON array (list), or JSON
// lines (one).
type alertPrinter struct {
	w    io.Writer
	json bool
}

func (p alertPrinter) list(alerts []Alert) error {
	if p.json {
		return writeJSON(p.w, alerts)
	}
	if len(alerts) == 0 {
		_, err := fmt.Fprintln(p.w, "no alerts")
		return err
	}
	for _, a := range alerts {
		if err := p.one(a); err != nil {
			return err
		}
	}
	return nil
}

func (p alertPrinter) one(a Alert) error {
	if p.json {
		b, err := json.Marshal(a)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.w, "%s\n", b)
		return err
	}
	when := a.OccurredAt
	if t, err := time.Parse(time.RFC3339Nano, when); err == nil {
		when = t.Format(time.RFC3339)
	}
	where := a.Table
	if a.Host != "" {
		where = strings.Trim(a.Host+" "+where, " ")
	}
	_, err := fmt.Fprintf(p.w, "%s  %-8s  %-28s  %-20s  %s\n", when, strings.ToUpper(a.Severity), a.Type, where, a.Message)
	return err
}
