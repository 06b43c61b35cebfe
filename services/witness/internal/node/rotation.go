package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
)

// The rotation pool: standby nodes that a rotation may add. A rotation
// replaces the longest-serving voter (bootstrap voters first, then by the
// time the replicated state recorded their promotion) with a standby node
// that answers, one step at a time as Rotate does; the voter it removes
// goes back to the pool (recorded in the replicated state). With a
// schedule (RotationConfig.Every) the leader runs one rotation per period,
// never two at once (the membership lock), and never below the quorum or
// MinVoters (the checks of RemoveNode); with an active count it first
// grows or shrinks the voters towards it, one node per period.

// RotationConfig configures the rotation pool and schedule.
type RotationConfig struct {
	// Pool lists standby nodes (--pool). Nodes of Config.Peers that are not
	// members, and nodes rotated out (recorded in the replicated state),
	// are standby too.
	Pool []Peer
	// ActiveCount is the number of voters the schedule keeps; 0 keeps the
	// current number.
	ActiveCount int
	// Every is the period of the schedule; 0 turns it off.
	Every time.Duration
}

// ErrNoStandby means no standby node of the pool answered.
var ErrNoStandby = errors.New("no standby node of the rotation pool is reachable")

// probeTimeout bounds the check that a standby node is up.
const probeTimeout = 3 * time.Second

// RotationStatus is what the schedule did last.
type RotationStatus struct {
	// Every is the schedule's period (0: no schedule).
	Every       time.Duration
	ActiveCount int
	// Pool lists the standby nodes known, by id.
	Pool []string
	// LastRun is when the schedule last acted on this node (as leader).
	LastRun time.Time
	// LastResult says what it did or why it skipped, one line.
	LastResult string
	// Rotations counts the changes the schedule completed on this node.
	Rotations int
}

// rotation is a node's rotation pool and schedule.
type rotation struct {
	cfg RotationConfig

	mu     sync.Mutex
	status RotationStatus
}

// scheduleIdentity is the identity membership records name for the
// schedule's changes: this node's.
func (n *Node) scheduleIdentity() string { return mtls.Witness(n.id).String() }

// standby lists the nodes a rotation may add: --pool, then the nodes the
// replicated state records as rotated out, then --peer nodes, each once,
// without the members of cfg.
func (n *Node) standby(cfg raft.Configuration) []Peer {
	seen := map[string]bool{}
	used := map[string]bool{}
	for _, s := range cfg.Servers {
		seen[string(s.ID)] = true
		used[string(s.Address)] = true
	}
	var out []Peer
	add := func(p Peer) {
		if seen[p.ID] || used[p.RaftAddr] || p.RaftAddr == "" || p.APIAddr == "" {
			return
		}
		seen[p.ID] = true
		out = append(out, p)
	}
	for _, p := range n.rot.cfg.Pool {
		add(p)
	}
	for _, a := range n.fsm.RotationPool() {
		add(Peer{ID: a.GetId(), RaftAddr: a.GetRaftAddress(), APIAddr: a.GetApiAddress()})
	}
	ids := make([]string, 0, len(n.peers))
	for id := range n.peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		add(n.peers[id])
	}
	return out
}

// longestServing orders the voters of cfg, longest-serving first:
// bootstrap voters (no recorded promotion) before promoted ones, then by
// promotion time, then by id.
func (n *Node) longestServing(cfg raft.Configuration) []string {
	since := n.fsm.VoterSince()
	var ids []string
	for _, s := range cfg.Servers {
		if s.Suffrage == raft.Voter {
			ids = append(ids, string(s.ID))
		}
	}
	sort.Slice(ids, func(i, j int) bool {
		a, b := since[ids[i]], since[ids[j]]
		if a != b {
			return a < b
		}
		return ids[i] < ids[j]
	})
	return ids
}

// reachableStandby returns the first standby node that answers as itself.
func (m *membership) reachableStandby(ctx context.Context, cands []Peer) (Peer, error) {
	var why []string
	for _, p := range cands {
		p, err := NormalizePeer(p)
		if err != nil {
			why = append(why, err.Error())
			continue
		}
		if err := m.probe(ctx, p); err != nil {
			m.n.log.Info("standby node not reachable", "node", p.ID, "api", p.APIAddr, "error", err)
			why = append(why, fmt.Sprintf("%s: %v", p.ID, err))
			continue
		}
		return p, nil
	}
	if len(cands) == 0 {
		return Peer{}, fmt.Errorf("%w: the pool is empty or every node of it is a member (give standby nodes with --pool ID=RAFT,API)", ErrNoStandby)
	}
	return Peer{}, fmt.Errorf("%w (%s)", ErrNoStandby, strings.Join(why, "; "))
}

// probe checks that p answers GetStatus as node p.ID.
func (m *membership) probe(ctx context.Context, p Peer) error {
	hc, err := m.peerClient(p.ID)
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	resp, err := witnessv1connect.NewWitnessServiceClient(hc, p.APIAddr, rpcserver.ClientOptions()...).GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
	if err != nil {
		return err
	}
	if resp.Msg.GetNodeId() != p.ID {
		return fmt.Errorf("the API there answers as node %q", resp.Msg.GetNodeId())
	}
	return nil
}

