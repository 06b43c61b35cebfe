package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"

	"connectrpc.com/connect"

	ingestv1 "github.com/witnz/witnz/libs/gen/witnz/ingest/v1"
	"github.com/witnz/witnz/libs/gen/witnz/ingest/v1/ingestv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/pgsetup"
	"github.com/witnz/witnz/libs/rpcserver"
)

// ingestFlags say which cdc-ingest to ask and with which certificate.
type ingestFlags struct {
	gatewayFlags
	ingest string
	json   bool
}

func addIngestFlags(fs *flag.FlagSet) *ingestFlags {
	f := &ingestFlags{}
	fs.StringVar(&f.stackFile, "stack", "", "stack `FILE` written by witnz up (env WITNZ_STACK; default "+defaultStackFile+")")
	fs.StringVar(&f.ingest, "ingest", "", "cdc-ingest URL https://host:port (env WITNZ_INGEST; default: from the stack file)")
	fs.StringVar(&f.cert, "tls-cert", "", "operator certificate (env WITNZ_TLS_CERT; default: from the stack file)")
	fs.StringVar(&f.key, "tls-key", "", "key of --tls-cert (env WITNZ_TLS_KEY; default: from the stack file)")
	fs.StringVar(&f.ca, "tls-ca", "", "CA bundle (env WITNZ_TLS_CA; default: from the stack file)")
	fs.BoolVar(&f.json, "json", false, "print the result as JSON")
	return f
}

func (f *ingestFlags) client(getenv env) (ingestv1connect.IngestServiceClient, string, error) {
	info, err := f.stack(getenv)
	if err != nil {
		return nil, "", err
	}
	url := firstNonEmpty(f.ingest, getenv("WITNZ_INGEST"), info.Services["cdc-ingest"].URL)
	if url == "" {
		return nil, "", fmt.Errorf("no cdc-ingest to ask: start the local stack with `make up` (it writes %s), or pass --ingest https://host:port (or set WITNZ_INGEST)", defaultStackFile)
	}
	if !strings.HasPrefix(url, "https://") {
		return nil, "", fmt.Errorf("--ingest %q must be an https:// URL (cdc-ingest speaks mutual TLS only)", url)
	}
	tlsCfg, err := f.tls(getenv, info)
	if err != nil {
		return nil, "", err
	}
	return ingestv1connect.NewIngestServiceClient(tlsCfg.HTTPClient(), url, rpcserver.ClientOptions()...), url, nil
}

// oneTable parses the single SCHEMA.TABLE argument of a command.
func oneTable(fs *flag.FlagSet, args []string) (string, error) {
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", fmt.Errorf("name one table as SCHEMA.TABLE, e.g. `%s public.audit_log` (see `%s -h`)", fs.Name(), fs.Name())
	}
	if s, t, ok := strings.Cut(pos[0], "."); !ok || s == "" || t == "" {
		return "", fmt.Errorf("%q is not SCHEMA.TABLE, e.g. public.audit_log", pos[0])
	}
	return pos[0], nil
}

func ingestError(rpc, url string, err error) error {
	if connect.CodeOf(err) == connect.CodeUnavailable {
		return fmt.Errorf("%s on cdc-ingest %s: %v (is it running? `witnz status`)", rpc, url, err)
	}
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		return fmt.Errorf("%s: %s", rpc, cerr.Message())
	}
	return fmt.Errorf("%s on cdc-ingest %s: %v", rpc, url, err)
}

func (c *invocation) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ProtectResult is the output of `witnz protect --json`.
type ProtectResult struct {
	Table            string `json:"table"`
	Mode             string `json:"mode"`
	BaselineRows     uint64 `json:"baseline_rows"`
	SeamLSN          string `json:"seam_lsn"`
	LogSize          uint64 `json:"log_size"`
	AlreadyProtected bool   `json:"already_protected"`
	DurationMS       int64  `json:"duration_ms"`
}

