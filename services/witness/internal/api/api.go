// Package api serves witness.v1.WitnessService: appends and table
// registration go through Raft on the leader; every read is answered from
// this node's own replica, so a client can compare what each node holds.
package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/witnz/witnz/libs/commitment"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/statedigest"
	"github.com/witnz/witnz/services/witness/internal/fsm"
	"github.com/witnz/witnz/services/witness/internal/node"
)

// LeaderHeader is the response header in which a follower names the
// leader's API URL.
const LeaderHeader = "witnz-leader"

// EntriesChunk is the most entries one GetEntries message carries.
const EntriesChunk = 1000

// Service implements witnessv1connect.WitnessServiceHandler.
type Service struct {
	node     *node.Node
	ingest   mtls.Identity
	stopping <-chan struct{}
	now      func() time.Time
	// cosignerKey is this node's cosigner verifier key, "" without one.
	cosignerKey string
	// onRejection, when set, hears of every command the state machine
	// rejected (recorded in the replicated state), to raise an alert.
	onRejection func(*witnessv1.Rejection)
	// anchor is the only identity that may record anchor receipts.
	anchor mtls.Identity
	// order hands pipelined Appends to Raft in order.
	order appendOrder
}

// SetRejectionHook makes the service report each rejected command to fn.
func (s *Service) SetRejectionHook(fn func(*witnessv1.Rejection)) { s.onRejection = fn }

// rejected reports a rejection the state machine recorded and maps it to
// a Connect error.
func (s *Service) rejected(res *fsm.Result) error {
	if s.onRejection != nil && res.Rejection != nil {
		s.onRejection(res.Rejection)
	}
	return rejectionError(res.Err)
}

var _ witnessv1connect.WitnessServiceHandler = (*Service)(nil)

// New returns the service of n. Only the service identity ingestName may
// append and register tables; streams end when stopping is closed.
func New(n *node.Node, ingestName string, stopping <-chan struct{}) *Service {
	return &Service{node: n, ingest: mtls.Service(ingestName), stopping: stopping, now: time.Now, anchor: mtls.Service(DefaultAnchorIdentity)}
}

// SetCosignerKey sets the verifier key GetStatus reports as cosigner_key;
// call it before serving.
func (s *Service) SetCosignerKey(vkey string) { s.cosignerKey = vkey }

// authorizeWrite admits only the ingest identity.
func (s *Service) authorizeWrite(ctx context.Context, rpc string) error {
	id, ok := mtls.PeerIdentity(ctx)
	if !ok {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("a client certificate is required"))
	}
	if id != s.ingest {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s requires the identity %s; this client is %s", rpc, s.ingest, id))
	}
	return nil
}

func authorizeRead(ctx context.Context) error {
	if _, ok := mtls.PeerIdentity(ctx); !ok {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("a client certificate is required"))
	}
	return nil
}

// proposeError maps a Propose failure to a Connect error.
func proposeError(err error) error {
	var nl *node.NotLeaderError
	switch {
	case errors.As(err, &nl):
		if nl.LeaderID == "" {
			return connect.NewError(connect.CodeUnavailable, err)
		}
		cerr := connect.NewError(connect.CodeFailedPrecondition, err)
		if nl.LeaderAPI != "" {
			cerr.Meta().Set(LeaderHeader, nl.LeaderAPI)
		}
		return cerr
	case errors.Is(err, node.ErrUncertain), errors.Is(err, node.ErrUnavailable):
		return connect.NewError(connect.CodeUnavailable, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}

// rejectionError maps an FSM rejection to a Connect error.
func rejectionError(err error) error {
	switch {
	case errors.Is(err, fsm.ErrUnknownTable):
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("%w: call RegisterTable first", err))
	case errors.Is(err, fsm.ErrTableConflict):
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.Is(err, fsm.ErrInvalid), errors.Is(err, fsm.ErrOutOfOrder):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, fsm.ErrPredecessorPending):
		return connect.NewError(connect.CodeAborted, err)
	}
	return connect.NewError(connect.CodeFailedPrecondition, err)
}

