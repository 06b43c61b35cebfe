package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/witnz/witnz/libs/checkpoint"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	anchorv1 "github.com/witnz/witnz/libs/gen/witnz/anchor/v1"
	"github.com/witnz/witnz/libs/gen/witnz/anchor/v1/anchorv1connect"
	gatewayv1 "github.com/witnz/witnz/libs/gen/witnz/gateway/v1"
	"github.com/witnz/witnz/libs/gen/witnz/gateway/v1/gatewayv1connect"
	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
	"github.com/witnz/witnz/libs/gen/witnz/verifier/v1/verifierv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
)

// ReportVersion is the version of the `witnz report --format json` shape.
const ReportVersion = 1

// reportFetchLimit is how many anchors and runs per table the report asks
// for: the services' maximum.
const reportFetchLimit = 1000

// reportMaxAlerts bounds the alerts a report lists.
const reportMaxAlerts = 10 * reportFetchLimit

// checkpointHistoryNote says where the checkpoint history comes from.
const checkpointHistoryNote = "The witnesses keep only the latest cosigned checkpoint of each table; " +
	"the checkpoints of earlier moments in the period are the ones held in the anchored objects (write-once storage)."

// Report is the output of `witnz report --format json`, a public contract
// (see the README): fields are only ever added.
type Report struct {
	Version int `json:"version"`
	// GeneratedAt, Since and Until are RFC 3339 in UTC; the period is
	// [since, until).
	GeneratedAt string `json:"generated_at"`
	Since       string `json:"since"`
	Until       string `json:"until"`
	// Sources are the services the report was built from.
	Sources ReportSources `json:"sources"`
	// CheckpointHistory says where the checkpoint history comes from.
	CheckpointHistory string `json:"checkpoint_history"`
	// AnchorCheck is the check of the latest anchor at the time of the
	// report.
	AnchorCheck ReportAnchorCheck `json:"anchor_check"`
	Summary     ReportSummary     `json:"summary"`
	Tables      []ReportTable     `json:"tables"`
	// OtherAlerts are the alerts of the period about no table (hosts,
	// witnesses, services), newest first.
	OtherAlerts []Alert `json:"other_alerts"`
	// Warnings are limits of the report (e.g. a history longer than what
	// was fetched).
	Warnings []string `json:"warnings"`
}

// ReportSources names the services asked.
type ReportSources struct {
	Witnesses []string `json:"witnesses"`
	// Witness is the node whose checkpoints and status were used.
	Witness  string `json:"witness"`
	Verifier string `json:"verifier"`
	Anchor   string `json:"anchor"`
	// Gateway is where the alerts were listed.
	Gateway string `json:"gateway"`
	// Policy is the checkpoint policy file the witnesses' checkpoints were
	// verified against, PolicyDescription what it requires; both empty
	// when no policy was given (the checkpoints are then listed, not
	// verified).
	Policy            string `json:"policy"`
	PolicyDescription string `json:"policy_description"`
}

// ReportAnchorCheck is an anchor check in a report.
type ReportAnchorCheck struct {
	// Checked is false when the check could not run; Error says why.
	Checked bool              `json:"checked"`
	OK      bool              `json:"ok"`
	Error   string            `json:"error"`
	Checks  []AnchorCheckItem `json:"checks"`
}

// ReportSummary is the report's overview.
type ReportSummary struct {
	Tables int `json:"tables"`
	// TablesClean, TablesTampered, TablesIntegrity and TablesUnverified
	// count the tables by Status.
	TablesClean      int `json:"tables_clean"`
	TablesTampered   int `json:"tables_tampered"`
	TablesIntegrity  int `json:"tables_integrity"`
	TablesUnverified int `json:"tables_unverified"`
	// OpenFindings is the number of findings of the tables' latest
	// completed verifications.
	OpenFindings        int `json:"open_findings"`
	AnchorsInPeriod     int `json:"anchors_in_period"`
	VerificationsPeriod int `json:"verifications_in_period"`
	// AlertsInPeriod counts the alerts that occurred in the period, by
	// severity ("critical", "high", ...).
	AlertsInPeriod map[string]int `json:"alerts_in_period"`
}