func runProtect(ctx context.Context, c *invocation) error {
	fs := c.flagSet("protect", "SCHEMA.TABLE [--mode append-only|mutable] [--json]")
	f := addIngestFlags(fs)
	mode := fs.String("mode", "append-only", "append-only (UPDATE and DELETE alert) or mutable (every version is logged)")
	table, err := oneTable(fs, c.args)
	if err != nil {
		return err
	}
	var m witnessv1.TableMode
	switch *mode {
	case "append-only":
		m = witnessv1.TableMode_TABLE_MODE_APPEND_ONLY
	case "mutable":
		m = witnessv1.TableMode_TABLE_MODE_MUTABLE
	default:
		return fmt.Errorf("--mode %q: want append-only or mutable", *mode)
	}
	client, url, err := f.client(c.getenv)
	if err != nil {
		return err
	}
	resp, err := client.Protect(ctx, connect.NewRequest(&ingestv1.ProtectRequest{Table: table, Mode: m}))
	if err != nil {
		return ingestError("protect "+table, url, err)
	}
	r := resp.Msg
	out := ProtectResult{Table: r.GetTable(), Mode: *mode, BaselineRows: r.GetBaselineRows(), SeamLSN: r.GetSeamLsn(), LogSize: r.GetLogSize(), AlreadyProtected: r.GetAlreadyProtected(), DurationMS: r.GetDurationMs()}
	if f.json {
		return c.printJSON(out)
	}
	if out.AlreadyProtected {
		fmt.Fprintf(c.stdout, "%s is already protected (%s): log size %d, changes logged from %s\n", out.Table, out.Mode, out.LogSize, out.SeamLSN)
		return nil
	}
	fmt.Fprintf(c.stdout, "%s protected (%s): %d existing rows committed as its baseline in %d ms; changes from %s on are logged (log size %d)\n", out.Table, out.Mode, out.BaselineRows, out.DurationMS, out.SeamLSN, out.LogSize)
	return nil
}

// UnprotectResult is the output of `witnz unprotect --json`.
type UnprotectResult struct {
	Table   string `json:"table"`
	LSN     string `json:"lsn"`
	LogSize uint64 `json:"log_size"`
}

func runUnprotect(ctx context.Context, c *invocation) error {
	fs := c.flagSet("unprotect", "SCHEMA.TABLE --reason TEXT [--json]")
	f := addIngestFlags(fs)
	reason := fs.String("reason", "", "why protection ends (required; it is logged and alerted)")
	table, err := oneTable(fs, c.args)
	if err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return errors.New("--reason is required: say why protection ends, e.g. --reason \"table retired, CHG-1234\"; it is logged and alerted")
	}
	client, url, err := f.client(c.getenv)
	if err != nil {
		return err
	}
	resp, err := client.Unprotect(ctx, connect.NewRequest(&ingestv1.UnprotectRequest{Table: table, Reason: *reason}))
	if err != nil {
		return ingestError("unprotect "+table, url, err)
	}
	out := UnprotectResult{Table: resp.Msg.GetTable(), LSN: resp.Msg.GetLsn(), LogSize: resp.Msg.GetLogSize()}
	if f.json {
		return c.printJSON(out)
	}
	fmt.Fprintf(c.stdout, "%s is no longer protected from %s on; its log (%d entries) is kept\n", out.Table, out.LSN, out.LogSize)
	return nil
}

// AcceptResult is the output of `witnz accept --json`.
type AcceptResult struct {
	Table   string `json:"table"`
	Seq     uint64 `json:"seq"`
	Op      string `json:"op"`
	LSN     string `json:"lsn"`
	LogSize uint64 `json:"log_size"`
}

func runAccept(ctx context.Context, c *invocation) error {
	fs := c.flagSet("accept", "SCHEMA.TABLE --seq N --reason TEXT [--json]")
	f := addIngestFlags(fs)
	seq := fs.Int64("seq", -1, "seq of the UPDATE or DELETE entry to accept (from the alert)")
	reason := fs.String("reason", "", "why the change is legitimate (required; it is logged)")
	table, err := oneTable(fs, c.args)
	if err != nil {
		return err
	}
	if *seq < 0 {
		return errors.New("--seq is required: the seq of the logged UPDATE or DELETE to accept (the alert's detail names it)")
	}
	if strings.TrimSpace(*reason) == "" {
		return errors.New("--reason is required: say why the change is legitimate, e.g. --reason \"GDPR erasure request 42\"; it is logged")
	}
	client, url, err := f.client(c.getenv)
	if err != nil {
		return err
	}
	resp, err := client.Accept(ctx, connect.NewRequest(&ingestv1.AcceptRequest{Table: table, Seq: uint64(*seq), Reason: *reason}))
	if err != nil {
		return ingestError("accept "+table, url, err)
	}
	out := AcceptResult{Table: resp.Msg.GetTable(), Seq: resp.Msg.GetSeq(), Op: resp.Msg.GetOp(), LSN: resp.Msg.GetLsn(), LogSize: resp.Msg.GetLogSize()}
	if f.json {
		return c.printJSON(out)
	}
	fmt.Fprintf(c.stdout, "%s of %s (seq %d) accepted at %s; the expected state follows it (log size %d)\n", out.Op, out.Table, out.Seq, out.LSN, out.LogSize)
	return nil
}