// Append logs a batch of entries for one table.
func (s *Service) Append(ctx context.Context, req *connect.Request[witnessv1.AppendRequest]) (*connect.Response[witnessv1.AppendResponse], error) {
	if err := s.authorizeWrite(ctx, "Append"); err != nil {
		return nil, err
	}
	m := req.Msg
	if err := fsm.ValidateTableName(m.GetTable()); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if err := fsm.ValidateEntries(m.GetEntries()); err != nil {
		return nil, rejectionError(err)
	}
	var applied *fsm.Position
	if v, err := s.node.FSM().Table(m.GetTable()); err != nil {
		// A follower may lag behind a registration; let the leader judge.
		if id, _ := s.node.Leader(); id == s.node.ID() {
			return nil, rejectionError(err)
		}
	} else if v.Info.HasLast {
		applied = &v.Info.Last
	}
	entries := m.GetEntries()
	last := entries[len(entries)-1]
	s.order.wait(ctx, m.GetTable(), fsm.Position{CommitLSN: m.GetAfterCommitLsn(), TxIndex: m.GetAfterTxIndex()}, applied)
	res, index, err := s.node.ProposeNotify(ctx, func() {
		s.order.proposedUpTo(m.GetTable(), fsm.Position{CommitLSN: last.GetCommitLsn(), TxIndex: last.GetTxIndex()})
	}, &witnessv1.Command{
		ProposedAtMicros: s.now().UnixMicro(),
		Command: &witnessv1.Command_Append{Append: &witnessv1.AppendCommand{
			Table:          m.GetTable(),
			Entries:        m.GetEntries(),
			AfterCommitLsn: m.GetAfterCommitLsn(),
			AfterTxIndex:   m.GetAfterTxIndex(),
		}},
	})
	if err != nil {
		return nil, proposeError(err)
	}
	if res.Err != nil {
		return nil, s.rejected(res)
	}
	return connect.NewResponse(&witnessv1.AppendResponse{
		Table:      res.Table.Name,
		Size:       res.Table.Size,
		Root:       res.Table.Root[:],
		Duplicates: res.Duplicates,
		RaftIndex:  index,
	}), nil
}

// RegisterTable starts the log of a protected table; registering it again
// with the same settings is a no-op.
func (s *Service) RegisterTable(ctx context.Context, req *connect.Request[witnessv1.RegisterTableRequest]) (*connect.Response[witnessv1.RegisterTableResponse], error) {
	if err := s.authorizeWrite(ctx, "RegisterTable"); err != nil {
		return nil, err
	}
	cmd := &witnessv1.RegisterTableCommand{Table: req.Msg.GetTable(), Mode: req.Msg.GetMode(), Buckets: req.Msg.GetBuckets()}
	mode, buckets, err := fsm.NormalizeRegister(cmd)
	if err != nil {
		return nil, rejectionError(err)
	}
	if v, err := s.node.FSM().Table(cmd.GetTable()); err == nil && (v.Info.Mode != mode || v.Info.Buckets != buckets) {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("%w: %s has mode %s and %d buckets", fsm.ErrTableConflict, v.Info.Name, v.Info.Mode, v.Info.Buckets))
	}
	res, _, err := s.node.Propose(ctx, &witnessv1.Command{
		ProposedAtMicros: s.now().UnixMicro(),
		Command:          &witnessv1.Command_RegisterTable{RegisterTable: cmd},
	})
	if err != nil {
		return nil, proposeError(err)
	}
	if res.Err != nil {
		return nil, s.rejected(res)
	}
	return connect.NewResponse(&witnessv1.RegisterTableResponse{Table: tableInfo(res.Table), Created: res.Created}), nil
}

func tableInfo(t fsm.TableInfo) *witnessv1.TableInfo {
	return &witnessv1.TableInfo{
		Name:          t.Name,
		Mode:          t.Mode,
		Size:          t.Size,
		Root:          append([]byte(nil), t.Root[:]...),
		ChainHead:     append([]byte(nil), t.ChainHead[:]...),
		Buckets:       t.Buckets,
		LastCommitLsn: t.Last.CommitLSN,
		LastTxIndex:   t.Last.TxIndex,
		Protection:    t.Protection,
		EpochSeq:      t.EpochSeq,
		BaselineLsn:   t.BaselineLSN,
		BaselineRows:  t.BaselineRows,
		SchemaCommit:  schemaCommit(t),
	}
}

func schemaCommit(t fsm.TableInfo) []byte {
	if !t.HasSchemaCommit {
		return nil
	}
	return append([]byte(nil), t.SchemaCommit[:]...)
}

