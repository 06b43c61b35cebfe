package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/services/witness/internal/fsm"
)

// Membership changes run on the leader, one at a time, and each one is a
// Raft configuration change between two records in the replicated state
// (package fsm): a STARTED record before it, with the identity that asked,
// and a DONE record (with the configuration's Raft index) once it
// committed, or a FAILED record saying why it did not.
//
// Safety rules: a voter is removed only if the voters left are at least
// MinVoters, a majority of the current voters, and enough of them answer
// the leader's heartbeats to commit the new configuration. A node joins as
// a non-voter (it neither votes nor counts for commits, so adding one
// never endangers the quorum) and becomes a voter only once it has applied
// the leader's commit index and holds, for every table, the log the leader
// holds at that size. Its replica checks what it receives on its own: a
// snapshot is restored only after every entry was decoded, matched against
// the log and replayed through the rules Apply uses (fsm.Restore), and
// every later command goes through Apply.

// Defaults of MembershipConfig.
const (
	DefaultMinVoters      = 3
	DefaultCatchUpTimeout = 5 * time.Minute
	// ConfigChangeTimeout bounds how long a configuration change waits to
	// be enqueued.
	ConfigChangeTimeout = 10 * time.Second
	// catchUpPoll is how often the leader asks a joining node how far it is.
	catchUpPoll = 100 * time.Millisecond
	// recordTimeout bounds the DONE and FAILED records, written even after
	// the request's context ended.
	recordTimeout = 5 * time.Second
)

// MembershipConfig tunes membership changes; zero values mean the
// defaults.
type MembershipConfig struct {
	// MinVoters is the fewest voters a removal may leave.
	MinVoters int
	// CatchUpTimeout bounds the wait for a joining node to catch up when
	// the request carries no deadline.
	CatchUpTimeout time.Duration
}

// Errors of membership changes. NotLeaderError (possibly wrapped) means the
// request belongs on the leader it names.
var (
	ErrUnknownNode      = errors.New("not a member of the cluster")
	ErrMemberExists     = errors.New("already a member")
	ErrInvalidMember    = errors.New("invalid member")
	ErrUnsafeChange     = errors.New("refused to protect the quorum")
	ErrChangeInProgress = errors.New("another membership change is in progress")
	ErrNotCaughtUp      = errors.New("the new node did not catch up")
	ErrLogMismatch      = errors.New("the new node holds a different log than the leader")
)

// membership is a node's part in membership changes.
type membership struct {
	n         *Node
	minVoters int
	catchUp   time.Duration
	tls       *mtls.Config
	now       func() time.Time

	// busy admits one change at a time.
	busy sync.Mutex

	// failing holds the peers whose heartbeats fail, as this node sees
	// them while it leads, and since when.
	mu       sync.Mutex
	failing  map[raft.ServerID]time.Time
	observer *raft.Observer
	stop     chan struct{}
	done     chan struct{}
	// scheduleDone is closed when the rotation schedule stopped.
	scheduleDone chan struct{}
}

func newMembership(n *Node, cfg Config) *membership {
	m := &membership{
		n:         n,
		minVoters: or(cfg.Membership.MinVoters, DefaultMinVoters),
		catchUp:   or(cfg.Membership.CatchUpTimeout, DefaultCatchUpTimeout),
		tls:       cfg.TLS,
		now:       time.Now,
		failing:   map[raft.ServerID]time.Time{},
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	ch := make(chan raft.Observation, 64)
	m.observer = raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation, raft.LeaderObservation, raft.PeerObservation:
			return true
		}
		return false
	})
	n.raft.RegisterObserver(m.observer)
	go m.watch(ch)
	m.scheduleDone = make(chan struct{})
	if every := cfg.Rotation.Every; every > 0 {
		go m.runSchedule(every)
	} else {
		close(m.scheduleDone)
	}
	return m
}

// watch follows the leader's heartbeats to its peers.
func (m *membership) watch(ch <-chan raft.Observation) {
	defer close(m.done)
	for {
		select {
		case <-m.stop:
			return
		case o := <-ch:
			m.mu.Lock()
			switch d := o.Data.(type) {
			case raft.FailedHeartbeatObservation:
				if _, ok := m.failing[d.PeerID]; !ok {
					m.failing[d.PeerID] = m.now()
				}
			case raft.ResumedHeartbeatObservation:
				delete(m.failing, d.PeerID)
			case raft.PeerObservation:
				// Replication to the peer starts afresh, or stops.
				delete(m.failing, d.Peer.ID)
			case raft.LeaderObservation:
				// A new term starts with fresh replication to every peer.
				clear(m.failing)
			}
			m.mu.Unlock()
		}
	}
}

