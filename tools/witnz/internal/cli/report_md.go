package cli

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// writeReportMarkdown writes the report for an auditor.
func writeReportMarkdown(w io.Writer, r *Report) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("# witnz compliance report\n\n")
	p("- **Period:** %s to %s (UTC; start included, end excluded)\n", r.Since, r.Until)
	p("- **Generated:** %s\n", r.GeneratedAt)
	p("- **Sources:** witness %s (of %s), verifier %s, anchor service %s\n", md(r.Sources.Witness), md(strings.Join(r.Sources.Witnesses, ", ")), md(r.Sources.Verifier), md(r.Sources.Anchor))
	if r.Sources.Policy != "" {
		p("- **Checkpoint policy:** %s (%s)\n\n", md(r.Sources.Policy), md(r.Sources.PolicyDescription))
	} else {
		p("- **Checkpoint policy:** none given: the witnesses' checkpoints are listed, not verified\n\n")
	}
	p("This report lists, for each protected table, the cosigned checkpoints of its tamper-evident log, the anchors of those " +
		"checkpoints in write-once storage, the verifications of the live table against the log, and their findings.\n\n")

	p("## Summary\n\n")
	p("Tables: %d — %d clean, %d tampered, %d with a log integrity problem, %d never verified. Open findings: %d. In the period: %d verifications, %d anchors.\n\n",
		r.Summary.Tables, r.Summary.TablesClean, r.Summary.TablesTampered, r.Summary.TablesIntegrity, r.Summary.TablesUnverified, r.Summary.OpenFindings,
		r.Summary.VerificationsPeriod, r.Summary.AnchorsInPeriod)
	var sev []string
	for _, k := range []string{"critical", "high", "medium", "low", "info", "unspecified"} {
		if n := r.Summary.AlertsInPeriod[k]; n > 0 {
			sev = append(sev, fmt.Sprintf("%d %s", n, k))
		}
	}
	if len(sev) == 0 {
		sev = []string{"none"}
	}
	p("Alerts in the period: %s.\n\n", strings.Join(sev, ", "))
	p("| Table | Status | Last proven clean | Open findings | Verifications in period (ok / tampered / other) | Anchors in period | Alerts in period | Log size now |\n")
	p("|---|---|---|---|---|---|---|---|\n")
	for _, t := range r.Tables {
		var ok, tampered, failed int
		for _, v := range t.Verifications {
			switch v.Outcome {
			case "ok":
				ok++
			case "tampered":
				tampered++
			default:
				failed++
			}
		}
		p("| %s | %s | %s | %d | %d / %d / %d | %d | %d | %d |\n", md(t.Table), strings.ToUpper(t.Status), orNever(shortTime(t.LastProvenClean)), len(t.OpenFindings), ok, tampered, failed, len(t.Anchors), len(t.Alerts), t.CurrentSize)
	}
	p("\n**Anchor check at the time of the report:** ")
	switch {
	case !r.AnchorCheck.Checked:
		p("not performed: %s.\n", md(r.AnchorCheck.Error))
	case r.AnchorCheck.OK:
		p("OK — the current logs extend what the latest anchor holds.\n")
	default:
		p("**FAILED** (tampering signal):\n\n")
		for _, ch := range r.AnchorCheck.Checks {
			if !ch.OK {
				p("- %s: %s\n", md(firstNonEmpty(ch.Table, "anchored object "+ch.Anchor.Key)), md(ch.Problem))
			}
		}
	}
	p("\n*Checkpoint history:* %s\n", r.CheckpointHistory)
	if len(r.Warnings) > 0 {
		p("\n**Limits of this report:**\n\n")
		for _, warn := range r.Warnings {
			p("- %s\n", md(warn))
		}
	}

	for _, t := range r.Tables {
		p("\n## %s\n\n", md(t.Table))
		p("Mode: %s · Protection: %s · Log size now: %d · Status: **%s** · Last proven clean: %s", t.Mode, orDash(t.Protection), t.CurrentSize, strings.ToUpper(t.Status), orNever(shortTime(t.LastProvenClean)))
		if t.LastProvenClean != "" {
			p(" (log size %d)", t.LastProvenCleanSize)
		}
		p("\n\n### Cosigned checkpoints\n\n")
		if t.LatestCheckpoint != nil {
			switch lc := t.LatestCheckpoint; {
			case lc.PolicyVerified == nil:
			case *lc.PolicyVerified:
				p("The latest checkpoint held by the witnesses meets the policy. ")
			default:
				p("**The latest checkpoint held by the witnesses does NOT meet the policy:** %s. ", md(lc.PolicyError))
			}
			p("Latest held by the witnesses: size %d, root `%s`, %s, cosigned by %s.\n\n", t.LatestCheckpoint.Size, t.LatestCheckpoint.Root, shortTime(t.LatestCheckpoint.Time), md(orDash(strings.Join(t.LatestCheckpoint.Cosigners, ", "))))
		} else {
			p("The witnesses hold no cosigned checkpoint of this table yet.\n\n")
		}
		if len(t.Checkpoints) == 0 {
			p("No checkpoint in the period.\n")
		} else {
			p("| Time | Source | Log size | Root | Cosigned by |\n|---|---|---|---|---|\n")
			for _, cp := range t.Checkpoints {
				src := "witnesses (latest)"
				if cp.Source == "anchor" {
					src = "anchor " + md(cp.AnchorKey)
				}
				root := "—"
				if cp.Root != "" {
					root = "`" + cp.Root + "`"
				}
				p("| %s | %s | %d | %s | %s |\n", shortTime(cp.Time), src, cp.Size, root, md(orDash(strings.Join(cp.Cosigners, ", "))))
			}
		}
		p("\n### Anchors\n\n")
		if len(t.Anchors) == 0 {
			p("No anchor in the period.\n")
		} else {
			p("| Anchored at | Sink | Bucket / key | Object version | SHA-256 | Retain until | Log size | Receipt in witness log |\n|---|---|---|---|---|---|---|---|\n")
			for _, a := range t.Anchors {
				where := a.Key
				if a.Bucket != "" {
					where = a.Bucket + "/" + a.Key
				}
				p("| %s | %s | %s | %s | %s | %s | %d | %s |\n", shortTime(a.AnchoredAt), md(a.Sink), md(where), md(orDash(a.VersionID)), md(orDash(a.ChecksumSHA256)), orDash(a.RetainUntil), a.Size, receiptInLog(a.WitnessLog, a.WitnessRaftIndex))
			}
		}
		p("\n### Verifications\n\n")
		if len(t.Verifications) == 0 {
			p("No verification in the period.\n")
		} else {
			p("| Started | Trigger | Outcome | Rows | Log size | Snapshot | Duration | Findings |\n|---|---|---|---|---|---|---|---|\n")
			for _, v := range t.Verifications {
				outcome := strings.ToUpper(v.Outcome)
				if v.Error != "" {
					outcome += ": " + md(v.Error)
				}
				p("| %s | %s | %s | %d | %d | %s | %d ms | %d |\n", shortTime(v.StartedAt), md(orDash(v.Trigger)), outcome, v.RowsScanned, v.LogSize, orDash(v.SnapshotLSN), v.DurationMS, len(v.Findings))
			}
		}
		p("\n### Alerts\n\n")
		writeAlertsMarkdown(w, t.Alerts)
		p("\n### Open findings\n\n")
		if len(t.OpenIntegrity) > 0 {
			p("The latest verification found the witness log itself failing a check; neither a clean comparison nor the findings can be trusted until it is understood:\n\n")
			for _, in := range t.OpenIntegrity {
				p("- %s at size %d, witness %s: %s\n", in.Kind, in.Size, md(orDash(in.Witness)), md(in.Problem))
			}
			p("\n")
		}
		if len(t.OpenFindings) == 0 && len(t.OpenIntegrity) > 0 {
			p("No row findings.\n")
		} else if len(t.OpenFindings) == 0 {
			if t.Status == "clean" {
				p("None: the latest verification found the table as committed.\n")
			} else {
				p("None known: the table has not been verified yet.\n")
			}
		} else {
			p("| Kind | Key | Witness entry | Evidence bundle |\n|---|---|---|---|\n")
			for _, f := range t.OpenFindings {
				var parts []string
				for _, k := range slices.Sorted(mapKeys(f.Key)) {
					parts = append(parts, k+"="+f.Key[k])
				}
				entry := "—"
				if f.WitnessEntry != nil {
					entry = fmt.Sprint(*f.WitnessEntry)
				}
				p("| %s | %s | %s | %s |\n", f.Kind, md(orDash(strings.Join(parts, " "))), entry, md(orDash(f.EvidencePath)))
			}
		}
	}
	p("\n## Other alerts (hosts, witnesses, services)\n\n")
	writeAlertsMarkdown(w, r.OtherAlerts)
}