// ReportTable is everything the report says about one table.
type ReportTable struct {
	Table string `json:"table"`
	// Mode is "append-only" or "mutable"; Protection "protected",
	// "unprotected" or "" when the witnesses do not know the table.
	Mode       string `json:"mode"`
	Protection string `json:"protection"`
	// CurrentSize is the table's log size at the time of the report.
	CurrentSize uint64 `json:"current_size"`
	// Status is "clean" (the latest completed verification found the
	// table as committed), "tampered" (it found differences), "integrity"
	// (it found the witness log itself failing a check, so neither a clean
	// comparison nor findings can be trusted) or "unverified" (no
	// verification completed yet).
	Status string `json:"status"`
	// LastProvenClean is when the latest verification that found the
	// table clean started (RFC 3339), empty if none; LastProvenCleanSize
	// the log size it compared with.
	LastProvenClean     string `json:"last_proven_clean"`
	LastProvenCleanSize uint64 `json:"last_proven_clean_size"`
	// OpenFindings are the findings of the latest completed verification,
	// OpenIntegrity its log integrity problems.
	OpenFindings  []VerifyFinding   `json:"open_findings"`
	OpenIntegrity []ReportIntegrity `json:"open_integrity"`
	// LatestCheckpoint is the witnesses' latest cosigned checkpoint, null
	// before the first one.
	LatestCheckpoint *ReportCheckpoint `json:"latest_checkpoint"`
	// Checkpoints in the period, newest first: the witnesses' latest (if
	// it falls in the period) and the anchored ones.
	Checkpoints []ReportCheckpoint `json:"checkpoints"`
	// Anchors in the period that cover the table, newest first.
	Anchors []ReportAnchor `json:"anchors"`
	// Verifications in the period, newest first.
	Verifications []ReportRun `json:"verifications"`
	// Alerts about the table that occurred in the period, newest first.
	Alerts []Alert `json:"alerts"`
}

// ReportCheckpoint is one cosigned checkpoint of a table.
type ReportCheckpoint struct {
	// Source is "witness" (the cluster's latest) or "anchor" (held in an
	// anchored object, named by AnchorKey).
	Source    string `json:"source"`
	Time      string `json:"time"`
	Size      uint64 `json:"size"`
	Root      string `json:"root"`
	AnchorKey string `json:"anchor_key,omitempty"`
	// Cosigners are the names on the note's signature lines (for a
	// witness checkpoint verified against the policy: the witnesses whose
	// cosignatures verified; for an anchored one: the keys the anchor
	// service's policy accepted).
	Cosigners []string `json:"cosigners"`
	// PolicyVerified says whether the witnesses' checkpoint meets the
	// policy (--policy) and matches the size and root they report; null
	// when no policy was given, and for anchored checkpoints (the anchor
	// check verifies those). PolicyError says why not.
	PolicyVerified *bool  `json:"policy_verified"`
	PolicyError    string `json:"policy_error,omitempty"`
}

// ReportAnchor is one anchored object covering a table.
type ReportAnchor struct {
	AnchorReceipt
	// Size is the table's log size in the object.
	Size uint64 `json:"size"`
	// WitnessLog says whether the witnesses' replicated log holds the
	// receipt: "recorded" (same key, version and SHA-256), "differs" (a
	// receipt for the key with another version or checksum), "missing",
	// or "unknown" (the witness keeps only its newest receipts, or could
	// not be asked).
	WitnessLog string `json:"witness_log"`
}

// ReportRun is one verification run.
type ReportRun struct {
	StartedAt string `json:"started_at"`
	// Trigger is "api" or "schedule"; Outcome "ok", "tampered",
	// "integrity" (the witness log failed a check) or "error".
	Trigger     string          `json:"trigger"`
	Outcome     string          `json:"outcome"`
	SnapshotLSN string          `json:"snapshot_lsn"`
	LogSize     uint64          `json:"log_size"`
	RowsScanned uint64          `json:"rows_scanned"`
	DurationMS  uint64          `json:"duration_ms"`
	Error       string          `json:"error"`
	Findings    []VerifyFinding `json:"findings"`
	Warnings    []string        `json:"warnings"`
	// Integrity lists the log integrity problems of the run.
	Integrity []ReportIntegrity `json:"integrity"`
}

