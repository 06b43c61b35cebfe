package api

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/services/witness/internal/node"
)

// Membership implements witnessv1connect.MembershipServiceHandler: changes
// for operators, on the leader; ListMembers for any identity, on any node.
type Membership struct {
	node *node.Node
}

var _ witnessv1connect.MembershipServiceHandler = (*Membership)(nil)

// NewMembership returns the membership service of n.
func NewMembership(n *node.Node) *Membership { return &Membership{node: n} }

// authorizeOperator admits only operator identities and returns the
// caller's identity, which the records name.
func authorizeOperator(ctx context.Context, rpc string) (string, error) {
	id, ok := mtls.PeerIdentity(ctx)
	if !ok {
		return "", connect.NewError(connect.CodeUnauthenticated, errors.New("a client certificate is required"))
	}
	if id.Kind != mtls.KindOperator {
		return "", connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s requires an operator identity (spiffe://witnz/operator/<name>); this client is %s", rpc, id))
	}
	return id.String(), nil
}

// membershipError maps a membership failure to a Connect error. A
// redirect to the leader keeps the message and sets the witnz-leader
// header, as Append does.
func membershipError(err error) error {
	var nl *node.NotLeaderError
	switch {
	case errors.As(err, &nl):
		return proposeError(err)
	case errors.Is(err, node.ErrInvalidMember):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, node.ErrUnknownNode):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, node.ErrMemberExists):
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.Is(err, node.ErrUnsafeChange):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, node.ErrChangeInProgress):
		return connect.NewError(connect.CodeAborted, err)
	case errors.Is(err, node.ErrNotCaughtUp):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	case errors.Is(err, node.ErrLogMismatch):
		return connect.NewError(connect.CodeDataLoss, err)
	}
	return proposeError(err)
}

func members(ms []node.Member) []*witnessv1.Member {
	out := make([]*witnessv1.Member, len(ms))
	for i, m := range ms {
		out[i] = &witnessv1.Member{Id: m.ID, RaftAddress: m.RaftAddr, ApiAddress: m.APIAddr, Voter: m.Voter, Leader: m.Leader}
	}
	return out
}

// ListMembers reports this node's view of the membership and the recorded
// history of changes.
func (s *Membership) ListMembers(ctx context.Context, req *connect.Request[witnessv1.ListMembersRequest]) (*connect.Response[witnessv1.ListMembersResponse], error) {
	if err := authorizeRead(ctx); err != nil {
		return nil, err
	}
	v, err := s.node.Members()
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	history, total := s.node.FSM().MembershipHistory(int(req.Msg.GetHistory()))
	return connect.NewResponse(&witnessv1.ListMembersResponse{
		NodeId:             v.ID,
		LeaderId:           v.LeaderID,
		LeaderApiAddress:   v.LeaderAPI,
		Term:               v.Term,
		ConfigurationIndex: v.ConfigIndex,
		Members:            members(v.Members),
		Unreachable:        v.Unreachable,
		MinVoters:          uint32(v.MinVoters),
		History:            history,
		HistoryTotal:       total,
		Rotation:           s.node.RotationProto(),
	}), nil
}

// AddNode adds a node as a non-voter, and promotes it once caught up when
// asked to.
func (s *Membership) AddNode(ctx context.Context, req *connect.Request[witnessv1.AddNodeRequest]) (*connect.Response[witnessv1.AddNodeResponse], error) {
	by, err := authorizeOperator(ctx, "AddNode")
	if err != nil {
		return nil, err
	}
	m := req.Msg
	ch, err := s.node.AddNode(ctx, by, node.Peer{ID: m.GetId(), RaftAddr: m.GetRaftAddress(), APIAddr: m.GetApiAddress()}, m.GetVoter())
	if err != nil {
		return nil, membershipError(err)
	}
	return connect.NewResponse(&witnessv1.AddNodeResponse{Members: members(ch.Members), CaughtUpIndex: ch.CaughtUp, Steps: ch.Steps}), nil
}

// RemoveNode removes a node if the safety rules allow it.
func (s *Membership) RemoveNode(ctx context.Context, req *connect.Request[witnessv1.RemoveNodeRequest]) (*connect.Response[witnessv1.RemoveNodeResponse], error) {
	by, err := authorizeOperator(ctx, "RemoveNode")
	if err != nil {
		return nil, err
	}
	ch, err := s.node.RemoveNode(ctx, by, req.Msg.GetId())
	if err != nil {
		return nil, membershipError(err)
	}
	return connect.NewResponse(&witnessv1.RemoveNodeResponse{Members: members(ch.Members), Steps: ch.Steps}), nil
}

// TransferLeadership hands leadership to another voter.
func (s *Membership) TransferLeadership(ctx context.Context, req *connect.Request[witnessv1.TransferLeadershipRequest]) (*connect.Response[witnessv1.TransferLeadershipResponse], error) {
	by, err := authorizeOperator(ctx, "TransferLeadership")
	if err != nil {
		return nil, err
	}
	t, err := s.node.TransferLeadership(ctx, by, req.Msg.GetToId())
	if err != nil {
		return nil, membershipError(err)
	}
	return connect.NewResponse(&witnessv1.TransferLeadershipResponse{
		PreviousLeaderId: t.PreviousLeaderID, LeaderId: t.LeaderID, LeaderApiAddress: t.LeaderAPI, Term: t.Term,
	}), nil
}

// Rotate replaces one voter with a new node.
func (s *Membership) Rotate(ctx context.Context, req *connect.Request[witnessv1.RotateRequest]) (*connect.Response[witnessv1.RotateResponse], error) {
	by, err := authorizeOperator(ctx, "Rotate")
	if err != nil {
		return nil, err
	}
	m := req.Msg
	ch, err := s.node.Rotate(ctx, by, m.GetOutId(), node.Peer{ID: m.GetInId(), RaftAddr: m.GetInRaftAddress(), APIAddr: m.GetInApiAddress()})
	if err != nil {
		return nil, membershipError(err)
	}
	return connect.NewResponse(&witnessv1.RotateResponse{Members: members(ch.Members), CaughtUpIndex: ch.CaughtUp, Steps: ch.Steps}), nil
}