// InitResult is the output of `witnz init --json`.
type InitResult struct {
	Checks             []pgsetup.Check `json:"checks"`
	OK                 bool            `json:"ok"`
	Publication        string          `json:"publication"`
	PublicationCreated bool            `json:"publication_created"`
	Slot               string          `json:"slot"`
	SlotCreated        bool            `json:"slot_created"`
	SlotLSN            string          `json:"slot_confirmed_flush_lsn,omitempty"`
}

func runInit(ctx context.Context, c *invocation) error {
	fs := c.flagSet("init", "[--pg-dsn URL] [--slot witnz] [--publication witnz] [--json]")
	g := &gatewayFlags{}
	fs.StringVar(&g.stackFile, "stack", "", "stack `FILE` written by witnz up (env WITNZ_STACK; default "+defaultStackFile+")")
	dsnFlag := fs.String("pg-dsn", "", "connection URL of the protected database, as the role cdc-ingest will use (env WITNZ_PG_DSN; default: from the stack file)")
	slot := fs.String("slot", "witnz", "logical replication slot name")
	pub := fs.String("publication", "witnz", "publication name")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parse(fs, c.args); err != nil {
		return err
	}
	info, err := g.stack(c.getenv)
	if err != nil {
		return err
	}
	dsn := firstNonEmpty(*dsnFlag, c.getenv("WITNZ_PG_DSN"), info.Postgres.DSN)
	if dsn == "" {
		return errors.New("--pg-dsn is required: the connection URL of the protected database, e.g. --pg-dsn postgres://witnz@db:5432/app (or set WITNZ_PG_DSN)")
	}
	pool, err := pgsetup.Open(ctx, dsn, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	var database string
	if err := pool.QueryRow(ctx, "SELECT current_database()").Scan(&database); err != nil {
		return fmt.Errorf("read the database name: %w", pgsetup.ErrLine(err))
	}
	checks, err := pgsetup.Prerequisites(ctx, pool, *slot)
	if err != nil {
		return err
	}
	res := InitResult{Checks: checks, OK: pgsetup.FirstFailure(checks) == nil, Publication: *pub, Slot: *slot}
	if res.OK {
		if res.PublicationCreated, err = pgsetup.EnsurePublication(ctx, pool, *pub); err != nil {
			return err
		}
		s, created, err := pgsetup.EnsureSlot(ctx, pool, dsn, database, *slot)
		if err != nil {
			return err
		}
		res.SlotCreated, res.SlotLSN = created, s.ConfirmedFlushLSN.String()
	}
	if *asJSON {
		if err := c.printJSON(res); err != nil {
			return err
		}
	} else {
		failed := 0
		for _, ch := range checks {
			mark := "ok  "
			if !ch.OK {
				mark = "FAIL"
				failed++
			}
			fmt.Fprintf(c.stdout, "%s %-24s %s\n", mark, ch.Name, ch.Detail)
			if !ch.OK {
				fmt.Fprintf(c.stdout, "     fix: %s\n", ch.Fix)
			}
		}
		if res.OK {
			fmt.Fprintf(c.stdout, "publication %s: %s\n", *pub, createdOr(res.PublicationCreated, "exists with the right settings"))
			fmt.Fprintf(c.stdout, "slot %s: %s (confirmed flush %s)\n", *slot, createdOr(res.SlotCreated, "exists"), res.SlotLSN)
		}
	}
	if !res.OK {
		return fmt.Errorf("%v; fix it and run `witnz init` again (nothing was created)", pgsetup.FirstFailure(checks))
	}
	return nil
}

func createdOr(created bool, otherwise string) string {
	if created {
		return "created"
	}
	return otherwise
}
