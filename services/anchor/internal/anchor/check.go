package anchor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/witnz/witnz/libs/checkpoint"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	anchorv1 "github.com/witnz/witnz/libs/gen/witnz/anchor/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/services/anchor/internal/alerts"
	"github.com/witnz/witnz/services/anchor/internal/object"
	"github.com/witnz/witnz/services/anchor/internal/sink"
	"github.com/witnz/witnz/services/anchor/internal/witnesses"
)

// ErrNothingAnchored: there is no receipt to check.
var ErrNothingAnchored = errors.New("nothing anchored yet: no receipt in this service's store or in the witness log; anchor first (witnz anchor now)")

// problem kinds decide the alert type.
type kind int

const (
	kindNone kind = iota
	kindObject
	kindRewrite
	kindOther
)

// current is one node's current cosigned checkpoint of a table.
type current struct {
	url string
	cp  checkpoint.Checkpoint
	// err: the node did not serve a checkpoint that meets the policy;
	// unreachable says whether that is only a liveness matter.
	err         error
	unreachable bool
}

// Check checks the newest receipt, or every receipt with all: the object
// is read back and must match its receipt, its notes must meet the policy,
// and every witness node that answers must prove that its current cosigned
// log extends each anchored checkpoint. Every failed check is alerted.
func (a *Anchorer) Check(ctx context.Context, all bool) (*anchorv1.CheckAnchorsResponse, error) {
	limit := 1
	if all {
		limit = 0
	}
	receipts, err := a.receiptsToCheck(ctx, limit)
	if err != nil {
		return nil, err
	}
	resp := &anchorv1.CheckAnchorsResponse{Ok: true, Alerted: a.cfg.Alerts != nil}
	cache := map[string][]current{}
	for _, r := range receipts {
		for _, c := range a.checkReceipt(ctx, r, cache) {
			resp.Checks = append(resp.Checks, c.check)
			a.cfg.Metrics.checked(c.check.GetOk())
			if !c.check.GetOk() {
				resp.Ok = false
				a.alert(r, c)
			}
		}
	}
	return resp, nil
}

// receiptsToCheck reads the local store, and the witness log when the
// store is empty (a new anchor host, or a lost data directory).
func (a *Anchorer) receiptsToCheck(ctx context.Context, limit int) ([]*anchorv1.Receipt, error) {
	rs, err := a.cfg.Store.List(limit)
	if err != nil {
		return nil, err
	}
	if len(rs) > 0 {
		return rs, nil
	}
	var errs []error
	for _, n := range a.cfg.Witnesses.Nodes() {
		cctx, cancel := context.WithTimeout(ctx, witnesses.CallTimeout)
		resp, err := n.Client.ListAnchorReceipts(cctx, connect.NewRequest(&witnessv1.ListAnchorReceiptsRequest{Limit: uint32(limit)}))
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.URL, err))
			continue
		}
		for _, wr := range resp.Msg.GetReceipts() {
			rs = append(rs, FromWitness(wr))
		}
		if len(rs) > 0 {
			return rs, nil
		}
	}
	if len(errs) == len(a.cfg.Witnesses.Nodes()) {
		return nil, fmt.Errorf("the local receipt store is empty and no witness listed its anchor receipts: %w", errors.Join(errs...))
	}
	return nil, ErrNothingAnchored
}

// FromWitness converts a receipt from the witness log.
func FromWitness(wr *witnessv1.AnchorReceipt) *anchorv1.Receipt {
	r := &anchorv1.Receipt{
		Sink: wr.GetSink(), Bucket: wr.GetBucket(), Key: wr.GetKey(), VersionId: wr.GetVersionId(),
		ChecksumSha256:   hex.EncodeToString(wr.GetSha256()),
		AnchoredAt:       timestamppb.New(time.UnixMicro(wr.GetAnchoredAtMicros())),
		Etag:             wr.GetEtag(),
		WitnessRaftIndex: wr.GetRaftIndex(),
		TableSizes:       map[string]uint64{},
	}
	if wr.GetRetainUntilMicros() != 0 {
		r.RetainUntil = timestamppb.New(time.UnixMicro(wr.GetRetainUntilMicros()))
	}
	for _, cp := range wr.GetCheckpoints() {
		r.TableSizes[cp.GetTable()] = cp.GetSize()
		r.Tables = append(r.Tables, &anchorv1.AnchoredTable{Table: cp.GetTable(), Size: cp.GetSize(), Root: cp.GetRoot()})
	}
	return r
}

type result struct {
	check *anchorv1.AnchorCheck
	kind  kind
}

func objectProblem(r *anchorv1.Receipt, format string, args ...any) []result {
	return []result{{check: &anchorv1.AnchorCheck{Receipt: r, Ok: false, Problem: fmt.Sprintf(format, args...)}, kind: kindObject}}
}

