package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"connectrpc.com/connect"

	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
	"github.com/witnz/witnz/libs/gen/witnz/verifier/v1/verifierv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
)

// ExitTampered is the exit status of `witnz verify` when a table differs
// from what the witnesses committed.
const ExitTampered = 3

// TamperedError is returned by `witnz verify` when verification found
// rows that differ; witnz then exits with ExitTampered instead of 1.
type TamperedError struct {
	// Tables maps each tampered table to its number of findings.
	Tables map[string]int
	// Integrity maps each table whose witness log failed integrity checks
	// to the number of problems.
	Integrity map[string]int
}

func (e *TamperedError) Error() string {
	var parts []string
	for _, t := range slices.Sorted(maps.Keys(e.Tables)) {
		parts = append(parts, fmt.Sprintf("%s (%d rows)", t, e.Tables[t]))
	}
	var logs []string
	for _, t := range slices.Sorted(maps.Keys(e.Integrity)) {
		logs = append(logs, fmt.Sprintf("%s (%d problems)", t, e.Integrity[t]))
	}
	var msg []string
	if len(parts) > 0 {
		msg = append(msg, "tampering found in "+strings.Join(parts, ", ")+": the findings above name each row and its evidence bundle")
	}
	if len(logs) > 0 {
		msg = append(msg, "the witness log failed integrity checks for "+strings.Join(logs, ", ")+": the lines above name each witness and problem")
	}
	return strings.Join(msg, "; ")
}

// ExitCode is the process exit status for this error.
func (e *TamperedError) ExitCode() int { return ExitTampered }

// VerifyResult is the output of `witnz verify TABLE --json`, a public
// contract: `witnz verify --json` (every table) prints an array of them.
type VerifyResult struct {
	Table       string          `json:"table"`
	SnapshotLSN string          `json:"snapshot_lsn"`
	LogSize     uint64          `json:"log_size"`
	RowsScanned uint64          `json:"rows_scanned"`
	DurationMS  uint64          `json:"duration_ms"`
	OK          bool            `json:"ok"`
	Findings    []VerifyFinding `json:"findings"`
	// Integrity lists the log integrity checks the run failed; [] when
	// every check passed.
	Integrity []VerifyIntegrity `json:"integrity"`
	// AnchorCheck is set by `witnz verify TABLE --check-anchor`: the
	// anchors' check for the table.
	AnchorCheck *AnchorCheckResult `json:"anchor_check,omitempty"`
}

// VerifyFinding is one row that differs.
type VerifyFinding struct {
	// Kind is "modified", "deleted" or "phantom".
	Kind string `json:"kind"`
	// Key is the row's primary key, column to value as PostgreSQL text
	// (every column for a table without one); empty for a deleted row.
	Key map[string]string `json:"key"`
	// WitnessEntry is the seq of the witness entry the finding refers to,
	// null when there is none (a row never committed).
	WitnessEntry *uint64 `json:"witness_entry"`
	// EvidencePath is the evidence bundle on the verifier's host.
	EvidencePath string `json:"evidence_path"`
}

// verifyFlags say which verifier to ask, which witnesses list the tables,
// and with which certificate.
type verifyFlags struct {
	gatewayFlags
	verifier  string
	witnesses listFlag
	json      bool
	// anchor check: --check-anchor [--all] [--anchor URL]
	checkAnchor, allAnchors bool
	anchor                  string
}

