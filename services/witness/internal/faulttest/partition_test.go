package faulttest

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
)

// TestMinorityPartition runs a 5-node cluster with every node in its own
// network namespace and cuts the leader and one follower away from the
// other three. The majority elects a leader and goes on acknowledging
// appends; the old leader steps down and acknowledges nothing, so no
// acknowledged entry is ever missing from the majority's log. After the
// partition heals, both minority nodes catch up to the identical log.
func TestMinorityPartition(t *testing.T) {
	skipShort(t)
	tp := newTopology(t, 5)
	start := time.Now()
	c := newCluster(t, clusterSpec{size: 5, timing: fast, net: tp})
	t.Logf("5 nodes in namespaces %s-n1..5 formed a cluster in %s", tp.hub[:len(tp.hub)-4], time.Since(start).Round(time.Millisecond))
	g := newGenerator(c, 55, 16)
	if err := g.register(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := g.appendN(t.Context(), 100); err != nil {
		t.Fatal(err)
	}
	c.sameLog(t, g, 30*time.Second, c.nodes...)

	oldLeader, oldTerm := c.leaderTerm(t, c.nodes...)
	follower := c.others(oldLeader)[0]
	minority := []*node{oldLeader, follower}
	majority := c.others(minority...)
	sizeBefore, _, _ := g.expected()

	cut := time.Now()
	tp.isolate(oldLeader.index, follower.index)
	// When the old leader, cut off from a quorum, notices and steps down.
	steppedDown := make(chan time.Duration, 1)
	go func() {
		for t.Context().Err() == nil {
			if st, err := oldLeader.status(t.Context()); err == nil && st.State != "Leader" {
				steppedDown <- time.Since(cut)
				return
			}
			time.Sleep(25 * time.Millisecond) // polling interval
		}
	}()
	t.Logf("partitioned %s (leader, term %d) and %s away from %s, %s and %s at size %d",
		oldLeader.id, oldTerm, follower.id, majority[0].id, majority[1].id, majority[2].id, sizeBefore)

	// A batch sent to the old leader right after the cut is never
	// acknowledged: it cannot reach a quorum.
	probe := g.nextBatch()
	probeErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err := oldLeader.client.Append(ctx, connect.NewRequest(&witnessv1.AppendRequest{Table: g.table, Entries: probe}))
		probeErr <- err
	}()

	newLeader, newTerm := c.leaderTerm(t, majority...)
	elected := time.Since(cut)
	if newTerm <= oldTerm {
		t.Fatalf("the majority's leader %s is in term %d; want a term after %d", newLeader.id, newTerm, oldTerm)
	}
	var down time.Duration
	select {
	case down = <-steppedDown:
	case <-time.After(10 * time.Second):
		t.Fatalf("the isolated old leader %s still leads %s after the cut", oldLeader.id, time.Since(cut).Round(time.Millisecond))
	}
	err := <-probeErr
	if err == nil {
		t.Fatalf("the isolated old leader %s acknowledged a batch", oldLeader.id)
	}
	t.Logf("%s leads the majority in term %d, %s after the cut; %s stepped down %s after the cut (lease %s); the batch sent to it was refused with %s: %v",
		newLeader.id, newTerm, elected.Round(time.Millisecond), oldLeader.id, down.Round(time.Millisecond), c.spec.timing.lease, connect.CodeOf(err), err)

	// The majority keeps acknowledging appends.
	g.restrict(majority)
	during := time.Now()
	if err := g.appendN(t.Context(), 150); err != nil {
		t.Fatal(err)
	}
	sizeCut, _, _ := g.expected()
	t.Logf("the majority acknowledged %d more entries in %s while partitioned", sizeCut-sizeBefore, time.Since(during).Round(time.Millisecond))
	c.sameLog(t, g, 30*time.Second, majority...)
	for _, n := range minority {
		ti, err := n.tableInfo(t.Context(), g.table)
		if err != nil {
			t.Fatal(err)
		}
		if ti.Size > sizeBefore {
			t.Fatalf("isolated %s applied %d entries beyond size %d", n.id, ti.Size-sizeBefore, sizeBefore)
		}
		st, err := n.status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if st.State == "Leader" {
			t.Fatalf("isolated %s is leader in term %d", n.id, st.Term)
		}
	}

	// Heal; the minority catches up while appends go on.
	tp.heal(oldLeader.index, follower.index)
	healed := time.Now()
	g.restrict(nil)
	if err := g.appendN(t.Context(), 50); err != nil {
		t.Fatal(err)
	}
	c.sameLog(t, g, 60*time.Second, c.nodes...)
	size, _, _ := g.expected()
	t.Logf("healed; all 5 nodes hold the %d acknowledged entries with the same root %s after the heal", size, time.Since(healed).Round(time.Millisecond))
}
