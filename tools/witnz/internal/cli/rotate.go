package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/rpcserver"
)

// The membership commands of `witnz witness`: they call the witness
// cluster's MembershipService with the operator's certificate, on the
// leader (a follower's answer names it, and the command follows).

// witnessSubcommands are the `witnz witness` subcommands besides keygen.
var witnessSubcommands = []struct {
	name, synopsis string
	run            func(context.Context, *invocation) error
}{
	{"members", "[--json] [--history N]", runWitnessMembers},
	{"rotate", "[--out ID --in ID=RAFT_ADDR,API_ADDR] [--json]", runWitnessRotate},
	{"add", "--node ID=RAFT_ADDR,API_ADDR [--nonvoter] [--json]", runWitnessAdd},
	{"remove", "--node ID [--json]", runWitnessRemove},
	{"transfer-leadership", "[--to ID] [--json]", runWitnessTransfer},
}

// runWitnessGroup dispatches `witnz witness <subcommand>`.
func runWitnessGroup(ctx context.Context, c *invocation) error {
	if len(c.args) > 0 {
		for _, s := range witnessSubcommands {
			if s.name == c.args[0] {
				return s.run(ctx, &invocation{args: c.args[1:], getenv: c.getenv, stdout: c.stdout, stderr: c.stderr})
			}
		}
		switch c.args[0] {
		case "-h", "--help", "help":
			fmt.Fprintln(c.stdout, "Usage:")
			fmt.Fprintln(c.stdout, "  witnz witness keygen --name NAME --out DIR")
			for _, s := range witnessSubcommands {
				fmt.Fprintf(c.stdout, "  witnz witness %s %s\n", s.name, s.synopsis)
			}
			fmt.Fprintln(c.stdout, "\nRun `witnz witness <subcommand> -h` for its flags.")
			return nil
		}
	}
	if len(c.args) == 0 {
		return errors.New("witness needs a subcommand: `witnz witness keygen --name NAME --out DIR`, members, rotate, add, remove or transfer-leadership (see `witnz witness -h`)")
	}
	if c.args[0] == "keygen" {
		return runWitness(ctx, c)
	}
	return fmt.Errorf("unknown subcommand `witnz witness %s`: want `witnz witness keygen --name NAME --out DIR`, members, rotate, add, remove or transfer-leadership (see `witnz witness -h`)", c.args[0])
}

// witnessFlags say which witnesses to ask and with which certificate.
type witnessFlags struct {
	gatewayFlags
	witnesses listFlag
	json      bool
	timeout   time.Duration
}

func addWitnessFlags(fs *flag.FlagSet, timeout time.Duration) *witnessFlags {
	f := &witnessFlags{}
	fs.StringVar(&f.stackFile, "stack", "", "stack `FILE` written by witnz up (env WITNZ_STACK; default "+defaultStackFile+")")
	fs.Var(&f.witnesses, "witness", "witness API URL https://host:port, repeatable; any node will do, the leader is found from there (env WITNZ_WITNESS, comma-separated; default: every witness of the stack file)")
	fs.StringVar(&f.cert, "tls-cert", "", "operator certificate (env WITNZ_TLS_CERT; default: from the stack file)")
	fs.StringVar(&f.key, "tls-key", "", "key of --tls-cert (env WITNZ_TLS_KEY; default: from the stack file)")
	fs.StringVar(&f.ca, "tls-ca", "", "CA bundle (env WITNZ_TLS_CA; default: from the stack file)")
	fs.BoolVar(&f.json, "json", false, "print the result as JSON")
	fs.DurationVar(&f.timeout, "timeout", timeout, "give up after this long")
	return f
}

// membershipConn reaches the witness cluster's MembershipService.
type membershipConn struct {
	urls   []string
	client func(url string) witnessv1connect.MembershipServiceClient
}