func runVerify(ctx context.Context, c *invocation) error {
	fs := c.flagSet("verify", "[SCHEMA.TABLE] [--check-anchor [--all]] [--json]")
	f := &verifyFlags{}
	fs.StringVar(&f.stackFile, "stack", "", "stack `FILE` written by witnz up (env WITNZ_STACK; default "+defaultStackFile+")")
	fs.StringVar(&f.verifier, "verifier", "", "verifier URL https://host:port (env WITNZ_VERIFIER; default: from the stack file)")
	fs.Var(&f.witnesses, "witness", "witness URL https://host:port, to list the protected tables when no table is named; repeatable (env WITNZ_WITNESS; default: from the stack file)")
	fs.StringVar(&f.cert, "tls-cert", "", "operator certificate (env WITNZ_TLS_CERT; default: from the stack file)")
	fs.StringVar(&f.key, "tls-key", "", "key of --tls-cert (env WITNZ_TLS_KEY; default: from the stack file)")
	fs.StringVar(&f.ca, "tls-ca", "", "CA bundle (env WITNZ_TLS_CA; default: from the stack file)")
	fs.BoolVar(&f.json, "json", false, "print the result as JSON (an array when no table is named)")
	fs.BoolVar(&f.checkAnchor, "check-anchor", false, "prove the witness logs extend what was anchored in write-once storage (alone: only this check; with a table: both)")
	fs.BoolVar(&f.allAnchors, "all", false, "with --check-anchor: check every anchored object, not only the latest")
	fs.StringVar(&f.anchor, "anchor", "", "anchor service URL https://host:port, for --check-anchor (env WITNZ_ANCHOR; default: from the stack file)")
	pos, err := parseInterspersed(fs, c.args)
	if err != nil {
		return err
	}
	if f.allAnchors && !f.checkAnchor {
		return errors.New("--all goes with --check-anchor: `witnz verify --check-anchor --all` checks every anchored object")
	}
	if f.checkAnchor && len(pos) == 0 {
		return runCheckAnchor(ctx, c, f)
	}
	if len(pos) > 1 {
		return fmt.Errorf("name at most one table, e.g. `witnz verify public.audit_log`; without one every protected table is verified (see `witnz verify -h`)")
	}
	var tables []string
	if len(pos) == 1 {
		if s, t, ok := strings.Cut(pos[0], "."); !ok || s == "" || t == "" {
			return fmt.Errorf("%q is not SCHEMA.TABLE, e.g. public.audit_log", pos[0])
		}
		tables = pos
	}

	info, err := f.stack(c.getenv)
	if err != nil {
		return err
	}
	url := firstNonEmpty(f.verifier, c.getenv("WITNZ_VERIFIER"), info.Services["verifier"].URL)
	if url == "" {
		return fmt.Errorf("no verifier to ask: start the local stack with `make up` (it writes %s), or pass --verifier https://host:port (or set WITNZ_VERIFIER)", defaultStackFile)
	}
	if !strings.HasPrefix(url, "https://") {
		return fmt.Errorf("--verifier %q must be an https:// URL (the verifier speaks mutual TLS only)", url)
	}
	tlsCfg, err := f.tls(c.getenv, info)
	if err != nil {
		return err
	}
	if tables == nil {
		urls := []string(f.witnesses)
		if len(urls) == 0 {
			urls = splitList(c.getenv("WITNZ_WITNESS"))
		}
		if len(urls) == 0 {
			for _, w := range info.Witnesses {
				urls = append(urls, w.URL)
			}
		}
		if tables, err = protectedTables(ctx, tlsCfg, urls); err != nil {
			return err
		}
	}

	client := verifierv1connect.NewVerifierServiceClient(tlsCfg.HTTPClient(), url, rpcserver.ClientOptions()...)
	var results []VerifyResult
	tampered, integrity := map[string]int{}, map[string]int{}
	var failed []string
	for _, table := range tables {
		resp, err := client.Verify(ctx, connect.NewRequest(&verifierv1.VerifyRequest{Table: table}))
		if err != nil {
			err = verifierError(table, url, err)
			if len(tables) == 1 && f.checkAnchor {
				return checkAnchorsAfterFailure(ctx, c, f, table, err)
			}
			if len(tables) == 1 {
				return err
			}
			fmt.Fprintf(c.stderr, "witnz: %v\n", err)
			failed = append(failed, table)
			continue
		}
		r := verifyResult(resp.Msg)
		results = append(results, r)
		if !r.OK {
			if len(r.Findings) > 0 || len(r.Integrity) == 0 {
				tampered[table] = len(r.Findings)
			}
			if len(r.Integrity) > 0 {
				integrity[table] = len(r.Integrity)
			}
		}
		if !f.json {
			printVerify(c.stdout, resp.Msg)
		}
	}
	var anchorErr error
	if f.checkAnchor && len(results) == 1 {
		results[0].AnchorCheck, anchorErr = checkAnchors(ctx, c, f, tables[0])
		if results[0].AnchorCheck == nil {
			return anchorErr
		}
	}
	if f.json {
		var out any = results
		if len(pos) == 1 {
			out = results[0]
		} else if results == nil {
			out = []VerifyResult{}
		}
		if err := c.printJSON(out); err != nil {
			return err
		}
	}
	switch {
	case len(tampered) > 0 || len(integrity) > 0:
		if anchorErr != nil {
			fmt.Fprintf(c.stderr, "witnz: %v\n", anchorErr)
		}
		return &TamperedError{Tables: tampered, Integrity: integrity}
	case anchorErr != nil:
		return anchorErr
	case len(failed) > 0:
		return fmt.Errorf("%d of %d tables could not be verified (%s): see the errors above", len(failed), len(tables), strings.Join(failed, ", "))
	}
	return nil
}

