package cli

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"

	anchorv1 "github.com/witnz/witnz/libs/gen/witnz/anchor/v1"
	"github.com/witnz/witnz/libs/gen/witnz/anchor/v1/anchorv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/tools/witnz/internal/stack"
)

// AnchorReceipt is one anchored object as `witnz anchor now --json` and
// `witnz anchor list --json` print it. Its shape is a public contract (see
// the README): fields are only ever added.
type AnchorReceipt struct {
	// Sink is "s3" or "dir".
	Sink   string `json:"sink"`
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	// VersionID is the object version the store assigned (S3); empty for
	// the dir sink.
	VersionID      string `json:"version_id"`
	ChecksumSHA256 string `json:"checksum_sha256"`
	// RetainUntil and AnchoredAt are RFC 3339 in UTC, empty when unknown
	// (the dir sink keeps no retention date).
	RetainUntil string `json:"retain_until"`
	AnchoredAt  string `json:"anchored_at"`
	// Tables maps each table the object covers to its anchored log size.
	Tables map[string]uint64 `json:"tables"`
	// ETag is what the store returned (S3), ObjectSize the object's size
	// in bytes, WitnessRaftIndex the index of the witness command that
	// recorded the receipt in the witness log (0 when unknown).
	ETag             string `json:"etag"`
	ObjectSize       uint64 `json:"object_size"`
	WitnessRaftIndex uint64 `json:"witness_raft_index"`
	// Checkpoints are the anchored checkpoints, one per table.
	Checkpoints []AnchoredCheckpoint `json:"checkpoints"`
}

// AnchoredCheckpoint is one table's checkpoint in an anchored object.
type AnchoredCheckpoint struct {
	Table string `json:"table"`
	Size  uint64 `json:"size"`
	// Root is the RFC 6962 root at Size, base64.
	Root string `json:"root"`
	// Cosigners are the witness keys ("name+keyid") whose cosignatures
	// the policy accepted.
	Cosigners []string `json:"cosigners"`
}

func receiptFrom(r *anchorv1.Receipt) AnchorReceipt {
	tables := map[string]uint64{}
	for t, n := range r.GetTableSizes() {
		tables[t] = n
	}
	cps := []AnchoredCheckpoint{}
	for _, t := range r.GetTables() {
		cosigners := t.GetCosigners()
		if cosigners == nil {
			cosigners = []string{}
		}
		cps = append(cps, AnchoredCheckpoint{Table: t.GetTable(), Size: t.GetSize(), Root: base64.StdEncoding.EncodeToString(t.GetRoot()), Cosigners: cosigners})
		if _, ok := tables[t.GetTable()]; !ok {
			tables[t.GetTable()] = t.GetSize()
		}
	}
	return AnchorReceipt{
		Sink:             r.GetSink(),
		Bucket:           r.GetBucket(),
		Key:              r.GetKey(),
		VersionID:        r.GetVersionId(),
		ChecksumSHA256:   r.GetChecksumSha256(),
		RetainUntil:      rfc3339(r.GetRetainUntil()),
		AnchoredAt:       rfc3339(r.GetAnchoredAt()),
		Tables:           tables,
		ETag:             r.GetEtag(),
		ObjectSize:       r.GetObjectSize(),
		WitnessRaftIndex: r.GetWitnessRaftIndex(),
		Checkpoints:      cps,
	}
}

// serviceFlags say which service to ask and with which certificate: each
// value comes from its flag, else its environment variable, else the stack
// file of a local stack.
type serviceFlags struct {
	gatewayFlags
	// name is the service's name in the stack file, flag its URL flag and
	// env its environment variable.
	name, flag, env string
	url             string
}

func addServiceFlags(fs *flag.FlagSet, name, flagName, env string) *serviceFlags {
	f := &serviceFlags{name: name, flag: flagName, env: env}
	fs.StringVar(&f.url, flagName, "", name+" URL https://host:port (env "+env+"; default: from the stack file)")
	addTLSFlags(fs, &f.gatewayFlags)
	return f
}

// addTLSFlags registers --stack and the operator certificate flags.
func addTLSFlags(fs *flag.FlagSet, g *gatewayFlags) {
	fs.StringVar(&g.stackFile, "stack", "", "stack `FILE` written by witnz up (env WITNZ_STACK; default "+defaultStackFile+")")
	fs.StringVar(&g.cert, "tls-cert", "", "operator certificate (env WITNZ_TLS_CERT; default: from the stack file)")
	fs.StringVar(&g.key, "tls-key", "", "key of --tls-cert (env WITNZ_TLS_KEY; default: from the stack file)")
	fs.StringVar(&g.ca, "tls-ca", "", "CA bundle (env WITNZ_TLS_CA; default: from the stack file)")
}