func (m *membership) close() {
	m.n.raft.DeregisterObserver(m.observer)
	close(m.stop)
	<-m.done
	<-m.scheduleDone
}

// isFailing reports whether the leader's heartbeats to id fail.
func (m *membership) isFailing(id raft.ServerID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.failing[id]
	return ok
}

func (m *membership) failingIDs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.failing))
	for id := range m.failing {
		out = append(out, string(id))
	}
	slices.Sort(out)
	return out
}

// NormalizePeer checks a node's id and addresses and returns them with the
// API address as https://host:port.
func NormalizePeer(p Peer) (Peer, error) {
	if !fsm.ValidNodeID(p.ID) {
		return p, fmt.Errorf("%w: id %q must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit (the name in its certificate spiffe://witnz/witness/<id>)", ErrInvalidMember, p.ID)
	}
	if err := checkHostPort(p.RaftAddr); err != nil {
		return p, fmt.Errorf("%w: Raft address of %s: %v (want host:port, e.g. 10.0.0.4:7011)", ErrInvalidMember, p.ID, err)
	}
	api := p.APIAddr
	if strings.Contains(api, "://") {
		u, err := url.Parse(api)
		if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return p, fmt.Errorf("%w: API address of %s %q is not https://host:port", ErrInvalidMember, p.ID, api)
		}
		api = u.Host
	}
	if err := checkHostPort(api); err != nil {
		return p, fmt.Errorf("%w: API address of %s: %v (want https://host:port, e.g. https://10.0.0.4:7010)", ErrInvalidMember, p.ID, err)
	}
	p.APIAddr = "https://" + api
	return p, nil
}

func checkHostPort(v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("%q is not host:port", v)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q has no valid port (1-65535)", v)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", v)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%q is a wildcard address other nodes cannot dial", v)
	}
	return nil
}

// Change reports what a membership change did.
type Change struct {
	// Steps says what was done, one line per step.
	Steps []string
	// CaughtUp is the leader commit index a joining node had applied when
	// it was checked (0 when no node joined).
	CaughtUp uint64
	// Members is the configuration afterwards.
	Members []Member
}

// Transfer reports a leadership transfer.
type Transfer struct {
	PreviousLeaderID    string
	LeaderID, LeaderAPI string
	Term                uint64
}

// MembersView is this node's view of the membership.
type MembersView struct {
	Status
	// ConfigIndex is the Raft index of the configuration Members is from.
	ConfigIndex uint64
	// Unreachable lists, on the leader, the members whose heartbeats fail.
	Unreachable []string
	MinVoters   int
}

// Members reports the configuration, the members' addresses and, on the
// leader, the members whose heartbeats fail.
func (n *Node) Members() (MembersView, error) {
	st, err := n.Status()
	if err != nil {
		return MembersView{}, err
	}
	v := MembersView{Status: st, MinVoters: n.mem.minVoters}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return v, fmt.Errorf("read raft configuration: %w", err)
	}
	v.ConfigIndex = f.Index()
	if n.raft.State() == raft.Leader {
		// A heartbeat that failed just as its peer was removed may be
		// observed after the removal: only members are reported.
		for _, id := range n.mem.failingIDs() {
			if slices.ContainsFunc(st.Members, func(m Member) bool { return m.ID == id }) {
				v.Unreachable = append(v.Unreachable, id)
			}
		}
	}
	return v, nil
}

// operation is one membership change being carried out.
type operation struct {
	by string
	// id is the Raft index of the operation's first record.
	id    uint64
	steps []string
}

func (o *operation) step(format string, args ...any) {
	o.steps = append(o.steps, fmt.Sprintf(format, args...))
}

// record proposes a membership record. STARTED records carry the addresses
// of the members this leader knows, so every node learns them. DONE and
// FAILED records are written even when the request's context has ended:
// what was done must be on record.
func (m *membership) record(ctx context.Context, o *operation, c *witnessv1.MembershipCommand) (uint64, error) {
	c.By, c.Operation = o.by, o.id
	if c.Phase == witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED {
		c.Members = m.knownAddresses()
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
		defer cancel()
	}
	res, index, err := m.n.Propose(ctx, &witnessv1.Command{
		ProposedAtMicros: m.now().UnixMicro(),
		Command:          &witnessv1.Command_Membership{Membership: c},
	})
	if err != nil {
		return 0, fmt.Errorf("record the membership change: %w", err)
	}
	if res.Err != nil {
		return 0, fmt.Errorf("record the membership change: %w", res.Err)
	}
	if o.id == 0 {
		o.id = index
	}
	return index, nil
}

