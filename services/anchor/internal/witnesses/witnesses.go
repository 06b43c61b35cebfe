// Package witnesses is the anchor service's view of a witness cluster: a
// Connect client per node, reads answered by each node from its own
// replica, and the one write the anchor makes (RecordAnchor), sent to the
// leader.
package witnesses

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"connectrpc.com/connect"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
)

// CallTimeout bounds each call to a node.
const CallTimeout = 10 * time.Second

// Response headers of the witness API (services/witness/internal/api):
// the leader's API URL in a follower's refusal, and the mark of a
// RecordAnchor the state machine rejected.
const (
	LeaderHeader   = "witnz-leader"
	RejectedHeader = "witnz-rejected"
)

// Rejected reports whether err is a RecordAnchor the witness state
// machine rejected: the logs do not support the receipt.
func Rejected(err error) bool {
	var ce *connect.Error
	return errors.As(err, &ce) && ce.Meta().Get(RejectedHeader) != ""
}

// Node is one witness node.
type Node struct {
	URL    string
	Client witnessv1connect.WitnessServiceClient
}

// Set is a client per witness API URL.
type Set struct {
	tls   *mtls.Config
	nodes []Node
}

// New builds clients for the witness API URLs (https://host:port).
func New(tlsCfg *mtls.Config, urls []string) *Set {
	s := &Set{tls: tlsCfg}
	hc := tlsCfg.HTTPClient()
	for _, u := range urls {
		s.nodes = append(s.nodes, Node{URL: u, Client: witnessv1connect.NewWitnessServiceClient(hc, u, rpcserver.ClientOptions()...)})
	}
	return s
}

// Nodes returns every node.
func (s *Set) Nodes() []Node { return s.nodes }

// URLs returns the nodes' URLs.
func (s *Set) URLs() []string {
	out := make([]string, len(s.nodes))
	for i, n := range s.nodes {
		out[i] = n.URL
	}
	return out
}

// ErrNoWitness is wrapped when no node answered.
var ErrNoWitness = errors.New("no witness answered")

// each calls fn on every node at once and returns the answers in node
// order.
func each[T any](ctx context.Context, s *Set, fn func(ctx context.Context, n Node) (T, error)) ([]T, []error) {
	out := make([]T, len(s.nodes))
	errs := make([]error, len(s.nodes))
	done := make(chan int, len(s.nodes))
	for i, n := range s.nodes {
		go func() {
			cctx, cancel := context.WithTimeout(ctx, CallTimeout)
			defer cancel()
			out[i], errs[i] = fn(cctx, n)
			done <- i
		}()
	}
	for range s.nodes {
		<-done
	}
	return out, errs
}

// AnyAnswers succeeds when a node answers GetStatus (a readiness check).
func (s *Set) AnyAnswers(ctx context.Context) error {
	_, errs := each(ctx, s, func(ctx context.Context, n Node) (*witnessv1.GetStatusResponse, error) {
		r, err := n.Client.GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
		if err != nil {
			return nil, err
		}
		return r.Msg, nil
	})
	var all []error
	for i, err := range errs {
		if err == nil {
			return nil
		}
		all = append(all, fmt.Errorf("%s: %w", s.nodes[i].URL, err))
	}
	return fmt.Errorf("%w GetStatus: %w", ErrNoWitness, errors.Join(all...))
}

// Tables returns the names of the tables any answering node holds, sorted.
func (s *Set) Tables(ctx context.Context) ([]string, error) {
	statuses, errs := each(ctx, s, func(ctx context.Context, n Node) (*witnessv1.GetStatusResponse, error) {
		r, err := n.Client.GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
		if err != nil {
			return nil, err
		}
		return r.Msg, nil
	})
	seen := map[string]bool{}
	answered := false
	var all []error
	for i, st := range statuses {
		if errs[i] != nil {
			all = append(all, fmt.Errorf("%s: %w", s.nodes[i].URL, errs[i]))
			continue
		}
		answered = true
		for _, t := range st.GetTables() {
			seen[t.GetName()] = true
		}
	}
	if !answered {
		return nil, fmt.Errorf("%w GetStatus: %w", ErrNoWitness, errors.Join(all...))
	}
	out := make([]string, 0, len(seen))
	for t := range seen {
		out = append(out, t)
	}
	sort.Strings(out)
	return out, nil
}

// NodeCheckpoint is a node's answer to GetCheckpoint.
type NodeCheckpoint struct {
	URL  string
	Resp *witnessv1.GetCheckpointResponse
	// Err is the node's error; connect.CodeNotFound when it has no
	// checkpoint of the table yet.
	Err error
}

// Checkpoints asks every node for the table's latest cosigned checkpoint.
func (s *Set) Checkpoints(ctx context.Context, table string) []NodeCheckpoint {
	resps, errs := each(ctx, s, func(ctx context.Context, n Node) (*witnessv1.GetCheckpointResponse, error) {
		r, err := n.Client.GetCheckpoint(ctx, connect.NewRequest(&witnessv1.GetCheckpointRequest{Table: table}))
		if err != nil {
			return nil, err
		}
		return r.Msg, nil
	})
	out := make([]NodeCheckpoint, len(s.nodes))
	for i := range s.nodes {
		out[i] = NodeCheckpoint{URL: s.nodes[i].URL, Resp: resps[i], Err: errs[i]}
	}
	return out
}

// RecordAnchor commits a receipt through the leader and returns the Raft
// index of the command. It tries the nodes in order and follows a
// follower's pointer to the leader.
func (s *Set) RecordAnchor(ctx context.Context, receipt *witnessv1.AnchorReceipt) (uint64, error) {
	req := &witnessv1.RecordAnchorRequest{Receipt: receipt}
	var all []error
	tried := map[string]bool{}
	queue := s.URLs()
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		if tried[u] {
			continue
		}
		tried[u] = true
		client := s.client(u)
		cctx, cancel := context.WithTimeout(ctx, CallTimeout)
		resp, err := client.RecordAnchor(cctx, connect.NewRequest(req))
		cancel()
		if err == nil {
			return resp.Msg.GetRaftIndex(), nil
		}
		all = append(all, fmt.Errorf("%s: %w", u, err))
		var ce *connect.Error
		switch {
		case Rejected(err):
			return 0, err
		case errors.As(err, &ce) && ce.Meta().Get(LeaderHeader) != "":
			queue = append([]string{ce.Meta().Get(LeaderHeader)}, queue...)
		case connect.CodeOf(err) == connect.CodePermissionDenied, connect.CodeOf(err) == connect.CodeInvalidArgument:
			// Every node would answer the same.
			return 0, err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return 0, fmt.Errorf("no witness recorded the anchor receipt: %w", errors.Join(all...))
}

// client returns the client of url, building one for a leader URL that is
// not in the list.
func (s *Set) client(url string) witnessv1connect.WitnessServiceClient {
	for _, n := range s.nodes {
		if n.URL == url {
			return n.Client
		}
	}
	return witnessv1connect.NewWitnessServiceClient(s.tls.HTTPClient(), url, rpcserver.ClientOptions()...)
}
