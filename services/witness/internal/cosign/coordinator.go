package cosign

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/mod/sumdb/note"

	"github.com/witnz/witnz/libs/checkpoint"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/services/witness/internal/fsm"
	"github.com/witnz/witnz/services/witness/internal/node"
)

// DefaultTimeout bounds one table's cosigning round.
const DefaultTimeout = 10 * time.Second

// Cluster is what the coordinator needs of the Raft node.
type Cluster interface {
	Status() (node.Status, error)
	Propose(ctx context.Context, cmd *witnessv1.Command) (*fsm.Result, uint64, error)
}

// CoordinatorConfig configures a Coordinator.
type CoordinatorConfig struct {
	NodeID       string
	Cluster      string
	Interval     time.Duration
	Policy       *checkpoint.Policy
	PolicyDigest [sha256.Size]byte
	// LogSigner, if set, signs every checkpoint as the log (a type 0x01
	// key shared by the cluster) before the cosignatures.
	LogSigner note.Signer
	Node      Cluster
	FSM       *fsm.FSM
	// Client returns the cosigning client of a member, nil when its API
	// address is unknown.
	Client  func(m node.Member) CosignClient
	Alerts  *Alerter
	Log     *slog.Logger
	Now     func() time.Time
	Timeout time.Duration
	// External witnesses are asked to cosign once the voters' majority
	// cosigned (external.go); they need LogSigner. HTTP reaches them.
	External []ExternalWitness
	HTTP     *http.Client
}

// CosignClient asks one node for its cosignature;
// witnessv1connect.CosignServiceClient implements it.
type CosignClient interface {
	Cosign(context.Context, *connect.Request[witnessv1.CosignRequest]) (*connect.Response[witnessv1.CosignResponse], error)
}

// Coordinator runs the leader's side of cosigning: every interval, while
// this node leads, it has the checkpoint of each table whose log grew
// cosigned by the voters and stores it once the policy is met.
type Coordinator struct {
	cfg CoordinatorConfig
	ext externalSizes
}

// NewCoordinator returns a coordinator; Run drives it.
func NewCoordinator(cfg CoordinatorConfig) *Coordinator {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Coordinator{cfg: cfg}
}

// Run makes a round every interval until ctx ends.
func (c *Coordinator) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			c.Round(ctx)
		}
	}
}

// TableResult is what one round did for one table.
type TableResult struct {
	Table string
	Size  uint64
	// Cosigners are the nodes whose cosignature verified.
	Cosigners []string
	// Refusals were recorded in the replicated state.
	Refusals []*witnessv1.CosignRefusal
	// Unanswered are the nodes that gave no answer (down, lagging, not
	// cosigners): logged, not recorded.
	Unanswered map[string]error
	// External are the external witnesses whose cosignature verified;
	// ExternalErrors say why the others gave none.
	External       []string
	ExternalErrors map[string]error
	// Stored is set when the checkpoint was stored.
	Stored bool
	// Err says why it was not stored.
	Err error
}