// ReportIntegrity is one failed log integrity check of a run.
type ReportIntegrity struct {
	// Witness is the node at fault, empty when no single node is.
	Witness    string `json:"witness"`
	WitnessURL string `json:"witness_url"`
	// Kind is e.g. "root_mismatch", "checkpoint_fork".
	Kind    string `json:"kind"`
	Problem string `json:"problem"`
	Size    uint64 `json:"size"`
}

// reportPeriod is the parsed --since/--until.
type reportPeriod struct{ since, until time.Time }

func (p reportPeriod) contains(t time.Time) bool {
	return !t.Before(p.since) && t.Before(p.until)
}

// parseReportTime reads a date (YYYY-MM-DD, midnight UTC) or an RFC 3339
// time. A date given to --until means the end of that day.
func parseReportTime(flagName, v string, endOfDay bool) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		if endOfDay {
			t = t.AddDate(0, 0, 1)
		}
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t.UTC(), nil
	}
	return time.Time{}, fmt.Errorf("--%s %q: want a date YYYY-MM-DD (UTC) or an RFC 3339 time like 2026-11-01T00:00:00Z", flagName, v)
}

func runReport(ctx context.Context, c *invocation) error {
	fs := c.flagSet("report", "--since DATE [--until DATE] [--format md|json] [--out FILE]")
	since := fs.String("since", "", "start of the period: YYYY-MM-DD (UTC) or an RFC 3339 time (required)")
	until := fs.String("until", "", "end of the period: YYYY-MM-DD (that whole day included) or an RFC 3339 time (default: now)")
	format := fs.String("format", "md", "md (Markdown for people) or json (stable shape, see the README)")
	out := fs.String("out", "", "write the report to this file instead of standard output")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up when the services have not answered everything within this time")
	var witnesses listFlag
	fs.Var(&witnesses, "witness", "witness URL https://host:port; repeatable (env WITNZ_WITNESS; default: from the stack file)")
	vf := &serviceFlags{name: "verifier", flag: "verifier", env: "WITNZ_VERIFIER"}
	fs.StringVar(&vf.url, "verifier", "", "verifier URL https://host:port (env WITNZ_VERIFIER; default: from the stack file)")
	fs.StringVar(&vf.gateway, "gateway", "", "gateway URL https://host:port, for the alerts (env WITNZ_GATEWAY; default: from the stack file)")
	var anchorURL, policyPath string
	fs.StringVar(&anchorURL, "anchor", "", "anchor service URL https://host:port (env WITNZ_ANCHOR; default: from the stack file)")
	fs.StringVar(&policyPath, "policy", "", "checkpoint policy file: verify the witnesses' cosigned checkpoints against it (env WITNZ_POLICY; default: the local stack's cosign/policy.txt if there is one)")
	addTLSFlags(fs, &vf.gatewayFlags)
	if err := parse(fs, c.args); err != nil {
		return err
	}
	if *format != "md" && *format != "json" {
		return fmt.Errorf("--format %q: want md (Markdown) or json", *format)
	}
	if *since == "" {
		return errors.New("--since is required: the start of the period, e.g. --since 2026-11-01")
	}
	now := time.Now().UTC()
	var p reportPeriod
	var err error
	if p.since, err = parseReportTime("since", *since, false); err != nil {
		return err
	}
	p.until = now
	if *until != "" {
		if p.until, err = parseReportTime("until", *until, true); err != nil {
			return err
		}
	}
	if !p.since.Before(p.until) {
		return fmt.Errorf("--since %s is not before --until %s: the period is empty", p.since.Format(time.RFC3339), p.until.Format(time.RFC3339))
	}

	verifierURL, tlsCfg, info, err := vf.resolve(c.getenv)
	if err != nil {
		return err
	}
	aURL, err := serviceURL("anchor", "anchor", firstNonEmpty(anchorURL, c.getenv("WITNZ_ANCHOR")), "WITNZ_ANCHOR", info)
	if err != nil {
		return err
	}
	gatewayURL := firstNonEmpty(vf.gateway, c.getenv("WITNZ_GATEWAY"), info.Gateway)
	if gatewayURL == "" {
		return fmt.Errorf("no gateway to list the alerts: start the local stack with `make up` (it writes %s), or pass --gateway https://host:port (or set WITNZ_GATEWAY)", defaultStackFile)
	}
	if !strings.HasPrefix(gatewayURL, "https://") {
		return fmt.Errorf("--gateway %q must be an https:// URL (the gateway speaks mutual TLS only)", gatewayURL)
	}
	urls := (&verifyFlags{witnesses: witnesses}).witnessURLs(c.getenv, info)
	if len(urls) == 0 {
		return errors.New("no witness to ask for the tables and their checkpoints: pass --witness https://host:port (or set WITNZ_WITNESS, or use the stack file of `make up`)")
	}
	policyPath = policyOrStack(policyPath, c.getenv, info)
	var policy *checkpoint.Policy
	if policyPath != "" {
		if policy, err = checkpoint.LoadPolicy(policyPath); err != nil {
			return fmt.Errorf("--policy %s: %v", policyPath, err)
		}
	}
	if *timeout <= 0 {
		return fmt.Errorf("--timeout %s: want a positive duration, e.g. --timeout 2m", *timeout)
	}
	rctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	r, err := buildReport(rctx, tlsCfg, reportSources{witnesses: urls, verifier: verifierURL, anchor: aURL, gateway: gatewayURL}, p, now, policy)
	if err != nil {
		if errors.Is(rctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			return fmt.Errorf("the report was not done within --timeout %s (a service did not answer in time; raise --timeout for a long period): %w", *timeout, err)
		}
		return err
	}
	if policy != nil {
		r.Sources.Policy = policyPath
	}
	var buf bytes.Buffer
	if *format == "json" {
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		writeReportMarkdown(&buf, r)
	}
	if *out == "" {
		_, err := c.stdout.Write(buf.Bytes())
		return err
	}
	if err := os.WriteFile(*out, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("--out: %v", err)
	}
	fmt.Fprintf(c.stderr, "report written to %s (%d tables, %s to %s)\n", *out, len(r.Tables), r.Since, r.Until)
	return nil
}

