package verify

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"connectrpc.com/connect"

	"github.com/witnz/witnz/libs/checkpoint"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/tlog"
)

// IntegrityKind is what a log integrity check found; the values are those
// of witnz.verifier.v1.IntegrityKind.
type IntegrityKind int

// Kinds of integrity problems.
const (
	// RootMismatch: a witness's root at the common size differs from the
	// majority's.
	RootMismatch IntegrityKind = iota + 1
	// Inconsistent: a witness's log does not extend its own root at the
	// common size.
	Inconsistent
	// NoMajority: fewer than a majority of the witnesses answered, or no
	// root is held by a majority.
	NoMajority
	// CheckpointPolicy: the latest cosigned checkpoint does not satisfy
	// the policy.
	CheckpointPolicy
	// CheckpointRoot: the checkpoint's root is not the log's at its size.
	CheckpointRoot
	// CheckpointStale: the checkpoint is older than the last one seen.
	CheckpointStale
	// CheckpointFork: the checkpoint does not extend the last one seen.
	CheckpointFork
	// CheckpointMissing: no checkpoint, although one was seen before.
	CheckpointMissing
)

func (k IntegrityKind) String() string {
	switch k {
	case RootMismatch:
		return "root_mismatch"
	case Inconsistent:
		return "inconsistent"
	case NoMajority:
		return "no_majority"
	case CheckpointPolicy:
		return "checkpoint_policy"
	case CheckpointRoot:
		return "checkpoint_root"
	case CheckpointStale:
		return "checkpoint_stale"
	case CheckpointFork:
		return "checkpoint_fork"
	case CheckpointMissing:
		return "checkpoint_missing"
	}
	return fmt.Sprintf("IntegrityKind(%d)", int(k))
}

// IntegrityProblem is one failed log integrity check.
type IntegrityProblem struct {
	// Witness is the node id at fault, empty when the problem is not one
	// node's; URL its configured API URL.
	Witness, URL string
	Kind         IntegrityKind
	// Problem says it in one line.
	Problem string
	// Size is the log size the problem was found at.
	Size uint64
}

// SeenCheckpoint is the latest cosigned checkpoint of a table the verifier
// accepted.
type SeenCheckpoint struct {
	Size uint64
	Root [tlog.HashSize]byte
	// Note is the signed note as the witnesses served it.
	Note []byte
}

// CheckpointStore keeps the last checkpoint accepted per table, across
// runs and restarts.
type CheckpointStore interface {
	LastCheckpoint(table string) (SeenCheckpoint, bool, error)
	SaveCheckpoint(table string, cp SeenCheckpoint) error
}

// nodeAnswer is one node's GetStatus answer.
type nodeAnswer struct {
	url    string
	client witnessv1connect.WitnessServiceClient
	status *witnessv1.GetStatusResponse
	err    error
}

func (a *nodeAnswer) id() string { return a.status.GetNodeId() }

// tableOf is the node's info about table, nil when it has no log of it.
func (a *nodeAnswer) tableOf(table string) *witnessv1.TableInfo {
	for _, t := range a.status.GetTables() {
		if t.GetName() == table {
			return t
		}
	}
	return nil
}

// statuses asks every node for its status at once.
func (c *cluster) statuses(parent context.Context) []*nodeAnswer {
	ctx, cancel := context.WithTimeout(parent, statusTimeout)
	defer cancel()
	out := make([]*nodeAnswer, len(c.clients))
	done := make(chan struct{}, len(c.clients))
	for i, cl := range c.clients {
		out[i] = &nodeAnswer{url: c.urls[i], client: cl}
		go func() {
			defer func() { done <- struct{}{} }()
			resp, err := cl.GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
			if err != nil {
				out[i].err = err
				return
			}
			out[i].status = resp.Msg
		}()
	}
	for range c.clients {
		<-done
	}
	return out
}