// recordFailure records that an operation failed; a failure to record is
// logged, the original error is what the caller gets.
func (m *membership) recordFailure(ctx context.Context, o *operation, c *witnessv1.MembershipCommand, cause error) {
	c.Phase, c.Error = witnessv1.MembershipPhase_MEMBERSHIP_PHASE_FAILED, truncate(cause.Error(), maxRecordedError)
	if _, err := m.record(ctx, o, c); err != nil {
		m.n.log.Warn("could not record a failed membership change", "op", c.Op.String(), "node", c.NodeId, "cause", cause.Error(), "error", err)
	}
}

// maxRecordedError bounds the reason a FAILED record keeps; the state
// machine refuses longer fields.
const maxRecordedError = 1000

// truncate shortens s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func (m *membership) knownAddresses() []*witnessv1.NodeAddress {
	cfg, _, err := m.n.configuration()
	if err != nil {
		return nil
	}
	var out []*witnessv1.NodeAddress
	for _, s := range cfg.Servers {
		if api := m.n.APIAddr(string(s.ID)); api != "" {
			out = append(out, &witnessv1.NodeAddress{Id: string(s.ID), RaftAddress: string(s.Address), ApiAddress: api})
		}
	}
	return out
}

// configuration returns the latest Raft configuration and its index.
func (n *Node) configuration() (raft.Configuration, uint64, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Configuration{}, 0, fmt.Errorf("read raft configuration: %w", err)
	}
	return f.Configuration(), f.Index(), nil
}

// raftError maps the error of a Raft configuration change or transfer.
func (n *Node) raftError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return n.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrAbortedByRestore):
		return ErrUncertain
	case errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, raft.ErrEnqueueTimeout):
		return ErrUnavailable
	}
	return err
}

// begin admits one change at a time, on the leader only.
func (n *Node) begin() (func(), error) {
	if n.raft.State() != raft.Leader {
		return nil, n.notLeader()
	}
	if !n.mem.busy.TryLock() {
		return nil, fmt.Errorf("%w on this leader: wait for it to finish (see ListMembers for its records), then retry", ErrChangeInProgress)
	}
	return n.mem.busy.Unlock, nil
}

func server(cfg raft.Configuration, id string) (raft.Server, bool) {
	for _, s := range cfg.Servers {
		if string(s.ID) == id {
			return s, true
		}
	}
	return raft.Server{}, false
}

func voterIDs(cfg raft.Configuration) []raft.ServerID {
	var out []raft.ServerID
	for _, s := range cfg.Servers {
		if s.Suffrage == raft.Voter {
			out = append(out, s.ID)
		}
	}
	return out
}

