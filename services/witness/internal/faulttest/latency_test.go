package faulttest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestLatency150msRTT puts 75 ms of delay in each direction between every
// pair of nodes of a 3-node cluster (a delaying proxy in front of each
// node's Raft listener, which the node advertises), with Raft timeouts
// raised by flags as the README advises for such links, appends single
// batches for 30 seconds, and shows that leadership stays put (no leader
// change, no new term, seen by polling every node) and what a commit
// costs.
func TestLatency150msRTT(t *testing.T) {
	skipShort(t)
	const (
		oneWay = 75 * time.Millisecond
		run    = 30 * time.Second
	)
	proxies := map[int]*delayProxy{}
	spec := clusterSpec{
		size:   3,
		timing: timing{heartbeat: 3 * time.Second, election: 3 * time.Second, lease: 1500 * time.Millisecond},
		raftAdvertise: func(i int, listen string) string {
			proxies[i] = startDelayProxy(t, listen, oneWay)
			return proxies[i].Addr()
		},
	}
	start := time.Now()
	c := newCluster(t, spec)
	leader, term := c.leaderTerm(t, c.nodes...)
	t.Logf("3 nodes behind %s-each-way proxies formed a cluster in %s: %s leads in term %d", oneWay, time.Since(start).Round(time.Millisecond), leader.id, term)
	g := newGenerator(c, 150, 16)
	if err := g.register(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := g.appendN(t.Context(), 3); err != nil { // warm connections and pipelines
		t.Fatal(err)
	}
	warm := len(g.acknowledged())

	// Watch every node's view of the leader while the load runs.
	var (
		mu      sync.Mutex
		changes []string
		polls   int
	)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, n := range c.nodes {
				st, err := n.status(ctx)
				if ctx.Err() != nil {
					return
				}
				mu.Lock()
				polls++
				switch {
				case err != nil:
					changes = append(changes, fmt.Sprintf("%s unreachable: %v", n.id, err))
				case st.LeaderId != leader.id || st.Term != term:
					changes = append(changes, fmt.Sprintf("%s saw leader %q in term %d (%s)", n.id, st.LeaderId, st.Term, st.State))
				}
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	loadErr := g.appendFor(t.Context(), run)
	cancel()
	wg.Wait()
	if loadErr != nil {
		t.Fatal(loadErr)
	}

	acks := g.acknowledged()[warm:]
	var lat []time.Duration
	retried := 0
	for _, a := range acks {
		lat = append(lat, a.latency)
		if a.attempts > 1 {
			retried++
		}
	}
	slices.Sort(lat)
	p50, p99 := percentile(lat, 50), percentile(lat, 99)
	t.Logf("%d single-batch appends in %s at %s RTT: commit latency p50 %s, p99 %s, min %s, max %s; %d status polls, %d leader changes seen",
		len(acks), run, 2*oneWay, p50.Round(time.Millisecond), p99.Round(time.Millisecond), lat[0].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), polls, len(changes))
	if len(changes) > 0 {
		t.Errorf("leadership was not stable at %s RTT:\n%v", 2*oneWay, changes)
	}
	if retried > 0 {
		t.Errorf("%d appends needed a retry at %s RTT; want every one acknowledged at the first attempt", retried, 2*oneWay)
	}
	// A commit needs one follower's answer: at least a round trip, which
	// also proves the delay is in the path.
	if p50 < 2*oneWay {
		t.Errorf("median commit latency %s is below the round trip %s: the delay is not between the nodes", p50, 2*oneWay)
	}
	if p99 > 4*2*oneWay {
		t.Errorf("p99 commit latency %s exceeds four round trips (%s)", p99, 8*oneWay)
	}
	c.sameLog(t, g, 30*time.Second, c.nodes...)
}