func receiptInLog(state string, index uint64) string {
	switch state {
	case "recorded":
		if index > 0 {
			return fmt.Sprintf("recorded (Raft index %d)", index)
		}
		return "recorded"
	case "differs":
		return "**DIFFERS**"
	case "missing":
		return "**MISSING**"
	}
	return "unknown"
}

// reportMarkdownAlerts bounds the alerts listed per section of the
// Markdown report; the JSON report has them all.
const reportMarkdownAlerts = 100

func writeAlertsMarkdown(w io.Writer, alerts []Alert) {
	if len(alerts) == 0 {
		fmt.Fprintf(w, "No alert in the period.\n")
		return
	}
	fmt.Fprintf(w, "| Occurred | Severity | Type | Source | Message |\n|---|---|---|---|---|\n")
	for i, a := range alerts {
		if i == reportMarkdownAlerts {
			fmt.Fprintf(w, "\n…and %d more (older) in `witnz report --format json`.\n", len(alerts)-i)
			return
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", shortTime(a.OccurredAt), strings.ToUpper(a.Severity), md(a.Type), md(orDash(a.Source)), md(a.Message))
	}
}

// shortTime is an RFC 3339 time to the second, for people.
func shortTime(ts string) string {
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return ts
	}
	return t.UTC().Format(time.RFC3339)
}

// md escapes text for a Markdown table cell.
func md(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "\r", " ").Replace(s)
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func orNever(s string) string {
	if s == "" {
		return "never"
	}
	return s
}