// describe lists the members of a configuration, e.g. "w1 (voter), w4
// (non-voter)".
func describe(cfg raft.Configuration) string {
	parts := make([]string, 0, len(cfg.Servers))
	for _, s := range cfg.Servers {
		kind := "voter"
		if s.Suffrage != raft.Voter {
			kind = "non-voter"
		}
		parts = append(parts, fmt.Sprintf("%s (%s)", s.ID, kind))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// checkRemoval says whether removing id from cfg keeps the cluster able to
// commit. self is the leader (it answers its own heartbeats); failing
// reports the voters whose heartbeats fail.
func checkRemoval(cfg raft.Configuration, id string, self raft.ServerID, minVoters int, failing func(raft.ServerID) bool) error {
	s, ok := server(cfg, id)
	if !ok {
		return fmt.Errorf("%w: %s (members: %s)", ErrUnknownNode, id, describe(cfg))
	}
	if s.Suffrage != raft.Voter {
		return nil
	}
	voters := voterIDs(cfg)
	left := len(voters) - 1
	majority := len(voters)/2 + 1
	switch {
	case left == 0:
		return fmt.Errorf("%w: %s is the last voter; removing it would leave no cluster", ErrUnsafeChange, id)
	case left < minVoters:
		return fmt.Errorf("%w: removing voter %s would leave %d voters, fewer than the minimum of %d (--min-voters); add a node first, or replace %s with `witnz witness rotate`", ErrUnsafeChange, id, left, minVoters, id)
	case left < majority:
		return fmt.Errorf("%w: removing voter %s would leave %d voters, fewer than a majority (%d) of the current %d", ErrUnsafeChange, id, left, majority, len(voters))
	}
	var down []string
	for _, v := range voters {
		if string(v) != id && v != self && failing(v) {
			down = append(down, string(v))
		}
	}
	if need := left/2 + 1; left-len(down) < need {
		return fmt.Errorf("%w: of the %d voters that would remain only %d answer the leader's heartbeats (%s do not), fewer than the %d the new configuration needs to commit; bring them back first", ErrUnsafeChange, left, left-len(down), strings.Join(down, ", "), need)
	}
	return nil
}

// checkPromotion says whether cfg with one more voter (caught up and
// answering) can still commit.
func checkPromotion(cfg raft.Configuration, self raft.ServerID, failing func(raft.ServerID) bool) error {
	voters := voterIDs(cfg)
	var down []string
	for _, v := range voters {
		if v != self && failing(v) {
			down = append(down, string(v))
		}
	}
	after := len(voters) + 1
	if up, need := after-len(down), after/2+1; up < need {
		return fmt.Errorf("%w: with one more voter %d of %d voters would answer the leader's heartbeats (%s do not), fewer than the %d needed to commit; bring them back first", ErrUnsafeChange, up, after, strings.Join(down, ", "), need)
	}
	return nil
}

// withVoter returns cfg with id as a voter at addr.
func withVoter(cfg raft.Configuration, id, addr string) raft.Configuration {
	out := raft.Configuration{}
	found := false
	for _, s := range cfg.Servers {
		if string(s.ID) == id {
			s.Suffrage, found = raft.Voter, true
		}
		out.Servers = append(out.Servers, s)
	}
	if !found {
		out.Servers = append(out.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(addr)})
	}
	return out
}

// checkJoin checks that p may join cfg: its id is absent or a non-voter at
// the same Raft address, and no other member uses that address.
func checkJoin(cfg raft.Configuration, p Peer) (existing *raft.Server, err error) {
	for _, s := range cfg.Servers {
		switch {
		case string(s.ID) == p.ID && string(s.Address) != p.RaftAddr:
			return nil, fmt.Errorf("%w: %s is a member with the Raft address %s, not %s; remove it first to change its address", ErrMemberExists, p.ID, s.Address, p.RaftAddr)
		case string(s.ID) == p.ID:
			existing = &s
		case string(s.Address) == p.RaftAddr:
			return nil, fmt.Errorf("%w: the Raft address %s belongs to member %s", ErrMemberExists, p.RaftAddr, s.ID)
		}
	}
	return existing, nil
}

// change records STARTED, makes one Raft configuration change and waits
// for it to commit, then records DONE (or FAILED).
func (m *membership) change(ctx context.Context, o *operation, c *witnessv1.MembershipCommand, prevIndex uint64) error {
	c.Phase = witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED
	if _, err := m.record(ctx, o, c); err != nil {
		return err
	}
	id, addr := raft.ServerID(c.NodeId), raft.ServerAddress(c.RaftAddress)
	var f raft.IndexFuture
	switch c.Op {
	case witnessv1.MembershipOp_MEMBERSHIP_OP_ADD_NONVOTER:
		f = m.n.raft.AddNonvoter(id, addr, prevIndex, ConfigChangeTimeout)
	case witnessv1.MembershipOp_MEMBERSHIP_OP_PROMOTE:
		f = m.n.raft.AddVoter(id, addr, prevIndex, ConfigChangeTimeout)
	case witnessv1.MembershipOp_MEMBERSHIP_OP_REMOVE:
		f = m.n.raft.RemoveServer(id, prevIndex, ConfigChangeTimeout)
	default:
		return fmt.Errorf("membership: %v is not a configuration change", c.Op)
	}
	if err := f.Error(); err != nil {
		err = m.n.raftError(err)
		m.recordFailure(ctx, o, cloneCommand(c), err)
		return fmt.Errorf("%s %s: %w", opVerb(c.Op), c.NodeId, err)
	}
	done := cloneCommand(c)
	done.Phase, done.ConfigurationIndex = witnessv1.MembershipPhase_MEMBERSHIP_PHASE_DONE, f.Index()
	if _, err := m.record(ctx, o, done); err != nil {
		return fmt.Errorf("%s %s committed at index %d, but %w", opVerb(c.Op), c.NodeId, f.Index(), err)
	}
	return nil
}

func cloneCommand(c *witnessv1.MembershipCommand) *witnessv1.MembershipCommand {
	return &witnessv1.MembershipCommand{Op: c.Op, NodeId: c.NodeId, RaftAddress: c.RaftAddress, ApiAddress: c.ApiAddress, ReplacementId: c.ReplacementId, ToPool: c.ToPool}
}

func opVerb(op witnessv1.MembershipOp) string {
	switch op {
	case witnessv1.MembershipOp_MEMBERSHIP_OP_ADD_NONVOTER:
		return "add non-voter"
	case witnessv1.MembershipOp_MEMBERSHIP_OP_PROMOTE:
		return "promote"
	case witnessv1.MembershipOp_MEMBERSHIP_OP_REMOVE:
		return "remove"
	case witnessv1.MembershipOp_MEMBERSHIP_OP_TRANSFER_LEADERSHIP:
		return "transfer leadership to"
	case witnessv1.MembershipOp_MEMBERSHIP_OP_ROTATE:
		return "rotate"
	}
	return op.String()
}

// members returns the configuration as Members.
func (n *Node) members() []Member {
	st, err := n.Status()
	if err != nil {
		return nil
	}
	return st.Members
}

// AddNode adds p as a non-voter and, with voter set, promotes it once it
// has caught up. A node already added as a non-voter (at the same
// address) is promoted. by is the identity that asked.
func (n *Node) AddNode(ctx context.Context, by string, p Peer, voter bool) (Change, error) {
	p, err := NormalizePeer(p)
	if err != nil {
		return Change{}, err
	}
	release, err := n.begin()
	if err != nil {
		return Change{}, err
	}
	defer release()
	m := n.mem
	cfg, index, err := n.configuration()
	if err != nil {
		return Change{}, err
	}
	existing, err := checkJoin(cfg, p)
	if err != nil {
		return Change{}, err
	}
	switch {
	case existing != nil && existing.Suffrage == raft.Voter:
		return Change{}, fmt.Errorf("%w: %s is already a voter", ErrMemberExists, p.ID)
	case existing != nil && !voter:
		return Change{}, fmt.Errorf("%w: %s is already a non-voter (add it with voter set to promote it)", ErrMemberExists, p.ID)
	}
	if voter {
		if err := checkPromotion(cfg, raft.ServerID(n.id), m.isFailing); err != nil {
			return Change{}, err
		}
	}
	o := &operation{by: by}
	cmd := func(op witnessv1.MembershipOp) *witnessv1.MembershipCommand {
		return &witnessv1.MembershipCommand{Op: op, NodeId: p.ID, RaftAddress: p.RaftAddr, ApiAddress: p.APIAddr}
	}
	if existing == nil {
		if err := m.change(ctx, o, cmd(witnessv1.MembershipOp_MEMBERSHIP_OP_ADD_NONVOTER), index); err != nil {
			return Change{Steps: o.steps}, err
		}
		o.step("added %s as a non-voter (Raft %s, API %s)", p.ID, p.RaftAddr, p.APIAddr)
	} else {
		o.step("%s is already a non-voter", p.ID)
	}
	ch := Change{}
	if voter {
		caught, err := m.promote(ctx, o, p)
		if err != nil {
			return Change{Steps: o.steps}, err
		}
		ch.CaughtUp = caught
	}
	ch.Steps, ch.Members = o.steps, n.members()
	return ch, nil
}

// promote waits until the non-voter p has caught up with an identical log,
// then makes it a voter.
func (m *membership) promote(ctx context.Context, o *operation, p Peer) (uint64, error) {
	c := &witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_PROMOTE, NodeId: p.ID, RaftAddress: p.RaftAddr, ApiAddress: p.APIAddr}
	caught, tables, err := m.waitCaughtUp(ctx, p)
	if err != nil {
		// The node stays a non-voter; the refusal to promote it is on
		// record.
		m.recordFailure(ctx, o, cloneCommand(c), err)
		return 0, err
	}
	o.step("%s caught up: applied index %d with the leader's log for %d table(s)", p.ID, caught, tables)
	cfg, index, err := m.n.configuration()
	if err != nil {
		return caught, err
	}
	if err := checkPromotion(cfg, raft.ServerID(m.n.id), m.isFailing); err != nil {
		m.recordFailure(ctx, o, cloneCommand(c), err)
		return caught, err
	}
	if err := m.change(ctx, o, c, index); err != nil {
		return caught, err
	}
	o.step("promoted %s to voter", p.ID)
	return caught, nil
}