func where(r *anchorv1.Receipt) string {
	s := fmt.Sprintf("anchor object %s in %s sink %s", r.GetKey(), r.GetSink(), r.GetBucket())
	if r.GetVersionId() != "" {
		s += " (version " + r.GetVersionId() + ")"
	}
	return s
}

// checkReceipt checks one receipt; cache holds the nodes' current
// checkpoints by table across receipts.
func (a *Anchorer) checkReceipt(ctx context.Context, r *anchorv1.Receipt, cache map[string][]current) []result {
	s := a.cfg.Sink
	if r.GetSink() != s.Kind() || (r.GetSink() == sink.KindS3 && r.GetBucket() != s.(*sink.S3).Bucket()) ||
		(r.GetSink() == sink.KindDir && r.GetBucket() != s.(*sink.Dir).Path()) {
		return []result{{check: &anchorv1.AnchorCheck{Receipt: r, Ok: false, Problem: fmt.Sprintf("%s cannot be read: this service writes to %s sink %s; run a check from a service configured with that sink", where(r), s.Kind(), sinkPlace(s))}, kind: kindOther}}
	}
	body, err := s.Get(ctx, r.GetKey(), r.GetVersionId())
	if errors.Is(err, sink.ErrNotFound) {
		return objectProblem(r, "%s is missing: the sink has no such object (deleted, or the receipt names an object that was never written)", where(r))
	}
	if err != nil {
		return []result{{check: &anchorv1.AnchorCheck{Receipt: r, Ok: false, Problem: fmt.Sprintf("%s could not be read: %v", where(r), err)}, kind: kindOther}}
	}
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != r.GetChecksumSha256() {
		extra := ""
		if r.GetObjectSize() != 0 && uint64(len(body)) < r.GetObjectSize() {
			extra = fmt.Sprintf("; it is truncated: %d bytes, the receipt says %d", len(body), r.GetObjectSize())
		} else if r.GetObjectSize() != 0 && uint64(len(body)) != r.GetObjectSize() {
			extra = fmt.Sprintf("; it has %d bytes, the receipt says %d", len(body), r.GetObjectSize())
		}
		return objectProblem(r, "%s is corrupted: its SHA-256 is %x, the receipt says %s%s", where(r), sum, r.GetChecksumSha256(), extra)
	}
	obj, err := object.Parse(body)
	if err != nil {
		return objectProblem(r, "%s matches its receipt's checksum but cannot be used: %v", where(r), err)
	}
	anchored := map[string]*anchorv1.AnchoredTable{}
	for _, t := range r.GetTables() {
		anchored[t.GetTable()] = t
	}
	var out []result
	for i := range obj.Tables {
		t := &obj.Tables[i]
		check := &anchorv1.AnchorCheck{Receipt: r, Table: t.Table, AnchoredSize: t.Size}
		res := result{check: check}
		v, err := t.Verify(a.cfg.Policy)
		switch {
		case err != nil:
			check.Problem, res.kind = fmt.Sprintf("%s: %v", where(r), err), kindOther
		case len(anchored) > 0 && (anchored[t.Table] == nil || anchored[t.Table].GetSize() != v.Checkpoint.Size || !bytes.Equal(anchored[t.Table].GetRoot(), v.Checkpoint.Root[:])):
			check.Problem, res.kind = fmt.Sprintf("%s: the receipt does not record table %s at size %d with the object's root", where(r), t.Table, v.Checkpoint.Size), kindObject
		default:
			res.kind, check.CurrentSize, check.Problem = a.checkExtends(ctx, v, cache)
		}
		check.Ok = res.kind == kindNone
		out = append(out, res)
	}
	return out
}

func sinkPlace(s sink.Sink) string {
	switch s := s.(type) {
	case *sink.S3:
		return s.Bucket()
	case *sink.Dir:
		return s.Path()
	}
	return ""
}