// Round checkpoints, if this node leads, every table whose log grew since
// its last stored checkpoint, and reports what happened per table.
func (c *Coordinator) Round(ctx context.Context) []TableResult {
	st, err := c.cfg.Node.Status()
	if err != nil || st.State != "Leader" || st.LeaderID != c.cfg.NodeID {
		return nil
	}
	var voters []node.Member
	for _, m := range st.Members {
		if m.Voter {
			voters = append(voters, m)
		}
	}
	var out []TableResult
	for _, info := range c.cfg.FSM.Tables() {
		if info.Size == 0 {
			continue
		}
		if cp, ok := c.cfg.FSM.Checkpoint(info.Name); ok && cp.Size >= info.Size {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		out = append(out, c.checkpointTable(ctx, info.Name, voters))
	}
	return out
}

type answer struct {
	member node.Member
	resp   *witnessv1.CosignResponse
	err    error
}

func (c *Coordinator) checkpointTable(ctx context.Context, table string, voters []node.Member) TableResult {
	res := TableResult{Table: table, Unanswered: map[string]error{}}
	v, err := c.cfg.FSM.Table(table)
	if err != nil {
		res.Err = err
		return res
	}
	// Read after the view: the view's entries are applied at this index.
	applied := c.cfg.FSM.Applied()
	res.Size = v.Info.Size
	origin, err := checkpoint.Origin(c.cfg.Cluster, table)
	if err != nil {
		res.Err = err
		return res
	}
	cp := checkpoint.Checkpoint{Origin: origin, Size: v.Info.Size, Root: v.Info.Root}
	req := &witnessv1.CosignRequest{
		Table: table, Size: cp.Size, Root: cp.Root[:], AppliedIndex: applied, PolicySha256: c.cfg.PolicyDigest[:],
	}

	rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	answers := make([]answer, len(voters))
	var wg sync.WaitGroup
	for i, m := range voters {
		answers[i].member = m
		client := c.cfg.Client(m)
		if client == nil {
			answers[i].err = fmt.Errorf("no API address known for node %s", m.ID)
			continue
		}
		wg.Go(func() {
			resp, err := client.Cosign(rctx, connect.NewRequest(req))
			if err == nil {
				answers[i].resp = resp.Msg
			}
			answers[i].err = err
		})
	}
	wg.Wait()

	var sigs []note.Signature
	keys := map[string]string{} // key name + id → node that returned it
	for _, a := range answers {
		id := a.member.ID
		if a.err != nil {
			if r := refusalDetail(a.err); r != nil {
				r.NodeId, r.ProposerId, r.Table, r.Size, r.Root = id, c.cfg.NodeID, table, cp.Size, cp.Root[:]
				r.AtMicros = c.cfg.Now().UnixMicro()
				res.Refusals = append(res.Refusals, r)
				continue
			}
			res.Unanswered[id] = a.err
			continue
		}
		sig, why := c.checkCosignature(cp, a.resp.GetCosignature())
		if why == "" {
			k := fmt.Sprintf("%s+%08x", sig.Name, sig.Hash)
			if other, dup := keys[k]; dup {
				why = fmt.Sprintf("it is a cosignature by key %s, which node %s returned too: each node cosigns with its own key", k, other)
			} else {
				keys[k] = id
			}
		}
		if why != "" {
			res.Refusals = append(res.Refusals, &witnessv1.CosignRefusal{
				NodeId: id, ProposerId: c.cfg.NodeID, Table: table, Size: cp.Size, Root: cp.Root[:],
				Kind:     witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_INVALID_COSIGNATURE,
				Reason:   fmt.Sprintf("leader %s refused the cosignature of node %s: %s", c.cfg.NodeID, id, why),
				AtMicros: c.cfg.Now().UnixMicro(),
			})
			continue
		}
		sigs = append(sigs, sig)
		res.Cosigners = append(res.Cosigners, id)
	}
	for id, err := range res.Unanswered {
		c.cfg.Log.Warn("a node did not cosign the checkpoint", "table", table, "size", cp.Size, "node", id, "code", connect.CodeOf(err).String(), "error", err)
	}
	if len(res.Refusals) > 0 {
		c.record(ctx, res.Refusals)
	}

	if c.cfg.LogSigner != nil {
		logSig, err := checkpoint.Sign(cp, c.cfg.LogSigner)
		if err != nil {
			res.Err = fmt.Errorf("log signature: %w", err)
			return res
		}
		sigs = append([]note.Signature{logSig}, sigs...)
		if len(c.cfg.External) > 0 {
			sigs = c.addExternal(rctx, &res, cp, sigs, len(voters), v.ConsistencyProof)
		}
	}
	if len(sigs) == 0 {
		res.Err = fmt.Errorf("checkpoint of %s at size %d not stored: no node cosigned it", table, cp.Size)
		c.cfg.Log.Warn("checkpoint not stored", "table", table, "size", cp.Size, "error", res.Err)
		return res
	}
	signed, err := checkpoint.Assemble(cp, sigs...)
	if err != nil {
		res.Err = err
		return res
	}
	if _, _, err := c.cfg.Policy.Verify(signed); err != nil {
		res.Err = fmt.Errorf("checkpoint of %s at size %d not stored: %w", table, cp.Size, err)
		c.cfg.Log.Warn("checkpoint not stored: the policy is not met", "table", table, "size", cp.Size, "cosigners", strings.Join(res.Cosigners, ","), "error", err)
		return res
	}
	r, _, err := c.cfg.Node.Propose(ctx, &witnessv1.Command{
		ProposedAtMicros: c.cfg.Now().UnixMicro(),
		Command: &witnessv1.Command_StoreCheckpoint{StoreCheckpoint: &witnessv1.StoreCheckpointCommand{
			Table: table, Note: signed,
		}},
	})
	switch {
	case err != nil:
		res.Err = fmt.Errorf("store the checkpoint of %s at size %d: %w", table, cp.Size, err)
	case r.Err != nil:
		res.Err = r.Err
	default:
		res.Stored = true
	}
	if res.Err != nil {
		c.cfg.Log.Warn("checkpoint not stored", "table", table, "size", cp.Size, "error", res.Err)
		return res
	}
	c.cfg.Log.Info("stored a cosigned checkpoint", "table", table, "size", cp.Size, "cosigners", strings.Join(res.Cosigners, ","), "external", strings.Join(res.External, ","))
	return res
}

// addExternal asks the external witnesses to cosign, once a majority of
// the voters did, and returns sigs with their cosignatures.
func (c *Coordinator) addExternal(ctx context.Context, res *TableResult, cp checkpoint.Checkpoint, sigs []note.Signature, voters int, proof proofFunc) []note.Signature {
	if need := voters/2 + 1; len(res.Cosigners) < need {
		c.cfg.Log.Warn("external witnesses not asked: fewer than a majority of the voters cosigned", "table", res.Table, "size", cp.Size, "cosigners", len(res.Cosigners), "need", need)
		return sigs
	}
	signed, err := checkpoint.Assemble(cp, sigs...)
	if err != nil {
		res.Err = err
		return sigs
	}
	out := make([]note.Signature, len(c.cfg.External))
	errs := make([]error, len(c.cfg.External))
	var wg sync.WaitGroup
	for i, w := range c.cfg.External {
		wg.Go(func() { out[i], errs[i] = c.askExternal(ctx, w, cp, signed, proof) })
	}
	wg.Wait()
	for i, w := range c.cfg.External {
		if errs[i] != nil {
			if res.ExternalErrors == nil {
				res.ExternalErrors = map[string]error{}
			}
			res.ExternalErrors[w.Name] = errs[i]
			c.cfg.Log.Warn("an external witness did not cosign the checkpoint", "table", res.Table, "size", cp.Size, "witness", w.Name, "error", errs[i])
			continue
		}
		sigs = append(sigs, out[i])
		res.External = append(res.External, w.Name)
	}
	return sigs
}

// checkCosignature parses and verifies a cosignature line against the
// policy; it returns why it is refused, or "".
func (c *Coordinator) checkCosignature(cp checkpoint.Checkpoint, line string) (note.Signature, string) {
	sig, err := ParseSignatureLine(cp, line)
	if err != nil {
		return sig, fmt.Sprintf("malformed cosignature line: %v", err)
	}
	signed, err := checkpoint.Assemble(cp, sig)
	if err != nil {
		return sig, fmt.Sprintf("malformed cosignature line: %v", err)
	}
	_, n, err := checkpoint.Open(signed, c.cfg.Policy.Verifiers())
	switch {
	case errors.Is(err, checkpoint.ErrBadSignature):
		return sig, fmt.Sprintf("the cosignature by key %s (key id %08x) does not verify: forged or corrupted", sig.Name, sig.Hash)
	case errors.Is(err, checkpoint.ErrUnverified):
		return sig, fmt.Sprintf("key %s (key id %08x) is not a witness of the policy", sig.Name, sig.Hash)
	case err != nil:
		return sig, err.Error()
	}
	if _, err := checkpoint.CosignatureTime(n.Sigs[0]); err != nil {
		return sig, fmt.Sprintf("key %s (key id %08x) made a signature that is not a cosignature/v1: %v", sig.Name, sig.Hash, err)
	}
	return sig, ""
}

// refusalDetail returns the CosignRefusal carried by a refusal error.
func refusalDetail(err error) *witnessv1.CosignRefusal {
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != connect.CodeFailedPrecondition {
		return nil
	}
	for _, d := range cerr.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if r, ok := v.(*witnessv1.CosignRefusal); ok && r.GetKind() != witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_UNSPECIFIED {
			if len(r.Reason) > fsm.MaxRefusalReason {
				r.Reason = strings.ToValidUTF8(r.Reason[:fsm.MaxRefusalReason], "")
			}
			return r
		}
	}
	return nil
}

// record stores refusals in the replicated state and raises their alerts.
func (c *Coordinator) record(ctx context.Context, refusals []*witnessv1.CosignRefusal) {
	for _, r := range refusals {
		c.cfg.Log.Error("cosigning refused", "table", r.GetTable(), "size", r.GetSize(), "node", r.GetNodeId(), "kind", r.GetKind().String(), "reason", r.GetReason())
		c.cfg.Alerts.Raise(RefusalAlert(c.cfg.Cluster, r))
	}
	res, _, err := c.cfg.Node.Propose(ctx, &witnessv1.Command{
		ProposedAtMicros: c.cfg.Now().UnixMicro(),
		Command: &witnessv1.Command_RecordCosignRefusals{RecordCosignRefusals: &witnessv1.RecordCosignRefusalsCommand{
			Refusals: refusals,
		}},
	})
	if err == nil && res.Err != nil {
		err = res.Err
	}
	if err != nil {
		c.cfg.Log.Error("could not record cosigning refusals in the replicated state", "refusals", len(refusals), "error", err)
	}
}
