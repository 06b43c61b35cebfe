package verify

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/witnz/witnz/libs/evidence"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
)

// checkpointPoll is how often a missing checkpoint is asked for again.
const checkpointPoll = 250 * time.Millisecond

// bundleWriter writes the evidence bundles of one run.
type bundleWriter struct {
	lv    *leaderView
	table string
	dir   string
	run   string
	wait  time.Duration
	// size is the log size of the comparison; phantom findings without an
	// entry anchor their bundle at the last entry below it.
	size uint64
	// checkpoint is the latest cosigned checkpoint once fetched; noCP is set
	// when the cluster has none (or cannot serve them).
	checkpoint *witnessv1.GetCheckpointResponse
	noCP       string
	warned     map[string]bool
	warnings   []string
}

func (w *bundleWriter) warn(msg string) {
	if !w.warned[msg] {
		w.warned[msg] = true
		w.warnings = append(w.warnings, msg)
	}
}

// checkpointFor returns a cosigned checkpoint whose tree holds seq, waiting
// up to w.wait for one when the latest is older; nil when there is none.
func (w *bundleWriter) checkpointFor(ctx context.Context, seq uint64) (*witnessv1.GetCheckpointResponse, error) {
	deadline := time.Now().Add(w.wait)
	for {
		if w.noCP != "" {
			return nil, nil
		}
		if w.checkpoint != nil && w.checkpoint.GetSize() > seq {
			return w.checkpoint, nil
		}
		resp, err := w.lv.client.GetCheckpoint(ctx, connect.NewRequest(&witnessv1.GetCheckpointRequest{Table: w.table}))
		switch code := connect.CodeOf(err); {
		case err == nil:
			w.checkpoint = resp.Msg
		case code == connect.CodeNotFound || code == connect.CodeUnimplemented:
			w.noCP = oneLine(err)
			w.warn(fmt.Sprintf("evidence bundles carry no cosigned checkpoint, so `witnz proof verify` cannot check them yet: %s", w.noCP))
			return nil, nil
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			return nil, err
		default:
			return nil, witnessError("GetCheckpoint", w.lv.url, err)
		}
		if w.checkpoint.GetSize() > seq {
			return w.checkpoint, nil
		}
		if !time.Now().Before(deadline) {
			w.warn(fmt.Sprintf("the latest cosigned checkpoint of %s (size %d) does not cover every finding's entry yet; those bundles prove inclusion in the log of size %d without a checkpoint: verify again after the next checkpoint", w.table, w.checkpoint.GetSize(), w.size))
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(checkpointPoll):
		}
	}
}

// write writes the bundle of finding n and sets its path.
func (w *bundleWriter) write(ctx context.Context, n int, f *Finding) error {
	seq := w.size - 1
	if f.Entry != nil {
		seq = *f.Entry
	}
	cp, err := w.checkpointFor(ctx, seq)
	if err != nil {
		return err
	}
	proofSize := w.size
	note := ""
	if cp != nil {
		proofSize, note = cp.GetSize(), string(cp.GetNote())
	}
	if f.Entry == nil && cp != nil && seq >= proofSize {
		// A phantom's bundle only anchors the log's state: take the last
		// entry the checkpoint holds.
		seq = proofSize - 1
	}
	_, enc, err := w.lv.entry(ctx, seq)
	if err != nil {
		return err
	}
	proof, err := w.lv.client.GetInclusionProof(ctx, connect.NewRequest(&witnessv1.GetInclusionProofRequest{Table: w.table, Index: seq, Size: proofSize}))
	if err != nil {
		return witnessError("GetInclusionProof", w.lv.url, err)
	}
	if leaf := sha256.Sum256(append([]byte{0}, enc...)); string(leaf[:]) != string(proof.Msg.GetLeafHash()) {
		return fmt.Errorf("%w: %s: the leaf hash of entry %d does not match the entry it sent", ErrWitness, w.lv.url, seq)
	}
	b := evidence.Bundle{
		Format:     evidence.Format,
		Table:      w.table,
		Index:      seq,
		Entry:      enc,
		Checkpoint: note,
		Finding:    &evidence.Finding{Type: f.Kind.findingType(), Message: f.Message},
	}
	if cp != nil {
		if b.Anchor, err = w.anchorFor(ctx, seq, cp); err != nil {
			return err
		}
	}
	if f.Entry == nil {
		b.Finding.Message += fmt.Sprintf(" (this bundle proves the log's entry %d, the latest its checkpoint holds, not the row's absence: proving absence needs a state-digest proof)", seq)
	}
	for _, h := range proof.Msg.GetProof() {
		b.InclusionProof = append(b.InclusionProof, evidence.Bytes(h))
	}
	if b.InclusionProof == nil {
		b.InclusionProof = []evidence.Bytes{}
	}
	data, err := b.Encode()
	if err != nil {
		return err
	}
	dir := filepath.Join(w.dir, safeName(w.table))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("%w: %v", ErrEvidence, err)
	}
	path := filepath.Join(dir, fmt.Sprintf("%s-%03d-%s-%x.json", w.run, n, f.Kind, f.KeyCommit[:6]))
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("%w: %v", ErrEvidence, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("%w: %v", ErrEvidence, err)
	}
	f.EvidencePath = path
	return nil
}