// resolve returns the service URL and the operator's TLS configuration.
func (f *serviceFlags) resolve(getenv env) (string, *mtls.Config, stack.Info, error) {
	info, err := f.stack(getenv)
	if err != nil {
		return "", nil, info, err
	}
	url, err := serviceURL(f.name, f.flag, firstNonEmpty(f.url, getenv(f.env)), f.env, info)
	if err != nil {
		return "", nil, info, err
	}
	tlsCfg, err := f.tls(getenv, info)
	if err != nil {
		return "", nil, info, err
	}
	return url, tlsCfg, info, nil
}

// serviceURL is given (from the flag or environment), else the service's
// URL in the stack file; it must be https.
func serviceURL(name, flagName, given, env string, info stack.Info) (string, error) {
	url := firstNonEmpty(given, info.Services[name].URL)
	if url == "" {
		return "", fmt.Errorf("no %s service to ask: start the local stack with `make up` (it writes %s), or pass --%s https://host:port (or set %s)", name, defaultStackFile, flagName, env)
	}
	if !strings.HasPrefix(url, "https://") {
		return "", fmt.Errorf("--%s %q must be an https:// URL (the %s service speaks mutual TLS only)", flagName, url, name)
	}
	return url, nil
}

// anchorClient resolves the anchor service's client.
func (f *serviceFlags) anchorClient(getenv env) (anchorv1connect.AnchorServiceClient, string, error) {
	url, tlsCfg, _, err := f.resolve(getenv)
	if err != nil {
		return nil, "", err
	}
	return anchorv1connect.NewAnchorServiceClient(tlsCfg.HTTPClient(), url, rpcserver.ClientOptions()...), url, nil
}

// anchorError turns a failed anchor RPC into one line that says what to
// check.
func anchorError(rpc, url string, err error) error {
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		switch cerr.Code() {
		case connect.CodeUnavailable, connect.CodeDeadlineExceeded:
			return fmt.Errorf("%s on the anchor service %s: %s (is it running? `witnz status`, or start the stack with `make up`)", rpc, url, oneLine(cerr.Message()))
		case connect.CodeUnimplemented:
			return fmt.Errorf("%s on the anchor service %s: %s (this anchor service does not anchor yet: upgrade it)", rpc, url, oneLine(cerr.Message()))
		}
		return fmt.Errorf("%s on the anchor service %s: %s", rpc, url, oneLine(cerr.Message()))
	}
	return fmt.Errorf("%s on the anchor service %s: %s", rpc, url, oneLine(err.Error()))
}