// integrity runs the log integrity checks of one table: every reachable
// witness holds the same root at a common size (and a log that extends
// it), and, with a policy, the latest cosigned checkpoint satisfies it, is
// the log's root at its size and extends the last checkpoint this verifier
// accepted. It returns the problems and the warnings (unreachable nodes,
// no checkpoint yet). An error means the checks could not be made (the
// caller's context ended).
func (v *Verifier) integrity(ctx context.Context, table string, leader *leaderView) ([]IntegrityProblem, []string, error) {
	nodes := v.witness.statuses(ctx)
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	var problems []IntegrityProblem
	var warnings []string
	var answered []*nodeAnswer
	for _, n := range nodes {
		if n.err != nil {
			warnings = append(warnings, fmt.Sprintf("witness %s did not answer the integrity check: %s", n.url, oneLine(n.err)))
			continue
		}
		answered = append(answered, n)
	}
	majority := len(nodes)/2 + 1
	if len(answered) < majority {
		problems = append(problems, IntegrityProblem{Kind: NoMajority,
			Problem: fmt.Sprintf("only %d of %d witnesses answered: the roots of a majority cannot be compared", len(answered), len(nodes))})
		return problems, warnings, nil
	}

	// The common size: the largest one a majority of the configured nodes
	// holds.
	var sizes []uint64
	for _, n := range answered {
		if t := n.tableOf(table); t != nil {
			sizes = append(sizes, t.GetSize())
		}
	}
	slices.Sort(sizes)
	slices.Reverse(sizes)
	if len(sizes) < majority || sizes[majority-1] == 0 {
		// Nothing a majority holds to compare yet.
		return problems, warnings, nil
	}
	common := sizes[majority-1]

	// Each node's root at the common size, and a check that its current
	// log extends it.
	roots := map[string][]*nodeAnswer{}
	rootOf := map[*nodeAnswer][]byte{}
	var lagging []*nodeAnswer
	for _, n := range answered {
		t := n.tableOf(table)
		switch {
		case t == nil || t.GetSize() == 0:
			warnings = append(warnings, fmt.Sprintf("witness %s (%s) holds no log of %s yet", n.id(), n.url, table))
			continue
		case t.GetSize() < common:
			lagging = append(lagging, n)
			continue
		}
		cp, err := n.client.GetConsistencyProof(ctx, connect.NewRequest(&witnessv1.GetConsistencyProofRequest{Table: table, FromSize: common}))
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			warnings = append(warnings, fmt.Sprintf("witness %s (%s) did not give its root at size %d: %s", n.id(), n.url, common, oneLine(err)))
			continue
		}
		m := cp.Msg
		if m.GetFromSize() != common {
			problems = append(problems, IntegrityProblem{Witness: n.id(), URL: n.url, Kind: Inconsistent, Size: common,
				Problem: fmt.Sprintf("witness %s answered the root at size %d when asked for size %d", n.id(), m.GetFromSize(), common)})
			continue
		}
		if err := tlog.VerifyConsistency(common, m.GetToSize(), m.GetProof(), m.GetFromRoot(), m.GetToRoot()); err != nil {
			problems = append(problems, IntegrityProblem{Witness: n.id(), URL: n.url, Kind: Inconsistent, Size: common,
				Problem: fmt.Sprintf("the log of %s on witness %s at size %d does not extend its own root at size %d: %v", table, n.id(), m.GetToSize(), common, oneLine(err))})
			continue
		}
		rootOf[n] = m.GetFromRoot()
		roots[string(m.GetFromRoot())] = append(roots[string(m.GetFromRoot())], n)
	}
	var agreed []byte
	for r, ns := range roots {
		if len(ns) >= majority {
			agreed = []byte(r)
		}
	}
	if agreed == nil {
		var parts []string
		for _, ns := range roots {
			var ids []string
			for _, n := range ns {
				ids = append(ids, n.id())
			}
			slices.Sort(ids)
			parts = append(parts, strings.Join(ids, ", "))
		}
		slices.Sort(parts)
		problems = append(problems, IntegrityProblem{Kind: NoMajority, Size: common,
			Problem: fmt.Sprintf("no root of %s at size %d is held by a majority (%d of %d witnesses): the nodes agree in groups [%s]", table, common, majority, len(nodes), strings.Join(parts, "] [")),
		})
		return problems, warnings, nil
	}
	var reference *nodeAnswer
	for _, n := range answered {
		r, ok := rootOf[n]
		if !ok {
			continue
		}
		if !bytes.Equal(r, agreed) {
			problems = append(problems, IntegrityProblem{Witness: n.id(), URL: n.url, Kind: RootMismatch, Size: common,
				Problem: fmt.Sprintf("witness %s (%s) holds root %x of %s at size %d; the majority holds %x", n.id(), n.url, r[:8], table, common, agreed[:8])})
			continue
		}
		if reference == nil || (leader != nil && n.url == leader.url) {
			reference = n
		}
	}

	// A node behind the common size: its own root at its size against the
	// majority's root there.
	for _, n := range lagging {
		t := n.tableOf(table)
		p, err := v.checkPrefix(ctx, reference, table, t.GetSize(), t.GetRoot(), common, agreed)
		if err != nil {
			return nil, nil, err
		}
		if p != "" {
			problems = append(problems, IntegrityProblem{Witness: n.id(), URL: n.url, Kind: RootMismatch, Size: t.GetSize(),
				Problem: fmt.Sprintf("witness %s (%s), behind at size %d, holds a root of %s that %s", n.id(), n.url, t.GetSize(), table, p)})
		}
	}

	if v.opts.Policy != nil {
		ps, ws, err := v.checkCheckpoint(ctx, table, leader, answered, reference, common, agreed)
		if err != nil {
			return nil, nil, err
		}
		problems, warnings = append(problems, ps...), append(warnings, ws...)
	}
	return problems, warnings, nil
}

