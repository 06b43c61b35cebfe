package faulttest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestClusterUnderLoad forms 3-, 5- and 7-node clusters of witness
// processes and streams several hundred batches into each. In the 3- and
// 5-node clusters the leader is killed with SIGKILL a third of the way
// through: appends must resume within the failover bound, and the killed
// node, restarted, must catch up. At the end every node holds exactly the
// acknowledged log: same size, same root, every acknowledged entry at its
// place and nothing else.
func TestClusterUnderLoad(t *testing.T) {
	skipShort(t)
	for _, tc := range []struct {
		size       int
		batches    int
		killLeader bool
	}{
		{size: 3, batches: 400, killLeader: true},
		{size: 5, batches: 400, killLeader: true},
		{size: 7, batches: 300},
	} {
		t.Run(fmt.Sprintf("%d nodes", tc.size), func(t *testing.T) {
			start := time.Now()
			c := newCluster(t, clusterSpec{size: tc.size, timing: fast})
			t.Logf("%d nodes formed a cluster in %s", tc.size, time.Since(start).Round(time.Millisecond))
			g := newGenerator(c, uint64(tc.size), 16)
			if err := g.register(t.Context()); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			errc := make(chan error, 1)
			loadStart := time.Now()
			go func() { errc <- g.appendN(ctx, tc.batches) }()

			if tc.killLeader {
				waitAcked(t, g, errc, int64(tc.batches/3))
				killLeaderUnderLoad(t, c, g, errc, int64(tc.batches*2/3))
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			acks := g.acknowledged()
			retried := 0
			for _, a := range acks {
				if a.attempts > 1 {
					retried++
				}
			}
			size, _, _ := g.expected()
			t.Logf("%d batches (%d entries) acknowledged in %s, %d of them after a retry", len(acks), size, time.Since(loadStart).Round(time.Millisecond), retried)
			c.sameLog(t, g, 30*time.Second, c.nodes...)
			t.Logf("all %d nodes hold the %d acknowledged entries with the same root", tc.size, size)
		})
	}
}

// waitAcked polls until the generator has n batches acknowledged.
func waitAcked(t *testing.T, g *generator, errc chan error, n int64) {
	t.Helper()
	pollUntil(t, time.Minute, fmt.Sprintf("%d batches acknowledged", n), func() error {
		select {
		case err := <-errc:
			errc <- err
			t.Fatalf("the generator stopped early: %v", err)
		default:
		}
		if got := g.acked.Load(); got < n {
			return fmt.Errorf("%d acknowledged", got)
		}
		return nil
	})
}

// killLeaderUnderLoad kills the leader with SIGKILL while the generator
// runs, checks that appends resume within the failover bound under a new
// leader, lets the load go on to restartAt batches and restarts the
// killed node.
func killLeaderUnderLoad(t *testing.T, c *cluster, g *generator, errc chan error, restartAt int64) {
	t.Helper()
	old, oldTerm := c.leaderTerm(t, c.nodes...)
	ackedBefore := g.acked.Load()
	killed := time.Now()
	if err := old.kill(); err != nil {
		t.Fatal(err)
	}
	// Answers already on their way when the process died do not count:
	// appends resume with the first one sent after it was gone.
	gone := time.Now()
	survivors := c.others(old)
	var first ack
	pollUntil(t, time.Minute, "an append sent after the kill to be acknowledged", func() error {
		select {
		case err := <-errc:
			errc <- err
			t.Fatalf("the generator stopped: %v", err)
		default:
		}
		var ok bool
		if first, ok = g.firstSentAfter(gone); !ok {
			return errors.New("none yet")
		}
		return nil
	})
	resumed := first.at.Sub(killed)
	leader, term := c.leaderTerm(t, survivors...)
	bound := c.spec.timing.failoverBound()
	t.Logf("killed leader %s (term %d) with %d batches acknowledged; %s leads in term %d; appends resumed %s after the kill (bound %s; heartbeat %s, election %s)",
		old.id, oldTerm, ackedBefore, leader.id, term, resumed.Round(time.Millisecond), bound, c.spec.timing.heartbeat, c.spec.timing.election)
	if leader == old || term <= oldTerm {
		t.Fatalf("after the kill %s leads in term %d; want another node in a term after %d", leader.id, term, oldTerm)
	}
	if resumed > bound {
		t.Errorf("appends resumed %s after the leader was killed; want at most %s", resumed.Round(time.Millisecond), bound)
	}

	waitAcked(t, g, errc, restartAt)
	c.start(t, old)
	restarted := time.Now()
	// The restarted node catches up while the load goes on: its log must
	// reach the size the others had when it came back.
	size, _, _ := g.expected()
	pollUntil(t, 30*time.Second, old.id+" to catch up after its restart", func() error {
		ti, err := old.tableInfo(t.Context(), g.table)
		if err != nil {
			return err
		}
		if ti.Size < size {
			return fmt.Errorf("%s at size %d, the others at %d", old.id, ti.Size, size)
		}
		return nil
	})
	t.Logf("%s restarted and reached size %d within %s", old.id, size, time.Since(restarted).Round(time.Millisecond))
}
