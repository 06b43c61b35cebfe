// Package node runs one witness node: hashicorp/raft with a bbolt log and
// stable store and file snapshots in the data directory, the mutual-TLS
// transport of package raftnet, and the state machine of package fsm.
//
// Data directory layout:
//
//	raft.db                       bbolt: Raft log and stable store (term, vote)
//	snapshots/<term>-<index>-<ms>/  Raft snapshots (meta.json, state.bin)
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/services/witness/internal/fsm"
	"github.com/witnz/witnz/services/witness/internal/raftnet"
)

// Defaults of the Raft timing knobs.
const (
	// Twice hashicorp/raft's LAN defaults: witnesses share their hosts with
	// busy databases, and a follower starved of CPU for a second must not
	// depose a healthy leader (each election stalls every Append).
	DefaultHeartbeatTimeout   = 2 * time.Second
	DefaultElectionTimeout    = 2 * time.Second
	DefaultLeaderLeaseTimeout = time.Second
	// DefaultCommitTimeout is hashicorp/raft's own default. It is how long
	// the leader goes without new entries before it sends each follower an
	// empty AppendEntries carrying the commit index; it never delays a
	// commit on the leader, where Append is answered, only how soon a
	// follower's state machine catches up once appends stop (at most twice
	// this). At 5 ms an idle 3-node cluster spent 13 % of a core on those
	// messages, at 50 ms 2 % (tools/bench B11 notes).
	DefaultCommitTimeout = 50 * time.Millisecond
	// ApplyTimeout bounds how long a proposal waits to be enqueued.
	ApplyTimeout = 10 * time.Second
	// TransferTimeout bounds the leadership transfer on shutdown.
	TransferTimeout = 5 * time.Second
)

// Peer is one voter: its id, Raft address and API URL.
type Peer struct {
	ID       string
	RaftAddr string
	APIAddr  string
}

// Tuning holds the Raft timing knobs; zero values mean the defaults.
type Tuning struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotInterval   time.Duration
	SnapshotThreshold  uint64
	TrailingLogs       uint64
}

// Config describes one node.
type Config struct {
	// ID is the Raft server id and the node's certificate name.
	ID      string
	DataDir string
	// Listener is the bound Raft listener (plain TCP: raftnet adds TLS).
	Listener net.Listener
	// Advertise is the host:port peers dial for Raft.
	Advertise string
	TLS       *mtls.Config
	// Peers lists every voter, this node included.
	Peers     []Peer
	Bootstrap bool
	Logger    *slog.Logger
	Tuning    Tuning
	// FSMOptions configure the state machine (fsm.WithCheckpoints).
	FSMOptions []fsm.Option
	// Membership tunes membership changes (membership.go).
	Membership MembershipConfig
	// Rotation configures the rotation pool and schedule (rotation.go).
	Rotation RotationConfig
}