// buildReport asks the witnesses, the verifier and the anchor service.
// Any service that does not answer fails the report: a report with holes
// would read as a clean one.
func buildReport(ctx context.Context, tlsCfg *mtls.Config, src reportSources, p reportPeriod, now time.Time, policy *checkpoint.Policy) (*Report, error) {
	hc := tlsCfg.HTTPClient()
	witnessURLs, verifierURL, anchorURL := src.witnesses, src.verifier, src.anchor
	r := &Report{
		Version: ReportVersion, GeneratedAt: now.Format(time.RFC3339), Since: p.since.Format(time.RFC3339), Until: p.until.Format(time.RFC3339),
		Sources:           ReportSources{Witnesses: witnessURLs, Verifier: verifierURL, Anchor: anchorURL, Gateway: src.gateway},
		CheckpointHistory: checkpointHistoryNote,
		Summary:           ReportSummary{AlertsInPeriod: map[string]int{}},
		Tables:            []ReportTable{},
		OtherAlerts:       []Alert{},
		Warnings:          []string{},
	}
	if policy != nil {
		r.Sources.PolicyDescription = policy.Describe()
	} else {
		r.Warnings = append(r.Warnings, "no checkpoint policy given (--policy): the witnesses' checkpoints are listed, not verified")
	}

	// Tables and latest checkpoints, from the first witness that answers.
	st, witnessURL, err := witnessStatusFrom(ctx, tlsCfg, witnessURLs)
	if err != nil {
		return nil, err
	}
	r.Sources.Witness = witnessURL
	wc := witnessv1connect.NewWitnessServiceClient(hc, witnessURL, rpcserver.ClientOptions()...)
	byName := map[string]*ReportTable{}
	table := func(name string) *ReportTable {
		if t, ok := byName[name]; ok {
			return t
		}
		t := &ReportTable{Table: name, Status: "unverified", OpenFindings: []VerifyFinding{}, OpenIntegrity: []ReportIntegrity{}, Checkpoints: []ReportCheckpoint{},
			Anchors: []ReportAnchor{}, Verifications: []ReportRun{}, Alerts: []Alert{}}
		byName[name] = t
		return t
	}
	for _, ti := range st.GetTables() {
		t := table(ti.GetName())
		t.Mode = modeName(ti.GetMode())
		t.Protection = protectionName(ti.GetProtection())
		t.CurrentSize = ti.GetSize()
		resp, err := wc.GetCheckpoint(ctx, connect.NewRequest(&witnessv1.GetCheckpointRequest{Table: ti.GetName()}))
		switch {
		case connect.CodeOf(err) == connect.CodeNotFound:
		case err != nil:
			return nil, fmt.Errorf("GetCheckpoint %s on witness %s: %s (check the witnesses with `witnz status`)", ti.GetName(), witnessURL, oneLine(err.Error()))
		default:
			cp := witnessCheckpoint(resp.Msg, policy)
			t.LatestCheckpoint = &cp
			if ts, err := time.Parse(time.RFC3339, cp.Time); err == nil && p.contains(ts) {
				t.Checkpoints = append(t.Checkpoints, cp)
			}
		}
	}

	// Anchors.
	ac := anchorv1connect.NewAnchorServiceClient(hc, anchorURL, rpcserver.ClientOptions()...)
	anchors, err := ac.ListAnchors(ctx, connect.NewRequest(&anchorv1.ListAnchorsRequest{Limit: reportFetchLimit}))
	if err != nil {
		return nil, anchorError("ListAnchors", anchorURL, err)
	}
	inLog, logNote := witnessReceipts(ctx, wc)
	if logNote != "" {
		r.Warnings = append(r.Warnings, logNote)
	}
	oldestAnchor := now
	for _, rc := range anchors.Msg.GetReceipts() {
		at := rc.GetAnchoredAt().AsTime()
		oldestAnchor = minTime(oldestAnchor, at)
		if !p.contains(at) {
			continue
		}
		r.Summary.AnchorsInPeriod++
		rec := receiptFrom(rc)
		roots := map[string]AnchoredCheckpoint{}
		for _, cp := range rec.Checkpoints {
			roots[cp.Table] = cp
		}
		for _, name := range slices.Sorted(mapKeysU64(rec.Tables)) {
			t := table(name)
			size := rec.Tables[name]
			t.Anchors = append(t.Anchors, ReportAnchor{AnchorReceipt: rec, Size: size, WitnessLog: inLog(rec)})
			cp := ReportCheckpoint{Source: "anchor", Time: rec.AnchoredAt, Size: size, AnchorKey: rec.Key, Cosigners: []string{}}
			if a, ok := roots[name]; ok {
				cp.Root, cp.Cosigners = a.Root, a.Cosigners
			}
			t.Checkpoints = append(t.Checkpoints, cp)
		}
	}
	if len(anchors.Msg.GetReceipts()) >= reportFetchLimit && oldestAnchor.After(p.since) {
		r.Warnings = append(r.Warnings, fmt.Sprintf("only the %d newest anchors were fetched; anchors before %s are not listed", reportFetchLimit, oldestAnchor.Format(time.RFC3339)))
	}
	check, err := ac.CheckAnchors(ctx, connect.NewRequest(&anchorv1.CheckAnchorsRequest{}))
	if err != nil {
		r.AnchorCheck = ReportAnchorCheck{Error: anchorError("CheckAnchors", anchorURL, err).Error(), Checks: []AnchorCheckItem{}}
	} else {
		r.AnchorCheck = ReportAnchorCheck{Checked: true, OK: check.Msg.GetOk(), Checks: []AnchorCheckItem{}}
		for _, ch := range check.Msg.GetChecks() {
			current := map[string]uint64{}
			if t, ok := byName[ch.GetTable()]; ok {
				current[t.Table] = t.CurrentSize
			}
			item := anchorCheckItem(ch, current)
			if !item.OK {
				r.AnchorCheck.OK = false
			}
			r.AnchorCheck.Checks = append(r.AnchorCheck.Checks, item)
		}
		if len(r.AnchorCheck.Checks) == 0 {
			r.AnchorCheck.Checked, r.AnchorCheck.OK = false, false
			r.AnchorCheck.Error = "nothing is anchored yet"
		}
	}

	// Alerts.
	alerts, truncated, err := periodAlerts(ctx, gatewayv1connect.NewGatewayServiceClient(hc, src.gateway, rpcserver.ClientOptions()...), p)
	if err != nil {
		return nil, fmt.Errorf("ListAlerts on the gateway %s: %s (is the stack running? `witnz up` / `make up`)", src.gateway, oneLine(connectMessage(err)))
	}
	if truncated {
		r.Warnings = append(r.Warnings, fmt.Sprintf("the period holds more than %d alerts: only the newest %d are listed", reportMaxAlerts, reportMaxAlerts))
	}
	for _, a := range alerts {
		r.Summary.AlertsInPeriod[a.Severity]++
		if a.Table == "" {
			r.OtherAlerts = append(r.OtherAlerts, a)
			continue
		}
		t := table(a.Table)
		t.Alerts = append(t.Alerts, a)
	}

	// Verification runs.
	vc := verifierv1connect.NewVerifierServiceClient(hc, verifierURL, rpcserver.ClientOptions()...)
	for _, name := range slices.Sorted(mapKeysTable(byName)) {
		t := byName[name]
		runs, err := vc.ListRuns(ctx, connect.NewRequest(&verifierv1.ListRunsRequest{Table: name, Limit: reportFetchLimit}))
		if err != nil {
			return nil, fmt.Errorf("ListRuns %s on the verifier %s: %s (is it running? `witnz status`, or start the stack with `make up`)", name, verifierURL, oneLine(connectMessage(err)))
		}
		latestDone := false
		oldest := now
		for _, run := range runs.Msg.GetRuns() { // newest first
			at := run.GetStartedAt().AsTime()
			oldest = minTime(oldest, at)
			if !latestDone && run.GetOutcome() != verifierv1.Outcome_OUTCOME_ERROR && run.GetOutcome() != verifierv1.Outcome_OUTCOME_UNSPECIFIED {
				latestDone = true
				t.Status = map[verifierv1.Outcome]string{verifierv1.Outcome_OUTCOME_OK: "clean", verifierv1.Outcome_OUTCOME_TAMPERED: "tampered"}[run.GetOutcome()]
				if t.Status == "" {
					t.Status = "integrity"
				}
				rr := reportRun(run)
				t.OpenFindings, t.OpenIntegrity = rr.Findings, rr.Integrity
			}
			if t.LastProvenClean == "" && run.GetOutcome() == verifierv1.Outcome_OUTCOME_OK {
				t.LastProvenClean = rfc3339(run.GetStartedAt())
				t.LastProvenCleanSize = run.GetLogSize()
			}
			if p.contains(at) {
				t.Verifications = append(t.Verifications, reportRun(run))
			}
		}
		if len(runs.Msg.GetRuns()) >= reportFetchLimit && oldest.After(p.since) {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s: only the %d newest verifications were fetched; runs before %s are not listed", name, reportFetchLimit, oldest.Format(time.RFC3339)))
		}
		slices.SortStableFunc(t.Checkpoints, func(a, b ReportCheckpoint) int { return parseTime(b.Time).Compare(parseTime(a.Time)) })
		r.Tables = append(r.Tables, *t)
	}

	r.Summary.Tables = len(r.Tables)
	for _, t := range r.Tables {
		switch t.Status {
		case "clean":
			r.Summary.TablesClean++
		case "tampered":
			r.Summary.TablesTampered++
		case "integrity":
			r.Summary.TablesIntegrity++
		default:
			r.Summary.TablesUnverified++
		}
		r.Summary.OpenFindings += len(t.OpenFindings)
		r.Summary.VerificationsPeriod += len(t.Verifications)
	}
	return r, nil
}

