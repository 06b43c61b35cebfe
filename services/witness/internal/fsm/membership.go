package fsm

import (
	"errors"
	"fmt"
	"regexp"
	"sort"

	"google.golang.org/protobuf/proto"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
)

// Membership records: every step of a membership change is a
// MembershipCommand in the Raft log, recorded before the Raft
// configuration changes and again once it committed or failed. The state
// keeps the last KeepMembershipEvents records and, per member, the
// addresses recorded for it, so that a node added at run time (absent from
// every --peer list) is known by its API address on every node.
//
// The Raft configuration itself stays the one authority on who votes:
// these records are the evidence of who changed it, when and why, and the
// address book that goes with it.

// Limits of the membership state.
const (
	// KeepMembershipEvents is how many membership records the state keeps.
	KeepMembershipEvents = 1000
	// MaxMembers bounds the addresses one record carries and the address
	// book.
	MaxMembers = 256
	// maxMembershipText bounds every string of a record.
	maxMembershipText = 1024
)

// ErrBadMembership is wrapped by the rejection of a malformed membership
// record.
var ErrBadMembership = errors.New("invalid membership record")

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ValidNodeID reports whether id is a valid node id: 1-63 letters, digits,
// '.', '_' or '-', starting with a letter or digit (it is also the name in
// the node's certificate, spiffe://witnz/witness/<id>).
func ValidNodeID(id string) bool { return nodeIDPattern.MatchString(id) }

// membership is the membership part of the state.
type membership struct {
	events []*witnessv1.MembershipEvent
	total  uint64
	// addrs holds the addresses recorded per node id.
	addrs map[string]*witnessv1.NodeAddress
	// since holds, per voter promoted by a membership change, when it
	// became a voter; bootstrap voters have no entry.
	since map[string]*witnessv1.VoterSince
	// pool holds the nodes rotated out, standby for a later rotation.
	pool map[string]*witnessv1.NodeAddress
}

// ValidateMembership checks a membership record; Apply re-checks it.
func ValidateMembership(c *witnessv1.MembershipCommand) error {
	switch c.GetOp() {
	case witnessv1.MembershipOp_MEMBERSHIP_OP_ADD_NONVOTER, witnessv1.MembershipOp_MEMBERSHIP_OP_PROMOTE,
		witnessv1.MembershipOp_MEMBERSHIP_OP_REMOVE, witnessv1.MembershipOp_MEMBERSHIP_OP_ROTATE:
		if !ValidNodeID(c.GetNodeId()) {
			return fmt.Errorf("%w: node id %q is not 1-63 letters, digits, '.', '_' or '-'", ErrBadMembership, c.GetNodeId())
		}
	case witnessv1.MembershipOp_MEMBERSHIP_OP_TRANSFER_LEADERSHIP:
		if c.GetNodeId() != "" && !ValidNodeID(c.GetNodeId()) {
			return fmt.Errorf("%w: node id %q is not 1-63 letters, digits, '.', '_' or '-'", ErrBadMembership, c.GetNodeId())
		}
	default:
		return fmt.Errorf("%w: unknown op %d", ErrBadMembership, c.GetOp())
	}
	switch c.GetPhase() {
	case witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED, witnessv1.MembershipPhase_MEMBERSHIP_PHASE_DONE, witnessv1.MembershipPhase_MEMBERSHIP_PHASE_FAILED:
	default:
		return fmt.Errorf("%w: unknown phase %d", ErrBadMembership, c.GetPhase())
	}
	if c.GetOp() == witnessv1.MembershipOp_MEMBERSHIP_OP_ROTATE && !ValidNodeID(c.GetReplacementId()) {
		return fmt.Errorf("%w: rotation of %s names no valid replacement (%q)", ErrBadMembership, c.GetNodeId(), c.GetReplacementId())
	}
	for _, s := range []string{c.GetRaftAddress(), c.GetApiAddress(), c.GetBy(), c.GetError()} {
		if len(s) > maxMembershipText {
			return fmt.Errorf("%w: a field of %d bytes exceeds %d", ErrBadMembership, len(s), maxMembershipText)
		}
	}
	if len(c.GetMembers()) > MaxMembers {
		return fmt.Errorf("%w: %d member addresses exceed %d", ErrBadMembership, len(c.GetMembers()), MaxMembers)
	}
	for _, a := range c.GetMembers() {
		if err := validateAddress(a); err != nil {
			return err
		}
	}
	return nil
}

func validateAddress(a *witnessv1.NodeAddress) error {
	if !ValidNodeID(a.GetId()) {
		return fmt.Errorf("%w: member id %q is not 1-63 letters, digits, '.', '_' or '-'", ErrBadMembership, a.GetId())
	}
	if len(a.GetRaftAddress()) > maxMembershipText || len(a.GetApiAddress()) > maxMembershipText {
		return fmt.Errorf("%w: an address of member %s exceeds %d bytes", ErrBadMembership, a.GetId(), maxMembershipText)
	}
	return nil
}