// GetStatus reports this node's view of the cluster and its tables.
func (s *Service) GetStatus(ctx context.Context, _ *connect.Request[witnessv1.GetStatusRequest]) (*connect.Response[witnessv1.GetStatusResponse], error) {
	if err := authorizeRead(ctx); err != nil {
		return nil, err
	}
	st, err := s.node.Status()
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	out := &witnessv1.GetStatusResponse{
		NodeId:           st.ID,
		State:            st.State,
		LeaderId:         st.LeaderID,
		LeaderApiAddress: st.LeaderAPI,
		AppliedIndex:     st.Applied,
		CommitIndex:      st.Commit,
		Term:             st.Term,
		CosignerKey:      s.cosignerKey,
	}
	out.CosignRefusals, out.CosignRefusalsTotal = s.node.FSM().CosignRefusals()
	for _, m := range st.Members {
		out.Members = append(out.Members, &witnessv1.Member{
			Id: m.ID, RaftAddress: m.RaftAddr, ApiAddress: m.APIAddr, Voter: m.Voter, Leader: m.Leader,
		})
	}
	for _, t := range s.node.FSM().Tables() {
		out.Tables = append(out.Tables, tableInfo(t))
	}
	return connect.NewResponse(out), nil
}

func (s *Service) view(table string) (*fsm.View, error) {
	v, err := s.node.FSM().Table(table)
	if err != nil {
		return nil, connect.NewError(connect.CodeNotFound, err)
	}
	return v, nil
}

func outOfRange(format string, args ...any) error {
	return connect.NewError(connect.CodeOutOfRange, fmt.Errorf(format, args...))
}