// VerifyIntegrity is one failed log integrity check.
type VerifyIntegrity struct {
	// Witness is the node id at fault, "" when the problem is the
	// cluster's (no majority); WitnessURL its configured API URL.
	Witness    string `json:"witness"`
	WitnessURL string `json:"witness_url"`
	// Kind is root_mismatch, inconsistent, no_majority, checkpoint_policy,
	// checkpoint_root, checkpoint_stale, checkpoint_fork or
	// checkpoint_missing.
	Kind    string `json:"kind"`
	Size    uint64 `json:"size"`
	Problem string `json:"problem"`
}

// verifyResult is the JSON contract's view of a run.
func verifyResult(m *verifierv1.VerifyResponse) VerifyResult {
	r := VerifyResult{
		Table: m.GetTable(), SnapshotLSN: m.GetSnapshotLsn(), LogSize: m.GetLogSize(), RowsScanned: m.GetRowsScanned(),
		DurationMS: m.GetDurationMs(), OK: m.GetOk(), Findings: []VerifyFinding{}, Integrity: []VerifyIntegrity{},
	}
	for _, p := range m.GetIntegrity() {
		r.Integrity = append(r.Integrity, VerifyIntegrity{
			Witness: p.GetWitness(), WitnessURL: p.GetWitnessUrl(), Kind: integrityName(p.GetKind()), Size: p.GetSize(), Problem: p.GetProblem(),
		})
	}
	for _, f := range m.GetFindings() {
		vf := VerifyFinding{Kind: kindName(f.GetKind()), Key: f.GetKey(), WitnessEntry: f.WitnessEntry, EvidencePath: f.GetEvidencePath()}
		if vf.Key == nil {
			vf.Key = map[string]string{}
		}
		r.Findings = append(r.Findings, vf)
	}
	return r
}

func integrityName(k verifierv1.IntegrityKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "INTEGRITY_KIND_"))
}

func kindName(k verifierv1.FindingKind) string {
	switch k {
	case verifierv1.FindingKind_FINDING_KIND_MODIFIED:
		return "modified"
	case verifierv1.FindingKind_FINDING_KIND_DELETED:
		return "deleted"
	case verifierv1.FindingKind_FINDING_KIND_PHANTOM:
		return "phantom"
	}
	return "unknown"
}