// applyMembership records one membership record. It only records: the
// Raft configuration change it goes with is Raft's business.
func (f *FSM) applyMembership(index uint64, at int64, c *witnessv1.MembershipCommand) *Result {
	if err := ValidateMembership(c); err != nil {
		return f.reject(index, at, "", err)
	}
	m := &f.st.membership
	if m.addrs == nil {
		m.addrs = map[string]*witnessv1.NodeAddress{}
	}
	m.total++
	m.events = append(m.events, &witnessv1.MembershipEvent{RaftIndex: index, AtMicros: at, Change: proto.Clone(c).(*witnessv1.MembershipCommand)})
	if n := len(m.events); n > KeepMembershipEvents {
		m.events = append([]*witnessv1.MembershipEvent(nil), m.events[n-KeepMembershipEvents:]...)
	}
	// What the leader knows of the others fills gaps only: an address an
	// operator gave with AddNode or Rotate is never overwritten by a
	// node's --peer list.
	for _, a := range c.GetMembers() {
		if _, ok := m.addrs[a.GetId()]; !ok && len(m.addrs) < MaxMembers {
			m.addrs[a.GetId()] = proto.Clone(a).(*witnessv1.NodeAddress)
		}
	}
	id := c.GetNodeId()
	switch op, phase := c.GetOp(), c.GetPhase(); {
	case op == witnessv1.MembershipOp_MEMBERSHIP_OP_ADD_NONVOTER && phase == witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED,
		op == witnessv1.MembershipOp_MEMBERSHIP_OP_PROMOTE && phase == witnessv1.MembershipPhase_MEMBERSHIP_PHASE_STARTED:
		// Recorded before the node joins, so that every node knows its
		// API address by the time it can lead.
		if _, ok := m.addrs[id]; ok || len(m.addrs) < MaxMembers {
			m.addrs[id] = &witnessv1.NodeAddress{Id: id, RaftAddress: c.GetRaftAddress(), ApiAddress: c.GetApiAddress()}
		}
	case op == witnessv1.MembershipOp_MEMBERSHIP_OP_ADD_NONVOTER && phase == witnessv1.MembershipPhase_MEMBERSHIP_PHASE_DONE:
		delete(m.pool, id)
	case op == witnessv1.MembershipOp_MEMBERSHIP_OP_PROMOTE && phase == witnessv1.MembershipPhase_MEMBERSHIP_PHASE_DONE:
		delete(m.pool, id)
		if m.since == nil {
			m.since = map[string]*witnessv1.VoterSince{}
		}
		if _, ok := m.since[id]; ok || len(m.since) < MaxMembers {
			m.since[id] = &witnessv1.VoterSince{Id: id, SinceMicros: at, RaftIndex: index}
		}
	case op == witnessv1.MembershipOp_MEMBERSHIP_OP_REMOVE && phase == witnessv1.MembershipPhase_MEMBERSHIP_PHASE_DONE:
		delete(m.addrs, id)
		delete(m.since, id)
		if c.GetToPool() {
			if m.pool == nil {
				m.pool = map[string]*witnessv1.NodeAddress{}
			}
			if _, ok := m.pool[id]; ok || len(m.pool) < MaxMembers {
				m.pool[id] = &witnessv1.NodeAddress{Id: id, RaftAddress: c.GetRaftAddress(), ApiAddress: c.GetApiAddress()}
			}
		}
	}
	return &Result{}
}

// VoterSince returns when each voter promoted by a recorded membership
// change became a voter, by id (microseconds since the Unix epoch).
// Voters of the bootstrap configuration are absent: they serve longest.
func (f *FSM) VoterSince() map[string]int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]int64, len(f.st.membership.since))
	for id, s := range f.st.membership.since {
		out[id] = s.GetSinceMicros()
	}
	return out
}

// RotationPool returns the nodes rotated out of the cluster, standby for a
// later rotation, by id.
func (f *FSM) RotationPool() []*witnessv1.NodeAddress {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*witnessv1.NodeAddress, 0, len(f.st.membership.pool))
	for _, a := range f.st.membership.pool {
		out = append(out, proto.Clone(a).(*witnessv1.NodeAddress))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out
}

// MemberAddress returns the addresses the replicated state records for a
// node.
func (f *FSM) MemberAddress(id string) (raftAddr, apiAddr string, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a, ok := f.st.membership.addrs[id]
	if !ok {
		return "", "", false
	}
	return a.GetRaftAddress(), a.GetApiAddress(), true
}