// GetEntries streams the entries [start, end) of a table in chunks.
func (s *Service) GetEntries(ctx context.Context, req *connect.Request[witnessv1.GetEntriesRequest], stream *connect.ServerStream[witnessv1.GetEntriesResponse]) error {
	if err := authorizeRead(ctx); err != nil {
		return err
	}
	v, err := s.view(req.Msg.GetTable())
	if err != nil {
		return err
	}
	start, end := req.Msg.GetStart(), req.Msg.GetEnd()
	if end == 0 {
		end = v.Info.Size
	}
	if end > v.Info.Size {
		return outOfRange("end %d is beyond the log of %s, which has %d entries on this node", end, v.Info.Name, v.Info.Size)
	}
	if start > end {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("start %d is after end %d", start, end))
	}
	filter, err := newBucketFilter(v.Info, req.Msg.GetBuckets())
	if err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	for start < end {
		select {
		case <-s.stopping:
			return connect.NewError(connect.CodeUnavailable, errors.New("the node is shutting down: resume from the last entry received"))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		n := min(end-start, EntriesChunk)
		msg := &witnessv1.GetEntriesResponse{Entries: make([]*witnessv1.LoggedEntry, 0, n)}
		for seq := start; seq < start+n; seq++ {
			if filter != nil {
				keep, err := filter.keeps(v, seq)
				if err != nil {
					return connect.NewError(connect.CodeInternal, err)
				}
				if !keep {
					continue
				}
			}
			le, err := loggedEntry(v, seq)
			if err != nil {
				return connect.NewError(connect.CodeInternal, err)
			}
			msg.Entries = append(msg.Entries, le)
		}
		// A filtered chunk may be empty: skip it rather than send nothing.
		if len(msg.Entries) > 0 {
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
		start += n
	}
	return nil
}

// bucketFilter keeps the entries of some state-digest buckets of a table,
// and every entry without a key commitment (table-level operations).
type bucketFilter struct {
	buckets uint32
	want    []bool
}

// newBucketFilter returns nil (no filter) for an empty bucket list.
func newBucketFilter(info fsm.TableInfo, buckets []uint32) (*bucketFilter, error) {
	if len(buckets) == 0 {
		return nil, nil
	}
	n := info.Buckets
	if n == 0 {
		n = fsm.DefaultBuckets
	}
	f := &bucketFilter{buckets: n, want: make([]bool, n)}
	for _, b := range buckets {
		if b >= n {
			return nil, fmt.Errorf("bucket %d is not below the %d buckets of %s", b, n, info.Name)
		}
		f.want[b] = true
	}
	return f, nil
}

// keeps reports whether the entry at seq is sent. The bucket is
// libs/statedigest's: the top log2(B) bits of the key commitment.
func (f *bucketFilter) keeps(v *fsm.View, seq uint64) (bool, error) {
	enc, _, err := v.Entry(seq)
	if err != nil {
		return false, err
	}
	e, err := commitment.DecodeEntry(enc)
	if err != nil {
		return false, fmt.Errorf("entry %d of %s: %w", seq, v.Info.Name, err)
	}
	if e.KeyCommit == nil {
		return true, nil
	}
	return f.want[statedigest.BucketIndex(*e.KeyCommit, f.buckets)], nil
}

func loggedEntry(v *fsm.View, seq uint64) (*witnessv1.LoggedEntry, error) {
	enc, leaf, err := v.Entry(seq)
	if err != nil {
		return nil, err
	}
	e, err := commitment.DecodeEntry(enc)
	if err != nil {
		return nil, fmt.Errorf("entry %d of %s: %w", seq, v.Info.Name, err)
	}
	return &witnessv1.LoggedEntry{
		Seq: e.Seq,
		Entry: &witnessv1.Entry{
			CommitLsn:        e.CommitLSN,
			TxIndex:          e.TxIndex,
			Op:               witnessv1.Op(e.Op),
			KeyCommit:        commitBytes(e.KeyCommit),
			DataCommit:       commitBytes(e.DataCommit),
			OldDataCommit:    commitBytes(e.OldDataCommit),
			CommitTimeMicros: e.CommitTimeMicros,
			Xid:              e.XID,
		},
		LeafHash: leaf[:],
		Encoded:  append([]byte(nil), enc...),
	}, nil
}

func commitBytes(c *commitment.Commitment) []byte {
	if c == nil {
		return nil
	}
	return append([]byte(nil), c[:]...)
}

// GetInclusionProof proves an entry is in the tree of a given size.
func (s *Service) GetInclusionProof(ctx context.Context, req *connect.Request[witnessv1.GetInclusionProofRequest]) (*connect.Response[witnessv1.GetInclusionProofResponse], error) {
	if err := authorizeRead(ctx); err != nil {
		return nil, err
	}
	v, err := s.view(req.Msg.GetTable())
	if err != nil {
		return nil, err
	}
	index, size := req.Msg.GetIndex(), req.Msg.GetSize()
	if size == 0 {
		size = v.Info.Size
	}
	if size > v.Info.Size {
		return nil, outOfRange("size %d is beyond the log of %s, which has %d entries on this node", size, v.Info.Name, v.Info.Size)
	}
	if index >= size {
		return nil, outOfRange("index %d is not below size %d", index, size)
	}
	proof, err := v.InclusionProof(index, size)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	root, err := v.RootAt(size)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	_, leaf, err := v.Entry(index)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return connect.NewResponse(&witnessv1.GetInclusionProofResponse{
		Index: index, Size: size, Root: root[:], LeafHash: leaf[:], Proof: proof,
	}), nil
}

// GetConsistencyProof proves that the tree of to_size extends the tree of
// from_size.
func (s *Service) GetConsistencyProof(ctx context.Context, req *connect.Request[witnessv1.GetConsistencyProofRequest]) (*connect.Response[witnessv1.GetConsistencyProofResponse], error) {
	if err := authorizeRead(ctx); err != nil {
		return nil, err
	}
	v, err := s.view(req.Msg.GetTable())
	if err != nil {
		return nil, err
	}
	from, to := req.Msg.GetFromSize(), req.Msg.GetToSize()
	if to == 0 {
		to = v.Info.Size
	}
	if to > v.Info.Size {
		return nil, outOfRange("to_size %d is beyond the log of %s, which has %d entries on this node", to, v.Info.Name, v.Info.Size)
	}
	if from > to {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("from_size %d is larger than to_size %d", from, to))
	}
	proof, err := v.ConsistencyProof(from, to)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	fromRoot, err := v.RootAt(from)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	toRoot, err := v.RootAt(to)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return connect.NewResponse(&witnessv1.GetConsistencyProofResponse{
		FromSize: from, ToSize: to, FromRoot: fromRoot[:], ToRoot: toRoot[:], Proof: proof,
	}), nil
}

// GetCheckpoint returns a table's latest cosigned checkpoint, from this
// node's replica.
func (s *Service) GetCheckpoint(ctx context.Context, req *connect.Request[witnessv1.GetCheckpointRequest]) (*connect.Response[witnessv1.GetCheckpointResponse], error) {
	if err := authorizeRead(ctx); err != nil {
		return nil, err
	}
	table := req.Msg.GetTable()
	if err := fsm.ValidateTableName(table); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if _, err := s.view(table); err != nil {
		return nil, err
	}
	cp, ok := s.node.FSM().Checkpoint(table)
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no cosigned checkpoint of %s yet: the leader makes one every --checkpoint-interval once the table's log has entries, if its nodes have cosigner keys (--cosign-key) and the policy's quorum cosigns", table))
	}
	return connect.NewResponse(&witnessv1.GetCheckpointResponse{
		Note:      cp.Note,
		Size:      cp.Size,
		Root:      cp.Root[:],
		CreatedAt: timestamppb.New(time.UnixMicro(cp.CreatedAtMicros)),
	}), nil
}