// reportSources are the services a report asks.
type reportSources struct {
	witnesses                 []string
	verifier, anchor, gateway string
}

// periodAlerts lists the alerts that occurred in the period, newest first,
// at most reportMaxAlerts; truncated says there were more.
func periodAlerts(ctx context.Context, gw gatewayv1connect.GatewayServiceClient, p reportPeriod) ([]Alert, bool, error) {
	var out []Alert
	seen := map[string]bool{}
	for offset := 0; offset < reportMaxAlerts; offset += reportFetchLimit {
		resp, err := gw.ListAlerts(ctx, connect.NewRequest(&gatewayv1.ListAlertsRequest{Filter: &alertv1.AlertFilter{
			From: timestamppb.New(p.since), To: timestamppb.New(p.until), Limit: reportFetchLimit, Offset: uint32(offset),
		}}))
		if err != nil {
			return nil, false, err
		}
		for _, a := range resp.Msg.GetAlerts() {
			// The filter's end is inclusive; the period's is not.
			if seen[a.GetAlertId()] || !p.contains(a.GetOccurredAt().AsTime()) {
				continue
			}
			seen[a.GetAlertId()] = true
			out = append(out, alertFrom(a))
		}
		if len(resp.Msg.GetAlerts()) < reportFetchLimit {
			return out, false, nil
		}
	}
	return out, true, nil
}