// checkPrefix checks that root is the root at size (below common) of the
// log whose root at common is agreed, with a consistency proof from the
// reference node. It returns "" when it is, else what is wrong, completing
// "holds a root that ...".
func (v *Verifier) checkPrefix(ctx context.Context, ref *nodeAnswer, table string, size uint64, root []byte, common uint64, agreed []byte) (string, error) {
	cp, err := ref.client.GetConsistencyProof(ctx, connect.NewRequest(&witnessv1.GetConsistencyProofRequest{Table: table, FromSize: size, ToSize: common}))
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		// The reference could not answer; nothing is proven either way.
		return "", nil
	}
	m := cp.Msg
	if err := tlog.VerifyConsistency(size, common, m.GetProof(), root, agreed); err != nil {
		return fmt.Sprintf("the majority's log at size %d does not extend (%v)", common, oneLine(err)), nil
	}
	return "", nil
}

// cpSource is a node whose checkpoint is checked.
type cpSource struct {
	id, url string
	client  witnessv1connect.WitnessServiceClient
	// leader: its checkpoint is also checked against, and replaces, the
	// last one accepted.
	leader bool
}

// checkCheckpoint checks the latest cosigned checkpoint of table on every
// answering node against the policy and against the log (the majority's
// root agreed at size common); the leader's also against the last
// checkpoint accepted, which it replaces when every check passes. A
// follower's checkpoint may lag behind the leader's (it is replicated by
// Raft), so only the leader's is compared with the last one accepted.
func (v *Verifier) checkCheckpoint(ctx context.Context, table string, leader *leaderView, nodes []*nodeAnswer, ref *nodeAnswer, common uint64, agreed []byte) ([]IntegrityProblem, []string, error) {
	var srcs []cpSource
	leaderURL := ""
	if leader != nil {
		leaderURL = leader.url
		srcs = append(srcs, cpSource{leader.status.GetNodeId(), leader.url, leader.client, true})
	}
	for _, n := range nodes {
		if n.url == leaderURL {
			continue
		}
		isLeader := leaderURL == "" && n.status.GetState() == "Leader"
		if isLeader {
			leaderURL = n.url
		}
		srcs = append(srcs, cpSource{n.id(), n.url, n.client, isLeader})
	}
	if leaderURL == "" && ref != nil {
		// No leader known: the reference node's checkpoint stands for the
		// cluster's.
		for i := range srcs {
			srcs[i].leader = srcs[i].url == ref.url
		}
	}
	var problems []IntegrityProblem
	var warnings []string
	for _, src := range srcs {
		ps, ws, err := v.checkNodeCheckpoint(ctx, table, src, ref, common, agreed)
		if err != nil {
			return nil, nil, err
		}
		problems, warnings = append(problems, ps...), append(warnings, ws...)
	}
	return problems, warnings, nil
}