// GetStateDigest returns a table's state digest, from this node's replica,
// as of a log size (0: the current one).
func (s *Service) GetStateDigest(ctx context.Context, req *connect.Request[witnessv1.GetStateDigestRequest]) (*connect.Response[witnessv1.GetStateDigestResponse], error) {
	if err := authorizeRead(ctx); err != nil {
		return nil, err
	}
	d, size, err := s.node.FSM().StateDigest(req.Msg.GetTable(), req.Msg.GetAsOfSize())
	switch {
	case errors.Is(err, fsm.ErrUnknownTable):
		return nil, connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, fsm.ErrOutOfRange):
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%w: ask for a size up to the current one, or 0 for the current one", err))
	case errors.Is(err, fsm.ErrBeforeReset), errors.Is(err, fsm.ErrDigestUnavailable):
		return nil, connect.NewError(connect.CodeFailedPrecondition, err)
	case err != nil:
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	root := d.Root()
	out := &witnessv1.GetStateDigestResponse{Size: size, Root: root[:], Buckets: make([]*witnessv1.BucketDigest, d.Buckets())}
	for i := range out.Buckets {
		b, err := d.Bucket(uint32(i))
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		out.Buckets[i] = &witnessv1.BucketDigest{Bucket: uint32(i), Count: b.Count, Lthash: b.Hash.Bytes()}
	}
	return connect.NewResponse(out), nil
}

// DefaultAnchorIdentity names the service identity that may record anchor
// receipts unless SetAnchorIdentity says otherwise.
const DefaultAnchorIdentity = "anchor"

// SetAnchorIdentity makes service/name the only identity that may call
// RecordAnchor; call it before serving.
func (s *Service) SetAnchorIdentity(name string) { s.anchor = mtls.Service(name) }

// RecordAnchor commits an anchor service receipt to the replicated log.
func (s *Service) RecordAnchor(ctx context.Context, req *connect.Request[witnessv1.RecordAnchorRequest]) (*connect.Response[witnessv1.RecordAnchorResponse], error) {
	id, ok := mtls.PeerIdentity(ctx)
	if !ok {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("a client certificate is required"))
	}
	if id != s.anchor {
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("RecordAnchor requires the identity %s; this client is %s", s.anchor, id))
	}
	if err := fsm.ValidateAnchorReceipt(req.Msg.GetReceipt()); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	res, index, err := s.node.Propose(ctx, &witnessv1.Command{
		ProposedAtMicros: s.now().UnixMicro(),
		Command:          &witnessv1.Command_RecordAnchor{RecordAnchor: &witnessv1.RecordAnchorCommand{Receipt: req.Msg.GetReceipt()}},
	})
	if err != nil {
		return nil, proposeError(err)
	}
	if res.Err != nil {
		// Marked so the caller tells a receipt the logs refuse from a
		// follower's answer, which has the same code.
		rerr := s.rejected(res)
		var ce *connect.Error
		if errors.As(rerr, &ce) {
			ce.Meta().Set(RejectedHeader, "true")
		}
		return nil, rerr
	}
	return connect.NewResponse(&witnessv1.RecordAnchorResponse{RaftIndex: index}), nil
}

// RejectedHeader marks the error of a RecordAnchor the state machine
// rejected (and recorded as a rejection): sending it again cannot help.
const RejectedHeader = "witnz-rejected"

// ListAnchorReceipts returns the anchor receipts of this node's replica,
// newest first.
func (s *Service) ListAnchorReceipts(ctx context.Context, req *connect.Request[witnessv1.ListAnchorReceiptsRequest]) (*connect.Response[witnessv1.ListAnchorReceiptsResponse], error) {
	if err := authorizeRead(ctx); err != nil {
		return nil, err
	}
	m := req.Msg
	if m.GetTable() != "" {
		if err := fsm.ValidateTableName(m.GetTable()); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, err)
		}
	}
	receipts, total := s.node.FSM().AnchorReceipts(m.GetTable(), m.GetMinSize(), int(m.GetLimit()))
	return connect.NewResponse(&witnessv1.ListAnchorReceiptsResponse{Receipts: receipts, Total: total}), nil
}