// waitCaughtUp polls p's API until it has applied the leader's commit
// index as of now and holds, for every table, the same log as the leader
// at its size. It returns that index and the number of tables compared.
func (m *membership) waitCaughtUp(ctx context.Context, p Peer) (uint64, int, error) {
	var cancel context.CancelFunc
	if d, ok := ctx.Deadline(); ok {
		// Give up a little before the caller does, so that it gets this
		// answer rather than its own deadline.
		ctx, cancel = context.WithDeadline(ctx, d.Add(-min(time.Second, time.Until(d)/10)))
	} else {
		ctx, cancel = context.WithTimeout(ctx, m.catchUp)
	}
	defer cancel()
	target := m.n.raft.CommitIndex()
	want := m.n.fsm.Tables()
	hc, err := m.peerClient(p.ID)
	if err != nil {
		return 0, 0, err
	}
	defer hc.CloseIdleConnections()
	client := witnessv1connect.NewWitnessServiceClient(hc, p.APIAddr, rpcserver.ClientOptions()...)
	var last error
	for {
		applied, err := m.compare(ctx, client, p.ID, target, want)
		switch {
		case err == nil:
			return applied, len(want), nil
		case errors.Is(err, ErrLogMismatch):
			return 0, 0, err
		}
		last = err
		select {
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("%w: %s at %s did not reach the leader's commit index %d in time (%v); it stays a non-voter: check that it runs with --node-id %s and reaches the leader's Raft port, then run the command again", ErrNotCaughtUp, p.ID, p.APIAddr, target, last, p.ID)
		case <-time.After(catchUpPoll):
		}
	}
}