// checkNodeCheckpoint checks one node's latest cosigned checkpoint.
func (v *Verifier) checkNodeCheckpoint(ctx context.Context, table string, src cpSource, ref *nodeAnswer, common uint64, agreed []byte) ([]IntegrityProblem, []string, error) {
	problem := func(kind IntegrityKind, size uint64, format string, args ...any) []IntegrityProblem {
		return []IntegrityProblem{{Witness: src.id, URL: src.url, Kind: kind, Size: size, Problem: fmt.Sprintf(format, args...)}}
	}
	var prev SeenCheckpoint
	var hasPrev bool
	if src.leader {
		var err error
		if prev, hasPrev, err = v.opts.Checkpoints.LastCheckpoint(table); err != nil {
			return nil, []string{fmt.Sprintf("the last checkpoint accepted for %s could not be read, so the new one is not checked against it: %v", table, err)}, nil
		}
	}
	resp, err := src.client.GetCheckpoint(ctx, connect.NewRequest(&witnessv1.GetCheckpointRequest{Table: table}))
	switch {
	case ctx.Err() != nil:
		return nil, nil, ctx.Err()
	case connect.CodeOf(err) == connect.CodeNotFound && hasPrev:
		return problem(CheckpointMissing, prev.Size, "witness %s (%s) serves no cosigned checkpoint of %s, but this verifier accepted one at size %d before", src.id, src.url, table, prev.Size), nil, nil
	case connect.CodeOf(err) == connect.CodeNotFound && src.leader:
		return nil, []string{fmt.Sprintf("no cosigned checkpoint of %s yet, so the checkpoint policy was not checked: %s", table, oneLine(err))}, nil
	case connect.CodeOf(err) == connect.CodeNotFound:
		// A follower that has not applied the first checkpoint yet.
		return nil, nil, nil
	case err != nil:
		return nil, []string{fmt.Sprintf("witness %s (%s) did not give the checkpoint of %s, so it was not checked: %s", src.id, src.url, table, oneLine(err))}, nil
	}
	note := resp.Msg.GetNote()
	cp, _, err := v.opts.Policy.Verify(note)
	if err != nil {
		return problem(CheckpointPolicy, resp.Msg.GetSize(), "the latest cosigned checkpoint of %s from witness %s (%s), size %d, does not satisfy the checkpoint policy (%s): %v",
			table, src.id, src.url, resp.Msg.GetSize(), v.opts.Policy.Describe(), err), nil, nil
	}
	if _, t, err := checkpoint.ParseOrigin(cp.Origin); err != nil || t != table {
		return problem(CheckpointPolicy, cp.Size, "witness %s (%s) served, for %s, a checkpoint of another log (origin %q)", src.id, src.url, table, cp.Origin), nil, nil
	}
	if cp.Size != resp.Msg.GetSize() || !bytes.Equal(cp.Root[:], resp.Msg.GetRoot()) {
		return problem(CheckpointRoot, cp.Size, "witness %s (%s) describes the checkpoint of %s as size %d root %x, its signed note says size %d root %x",
			src.id, src.url, table, resp.Msg.GetSize(), resp.Msg.GetRoot(), cp.Size, cp.Root[:8]), nil, nil
	}

	// The checkpoint against the log the majority holds.
	if ref != nil && cp.Size > 0 {
		from, to, r1, r2 := cp.Size, common, cp.Root[:], agreed
		if cp.Size > common {
			from, to, r1, r2 = common, cp.Size, agreed, cp.Root[:]
		}
		pr, err := ref.client.GetConsistencyProof(ctx, connect.NewRequest(&witnessv1.GetConsistencyProofRequest{Table: table, FromSize: from, ToSize: to}))
		switch {
		case ctx.Err() != nil:
			return nil, nil, ctx.Err()
		case err != nil:
			// The reference may not hold a newer checkpoint's size yet.
			if cp.Size <= common {
				return nil, []string{fmt.Sprintf("witness %s did not prove the checkpoint of %s at size %d against the log: %s", ref.id(), table, cp.Size, oneLine(err))}, nil
			}
		default:
			if err := tlog.VerifyConsistency(from, to, pr.Msg.GetProof(), r1, r2); err != nil {
				return problem(CheckpointRoot, cp.Size, "the cosigned checkpoint of %s at size %d (root %x) served by witness %s (%s) is not the root of the log the majority of witnesses holds: %v",
					table, cp.Size, cp.Root[:8], src.id, src.url, oneLine(err)), nil, nil
			}
		}
	}
	if !src.leader {
		return nil, nil, nil
	}

	// The leader's checkpoint against the last one accepted.
	if hasPrev {
		switch {
		case cp.Size < prev.Size:
			return problem(CheckpointStale, cp.Size, "the latest cosigned checkpoint of %s from witness %s (%s) has size %d, older than the one of size %d this verifier accepted before: a replayed or rolled-back checkpoint",
				table, src.id, src.url, cp.Size, prev.Size), nil, nil
		case cp.Size == prev.Size && cp.Root != prev.Root:
			return problem(CheckpointFork, cp.Size, "the cosigned checkpoint of %s at size %d has root %x, the one accepted before at that size has root %x: a fork",
				table, cp.Size, cp.Root[:8], prev.Root[:8]), nil, nil
		case cp.Size > prev.Size:
			pr, err := src.client.GetConsistencyProof(ctx, connect.NewRequest(&witnessv1.GetConsistencyProofRequest{Table: table, FromSize: prev.Size, ToSize: cp.Size}))
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			if err != nil {
				return problem(CheckpointFork, cp.Size, "witness %s (%s) cannot prove that the checkpoint of %s at size %d extends the one accepted at size %d: %s",
					src.id, src.url, table, cp.Size, prev.Size, oneLine(err)), nil, nil
			}
			if err := tlog.VerifyConsistency(prev.Size, cp.Size, pr.Msg.GetProof(), prev.Root[:], cp.Root[:]); err != nil {
				return problem(CheckpointFork, cp.Size, "the cosigned checkpoint of %s at size %d does not extend the one accepted before at size %d: %v",
					table, cp.Size, prev.Size, oneLine(err)), nil, nil
			}
		}
	}
	if !hasPrev || cp.Size > prev.Size {
		if err := v.opts.Checkpoints.SaveCheckpoint(table, SeenCheckpoint{Size: cp.Size, Root: cp.Root, Note: note}); err != nil {
			return nil, []string{fmt.Sprintf("the checkpoint of %s at size %d could not be recorded: %v", table, cp.Size, err)}, nil
		}
	}
	return nil, nil, nil
}

// memCheckpoints is the CheckpointStore of a Verifier given none.
type memCheckpoints struct {
	mu sync.Mutex
	m  map[string]SeenCheckpoint
}

func (s *memCheckpoints) LastCheckpoint(table string) (SeenCheckpoint, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp, ok := s.m[table]
	return cp, ok, nil
}

func (s *memCheckpoints) SaveCheckpoint(table string, cp SeenCheckpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[table] = cp
	return nil
}