// checkExtends proves, from every node that answers, that the node's
// current cosigned checkpoint of the table extends the anchored one.
func (a *Anchorer) checkExtends(ctx context.Context, v object.Verified, cache map[string][]current) (kind, uint64, string) {
	curs, ok := cache[v.Table]
	if !ok {
		curs = a.currentCheckpoints(ctx, v.Table)
		cache[v.Table] = curs
	}
	var (
		problems    []string
		nodesOf     = map[string][]string{}
		worst       = kindNone
		proved      int
		currentSize uint64
	)
	// fail records a node's problem; nodes with the same problem are
	// named together.
	fail := func(k kind, url, problem string) {
		if _, seen := nodesOf[problem]; !seen {
			problems = append(problems, problem)
		}
		nodesOf[problem] = append(nodesOf[problem], url)
		if k == kindRewrite || worst == kindNone {
			worst = k
		}
	}
	anchoredSize, anchoredRoot := v.Checkpoint.Size, v.Checkpoint.Root
	for _, c := range curs {
		if c.unreachable {
			continue
		}
		if c.err != nil {
			fail(kindRewrite, c.url, c.err.Error())
			continue
		}
		if c.cp.Size < anchoredSize {
			fail(kindRewrite, c.url, fmt.Sprintf("history of %s was rewritten: the current cosigned checkpoint is at size %d, smaller than the anchored size %d", v.Table, c.cp.Size, anchoredSize))
			continue
		}
		p, err := a.consistencyProof(ctx, c.url, v.Table, anchoredSize, c.cp.Size)
		if err != nil {
			if connect.CodeOf(err) == connect.CodeUnavailable || connect.CodeOf(err) == connect.CodeDeadlineExceeded {
				continue
			}
			fail(kindRewrite, c.url, fmt.Sprintf("history of %s was rewritten: no consistency proof from the anchored size %d to the current cosigned size %d: %v", v.Table, anchoredSize, c.cp.Size, err))
			continue
		}
		// The proof library's error spans lines; what matters is said here.
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, anchoredSize, c.cp.Size, p, anchoredRoot[:], c.cp.Root[:]); err != nil {
			fail(kindRewrite, c.url, fmt.Sprintf("history of %s was rewritten: the log (cosigned at size %d, root %s) does not extend the anchored checkpoint at size %d (root %s): the consistency proof does not verify",
				v.Table, c.cp.Size, base64.StdEncoding.EncodeToString(c.cp.Root[:]), anchoredSize, base64.StdEncoding.EncodeToString(anchoredRoot[:])))
			continue
		}
		proved++
		currentSize = max(currentSize, c.cp.Size)
	}
	for i, p := range problems {
		problems[i] = strings.Join(nodesOf[p], ", ") + ": " + p
	}
	if len(problems) > 0 {
		return worst, currentSize, strings.Join(problems, "; ")
	}
	if proved == 0 {
		return kindOther, 0, fmt.Sprintf("no witness node served a current cosigned checkpoint of %s and a consistency proof: the check could not be made", v.Table)
	}
	return kindNone, currentSize, ""
}

// currentCheckpoints reads every node's current checkpoint of table and
// verifies it against the policy.
func (a *Anchorer) currentCheckpoints(ctx context.Context, table string) []current {
	var out []current
	for _, nc := range a.cfg.Witnesses.Checkpoints(ctx, table) {
		c := current{url: nc.URL}
		switch {
		case nc.Err != nil && connect.CodeOf(nc.Err) == connect.CodeNotFound:
			c.err = fmt.Errorf("table %s has no cosigned checkpoint (or no log) on this node although it was anchored: %v", table, nc.Err)
		case nc.Err != nil:
			c.unreachable = true
		default:
			cp, _, err := a.cfg.Policy.Verify(nc.Resp.GetNote())
			if err != nil {
				c.err = fmt.Errorf("the current checkpoint of %s does not meet the policy (forged or re-keyed witnesses?): %w", table, err)
				break
			}
			if _, t, err := checkpoint.ParseOrigin(cp.Origin); err != nil || t != table {
				c.err = fmt.Errorf("the current checkpoint of %s has origin %q", table, cp.Origin)
				break
			}
			c.cp = cp
		}
		out = append(out, c)
	}
	return out
}

func (a *Anchorer) consistencyProof(ctx context.Context, url, table string, from, to uint64) ([][]byte, error) {
	for _, n := range a.cfg.Witnesses.Nodes() {
		if n.URL != url {
			continue
		}
		if from == to {
			return nil, nil
		}
		cctx, cancel := context.WithTimeout(ctx, witnesses.CallTimeout)
		defer cancel()
		resp, err := n.Client.GetConsistencyProof(cctx, connect.NewRequest(&witnessv1.GetConsistencyProofRequest{Table: table, FromSize: from, ToSize: to}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.GetProof(), nil
	}
	return nil, fmt.Errorf("unknown witness %s", url)
}

// alert raises the alert for a failed check. Its id names the finding's
// type, object and table, not its wording (which holds the current log
// size): a finding that persists across checks is one alert.
func (a *Anchorer) alert(r *anchorv1.Receipt, res result) {
	typ, sev := alerts.TypeCheckFailed, alertv1.Severity_SEVERITY_HIGH
	switch res.kind {
	case kindRewrite:
		typ, sev = alerts.TypeHistoryRewritten, alertv1.Severity_SEVERITY_CRITICAL
	case kindObject:
		typ, sev = alerts.TypeObjectDamaged, alertv1.Severity_SEVERITY_CRITICAL
	}
	c := res.check
	a.cfg.Alerts.Raise(a.log, alerts.Alert(typ, sev, c.GetTable(), c.GetProblem(), map[string]any{
		"key": r.GetKey(), "version_id": r.GetVersionId(), "sink": r.GetSink(), "bucket": r.GetBucket(),
		"anchored_size": fmt.Sprint(c.GetAnchoredSize()), "problem": c.GetProblem(),
	}, r.GetKey(), r.GetVersionId()))
}