// compare asks the joining node where it stands. A node that is behind
// is an ordinary error (the caller polls again); ErrLogMismatch means it
// holds another log.
func (m *membership) compare(ctx context.Context, client witnessv1connect.WitnessServiceClient, id string, target uint64, want []fsm.TableInfo) (uint64, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := client.GetStatus(cctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
	if err != nil {
		return 0, err
	}
	st := resp.Msg
	if st.GetNodeId() != id {
		return 0, fmt.Errorf("%w: the API there answers as node %q, not %s", ErrLogMismatch, st.GetNodeId(), id)
	}
	if st.GetAppliedIndex() < target {
		return 0, fmt.Errorf("applied index %d of %d", st.GetAppliedIndex(), target)
	}
	have := map[string]*witnessv1.TableInfo{}
	for _, t := range st.GetTables() {
		have[t.GetName()] = t
	}
	for _, t := range want {
		if _, ok := have[t.Name]; !ok {
			return 0, fmt.Errorf("%w: %s has applied index %d but no table %s", ErrLogMismatch, id, st.GetAppliedIndex(), t.Name)
		}
	}
	for _, t := range st.GetTables() {
		v, err := m.n.fsm.Table(t.GetName())
		if err != nil {
			return 0, fmt.Errorf("%w: %s holds table %s, which the leader does not", ErrLogMismatch, id, t.GetName())
		}
		if v.Info.Size < t.GetSize() {
			return 0, fmt.Errorf("the leader has applied %d entries of %s, %s already %d", v.Info.Size, t.GetName(), id, t.GetSize())
		}
		root, err := v.RootAt(t.GetSize())
		if err != nil {
			return 0, err
		}
		if string(root[:]) != string(t.GetRoot()) {
			return 0, fmt.Errorf("%w: table %s at size %d has root %x on %s and %x on the leader; do not promote it: wipe its --data-dir and add it again", ErrLogMismatch, t.GetName(), t.GetSize(), t.GetRoot(), id, root)
		}
	}
	return st.GetAppliedIndex(), nil
}

// peerClient is an HTTP client to the API of node id that accepts only a
// server certificate issued to that node.
func (m *membership) peerClient(id string) (*http.Client, error) {
	if m.tls == nil {
		return nil, errors.New("membership: no TLS configuration to reach other nodes with")
	}
	want := mtls.Witness(id)
	cfg := m.tls.Client()
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		got, err := mtls.PeerIdentityFromState(&cs)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("the API there presents %s, not %s", got, want)
		}
		return nil
	}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     cfg,
		ForceAttemptHTTP2:   true,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
	}}, nil
}

// RemoveNode removes the member id, if the safety rules allow it. Asked
// to remove itself, the leader hands leadership to another voter and
// returns an error wrapping NotLeaderError that names it.
func (n *Node) RemoveNode(ctx context.Context, by, id string) (Change, error) {
	if !fsm.ValidNodeID(id) {
		return Change{}, fmt.Errorf("%w: id %q must be 1-63 letters, digits, '.', '_' or '-'", ErrInvalidMember, id)
	}
	return n.removeNode(ctx, by, id, false)
}

// removeNode removes the member id; toPool records it as a standby node
// of the rotation pool (rotation.go).
func (n *Node) removeNode(ctx context.Context, by, id string, toPool bool) (Change, error) {
	release, err := n.begin()
	if err != nil {
		return Change{}, err
	}
	defer release()
	m := n.mem
	cfg, index, err := n.configuration()
	if err != nil {
		return Change{}, err
	}
	if err := checkRemoval(cfg, id, raft.ServerID(n.id), m.minVoters, m.isFailing); err != nil {
		return Change{}, err
	}
	o := &operation{by: by}
	if id == n.id {
		return Change{}, m.handOver(ctx, o, "remove "+id)
	}
	s, _ := server(cfg, id)
	c := &witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_REMOVE, NodeId: id, RaftAddress: string(s.Address), ApiAddress: n.APIAddr(id), ToPool: toPool}
	if err := m.change(ctx, o, c, index); err != nil {
		return Change{Steps: o.steps}, err
	}
	if toPool {
		o.step("removed %s (back to the rotation pool)", id)
	} else {
		o.step("removed %s", id)
	}
	return Change{Steps: o.steps, Members: n.members()}, nil
}