func (f *witnessFlags) connect(getenv env) (*membershipConn, error) {
	info, err := f.stack(getenv)
	if err != nil {
		return nil, err
	}
	urls := []string(f.witnesses)
	if len(urls) == 0 {
		var env listFlag
		env.Set(getenv("WITNZ_WITNESS"))
		urls = env
	}
	if len(urls) == 0 {
		for _, w := range info.Witnesses {
			urls = append(urls, w.URL)
		}
	}
	if len(urls) == 0 {
		return nil, fmt.Errorf("no witness to ask: start the local stack with `make up` (it writes %s), or pass --witness https://host:port (or set WITNZ_WITNESS)", defaultStackFile)
	}
	for _, u := range urls {
		if !strings.HasPrefix(u, "https://") {
			return nil, fmt.Errorf("--witness %q must be an https:// URL (witnesses speak mutual TLS only)", u)
		}
	}
	tlsCfg, err := f.tls(getenv, info)
	if err != nil {
		return nil, err
	}
	hc := tlsCfg.HTTPClient()
	return &membershipConn{urls: urls, client: func(url string) witnessv1connect.MembershipServiceClient {
		return witnessv1connect.NewMembershipServiceClient(hc, url, rpcserver.ClientOptions()...)
	}}, nil
}

// maxRedirects bounds how often a request follows a leader hint (a leader
// that hands leadership over to be removed sends the request on once).
const maxRedirects = 4