// Node is a running witness node.
type Node struct {
	id        string
	raft      *raft.Raft
	fsm       *fsm.FSM
	store     *raftboltdb.BoltStore
	transport *raft.NetworkTransport
	peers     map[string]Peer
	log       *slog.Logger
	mem       *membership
	rot       *rotation
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Open opens (or creates) the node's state in DataDir and starts Raft. With
// Bootstrap set and no state yet, it creates the cluster from Peers.
func Open(cfg Config) (*Node, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create --data-dir: %w", err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(cfg.DataDir, "raft.db"),
		// The Raft log is written and truncated all the time: not
		// syncing the freelist (it is rebuilt on open) and keeping it in a
		// hash map keep each commit's cost flat as the file grows.
		BoltOptions: &bbolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType},
	})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("--data-dir %s is in use: another witness process holds %s (stop it or use another --data-dir)", cfg.DataDir, filepath.Join(cfg.DataDir, "raft.db"))
		}
		return nil, fmt.Errorf("open Raft store in --data-dir %s: %w", cfg.DataDir, err)
	}
	n := &Node{id: cfg.ID, fsm: fsm.New(cfg.FSMOptions...), store: store, peers: map[string]Peer{}, log: log, rot: &rotation{cfg: cfg.Rotation}}
	for _, p := range cfg.Peers {
		n.peers[p.ID] = p
	}
	fail := func(err error) (*Node, error) {
		store.Close()
		return nil, err
	}
	hl := newHCLog(log, "raft")
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hl)
	if err != nil {
		return fail(fmt.Errorf("open snapshot store in --data-dir %s: %w", cfg.DataDir, err))
	}
	hasState, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		return fail(fmt.Errorf("read Raft state in --data-dir %s: %w", cfg.DataDir, err))
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hl
	rc.HeartbeatTimeout = or(cfg.Tuning.HeartbeatTimeout, DefaultHeartbeatTimeout)
	rc.ElectionTimeout = or(cfg.Tuning.ElectionTimeout, DefaultElectionTimeout)
	rc.LeaderLeaseTimeout = or(cfg.Tuning.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout)
	rc.CommitTimeout = or(cfg.Tuning.CommitTimeout, DefaultCommitTimeout)
	rc.SnapshotInterval = or(cfg.Tuning.SnapshotInterval, rc.SnapshotInterval)
	rc.SnapshotThreshold = or(cfg.Tuning.SnapshotThreshold, rc.SnapshotThreshold)
	rc.TrailingLogs = or(cfg.Tuning.TrailingLogs, rc.TrailingLogs)
	if err := raft.ValidateConfig(rc); err != nil {
		return fail(fmt.Errorf("raft configuration: %w", err))
	}

	stream := raftnet.New(cfg.Listener, cfg.Advertise, cfg.TLS, log.With("component", "raft-transport"))
	n.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  hl.Named("net"),
	})
	logs, err := raft.NewLogCache(512, store)
	if err != nil {
		n.transport.Close()
		return fail(err)
	}
	r, err := newRaft(rc, n.fsm, logs, store, snaps, n.transport)
	if err != nil {
		n.transport.Close()
		return fail(fmt.Errorf("start Raft from --data-dir %s: %w: a snapshot or the Raft log there is damaged (the ERROR lines above name the snapshot and why); move the damaged snapshot out of %s, or empty --data-dir so that the leader sends this node a fresh snapshot", cfg.DataDir, err, filepath.Join(cfg.DataDir, "snapshots")))
	}
	n.raft = r
	switch {
	case hasState:
		log.Info("raft state found; rejoining the cluster", "data_dir", cfg.DataDir, "last_index", r.LastIndex())
	case cfg.Bootstrap:
		servers := make([]raft.Server, 0, len(cfg.Peers))
		for _, p := range cfg.Peers {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
		}
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			r.Shutdown().Error()
			return fail(fmt.Errorf("bootstrap the cluster from --peer: %w", err))
		}
		log.Info("bootstrapped the cluster", "voters", len(servers))
	default:
		log.Info("no raft state and no --bootstrap: waiting for the leader to contact this node", "data_dir", cfg.DataDir)
	}
	n.mem = newMembership(n, cfg)
	return n, nil
}

// newRaft is raft.NewRaft, turning its panics into errors: when the newest
// snapshot is refused, hashicorp/raft falls back to an older one and panics
// if the log between them was compacted ("log not found").
func newRaft(rc *raft.Config, f raft.FSM, logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore, trans raft.Transport) (r *raft.Raft, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("raft refused the stored state: %v", p)
		}
	}()
	return raft.NewRaft(rc, f, logs, stable, snaps, trans)
}

// ID is this node's id.
func (n *Node) ID() string { return n.id }

// FSM is the node's replica of the state.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// Raft exposes the Raft instance for diagnostics and tests.
func (n *Node) Raft() *raft.Raft { return n.raft }

// APIAddr returns the API URL of a peer from --peer, else from the
// addresses recorded in the replicated state (nodes added at run time), or
// "" when neither knows it.
func (n *Node) APIAddr(id string) string {
	if p, ok := n.peers[id]; ok {
		return p.APIAddr
	}
	_, api, _ := n.fsm.MemberAddress(id)
	return api
}

// Leader returns the id and API URL of the leader this node knows of, or
// empty strings when there is none.
func (n *Node) Leader() (id, apiAddr string) {
	_, lid := n.raft.LeaderWithID()
	return string(lid), n.APIAddr(string(lid))
}

// NotLeaderError is returned by Propose on a node that is not the leader.
type NotLeaderError struct {
	// LeaderID and LeaderAPI name the leader, empty while none is known.
	LeaderID, LeaderAPI string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "not the leader; no leader is known yet (an election is running): retry shortly"
	}
	api := e.LeaderAPI
	if api == "" {
		api = "an API address this node does not know (not in its --peer list nor recorded by a membership change)"
	}
	return fmt.Sprintf("not the leader; leader is %s at %s", e.LeaderID, api)
}

// Errors of Propose besides NotLeaderError.
var (
	// ErrUncertain means leadership was lost after the command was sent:
	// it may or may not have been committed. Retrying is safe (replays are
	// deduplicated).
	ErrUncertain = errors.New("leadership was lost while the command was being committed; it may or may not be committed: retry (replays are deduplicated)")
	// ErrUnavailable means the node is shutting down or overloaded.
	ErrUnavailable = errors.New("the node cannot take commands now (shutting down or overloaded): retry")
)