// witnessReceipts asks the witness for the anchor receipts its log holds
// and returns how a receipt compares with them, and a note when they could
// not be listed.
func witnessReceipts(ctx context.Context, wc witnessv1connect.WitnessServiceClient) (func(AnchorReceipt) string, string) {
	resp, err := wc.ListAnchorReceipts(ctx, connect.NewRequest(&witnessv1.ListAnchorReceiptsRequest{}))
	if err != nil {
		note := "the witness could not list the anchor receipts its log holds (" + oneLine(connectMessage(err)) + "): whether each anchor is recorded there is unknown"
		return func(AnchorReceipt) string { return "unknown" }, note
	}
	byKey := map[string][]*witnessv1.AnchorReceipt{}
	for _, r := range resp.Msg.GetReceipts() {
		byKey[r.GetKey()] = append(byKey[r.GetKey()], r)
	}
	complete := resp.Msg.GetTotal() <= uint64(len(resp.Msg.GetReceipts()))
	return func(a AnchorReceipt) string {
		held := byKey[a.Key]
		for _, r := range held {
			if r.GetVersionId() == a.VersionID && hex.EncodeToString(r.GetSha256()) == strings.ToLower(a.ChecksumSHA256) {
				return "recorded"
			}
		}
		switch {
		case len(held) > 0:
			return "differs"
		case complete:
			return "missing"
		}
		return "unknown"
	}, ""
}