// anchorFor returns the newest anchor receipt whose checkpoint of the
// table covers the entry at seq, with the consistency proof between the
// anchored checkpoint and cp (Verify checks it); nil when nothing anchored
// covers the entry yet or the witnesses keep no receipts.
func (w *bundleWriter) anchorFor(ctx context.Context, seq uint64, cp *witnessv1.GetCheckpointResponse) (*evidence.AnchorReceipt, error) {
	resp, err := w.lv.client.ListAnchorReceipts(ctx, connect.NewRequest(&witnessv1.ListAnchorReceiptsRequest{Table: w.table, MinSize: seq + 1, Limit: 1}))
	switch code := connect.CodeOf(err); {
	case err == nil:
	case code == connect.CodeUnimplemented || code == connect.CodeNotFound:
		return nil, nil
	default:
		return nil, witnessError("ListAnchorReceipts", w.lv.url, err)
	}
	if len(resp.Msg.GetReceipts()) == 0 {
		return nil, nil
	}
	r := resp.Msg.GetReceipts()[0]
	var anchored *witnessv1.AnchoredCheckpoint
	for _, c := range r.GetCheckpoints() {
		if c.GetTable() == w.table {
			anchored = c
		}
	}
	if anchored == nil {
		return nil, fmt.Errorf("%w: %s: anchor receipt %s (raft index %d) was listed for %s but holds no checkpoint of it", ErrWitness, w.lv.url, r.GetKey(), r.GetRaftIndex(), w.table)
	}
	a := &evidence.AnchorReceipt{
		Sink: r.GetSink(), Bucket: r.GetBucket(), Key: r.GetKey(), VersionID: r.GetVersionId(),
		ChecksumSHA256:   fmt.Sprintf("%x", r.GetSha256()),
		AnchoredAt:       time.UnixMicro(r.GetAnchoredAtMicros()).UTC().Format(time.RFC3339),
		WitnessRaftIndex: r.GetRaftIndex(),
		Size:             anchored.GetSize(),
		Root:             evidence.Bytes(anchored.GetRoot()),
		Proof:            []evidence.Bytes{},
	}
	if r.GetRetainUntilMicros() != 0 {
		a.RetainUntil = time.UnixMicro(r.GetRetainUntilMicros()).UTC().Format(time.RFC3339)
	}
	from, to := min(a.Size, cp.GetSize()), max(a.Size, cp.GetSize())
	if from != to {
		p, err := w.lv.client.GetConsistencyProof(ctx, connect.NewRequest(&witnessv1.GetConsistencyProofRequest{Table: w.table, FromSize: from, ToSize: to}))
		if err != nil {
			return nil, witnessError("GetConsistencyProof", w.lv.url, err)
		}
		for _, h := range p.Msg.GetProof() {
			a.Proof = append(a.Proof, evidence.Bytes(h))
		}
	}
	return a, nil
}

// safeName keeps a table name usable as a directory name.
func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '_'
	}, s)
}