// MembershipHistory returns the last limit membership records (all those
// kept when limit is 0), oldest first, and how many there have been.
func (f *FSM) MembershipHistory(limit int) ([]*witnessv1.MembershipEvent, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	evs := f.st.membership.events
	if limit > 0 && len(evs) > limit {
		evs = evs[len(evs)-limit:]
	}
	out := make([]*witnessv1.MembershipEvent, len(evs))
	for i, e := range evs {
		out[i] = proto.Clone(e).(*witnessv1.MembershipEvent)
	}
	return out, f.st.membership.total
}

// marshal encodes the membership state for a snapshot,
// deterministically (records in order, addresses by id).
func (m *membership) marshal() ([]byte, error) {
	st := &witnessv1.MembershipState{Events: m.events, Total: m.total}
	for _, a := range m.addrs {
		st.Addresses = append(st.Addresses, a)
	}
	sort.Slice(st.Addresses, func(i, j int) bool { return st.Addresses[i].Id < st.Addresses[j].Id })
	for _, s := range m.since {
		st.VotersSince = append(st.VotersSince, s)
	}
	sort.Slice(st.VotersSince, func(i, j int) bool { return st.VotersSince[i].Id < st.VotersSince[j].Id })
	for _, a := range m.pool {
		st.Pool = append(st.Pool, a)
	}
	sort.Slice(st.Pool, func(i, j int) bool { return st.Pool[i].Id < st.Pool[j].Id })
	return proto.MarshalOptions{Deterministic: true}.Marshal(st)
}

// unmarshalMembership decodes and checks the membership state of a
// snapshot.
func unmarshalMembership(b []byte) (membership, error) {
	var st witnessv1.MembershipState
	if err := proto.Unmarshal(b, &st); err != nil {
		return membership{}, fmt.Errorf("%w: membership state: %v", ErrBadSnapshot, err)
	}
	if len(st.Events) > KeepMembershipEvents || uint64(len(st.Events)) > st.Total {
		return membership{}, fmt.Errorf("%w: membership state keeps %d records of %d", ErrBadSnapshot, len(st.Events), st.Total)
	}
	if len(st.Addresses) > MaxMembers || len(st.VotersSince) > MaxMembers || len(st.Pool) > MaxMembers {
		return membership{}, fmt.Errorf("%w: membership state has %d addresses, %d voter times and %d pool nodes (at most %d each)", ErrBadSnapshot, len(st.Addresses), len(st.VotersSince), len(st.Pool), MaxMembers)
	}
	m := membership{events: st.Events, total: st.Total, addrs: map[string]*witnessv1.NodeAddress{}}
	var prev uint64
	for i, e := range st.Events {
		if err := ValidateMembership(e.GetChange()); err != nil {
			return membership{}, fmt.Errorf("%w: membership record %d: %v", ErrBadSnapshot, i, err)
		}
		if e.GetRaftIndex() <= prev {
			return membership{}, fmt.Errorf("%w: membership record %d is out of Raft order", ErrBadSnapshot, i)
		}
		prev = e.GetRaftIndex()
	}
	for _, a := range st.Addresses {
		if err := validateAddress(a); err != nil {
			return membership{}, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		if _, dup := m.addrs[a.Id]; dup {
			return membership{}, fmt.Errorf("%w: membership state lists %s twice", ErrBadSnapshot, a.Id)
		}
		m.addrs[a.Id] = a
	}
	for _, s := range st.VotersSince {
		if !ValidNodeID(s.GetId()) {
			return membership{}, fmt.Errorf("%w: voter time for an invalid id %q", ErrBadSnapshot, s.GetId())
		}
		if m.since == nil {
			m.since = map[string]*witnessv1.VoterSince{}
		}
		if _, dup := m.since[s.Id]; dup {
			return membership{}, fmt.Errorf("%w: membership state times voter %s twice", ErrBadSnapshot, s.Id)
		}
		m.since[s.Id] = s
	}
	for _, a := range st.Pool {
		if err := validateAddress(a); err != nil {
			return membership{}, fmt.Errorf("%w: pool: %v", ErrBadSnapshot, err)
		}
		if m.pool == nil {
			m.pool = map[string]*witnessv1.NodeAddress{}
		}
		if _, dup := m.pool[a.Id]; dup {
			return membership{}, fmt.Errorf("%w: membership state pools %s twice", ErrBadSnapshot, a.Id)
		}
		m.pool[a.Id] = a
	}
	return m, nil
}

// maxSnapMembership bounds the membership section of a snapshot.
const maxSnapMembership = 16 << 20

// readMembership reads the membership section of a snapshot (version 5 on)
// into st.
func readMembership(r *reader, st *state) error {
	b := r.bytes(maxSnapMembership)
	if r.err != nil {
		return r.err
	}
	m, err := unmarshalMembership(b)
	if err != nil {
		return err
	}
	st.membership = m
	return nil
}