func reportRun(m *verifierv1.VerifyResponse) ReportRun {
	warnings := m.GetWarnings()
	if warnings == nil {
		warnings = []string{}
	}
	r := ReportRun{
		StartedAt: rfc3339(m.GetStartedAt()), Trigger: m.GetTrigger(), Outcome: outcomeName(m.GetOutcome()),
		SnapshotLSN: m.GetSnapshotLsn(), LogSize: m.GetLogSize(), RowsScanned: m.GetRowsScanned(), DurationMS: m.GetDurationMs(),
		Error: oneLine(m.GetError()), Findings: verifyResult(m).Findings, Warnings: warnings, Integrity: []ReportIntegrity{},
	}
	for _, p := range m.GetIntegrity() {
		r.Integrity = append(r.Integrity, ReportIntegrity{
			Witness: p.GetWitness(), WitnessURL: p.GetWitnessUrl(), Problem: oneLine(p.GetProblem()), Size: p.GetSize(),
			Kind: strings.ToLower(strings.TrimPrefix(p.GetKind().String(), "INTEGRITY_KIND_")),
		})
	}
	return r
}

func outcomeName(o verifierv1.Outcome) string {
	switch o {
	case verifierv1.Outcome_OUTCOME_OK:
		return "ok"
	case verifierv1.Outcome_OUTCOME_TAMPERED:
		return "tampered"
	case verifierv1.Outcome_OUTCOME_INTEGRITY:
		return "integrity"
	}
	return "error"
}