// printVerify writes a run for people.
func printVerify(w io.Writer, m *verifierv1.VerifyResponse) {
	if m.GetOk() {
		fmt.Fprintf(w, "%s: OK, %d rows match the witness log (size %d) at snapshot %s (%d ms)\n",
			m.GetTable(), m.GetRowsScanned(), m.GetLogSize(), m.GetSnapshotLsn(), m.GetDurationMs())
	} else if len(m.GetFindings()) == 0 && len(m.GetIntegrity()) > 0 {
		fmt.Fprintf(w, "%s: LOG INTEGRITY FAILED, %d problems with the witness log; %d rows match it (log size %d, snapshot %s; %d ms)\n",
			m.GetTable(), len(m.GetIntegrity()), m.GetRowsScanned(), m.GetLogSize(), m.GetSnapshotLsn(), m.GetDurationMs())
	} else {
		more := ""
		if m.GetFindingsTruncated() {
			more = " (more not listed)"
		}
		fmt.Fprintf(w, "%s: TAMPERED, %d rows differ%s (snapshot %s, confirmed at %s; log size %d; %d rows scanned; %d ms)\n",
			m.GetTable(), len(m.GetFindings()), more, m.GetSnapshotLsn(), m.GetConfirmSnapshotLsn(), m.GetLogSize(), m.GetRowsScanned(), m.GetDurationMs())
	}
	for _, f := range m.GetFindings() {
		key := "(key unknown: only its commitment is logged)"
		if len(f.GetKey()) > 0 {
			var parts []string
			for _, k := range slices.Sorted(mapKeys(f.GetKey())) {
				parts = append(parts, k+"="+f.GetKey()[k])
			}
			key = strings.Join(parts, " ")
		}
		entry := "no witness entry"
		if f.WitnessEntry != nil {
			entry = fmt.Sprintf("witness entry %d", f.GetWitnessEntry())
		}
		fmt.Fprintf(w, "  %-8s %s  (%s)\n", kindName(f.GetKind()), key, entry)
		if f.GetMessage() != "" {
			fmt.Fprintf(w, "           %s\n", f.GetMessage())
		}
		if f.GetEvidencePath() != "" {
			fmt.Fprintf(w, "           evidence: %s\n", f.GetEvidencePath())
		}
	}
	for _, p := range m.GetIntegrity() {
		fmt.Fprintf(w, "  integrity %s: %s\n", integrityName(p.GetKind()), p.GetProblem())
	}
	for _, warn := range m.GetWarnings() {
		fmt.Fprintf(w, "  warning: %s\n", warn)
	}
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// protectedTables asks the witnesses which tables they protect: the first
// node that answers.
func protectedTables(ctx context.Context, tlsCfg *mtls.Config, urls []string) ([]string, error) {
	if len(urls) == 0 {
		return nil, errors.New("no table named and no witness to list the protected tables: name a table (`witnz verify public.audit_log`), or pass --witness https://host:port (or use the stack file of `make up`)")
	}
	var errs []string
	hc := tlsCfg.HTTPClient()
	for _, u := range urls {
		if !strings.HasPrefix(u, "https://") {
			return nil, fmt.Errorf("--witness %q must be an https:// URL", u)
		}
		resp, err := witnessv1connect.NewWitnessServiceClient(hc, u, rpcserver.ClientOptions()...).GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", u, err))
			continue
		}
		var tables []string
		for _, t := range resp.Msg.GetTables() {
			if t.GetProtection() == witnessv1.Protection_PROTECTION_PROTECTED {
				tables = append(tables, t.GetName())
			}
		}
		if len(tables) == 0 {
			return nil, errors.New("the witnesses protect no table yet: protect one with `witnz protect SCHEMA.TABLE`")
		}
		slices.Sort(tables)
		return tables, nil
	}
	return nil, fmt.Errorf("no witness answered to list the protected tables (%s): name a table, or check the witnesses (`witnz status`)", strings.Join(errs, "; "))
}

// verifierError turns a failed Verify into one line.
func verifierError(table, url string, err error) error {
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		switch cerr.Code() {
		case connect.CodeUnavailable:
			if strings.Contains(cerr.Message(), "witness") || strings.Contains(cerr.Message(), "caught up") {
				return fmt.Errorf("verify %s: %s", table, cerr.Message())
			}
			return fmt.Errorf("verify %s on verifier %s: %s (is it running? `witnz status`)", table, url, cerr.Message())
		case connect.CodeUnknown, connect.CodeInternal:
			return fmt.Errorf("verify %s on verifier %s: %s", table, url, cerr.Message())
		}
		return fmt.Errorf("verify %s: %s", table, cerr.Message())
	}
	return fmt.Errorf("verify %s on verifier %s: %v", table, url, err)
}

// splitList splits a comma-separated environment value.
func splitList(v string) []string {
	var l listFlag
	_ = l.Set(v)
	return l
}