// oneLine keeps a message on one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// runAnchor dispatches `witnz anchor <subcommand>`.
func runAnchor(ctx context.Context, c *invocation) error {
	const usage = "Usage: witnz anchor now [--json] | witnz anchor list [--limit N] [--json]   (see `witnz anchor now -h`)"
	if len(c.args) == 0 {
		return errors.New("anchor needs a subcommand: `witnz anchor now` (anchor every table now) or `witnz anchor list` (see `witnz anchor -h`)")
	}
	switch c.args[0] {
	case "now":
		return runAnchorNow(ctx, c)
	case "list":
		return runAnchorList(ctx, c)
	case "-h", "--help", "help":
		fmt.Fprintln(c.stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown anchor subcommand %q: want `witnz anchor now` or `witnz anchor list`", c.args[0])
}

// runAnchorNow publishes the latest cosigned checkpoint of every table to
// write-once storage now and prints the receipt.
func runAnchorNow(ctx context.Context, c *invocation) error {
	fs := c.flagSet("anchor now", "[--json] [--stack FILE | --anchor URL ...]")
	asJSON := fs.Bool("json", false, "print the receipt as JSON (stable shape, see the README)")
	f := addServiceFlags(fs, "anchor", "anchor", "WITNZ_ANCHOR")
	if err := parse(fs, c.args[1:]); err != nil {
		return err
	}
	client, url, err := f.anchorClient(c.getenv)
	if err != nil {
		return err
	}
	resp, err := client.AnchorNow(ctx, connect.NewRequest(&anchorv1.AnchorNowRequest{}))
	if err != nil {
		return anchorError("AnchorNow", url, err)
	}
	if resp.Msg.GetReceipt() == nil {
		return fmt.Errorf("AnchorNow on the anchor service %s returned no receipt: nothing was anchored", url)
	}
	if *asJSON {
		return c.printJSON(receiptFrom(resp.Msg.GetReceipt()))
	}
	fmt.Fprintln(c.stdout, "anchored:")
	printReceipt(c.stdout, "  ", resp.Msg.GetReceipt())
	return nil
}

// runAnchorList prints the receipts of past anchors, newest first.
func runAnchorList(ctx context.Context, c *invocation) error {
	fs := c.flagSet("anchor list", "[--limit N] [--json] [--stack FILE | --anchor URL ...]")
	asJSON := fs.Bool("json", false, "print a JSON array of receipts, newest first (stable shape, see the README)")
	limit := fs.Uint("limit", 20, "list at most this many anchors, the newest (1..1000)")
	f := addServiceFlags(fs, "anchor", "anchor", "WITNZ_ANCHOR")
	if err := parse(fs, c.args[1:]); err != nil {
		return err
	}
	if *limit < 1 || *limit > 1000 {
		return fmt.Errorf("--limit %d: want 1 to 1000", *limit)
	}
	client, url, err := f.anchorClient(c.getenv)
	if err != nil {
		return err
	}
	resp, err := client.ListAnchors(ctx, connect.NewRequest(&anchorv1.ListAnchorsRequest{Limit: uint32(*limit)}))
	if err != nil {
		return anchorError("ListAnchors", url, err)
	}
	if *asJSON {
		out := []AnchorReceipt{}
		for _, r := range resp.Msg.GetReceipts() {
			out = append(out, receiptFrom(r))
		}
		return c.printJSON(out)
	}
	if len(resp.Msg.GetReceipts()) == 0 {
		fmt.Fprintln(c.stdout, "nothing anchored yet: `witnz anchor now` anchors every table now")
		return nil
	}
	for i, r := range resp.Msg.GetReceipts() {
		if i > 0 {
			fmt.Fprintln(c.stdout)
		}
		printReceipt(c.stdout, "", r)
	}
	return nil
}

// printReceipt writes a receipt for people.
func printReceipt(w io.Writer, indent string, r *anchorv1.Receipt) {
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%s%-13s %s\n", indent, k+":", v)
		}
	}
	line("anchored at", humanTime(r.GetAnchoredAt().AsTime(), r.GetAnchoredAt() != nil))
	line("sink", r.GetSink())
	line("bucket", r.GetBucket())
	line("key", r.GetKey())
	line("version id", r.GetVersionId())
	line("sha-256", r.GetChecksumSha256())
	line("etag", r.GetEtag())
	if r.GetObjectSize() > 0 {
		line("object size", fmt.Sprintf("%d bytes", r.GetObjectSize()))
	}
	if r.GetRetainUntil() != nil {
		line("retain until", humanTime(r.GetRetainUntil().AsTime(), true))
	} else {
		line("retain until", "(no retention date: the dir sink only makes files read-only)")
	}
	if r.GetWitnessRaftIndex() > 0 {
		line("witness log", fmt.Sprintf("receipt recorded at Raft index %d", r.GetWitnessRaftIndex()))
	}
	rec := receiptFrom(r)
	if len(rec.Tables) == 0 {
		line("tables", "(none)")
		return
	}
	fmt.Fprintf(w, "%stables:\n", indent)
	roots := map[string]AnchoredCheckpoint{}
	for _, cp := range rec.Checkpoints {
		roots[cp.Table] = cp
	}
	for _, t := range slices.Sorted(mapKeysU64(rec.Tables)) {
		extra := ""
		if cp, ok := roots[t]; ok {
			extra = "  root " + cp.Root
			if len(cp.Cosigners) > 0 {
				extra += "  cosigned by " + strings.Join(cp.Cosigners, ", ")
			}
		}
		fmt.Fprintf(w, "%s  %s  size %d%s\n", indent, t, rec.Tables[t], extra)
	}
}