// witnessCheckpoint describes a cosigned checkpoint the witnesses hold,
// verified against policy when there is one.
func witnessCheckpoint(m *witnessv1.GetCheckpointResponse, policy *checkpoint.Policy) ReportCheckpoint {
	cp := ReportCheckpoint{Source: "witness", Time: rfc3339(m.GetCreatedAt()), Size: m.GetSize(), Root: base64.StdEncoding.EncodeToString(m.GetRoot()), Cosigners: []string{}}
	if policy == nil {
		if _, sigs, err := checkpoint.Parse(m.GetNote()); err == nil {
			for _, s := range sigs {
				cp.Cosigners = append(cp.Cosigners, s.Name)
			}
		}
		return cp
	}
	ok := false
	cp.PolicyVerified = &ok
	c, signers, err := policy.Verify(m.GetNote())
	switch {
	case err != nil:
		cp.PolicyError = oneLine(err.Error())
	case c.Size != m.GetSize() || !bytes.Equal(c.Root[:], m.GetRoot()):
		cp.PolicyError = fmt.Sprintf("the note is for size %d, root %s; the witness reports size %d, root %s",
			c.Size, base64.StdEncoding.EncodeToString(c.Root[:]), m.GetSize(), cp.Root)
	default:
		ok = true
		for _, s := range signers {
			if s.Role == checkpoint.RoleWitness {
				cp.Cosigners = append(cp.Cosigners, s.Label)
			}
		}
	}
	return cp
}

func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir()
}

func protectionName(p witnessv1.Protection) string {
	switch p {
	case witnessv1.Protection_PROTECTION_PROTECTED:
		return "protected"
	case witnessv1.Protection_PROTECTION_UNPROTECTED:
		return "unprotected"
	}
	return ""
}

// connectMessage is an RPC error's message without the code prefix.
func connectMessage(err error) string {
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		return cerr.Message()
	}
	return err.Error()
}

// parseTime reads an RFC 3339 time of the report; zero when unset.
func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func mapKeysTable(m map[string]*ReportTable) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// witnessStatus returns the status of the first witness that answers.
func witnessStatus(ctx context.Context, tlsCfg *mtls.Config, urls []string) (*witnessv1.GetStatusResponse, error) {
	st, _, err := witnessStatusFrom(ctx, tlsCfg, urls)
	return st, err
}

func witnessStatusFrom(ctx context.Context, tlsCfg *mtls.Config, urls []string) (*witnessv1.GetStatusResponse, string, error) {
	if len(urls) == 0 {
		return nil, "", errors.New("no witness to ask: pass --witness https://host:port (or use the stack file of `make up`)")
	}
	hc := tlsCfg.HTTPClient()
	var errs []string
	for _, u := range urls {
		if !strings.HasPrefix(u, "https://") {
			return nil, "", fmt.Errorf("--witness %q must be an https:// URL", u)
		}
		resp, err := witnessv1connect.NewWitnessServiceClient(hc, u, rpcserver.ClientOptions()...).GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %s", u, oneLine(connectMessage(err))))
			continue
		}
		return resp.Msg, u, nil
	}
	return nil, "", fmt.Errorf("no witness answered (%s): check the witnesses (`witnz status`), or start the stack with `make up`", strings.Join(errs, "; "))
}