// pickRotation chooses the voter to replace (the longest-serving one) and
// a reachable standby node to replace it with.
func (n *Node) pickRotation(ctx context.Context) (string, Peer, error) {
	cfg, _, err := n.configuration()
	if err != nil {
		return "", Peer{}, err
	}
	order := n.longestServing(cfg)
	if len(order) == 0 {
		return "", Peer{}, fmt.Errorf("%w: no voter to rotate out", ErrUnsafeChange)
	}
	in, err := n.mem.reachableStandby(ctx, n.standby(cfg))
	if err != nil {
		return "", Peer{}, err
	}
	return order[0], in, nil
}

// Rotation reports the pool and what the schedule did last on this node.
func (n *Node) Rotation() RotationStatus {
	n.rot.mu.Lock()
	st := n.rot.status
	n.rot.mu.Unlock()
	st.Every, st.ActiveCount = n.rot.cfg.Every, n.rot.cfg.ActiveCount
	if cfg, _, err := n.configuration(); err == nil {
		for _, p := range n.standby(cfg) {
			st.Pool = append(st.Pool, p.ID)
		}
	}
	return st
}

func (n *Node) setRotationResult(done bool, format string, args ...any) {
	n.rot.mu.Lock()
	defer n.rot.mu.Unlock()
	n.rot.status.LastRun = time.Now()
	n.rot.status.LastResult = fmt.Sprintf(format, args...)
	if done {
		n.rot.status.Rotations++
	}
}

// runSchedule runs one scheduled step every period while this node leads,
// until stop is closed.
func (m *membership) runSchedule(every time.Duration) {
	defer close(m.scheduleDone)
	t := time.NewTicker(every)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-m.stop
		cancel()
	}()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			if m.n.raft.State() == raft.Leader {
				m.n.scheduledStep(ctx)
			}
		}
	}
}

// scheduledStep grows or shrinks the voters towards the active count, or
// rotates the longest-serving voter out: one change per call.
func (n *Node) scheduledStep(ctx context.Context) {
	log := n.log.With("component", "rotation")
	ctx, cancel := context.WithTimeout(ctx, n.mem.catchUp)
	defer cancel()
	by := n.scheduleIdentity()
	cfg, _, err := n.configuration()
	if err != nil {
		log.Warn("rotation skipped", "error", err)
		n.setRotationResult(false, "skipped: %v", err)
		return
	}
	voters := len(voterIDs(cfg))
	target := n.rot.cfg.ActiveCount
	if target == 0 {
		target = voters
	}
	switch {
	case voters < target:
		in, err := n.mem.reachableStandby(ctx, n.standby(cfg))
		if err != nil {
			log.Warn("rotation skipped: the cluster has fewer voters than --active-count, but no standby node answers", "voters", voters, "active_count", target, "error", err)
			n.setRotationResult(false, "skipped: %d voters of %d wanted: %v", voters, target, err)
			return
		}
		ch, err := n.AddNode(ctx, by, in, true)
		n.logScheduled(log, fmt.Sprintf("added %s to reach %d voters", in.ID, target), ch, err)
	case voters > target:
		order := n.longestServing(cfg)
		out := order[0]
		if out == n.id && len(order) > 1 {
			out = order[1]
		}
		ch, err := n.removeNode(ctx, by, out, true)
		n.logScheduled(log, fmt.Sprintf("removed %s to keep %d voters", out, target), ch, err)
	default:
		out, in, err := n.pickRotation(ctx)
		if err != nil {
			log.Warn("rotation skipped", "error", err)
			n.setRotationResult(false, "skipped: %v", err)
			return
		}
		ch, err := n.Rotate(ctx, by, out, in)
		n.logScheduled(log, fmt.Sprintf("rotated %s out and %s in", out, in.ID), ch, err)
	}
}

// logScheduled logs and records the outcome of a scheduled change.
func (n *Node) logScheduled(log *slog.Logger, what string, ch Change, err error) {
	var nl *NotLeaderError
	switch {
	case errors.As(err, &nl):
		log.Info("rotation: this node handed leadership over so that it can be rotated out; the new leader's schedule continues", "leader", nl.LeaderID)
		n.setRotationResult(false, "handed leadership to %s to be rotated out", nl.LeaderID)
	case errors.Is(err, ErrChangeInProgress):
		log.Info("rotation skipped: another membership change is in progress")
		n.setRotationResult(false, "skipped: another membership change is in progress")
	case err != nil:
		log.Warn("rotation failed", "what", what, "error", err)
		n.setRotationResult(false, "failed: %v", err)
	default:
		log.Info("rotation done", "what", what, "steps", strings.Join(ch.Steps, "; "))
		n.setRotationResult(true, "%s", what)
	}
}

// RotationProto is Rotation as ListMembers reports it.
func (n *Node) RotationProto() *witnessv1.RotationStatus {
	st := n.Rotation()
	out := &witnessv1.RotationStatus{
		RotateEverySeconds: uint64(st.Every / time.Second),
		ActiveCount:        uint32(st.ActiveCount),
		Pool:               st.Pool,
		LastResult:         st.LastResult,
		Rotations:          uint64(st.Rotations),
	}
	if !st.LastRun.IsZero() {
		out.LastRunMicros = st.LastRun.UnixMicro()
	}
	return out
}