func humanTime(t time.Time, set bool) string {
	if !set {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func mapKeysU64(m map[string]uint64) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// AnchorCheckResult is the output of `witnz verify --check-anchor --json`,
// and the anchor_check member of `witnz verify TABLE --check-anchor --json`.
// Its shape is a public contract (see the README): fields are only ever
// added.
type AnchorCheckResult struct {
	// OK is true when every check passed.
	OK     bool              `json:"ok"`
	Checks []AnchorCheckItem `json:"checks"`
}

// AnchorCheckItem is the check of one table against one anchored object.
type AnchorCheckItem struct {
	// Table is "schema.table", empty when the problem is with the anchored
	// object itself (missing, corrupted, not ours).
	Table string `json:"table"`
	OK    bool   `json:"ok"`
	// Problem says what is wrong, empty when OK.
	Problem string `json:"problem"`
	// AnchoredSize is the table's log size in the anchored object.
	AnchoredSize uint64 `json:"anchored_size"`
	// CurrentSize is the size of the current cosigned checkpoint the
	// anchored one was proved against (else the log size the witnesses
	// report now); null when unknown.
	CurrentSize *uint64 `json:"current_size"`
	// Anchor is the receipt of the object checked.
	Anchor AnchorReceipt `json:"anchor"`
}

// anchorCheckItem is the contract's view of a check; current holds the
// witnesses' sizes for a service that does not report the current size.
func anchorCheckItem(ch *anchorv1.AnchorCheck, current map[string]uint64) AnchorCheckItem {
	rec := receiptFrom(ch.GetReceipt())
	item := AnchorCheckItem{
		Table: ch.GetTable(), OK: ch.GetOk(), Problem: oneLine(ch.GetProblem()),
		AnchoredSize: ch.GetAnchoredSize(), Anchor: rec,
	}
	if item.AnchoredSize == 0 {
		item.AnchoredSize = rec.Tables[ch.GetTable()]
	}
	if n := ch.GetCurrentSize(); n > 0 {
		item.CurrentSize = &n
	} else if n, ok := current[ch.GetTable()]; ok && ch.GetTable() != "" {
		item.CurrentSize = &n
	}
	return item
}

// AnchorProblemError is returned when the logs no longer extend what was
// anchored, or an anchored object is missing or corrupted: a tampering
// signal, so witnz exits with ExitTampered.
type AnchorProblemError struct {
	// Problems are "table: problem" lines (the object's key when the
	// problem is with the object).
	Problems []string
}

func (e *AnchorProblemError) Error() string {
	return "anchor check FAILED (tampering signal): " + strings.Join(e.Problems, "; ")
}

// ExitCode is the process exit status for this error.
func (e *AnchorProblemError) ExitCode() int { return ExitTampered }

// runCheckAnchor is `witnz verify --check-anchor` without a table.
func runCheckAnchor(ctx context.Context, c *invocation, f *verifyFlags) error {
	res, err := checkAnchors(ctx, c, f, "")
	if res == nil {
		return err
	}
	if f.json {
		if jerr := c.printJSON(res); jerr != nil {
			return jerr
		}
	}
	return err
}

// checkAnchorsAfterFailure runs the anchor check of a table that could not
// be verified: a rewritten history is still reported (exit 3), else the
// verification's error stands.
func checkAnchorsAfterFailure(ctx context.Context, c *invocation, f *verifyFlags, table string, verifyErr error) error {
	_, err := checkAnchors(ctx, c, f, table)
	if errors.As(err, new(*AnchorProblemError)) {
		fmt.Fprintf(c.stderr, "witnz: %v\n", verifyErr)
		return err
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "witnz: %v\n", err)
	}
	return verifyErr
}

// checkAnchors asks the anchor service to check the anchors (of table, or
// of every table when it is empty) and prints the checks unless --json.
// A nil result comes with an error that stopped the check (exit 1); a
// result that is not ok comes with an *AnchorProblemError.
func checkAnchors(ctx context.Context, c *invocation, f *verifyFlags, table string) (*AnchorCheckResult, error) {
	info, err := f.stack(c.getenv)
	if err != nil {
		return nil, err
	}
	url, err := serviceURL("anchor", "anchor", firstNonEmpty(f.anchor, c.getenv("WITNZ_ANCHOR")), "WITNZ_ANCHOR", info)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := f.tls(c.getenv, info)
	if err != nil {
		return nil, err
	}
	client := anchorv1connect.NewAnchorServiceClient(tlsCfg.HTTPClient(), url, rpcserver.ClientOptions()...)
	resp, err := client.CheckAnchors(ctx, connect.NewRequest(&anchorv1.CheckAnchorsRequest{All: f.allAnchors}))
	if err != nil {
		return nil, anchorError("CheckAnchors", url, err)
	}
	// Current sizes are for people: asked of the witnesses only when the
	// anchor service does not report them, briefly, and the check stands
	// without them.
	var current map[string]uint64
	for _, ch := range resp.Msg.GetChecks() {
		if ch.GetTable() != "" && ch.GetCurrentSize() == 0 {
			wctx, cancel := context.WithTimeout(ctx, witnessSizesTimeout)
			current, _ = witnessSizes(wctx, tlsCfg, f.witnessURLs(c.getenv, info))
			cancel()
			break
		}
	}

	res := &AnchorCheckResult{OK: true, Checks: []AnchorCheckItem{}}
	var problems []string
	for _, ch := range resp.Msg.GetChecks() {
		if table != "" && ch.GetTable() != "" && ch.GetTable() != table {
			continue
		}
		item := anchorCheckItem(ch, current)
		if !item.OK {
			res.OK = false
			what := item.Table
			if what == "" {
				what = "anchored object " + item.Anchor.Key
			}
			problems = append(problems, what+": "+firstNonEmpty(item.Problem, "check failed"))
		}
		res.Checks = append(res.Checks, item)
	}
	// A server that says not ok without a failed check is still not ok.
	if !resp.Msg.GetOk() && res.OK && table == "" {
		res.OK = false
		problems = append(problems, "the anchor service reports the check failed")
	}
	if len(res.Checks) == 0 && res.OK {
		if table != "" {
			return nil, fmt.Errorf("no anchor covers %s yet: anchor it with `witnz anchor now`, then check again", table)
		}
		return nil, errors.New("nothing is anchored yet, so nothing was checked: anchor with `witnz anchor now` (the anchor service also anchors on its interval), then check again")
	}
	if !f.json {
		printAnchorChecks(c.stdout, res)
	}
	if !res.OK {
		return res, &AnchorProblemError{Problems: problems}
	}
	return res, nil
}

// witnessSizesTimeout bounds the wait for a witness to tell the current
// log sizes in an anchor check.
const witnessSizesTimeout = 5 * time.Second

// printAnchorChecks writes the checks for people, grouped by anchored
// object.
func printAnchorChecks(w io.Writer, res *AnchorCheckResult) {
	last := ""
	for _, ch := range res.Checks {
		id := ch.Anchor.Sink + "|" + ch.Anchor.Bucket + "|" + ch.Anchor.Key + "|" + ch.Anchor.VersionID
		if id != last {
			last = id
			where := ch.Anchor.Key
			if ch.Anchor.Bucket != "" {
				where = ch.Anchor.Bucket + "/" + where
			}
			if ch.Anchor.VersionID != "" {
				where += " (version " + ch.Anchor.VersionID + ")"
			}
			fmt.Fprintf(w, "anchor %s, %s sink %s\n", firstNonEmpty(ch.Anchor.AnchoredAt, "(time unknown)"), ch.Anchor.Sink, where)
		}
		current := "unknown (no witness answered)"
		if ch.CurrentSize != nil {
			current = fmt.Sprint(*ch.CurrentSize)
		}
		name := ch.Table
		if name == "" {
			name = "object"
		}
		if ch.OK {
			fmt.Fprintf(w, "  %s: OK, anchored size %d, current size %s: today's log extends the anchored one\n", name, ch.AnchoredSize, current)
		} else {
			fmt.Fprintf(w, "  %s: PROBLEM, anchored size %d, current size %s: %s\n", name, ch.AnchoredSize, current, firstNonEmpty(ch.Problem, "check failed"))
		}
	}
	if res.OK {
		fmt.Fprintln(w, "anchor check: OK")
	} else {
		fmt.Fprintln(w, "anchor check: FAILED")
	}
}

// witnessURLs are the witness API URLs from --witness, WITNZ_WITNESS or the
// stack file.
func (f *verifyFlags) witnessURLs(getenv env, info stack.Info) []string {
	urls := []string(f.witnesses)
	if len(urls) == 0 {
		urls = splitList(getenv("WITNZ_WITNESS"))
	}
	if len(urls) == 0 {
		for _, w := range info.Witnesses {
			urls = append(urls, w.URL)
		}
	}
	return urls
}

// witnessSizes asks the witnesses for every table's log size: the first
// node that answers.
func witnessSizes(ctx context.Context, tlsCfg *mtls.Config, urls []string) (map[string]uint64, error) {
	st, err := witnessStatus(ctx, tlsCfg, urls)
	if err != nil {
		return nil, err
	}
	sizes := map[string]uint64{}
	for _, t := range st.GetTables() {
		sizes[t.GetName()] = t.GetSize()
	}
	return sizes, nil
}