func (n *Node) notLeader() error {
	id, api := n.Leader()
	return &NotLeaderError{LeaderID: id, LeaderAPI: api}
}

// Propose commits cmd through Raft and returns the state machine's result
// and the Raft index. Only the leader accepts proposals.
func (n *Node) Propose(ctx context.Context, cmd *witnessv1.Command) (*fsm.Result, uint64, error) {
	return n.ProposeNotify(ctx, nil, cmd)
}

// ProposeNotify is Propose calling enqueued (when not nil) once the command
// is handed to Raft, before it waits for the commit: commands handed over
// one after the other take consecutive places in the log in that order.
func (n *Node) ProposeNotify(ctx context.Context, enqueued func(), cmd *witnessv1.Command) (*fsm.Result, uint64, error) {
	if n.raft.State() != raft.Leader {
		return nil, 0, n.notLeader()
	}
	b, err := proto.Marshal(cmd)
	if err != nil {
		return nil, 0, fmt.Errorf("encode command: %w", err)
	}
	timeout := ApplyTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, max(time.Until(d), time.Millisecond))
	}
	f := n.raft.Apply(b, timeout)
	if enqueued != nil {
		enqueued()
	}
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return nil, 0, n.notLeader()
		case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrAbortedByRestore):
			return nil, 0, ErrUncertain
		case errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, raft.ErrEnqueueTimeout):
			return nil, 0, ErrUnavailable
		}
		return nil, 0, fmt.Errorf("raft apply: %w", err)
	}
	res, ok := f.Response().(*fsm.Result)
	if !ok {
		return nil, 0, fmt.Errorf("raft apply returned %T", f.Response())
	}
	return res, f.Index(), nil
}

// Member is one server of the Raft configuration.
type Member struct {
	ID, RaftAddr, APIAddr string
	Voter, Leader         bool
}

// Status is this node's view of the cluster.
type Status struct {
	ID, State           string
	LeaderID, LeaderAPI string
	Applied, Commit     uint64
	Term                uint64
	Members             []Member
}

// Status reports Raft state, indexes and members.
func (n *Node) Status() (Status, error) {
	leaderID, leaderAPI := n.Leader()
	st := Status{
		ID:        n.id,
		State:     n.raft.State().String(),
		LeaderID:  leaderID,
		LeaderAPI: leaderAPI,
		Applied:   n.raft.AppliedIndex(),
		Commit:    n.raft.CommitIndex(),
		Term:      n.raft.CurrentTerm(),
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return st, fmt.Errorf("read raft configuration: %w", err)
	}
	for _, s := range f.Configuration().Servers {
		st.Members = append(st.Members, Member{
			ID:       string(s.ID),
			RaftAddr: string(s.Address),
			APIAddr:  n.APIAddr(string(s.ID)),
			Voter:    s.Suffrage == raft.Voter,
			Leader:   string(s.ID) == leaderID,
		})
	}
	sort.Slice(st.Members, func(i, j int) bool { return st.Members[i].ID < st.Members[j].ID })
	return st, nil
}

// Ready reports whether the node takes part in a working cluster: it is
// leader or follower and knows the leader.
func (n *Node) Ready() error {
	switch s := n.raft.State(); s {
	case raft.Leader, raft.Follower:
	default:
		return fmt.Errorf("raft state is %s", s)
	}
	if id, _ := n.Leader(); id == "" {
		return errors.New("no leader known")
	}
	return nil
}

// Close hands leadership to another voter if this node leads (best effort,
// bounded by TransferTimeout and ctx), stops Raft and closes the store.
func (n *Node) Close(ctx context.Context) error {
	if n.raft.State() == raft.Leader && n.voters() > 1 {
		done := make(chan error, 1)
		go func() { done <- n.raft.LeadershipTransfer().Error() }()
		tctx, cancel := context.WithTimeout(ctx, TransferTimeout)
		select {
		case err := <-done:
			if err != nil {
				n.log.Warn("leadership transfer before shutdown failed; the others will elect a leader after the election timeout", "error", err)
			} else {
				n.log.Info("handed leadership over before shutdown")
			}
		case <-tctx.Done():
			n.log.Warn("leadership transfer before shutdown timed out", "timeout", TransferTimeout)
		}
		cancel()
	}
	n.mem.close()
	err := n.raft.Shutdown().Error()
	if cerr := n.store.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close Raft store: %w", cerr)
	}
	return err
}

func (n *Node) voters() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	c := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			c++
		}
	}
	return c
}