// handOver transfers leadership away from this node so that it can be
// removed, and returns the error that sends the request to the new leader.
func (m *membership) handOver(ctx context.Context, o *operation, what string) error {
	t, err := m.transfer(ctx, o, "")
	if err != nil {
		return fmt.Errorf("%s: this node leads and must hand leadership over first, which failed: %w", what, err)
	}
	return fmt.Errorf("%s: this node led the cluster and handed leadership to %s so that it can be removed; send the request to the new leader: %w", what, t.LeaderID, &NotLeaderError{LeaderID: t.LeaderID, LeaderAPI: t.LeaderAPI})
}

// TransferLeadership hands leadership to the voter to, or to the most
// up-to-date voter when to is empty, and waits until this node knows the
// new leader.
func (n *Node) TransferLeadership(ctx context.Context, by, to string) (Transfer, error) {
	if to != "" && !fsm.ValidNodeID(to) {
		return Transfer{}, fmt.Errorf("%w: id %q must be 1-63 letters, digits, '.', '_' or '-'", ErrInvalidMember, to)
	}
	if to == n.id && n.raft.State() == raft.Leader {
		return Transfer{PreviousLeaderID: n.id, LeaderID: n.id, LeaderAPI: n.APIAddr(n.id), Term: n.raft.CurrentTerm()}, nil
	}
	release, err := n.begin()
	if err != nil {
		return Transfer{}, err
	}
	defer release()
	return n.mem.transfer(ctx, &operation{by: by}, to)
}