// unary calls one unary RPC of the leader with req (see call).
func unary[Req, Resp any](ctx context.Context, m *membershipConn, what string, req *Req, rpc func(witnessv1connect.MembershipServiceClient, context.Context, *connect.Request[Req]) (*connect.Response[Resp], error)) (*Resp, error) {
	return call(ctx, m, what, func(cl witnessv1connect.MembershipServiceClient) (*Resp, error) {
		r, err := rpc(cl, ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		return r.Msg, nil
	})
}

// call runs rpc on the leader: it starts at the first witness that
// answers and follows the witnz-leader header of FAILED_PRECONDITION
// answers.
func call[T any](ctx context.Context, m *membershipConn, what string, rpc func(witnessv1connect.MembershipServiceClient) (T, error)) (T, error) {
	var zero T
	var errs []string
	for _, url := range m.urls {
		target := url
		for hop := 0; ; hop++ {
			if hop == maxRedirects {
				errs = append(errs, fmt.Sprintf("%s: sent on to another leader %d times", url, maxRedirects))
				break
			}
			res, err := rpc(m.client(target))
			if err == nil {
				return res, nil
			}
			var cerr *connect.Error
			if errors.As(err, &cerr) && cerr.Code() == connect.CodeFailedPrecondition {
				if next := cerr.Meta().Get("witnz-leader"); next != "" && next != target {
					target = next
					continue
				}
			}
			if connect.CodeOf(err) != connect.CodeUnavailable || ctx.Err() != nil {
				// The cluster answered: its message says what to do.
				if errors.As(err, &cerr) {
					return zero, fmt.Errorf("%s on witness %s: %s", what, target, cerr.Message())
				}
				return zero, fmt.Errorf("%s on witness %s: %v", what, target, err)
			}
			errs = append(errs, fmt.Sprintf("%s: %v", target, err))
			break
		}
	}
	return zero, fmt.Errorf("%s: no witness answered (%s); is the cluster running? (`witnz status`)", what, strings.Join(errs, "; "))
}

// parseNode parses ID=RAFT_ADDR,API_ADDR.
func parseNode(flagName, v string) (id, raftAddr, apiAddr string, err error) {
	form := fmt.Sprintf("want ID=RAFT_HOST:PORT,API_HOST:PORT, e.g. %s w4=10.0.0.4:7011,https://10.0.0.4:7010", flagName)
	id, rest, ok := strings.Cut(v, "=")
	raftAddr, apiAddr, ok2 := strings.Cut(rest, ",")
	if !ok || !ok2 || id == "" || raftAddr == "" || apiAddr == "" {
		return "", "", "", fmt.Errorf("%s %q: %s", flagName, v, form)
	}
	return strings.TrimSpace(id), strings.TrimSpace(raftAddr), strings.TrimSpace(apiAddr), nil
}

// MemberInfo is one member in the JSON output of the membership commands.
type MemberInfo struct {
	ID          string `json:"id"`
	RaftAddress string `json:"raft_address"`
	APIAddress  string `json:"api_address"`
	Voter       bool   `json:"voter"`
	Leader      bool   `json:"leader"`
}

func memberInfos(ms []*witnessv1.Member) []MemberInfo {
	out := make([]MemberInfo, 0, len(ms))
	for _, m := range ms {
		out = append(out, MemberInfo{ID: m.GetId(), RaftAddress: m.GetRaftAddress(), APIAddress: m.GetApiAddress(), Voter: m.GetVoter(), Leader: m.GetLeader()})
	}
	return out
}

// ChangeResult is the output of `witnz witness rotate|add|remove --json`.
type ChangeResult struct {
	Steps         []string     `json:"steps"`
	CaughtUpIndex uint64       `json:"caught_up_index,omitempty"`
	Members       []MemberInfo `json:"members"`
}

func (c *invocation) printChange(asJSON bool, r ChangeResult) error {
	if asJSON {
		return c.printJSON(r)
	}
	for _, s := range r.Steps {
		fmt.Fprintln(c.stdout, s)
	}
	fmt.Fprintln(c.stdout)
	printMembers(c.stdout, r.Members, false, nil)
	return nil
}

// printMembers prints a members table; with heartbeats set (the leader's
// view) it says whose heartbeats fail.
func printMembers(w io.Writer, ms []MemberInfo, heartbeats bool, unreachable []string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := "ID\tROLE\tLEADER\tRAFT\tAPI"
	if heartbeats {
		header += "\tHEARTBEATS"
	}
	fmt.Fprintln(tw, header)
	for _, m := range ms {
		role, leader := "non-voter", ""
		if m.Voter {
			role = "voter"
		}
		if m.Leader {
			leader = "*"
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s", m.ID, role, leader, m.RaftAddress, m.APIAddress)
		if heartbeats {
			hb := "ok"
			switch {
			case m.Leader:
				hb = "-"
			case slices.Contains(unreachable, m.ID):
				hb = "FAILING"
			}
			line += "\t" + hb
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
}

func runWitnessRotate(ctx context.Context, c *invocation) error {
	fs := c.flagSet("witness rotate", "[--out ID --in ID=RAFT_ADDR,API_ADDR] [--json]")
	f := addWitnessFlags(fs, 10*time.Minute)
	out := fs.String("out", "", "id of the voter to replace, e.g. w1 (default: with --in also left out, the leader picks its longest-serving voter)")
	in := fs.String("in", "", "the node that replaces it, as ID=RAFT_ADDR,API_ADDR (running, with its witness/<ID> certificate and no --bootstrap; default: with --out also left out, the leader picks a reachable standby node of its rotation pool)")
	if err := parse(fs, c.args); err != nil {
		return err
	}
	if *out == "" && *in != "" {
		return errors.New("--out is required with --in: the id of the voter to replace, e.g. --out w1 (or leave out both to let the leader pick from its rotation pool)")
	}
	if *in == "" && *out != "" {
		return errors.New("--in is required with --out: the replacing node as ID=RAFT_ADDR,API_ADDR, e.g. --in w4=10.0.0.4:7011,https://10.0.0.4:7010 (or leave out both to let the leader pick from its rotation pool)")
	}
	var id, raftAddr, apiAddr string
	if *in != "" {
		var err error
		if id, raftAddr, apiAddr, err = parseNode("--in", *in); err != nil {
			return err
		}
	}
	m, err := f.connect(c.getenv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	req := &witnessv1.RotateRequest{OutId: *out, InId: id, InRaftAddress: raftAddr, InApiAddress: apiAddr}
	what := "rotate " + *out + " out, " + id + " in"
	if *out == "" {
		what = "rotate the longest-serving voter out, a standby node of the pool in"
	}
	resp, err := unary(ctx, m, what, req, witnessv1connect.MembershipServiceClient.Rotate)
	if err != nil {
		return err
	}
	return c.printChange(f.json, ChangeResult{Steps: resp.GetSteps(), CaughtUpIndex: resp.GetCaughtUpIndex(), Members: memberInfos(resp.GetMembers())})
}

func runWitnessAdd(ctx context.Context, c *invocation) error {
	fs := c.flagSet("witness add", "--node ID=RAFT_ADDR,API_ADDR [--nonvoter] [--json]")
	f := addWitnessFlags(fs, 10*time.Minute)
	node := fs.String("node", "", "the node to add, as ID=RAFT_ADDR,API_ADDR (running, with its witness/<ID> certificate and no --bootstrap)")
	nonvoter := fs.Bool("nonvoter", false, "leave it a non-voter (by default it is promoted to voter once it has caught up)")
	if err := parse(fs, c.args); err != nil {
		return err
	}
	if *node == "" {
		return errors.New("--node is required: the node to add as ID=RAFT_ADDR,API_ADDR, e.g. --node w4=10.0.0.4:7011,https://10.0.0.4:7010")
	}
	id, raftAddr, apiAddr, err := parseNode("--node", *node)
	if err != nil {
		return err
	}
	m, err := f.connect(c.getenv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	req := &witnessv1.AddNodeRequest{Id: id, RaftAddress: raftAddr, ApiAddress: apiAddr, Voter: !*nonvoter}
	resp, err := unary(ctx, m, "add "+id, req, witnessv1connect.MembershipServiceClient.AddNode)
	if err != nil {
		return err
	}
	return c.printChange(f.json, ChangeResult{Steps: resp.GetSteps(), CaughtUpIndex: resp.GetCaughtUpIndex(), Members: memberInfos(resp.GetMembers())})
}

func runWitnessRemove(ctx context.Context, c *invocation) error {
	fs := c.flagSet("witness remove", "--node ID [--json]")
	f := addWitnessFlags(fs, time.Minute)
	node := fs.String("node", "", "id of the node to remove, e.g. w4")
	if err := parse(fs, c.args); err != nil {
		return err
	}
	if *node == "" {
		return errors.New("--node is required: the id of the node to remove, e.g. --node w4")
	}
	m, err := f.connect(c.getenv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	resp, err := unary(ctx, m, "remove "+*node, &witnessv1.RemoveNodeRequest{Id: *node}, witnessv1connect.MembershipServiceClient.RemoveNode)
	if err != nil {
		return err
	}
	return c.printChange(f.json, ChangeResult{Steps: resp.GetSteps(), Members: memberInfos(resp.GetMembers())})
}

// TransferResult is the output of `witnz witness transfer-leadership --json`.
type TransferResult struct {
	PreviousLeaderID string `json:"previous_leader_id"`
	LeaderID         string `json:"leader_id"`
	LeaderAPIAddress string `json:"leader_api_address"`
	Term             uint64 `json:"term"`
}

func runWitnessTransfer(ctx context.Context, c *invocation) error {
	fs := c.flagSet("witness transfer-leadership", "[--to ID] [--json]")
	f := addWitnessFlags(fs, time.Minute)
	to := fs.String("to", "", "id of the voter to hand leadership to (default: the most up-to-date voter)")
	if err := parse(fs, c.args); err != nil {
		return err
	}
	m, err := f.connect(c.getenv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	resp, err := unary(ctx, m, "transfer leadership", &witnessv1.TransferLeadershipRequest{ToId: *to}, witnessv1connect.MembershipServiceClient.TransferLeadership)
	if err != nil {
		return err
	}
	out := TransferResult{PreviousLeaderID: resp.GetPreviousLeaderId(), LeaderID: resp.GetLeaderId(), LeaderAPIAddress: resp.GetLeaderApiAddress(), Term: resp.GetTerm()}
	if f.json {
		return c.printJSON(out)
	}
	if out.PreviousLeaderID == out.LeaderID {
		fmt.Fprintf(c.stdout, "%s already leads (term %d)\n", out.LeaderID, out.Term)
		return nil
	}
	fmt.Fprintf(c.stdout, "leadership moved from %s to %s at %s (term %d)\n", out.PreviousLeaderID, out.LeaderID, out.LeaderAPIAddress, out.Term)
	return nil
}

// MembersResult is the output of `witnz witness members --json`: the view
// of the node that answered (the leader when one is known).
type MembersResult struct {
	NodeID             string             `json:"node_id"`
	LeaderID           string             `json:"leader_id"`
	LeaderAPIAddress   string             `json:"leader_api_address"`
	Term               uint64             `json:"term"`
	ConfigurationIndex uint64             `json:"configuration_index"`
	MinVoters          uint32             `json:"min_voters"`
	Members            []MemberInfo       `json:"members"`
	Unreachable        []string           `json:"unreachable"`
	History            []MembershipRecord `json:"history"`
	HistoryTotal       uint64             `json:"history_total"`
	Rotation           *RotationInfo      `json:"rotation,omitempty"`
}

// RotationInfo is the rotation pool and schedule as the answering node
// sees them.
type RotationInfo struct {
	EverySeconds uint64   `json:"rotate_every_seconds"`
	ActiveCount  uint32   `json:"active_count"`
	Pool         []string `json:"pool"`
	LastRun      string   `json:"last_run,omitempty"`
	LastResult   string   `json:"last_result,omitempty"`
	Rotations    uint64   `json:"rotations"`
}

func rotationInfo(r *witnessv1.RotationStatus) *RotationInfo {
	if r == nil {
		return nil
	}
	out := &RotationInfo{EverySeconds: r.GetRotateEverySeconds(), ActiveCount: r.GetActiveCount(), Pool: append([]string{}, r.GetPool()...), LastResult: r.GetLastResult(), Rotations: r.GetRotations()}
	if r.GetLastRunMicros() != 0 {
		out.LastRun = time.UnixMicro(r.GetLastRunMicros()).UTC().Format(time.RFC3339)
	}
	return out
}

// MembershipRecord is one recorded step of a membership change.
type MembershipRecord struct {
	RaftIndex          uint64 `json:"raft_index"`
	At                 string `json:"at"`
	Op                 string `json:"op"`
	Phase              string `json:"phase"`
	NodeID             string `json:"node_id,omitempty"`
	ReplacementID      string `json:"replacement_id,omitempty"`
	RaftAddress        string `json:"raft_address,omitempty"`
	APIAddress         string `json:"api_address,omitempty"`
	By                 string `json:"by"`
	ConfigurationIndex uint64 `json:"configuration_index,omitempty"`
	Operation          uint64 `json:"operation,omitempty"`
	Error              string `json:"error,omitempty"`
}

func membershipRecord(e *witnessv1.MembershipEvent) MembershipRecord {
	ch := e.GetChange()
	return MembershipRecord{
		RaftIndex:          e.GetRaftIndex(),
		At:                 time.UnixMicro(e.GetAtMicros()).UTC().Format(time.RFC3339Nano),
		Op:                 strings.ToLower(strings.TrimPrefix(ch.GetOp().String(), "MEMBERSHIP_OP_")),
		Phase:              strings.ToLower(strings.TrimPrefix(ch.GetPhase().String(), "MEMBERSHIP_PHASE_")),
		NodeID:             ch.GetNodeId(),
		ReplacementID:      ch.GetReplacementId(),
		RaftAddress:        ch.GetRaftAddress(),
		APIAddress:         ch.GetApiAddress(),
		By:                 ch.GetBy(),
		ConfigurationIndex: ch.GetConfigurationIndex(),
		Operation:          ch.GetOperation(),
		Error:              ch.GetError(),
	}
}

func runWitnessMembers(ctx context.Context, c *invocation) error {
	fs := c.flagSet("witness members", "[--json] [--history N]")
	f := addWitnessFlags(fs, 30*time.Second)
	history := fs.Uint("history", 20, "most recent membership records to show (0: all the cluster keeps)")
	if err := parse(fs, c.args); err != nil {
		return err
	}
	m, err := f.connect(c.getenv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	list := func(cl witnessv1connect.MembershipServiceClient) (*witnessv1.ListMembersResponse, error) {
		r, err := cl.ListMembers(ctx, connect.NewRequest(&witnessv1.ListMembersRequest{History: uint32(*history)}))
		if err != nil {
			return nil, err
		}
		return r.Msg, nil
	}
	resp, err := call(ctx, m, "list members", list)
	if err != nil {
		return err
	}
	// The leader's view is the freshest and the only one that knows which
	// heartbeats fail.
	if l := resp.GetLeaderApiAddress(); resp.GetLeaderId() != resp.GetNodeId() && l != "" {
		if lr, err := list(m.client(l)); err == nil {
			resp = lr
		}
	}
	out := MembersResult{
		NodeID: resp.GetNodeId(), LeaderID: resp.GetLeaderId(), LeaderAPIAddress: resp.GetLeaderApiAddress(),
		Term: resp.GetTerm(), ConfigurationIndex: resp.GetConfigurationIndex(), MinVoters: resp.GetMinVoters(),
		Members: memberInfos(resp.GetMembers()), Unreachable: append([]string{}, resp.GetUnreachable()...),
		History: []MembershipRecord{}, HistoryTotal: resp.GetHistoryTotal(), Rotation: rotationInfo(resp.GetRotation()),
	}
	for _, e := range resp.GetHistory() {
		out.History = append(out.History, membershipRecord(e))
	}
	if f.json {
		return c.printJSON(out)
	}
	leader := out.LeaderID
	if leader == "" {
		leader = "none known"
	}
	fmt.Fprintf(c.stdout, "members as %s sees them (leader %s, term %d, configuration index %d, --min-voters %d)\n\n", out.NodeID, leader, out.Term, out.ConfigurationIndex, out.MinVoters)
	printMembers(c.stdout, out.Members, out.NodeID == out.LeaderID, out.Unreachable)
	if r := out.Rotation; r != nil {
		schedule := "no schedule"
		if r.EverySeconds > 0 {
			schedule = "every " + (time.Duration(r.EverySeconds) * time.Second).String()
		}
		active := "the current number of voters"
		if r.ActiveCount > 0 {
			active = fmt.Sprintf("%d voters", r.ActiveCount)
		}
		pool := strings.Join(r.Pool, ", ")
		if pool == "" {
			pool = "none"
		}
		fmt.Fprintf(c.stdout, "\nrotation: %s, keeping %s; standby nodes: %s\n", schedule, active, pool)
		if r.LastResult != "" {
			fmt.Fprintf(c.stdout, "last scheduled step (%s): %s (%d completed)\n", r.LastRun, r.LastResult, r.Rotations)
		}
	}
	if len(out.History) == 0 {
		fmt.Fprintln(c.stdout, "\nno membership change recorded")
		return nil
	}
	fmt.Fprintf(c.stdout, "\nmembership changes (last %d of %d):\n", len(out.History), out.HistoryTotal)
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	for _, r := range out.History {
		what := r.NodeID
		if r.ReplacementID != "" {
			what += " -> " + r.ReplacementID
		}
		if what == "" {
			what = "-"
		}
		detail := ""
		switch {
		case r.Error != "":
			detail = "error: " + r.Error
		case r.ConfigurationIndex != 0:
			detail = fmt.Sprintf("configuration index %d", r.ConfigurationIndex)
		}
		fmt.Fprintf(tw, "%s\t#%d\t%s\t%s\t%s\tby %s\t%s\n", r.At, r.RaftIndex, r.Op, r.Phase, what, r.By, detail)
	}
	return tw.Flush()
}
