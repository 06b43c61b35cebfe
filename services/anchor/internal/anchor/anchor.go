// Package anchor publishes the witness cluster's cosigned checkpoints to a
// write-once sink and checks later that the logs extend what was anchored.
//
// Publishing (Anchorer.AnchorNow) reads the latest cosigned checkpoint of
// every table from every witness node, keeps for each table the largest
// one that meets the policy, writes them as one object to the sink,
// commits the sink's receipt to the witness log (RecordAnchor) and keeps
// it in the local store. A receipt is returned, and counts as anchored,
// only when both the sink write and the witness commit succeeded.
//
// Checking (Anchorer.Check) reads anchored objects back, verifies their
// checksums and cosignatures, and proves with RFC 6962 consistency proofs
// from each witness node that its current cosigned log extends every
// anchored checkpoint. docs/design/0010-anchoring.md has the rules.
package anchor

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/witnz/witnz/libs/checkpoint"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	anchorv1 "github.com/witnz/witnz/libs/gen/witnz/anchor/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/services/anchor/internal/alerts"
	"github.com/witnz/witnz/services/anchor/internal/object"
	"github.com/witnz/witnz/services/anchor/internal/sink"
	"github.com/witnz/witnz/services/anchor/internal/store"
	"github.com/witnz/witnz/services/anchor/internal/witnesses"
)

// ErrNothingToAnchor: no table has a cosigned checkpoint yet.
var ErrNothingToAnchor = errors.New("nothing to anchor: no table has a cosigned checkpoint yet")

// Config is what an Anchorer works with.
type Config struct {
	Log       *slog.Logger
	Sink      sink.Sink
	Store     *store.Store
	Witnesses *witnesses.Set
	Policy    *checkpoint.Policy
	// PolicySHA256 is the digest of the policy file, recorded in objects.
	PolicySHA256 [sha256.Size]byte
	Alerts       *alerts.Alerter
	// Interval is the anchoring interval (Run).
	Interval time.Duration
	// RecordTimeout bounds the retries of the witness commit after the
	// sink write; 0 means 30s.
	RecordTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Metrics, when set, count attempts and checks.
	Metrics *Metrics
}

// Anchorer publishes and checks anchors.
type Anchorer struct {
	cfg Config
	log *slog.Logger
	// mu makes anchoring one object at a time.
	mu sync.Mutex
}

// New returns an Anchorer.
func New(cfg Config) *Anchorer {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RecordTimeout == 0 {
		cfg.RecordTimeout = 30 * time.Second
	}
	return &Anchorer{cfg: cfg, log: cfg.Log}
}

// collect reads every table's checkpoints from every node and keeps, per
// table, the largest that meets the policy.
func (a *Anchorer) collect(ctx context.Context) ([]object.Table, error) {
	tables, err := a.cfg.Witnesses.Tables(ctx)
	if err != nil {
		return nil, err
	}
	var out []object.Table
	for _, name := range tables {
		best, why := a.bestCheckpoint(ctx, name)
		if best == nil {
			if why == noCheckpointYet {
				a.log.Debug("table not anchored", "table", name, "reason", why)
			} else {
				a.log.Warn("table not anchored", "table", name, "reason", why)
			}
			continue
		}
		out = append(out, *best)
	}
	if len(out) == 0 {
		return nil, ErrNothingToAnchor
	}
	return out, nil
}