func (m *membership) transfer(ctx context.Context, o *operation, to string) (Transfer, error) {
	n := m.n
	cfg, _, err := n.configuration()
	if err != nil {
		return Transfer{}, err
	}
	var target raft.Server
	if to != "" {
		s, ok := server(cfg, to)
		switch {
		case !ok:
			return Transfer{}, fmt.Errorf("%w: %s (members: %s)", ErrUnknownNode, to, describe(cfg))
		case s.Suffrage != raft.Voter:
			return Transfer{}, fmt.Errorf("%w: %s is a non-voter and cannot lead; promote it first", ErrInvalidMember, to)
		case m.isFailing(s.ID):
			return Transfer{}, fmt.Errorf("%w: %s does not answer the leader's heartbeats; pick another voter", ErrUnsafeChange, to)
		}
		target = s
	} else if len(voterIDs(cfg)) < 2 {
		return Transfer{}, fmt.Errorf("%w: %s is the only voter; there is no one to hand leadership to", ErrUnsafeChange, n.id)
	}
	c := &witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_TRANSFER_LEADERSHIP, Phase: witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED, NodeId: to, RaftAddress: string(target.Address), ApiAddress: n.APIAddr(to)}
	if _, err := m.record(ctx, o, c); err != nil {
		return Transfer{}, err
	}
	var f raft.Future
	if to != "" {
		f = n.raft.LeadershipTransferToServer(target.ID, target.Address)
	} else {
		f = n.raft.LeadershipTransfer()
	}
	if err := f.Error(); err != nil {
		err = n.raftError(err)
		m.recordFailure(ctx, o, cloneCommand(c), err)
		return Transfer{}, fmt.Errorf("transfer leadership: %w", err)
	}
	// The DONE record is left out: this node no longer leads, and the
	// new leader's term says the transfer happened.
	deadline := time.Now().Add(2 * TransferTimeout)
	for {
		_, lid := n.raft.LeaderWithID()
		if lid != "" && string(lid) != n.id {
			o.step("handed leadership from %s to %s", n.id, lid)
			return Transfer{PreviousLeaderID: n.id, LeaderID: string(lid), LeaderAPI: n.APIAddr(string(lid)), Term: n.raft.CurrentTerm()}, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return Transfer{}, fmt.Errorf("%w: leadership was handed over but no new leader is known yet; retry shortly", ErrUnavailable)
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Rotate replaces the voter out with the node in: in joins as a non-voter,
// catches up, is checked and promoted, then out is removed. Every step is
// recorded under one ROTATE operation. Run again after a failure, it
// resumes: a node already added is not added again, a voter not promoted
// again. If out leads, it hands leadership over first and returns an error
// wrapping NotLeaderError that names the new leader.
//
// With out and in.ID both empty it picks as the rotation schedule does:
// the longest-serving voter goes out, a reachable standby node of the pool
// comes in. The node removed goes back to the pool.
func (n *Node) Rotate(ctx context.Context, by, out string, in Peer) (Change, error) {
	switch {
	case out == "" && in.ID == "" && in.RaftAddr == "" && in.APIAddr == "":
		var err error
		if out, in, err = n.pickRotation(ctx); err != nil {
			return Change{}, err
		}
	case out == "" || in.ID == "":
		return Change{}, fmt.Errorf("%w: name both the voter to replace and the node that replaces it, or neither to let the leader pick from the rotation pool", ErrInvalidMember)
	}
	if !fsm.ValidNodeID(out) {
		return Change{}, fmt.Errorf("%w: id %q must be 1-63 letters, digits, '.', '_' or '-'", ErrInvalidMember, out)
	}
	in, err := NormalizePeer(in)
	if err != nil {
		return Change{}, err
	}
	if in.ID == out {
		return Change{}, fmt.Errorf("%w: the node to remove and the node to add are both %s", ErrInvalidMember, out)
	}
	release, err := n.begin()
	if err != nil {
		return Change{}, err
	}
	defer release()
	m := n.mem
	cfg, _, err := n.configuration()
	if err != nil {
		return Change{}, err
	}
	s, ok := server(cfg, out)
	switch {
	case !ok:
		return Change{}, fmt.Errorf("%w: %s (members: %s)", ErrUnknownNode, out, describe(cfg))
	case s.Suffrage != raft.Voter:
		return Change{}, fmt.Errorf("%w: %s is a non-voter; rotation replaces voters (remove a non-voter with RemoveNode)", ErrInvalidMember, out)
	}
	existing, err := checkJoin(cfg, in)
	if err != nil {
		return Change{}, err
	}
	self := raft.ServerID(n.id)
	if existing == nil || existing.Suffrage != raft.Voter {
		if err := checkPromotion(cfg, self, m.isFailing); err != nil {
			return Change{}, err
		}
	}
	// The removal is judged on the configuration it will apply to.
	if err := checkRemoval(withVoter(cfg, in.ID, in.RaftAddr), out, self, m.minVoters, m.isFailing); err != nil {
		return Change{}, err
	}
	o := &operation{by: by}
	if out == n.id {
		return Change{}, m.handOver(ctx, o, fmt.Sprintf("rotate %s out", out))
	}
	rot := &witnessv1.MembershipCommand{
		Op: witnessv1.MembershipOp_MEMBERSHIP_OP_ROTATE, Phase: witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED,
		NodeId: out, ReplacementId: in.ID, RaftAddress: in.RaftAddr, ApiAddress: in.APIAddr,
	}
	if _, err := m.record(ctx, o, rot); err != nil {
		return Change{}, err
	}
	ch, err := m.rotate(ctx, o, out, in, existing)
	if err != nil {
		m.recordFailure(ctx, o, cloneCommand(rot), err)
		if len(o.steps) > 0 {
			err = fmt.Errorf("%w (done so far: %s; run the rotation again to resume)", err, strings.Join(o.steps, "; "))
		}
		return Change{Steps: o.steps}, err
	}
	done := cloneCommand(rot)
	done.Phase = witnessv1.MembershipPhase_MEMBERSHIP_PHASE_DONE
	if _, err := m.record(ctx, o, done); err != nil {
		return Change{Steps: o.steps}, fmt.Errorf("the rotation completed, but %w", err)
	}
	ch.Steps, ch.Members = o.steps, n.members()
	return ch, nil
}

func (m *membership) rotate(ctx context.Context, o *operation, out string, in Peer, existing *raft.Server) (Change, error) {
	var ch Change
	if existing == nil {
		_, index, err := m.n.configuration()
		if err != nil {
			return ch, err
		}
		c := &witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_ADD_NONVOTER, NodeId: in.ID, RaftAddress: in.RaftAddr, ApiAddress: in.APIAddr}
		if err := m.change(ctx, o, c, index); err != nil {
			return ch, err
		}
		o.step("added %s as a non-voter (Raft %s, API %s)", in.ID, in.RaftAddr, in.APIAddr)
	}
	if existing == nil || existing.Suffrage != raft.Voter {
		caught, err := m.promote(ctx, o, in)
		if err != nil {
			return ch, err
		}
		ch.CaughtUp = caught
	} else {
		o.step("%s is already a voter", in.ID)
	}
	cfg, index, err := m.n.configuration()
	if err != nil {
		return ch, err
	}
	if err := checkRemoval(cfg, out, raft.ServerID(m.n.id), m.minVoters, m.isFailing); err != nil {
		return ch, err
	}
	s, _ := server(cfg, out)
	c := &witnessv1.MembershipCommand{Op: witnessv1.MembershipOp_MEMBERSHIP_OP_REMOVE, NodeId: out, RaftAddress: string(s.Address), ApiAddress: m.n.APIAddr(out), ToPool: true}
	if err := m.change(ctx, o, c, index); err != nil {
		return ch, err
	}
	o.step("removed %s (back to the rotation pool)", out)
	return ch, nil
}
