package stack

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
)

// Cluster asks the stack's witness nodes, following the Raft leader: the
// leader's FSM is where an entry becomes visible once the quorum has
// committed it.
type Cluster struct {
	ids   []string
	nodes map[string]witnessv1connect.WitnessServiceClient
	hc    *http.Client

	mu     sync.Mutex
	leader string
	// changes counts leader changes seen after the first leader was found.
	changes int
}

// Cluster connects to the witnesses with the operator certificate.
func (s *Stack) Cluster() (*Cluster, error) {
	cfg, err := mtls.Load(mtls.Files{Cert: s.Info.TLS.Cert, Key: s.Info.TLS.Key, CA: s.Info.TLS.CA})
	if err != nil {
		return nil, err
	}
	c := &Cluster{nodes: map[string]witnessv1connect.WitnessServiceClient{}, hc: cfg.HTTPClient()}
	// The observer polls the leader hundreds of times a second while the
	// pipeline it measures runs on the same cores. Gzipping the answers
	// (random hashes, which do not compress) was about 40 % of the CPU of
	// a poll, client and node together, so the observer does not offer it.
	opts := append(rpcserver.ClientOptions(), connect.WithAcceptCompression("gzip", nil, nil))
	for _, w := range s.Info.Witnesses {
		c.ids = append(c.ids, w.ID)
		c.nodes[w.ID] = witnessv1connect.NewWitnessServiceClient(c.hc, w.URL, opts...)
	}
	if len(c.ids) == 0 {
		return nil, errors.New("the stack file lists no witnesses")
	}
	return c, nil
}

// Close releases idle connections.
func (c *Cluster) Close() { c.hc.CloseIdleConnections() }

// LeaderChanges is how many times the leader changed while this client
// followed it.
func (c *Cluster) LeaderChanges() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changes
}

// findLeader asks every node until one says it is the leader, for up to
// 30 s (an election may be running).
func (c *Cluster) findLeader(ctx context.Context) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	var lastErr error = ErrNoLeader
	for time.Now().Before(deadline) {
		for _, id := range c.ids {
			resp, err := c.nodes[id].GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
			if err != nil {
				lastErr = err
				continue
			}
			if resp.Msg.GetState() == "Leader" {
				c.mu.Lock()
				if c.leader != "" && c.leader != id {
					c.changes++
				}
				c.leader = id
				c.mu.Unlock()
				return id, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("no witness leader within 30 s: %w", lastErr)
}

func (c *Cluster) currentLeader(ctx context.Context) (string, error) {
	c.mu.Lock()
	id := c.leader
	c.mu.Unlock()
	if id != "" {
		return id, nil
	}
	return c.findLeader(ctx)
}

// Size is the leader's log size of table (0 while the table is not
// registered).
func (c *Cluster) Size(ctx context.Context, table string) (uint64, error) {
	t, err := c.Table(ctx, table)
	return t.GetSize(), err
}

// Table is the leader's view of table: size, root, last commit LSN (an
// empty TableInfo while the table is not registered).
func (c *Cluster) Table(ctx context.Context, table string) (*witnessv1.TableInfo, error) {
	for attempt := 0; ; attempt++ {
		id, err := c.currentLeader(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := c.nodes[id].GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
		if err == nil && resp.Msg.GetState() == "Leader" {
			for _, t := range resp.Msg.GetTables() {
				if t.GetName() == table {
					return t, nil
				}
			}
			return &witnessv1.TableInfo{Name: table}, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if attempt == 3 {
			if err == nil {
				err = fmt.Errorf("witness %s is %s", id, resp.Msg.GetState())
			}
			return nil, err
		}
		if _, err := c.findLeader(ctx); err != nil {
			return nil, err
		}
	}
}

// Entries returns entries [start, end) of table, read from the leader.
func (c *Cluster) Entries(ctx context.Context, table string, start, end uint64) ([]*witnessv1.LoggedEntry, error) {
	id, err := c.currentLeader(ctx)
	if err != nil {
		return nil, err
	}
	stream, err := c.nodes[id].GetEntries(ctx, connect.NewRequest(&witnessv1.GetEntriesRequest{Table: table, Start: start, End: end}))
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	out := make([]*witnessv1.LoggedEntry, 0, end-start)
	for stream.Receive() {
		out = append(out, stream.Msg().GetEntries()...)
	}
	if err := stream.Err(); err != nil {
		return nil, fmt.Errorf("entries [%d, %d) of %s from %s: %w", start, end, table, id, err)
	}
	if uint64(len(out)) != end-start {
		return nil, fmt.Errorf("entries [%d, %d) of %s from %s: got %d", start, end, table, id, len(out))
	}
	return out, nil
}

// CommitTimes returns the PostgreSQL commit time of entries [start, end) of
// table, read from the leader.
func (c *Cluster) CommitTimes(ctx context.Context, table string, start, end uint64) ([]time.Time, error) {
	es, err := c.Entries(ctx, table, start, end)
	if err != nil {
		return nil, err
	}
	out := make([]time.Time, len(es))
	for i, e := range es {
		out[i] = time.UnixMicro(e.GetEntry().GetCommitTimeMicros())
	}
	return out, nil
}

// Sample is one observation of the leader's log size: the request was sent
// at Sent and the answer arrived at Recv, so the size held at some instant
// in between.
type Sample struct {
	Sent, Recv time.Time
	Size       uint64
}

// Poll observes the leader's size of table every interval (0: back to
// back) until ctx ends. Failed polls (an election) are counted and skipped.
func (c *Cluster) Poll(ctx context.Context, table string, interval time.Duration) (samples []Sample, failures int) {
	for ctx.Err() == nil {
		sent := time.Now()
		size, err := c.Size(ctx, table)
		recv := time.Now()
		if err != nil {
			if ctx.Err() == nil {
				failures++
			}
		} else {
			samples = append(samples, Sample{Sent: sent, Recv: recv, Size: size})
		}
		if interval > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(interval):
			}
		}
	}
	return samples, failures
}