// bestCheckpoint returns the largest checkpoint of table any node serves
// that meets the policy, or nil and why there is none.
func (a *Anchorer) bestCheckpoint(ctx context.Context, name string) (*object.Table, string) {
	var (
		best *object.Table
		why  []string
	)
	for _, nc := range a.cfg.Witnesses.Checkpoints(ctx, name) {
		if nc.Err != nil {
			if connect.CodeOf(nc.Err) != connect.CodeNotFound {
				why = append(why, fmt.Sprintf("%s: %v", nc.URL, nc.Err))
			}
			continue
		}
		t := object.Table{Table: name, Note: string(nc.Resp.GetNote())}
		if ts := nc.Resp.GetCreatedAt(); ts != nil {
			t.CheckpointCreatedAt = ts.AsTime().UTC()
		}
		cp, signers, err := a.cfg.Policy.Verify(nc.Resp.GetNote())
		if err != nil {
			// A node serving a checkpoint the policy refuses is worth
			// knowing about, but the check (not publishing) raises it.
			why = append(why, fmt.Sprintf("%s: checkpoint does not meet the policy: %v", nc.URL, err))
			continue
		}
		if _, table, err := checkpoint.ParseOrigin(cp.Origin); err != nil || table != name {
			why = append(why, fmt.Sprintf("%s: checkpoint origin %q is not the log of %s", nc.URL, cp.Origin, name))
			continue
		}
		t.Origin, t.Size, t.Root = cp.Origin, cp.Size, base64.StdEncoding.EncodeToString(cp.Root[:])
		t.Cosigners = object.CosignersOf(signers)
		if best == nil || t.Size > best.Size {
			best = &t
		}
	}
	if best == nil {
		if len(why) == 0 {
			return nil, noCheckpointYet
		}
		return nil, strings.Join(why, "; ")
	}
	return best, ""
}

const noCheckpointYet = "no cosigned checkpoint yet"

// AnchorNow anchors the latest cosigned checkpoint of every table and
// returns the receipt.
func (a *Anchorer) AnchorNow(ctx context.Context) (*anchorv1.Receipt, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, err := a.anchorNow(ctx)
	switch {
	case err == nil:
		a.cfg.Metrics.attempt("anchored")
		a.cfg.Metrics.anchored(float64(r.GetAnchoredAt().AsTime().UnixNano()) / 1e9)
	case errors.Is(err, ErrNothingToAnchor):
		a.cfg.Metrics.attempt("nothing")
	default:
		a.cfg.Metrics.attempt("failed")
	}
	if p, perr := a.cfg.Store.Pending(); perr == nil {
		a.cfg.Metrics.setPending(len(p))
	}
	return r, err
}

func (a *Anchorer) anchorNow(ctx context.Context) (*anchorv1.Receipt, error) {
	a.commitPending(ctx)
	tables, err := a.collect(ctx)
	if err != nil {
		return nil, err
	}
	now := a.cfg.Now().UTC()
	obj := &object.Object{
		Format:       object.Format,
		AnchoredAt:   now,
		PolicySHA256: hex.EncodeToString(a.cfg.PolicySHA256[:]),
		Witnesses:    a.cfg.Witnesses.URLs(),
		Tables:       tables,
	}
	body, err := object.Marshal(obj)
	if err != nil {
		return nil, err
	}
	sr, err := a.cfg.Sink.Put(ctx, object.Key(now), body)
	if err != nil {
		return nil, fmt.Errorf("write the anchor object: %w", err)
	}
	receipt := &anchorv1.Receipt{
		Sink:           sr.Kind,
		Bucket:         sr.Bucket,
		Key:            sr.Key,
		VersionId:      sr.VersionID,
		ChecksumSha256: hex.EncodeToString(sr.SHA256[:]),
		AnchoredAt:     timestamppb.New(now),
		TableSizes:     map[string]uint64{},
		Etag:           sr.ETag,
		ObjectSize:     uint64(sr.Size),
	}
	if !sr.RetainUntil.IsZero() {
		receipt.RetainUntil = timestamppb.New(sr.RetainUntil)
	}
	for _, t := range tables {
		root, _ := base64.StdEncoding.DecodeString(t.Root)
		receipt.TableSizes[t.Table] = t.Size
		at := &anchorv1.AnchoredTable{Table: t.Table, Size: t.Size, Root: root}
		for _, c := range t.Cosigners {
			at.Cosigners = append(at.Cosigners, c.Key)
		}
		receipt.Tables = append(receipt.Tables, at)
	}
	// Until the witnesses hold it the receipt is pending: a later attempt
	// commits it rather than leave the object unreferenced.
	if err := a.cfg.Store.AddPending(receipt); err != nil {
		a.log.Error("the receipt store cannot keep the pending receipt", "key", sr.Key, "error", err)
	}
	if err := a.commit(ctx, receipt); err != nil {
		return nil, fmt.Errorf("the object %s was written to the %s sink, but the witnesses did not record its receipt, so it is not anchored yet (the next attempt records it): %w", sr.Key, sr.Kind, err)
	}
	a.log.Info("anchored", "key", sr.Key, "version_id", sr.VersionID, "tables", len(tables), "raft_index", receipt.GetWitnessRaftIndex(), "sha256", receipt.ChecksumSha256)
	return receipt, nil
}

// commit records the receipt in the witness log, then as committed in the
// local store.
func (a *Anchorer) commit(ctx context.Context, receipt *anchorv1.Receipt) error {
	index, err := a.record(ctx, ToWitness(receipt))
	if err != nil {
		return err
	}
	receipt.WitnessRaftIndex = index
	if err := a.cfg.Store.Commit(receipt); err != nil {
		// The witnesses hold the receipt; the local copy is a convenience.
		a.log.Error("anchored, but the local receipt store failed", "key", receipt.GetKey(), "error", err)
	}
	return nil
}

// commitPending records the receipts of objects written by earlier
// attempts whose witness commit failed. A receipt the witnesses refuse
// for good (the logs no longer support it) is dropped with an alert.
func (a *Anchorer) commitPending(ctx context.Context) {
	pending, err := a.cfg.Store.Pending()
	if err != nil {
		a.log.Error("reading pending receipts", "error", err)
		return
	}
	for _, r := range pending {
		err := a.commit(ctx, r)
		switch {
		case err == nil:
			a.log.Info("anchored an object of an earlier attempt", "key", r.GetKey(), "raft_index", r.GetWitnessRaftIndex())
		case permanent(err):
			a.cfg.Alerts.Raise(a.log, alerts.Alert(alerts.TypeFailed, alertv1.Severity_SEVERITY_HIGH, "",
				fmt.Sprintf("the witnesses refuse the receipt of anchor object %s written earlier: %v", r.GetKey(), err),
				map[string]any{"key": r.GetKey(), "error": err.Error()}, r.GetKey()))
			if err := a.cfg.Store.DropPending(r.GetKey()); err != nil {
				a.log.Error("dropping a pending receipt", "key", r.GetKey(), "error", err)
			}
		default:
			a.log.Warn("the receipt of an earlier anchor object is still not recorded", "key", r.GetKey(), "error", err)
		}
	}
}

// permanent reports whether the witnesses refused a receipt for good.
func permanent(err error) bool {
	if witnesses.Rejected(err) {
		return true
	}
	switch connect.CodeOf(err) {
	case connect.CodePermissionDenied, connect.CodeInvalidArgument, connect.CodeNotFound:
		return true
	}
	return false
}

// ToWitness converts a receipt to the witness log's form.
func ToWitness(r *anchorv1.Receipt) *witnessv1.AnchorReceipt {
	sum, _ := hex.DecodeString(r.GetChecksumSha256())
	wr := &witnessv1.AnchorReceipt{
		Sink: r.GetSink(), Bucket: r.GetBucket(), Key: r.GetKey(), VersionId: r.GetVersionId(), Etag: r.GetEtag(),
		Sha256: sum, AnchoredAtMicros: r.GetAnchoredAt().AsTime().UnixMicro(),
	}
	if r.GetRetainUntil() != nil {
		wr.RetainUntilMicros = r.GetRetainUntil().AsTime().UnixMicro()
	}
	for _, t := range r.GetTables() {
		wr.Checkpoints = append(wr.Checkpoints, &witnessv1.AnchoredCheckpoint{Table: t.GetTable(), Size: t.GetSize(), Root: t.GetRoot()})
	}
	return wr
}

// record commits the witness receipt, retrying briefly: the object is
// already in the sink, so a new attempt would only write another one.
func (a *Anchorer) record(ctx context.Context, wr *witnessv1.AnchorReceipt) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.RecordTimeout)
	defer cancel()
	b := newBackoff(200*time.Millisecond, 5*time.Second)
	for {
		index, err := a.cfg.Witnesses.RecordAnchor(ctx, wr)
		if err == nil {
			return index, nil
		}
		if permanent(err) {
			return 0, err
		}
		a.log.Warn("recording the anchor receipt failed; retrying", "key", wr.GetKey(), "error", err)
		if !b.wait(ctx) {
			return 0, err
		}
	}
}

// Receipts returns up to limit receipts (0: all), newest first.
func (a *Anchorer) Receipts(limit int) ([]*anchorv1.Receipt, error) {
	return a.cfg.Store.List(limit)
}
