package faulttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/witnz/witnz/libs/commitment"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/tlog"
)

// table is the protected table every test appends to.
const table = "public.audit_log"

// ack is one acknowledged batch.
type ack struct {
	sent     time.Time     // when the acknowledged attempt was sent
	at       time.Time     // when the acknowledgement arrived
	latency  time.Duration // of the attempt that was acknowledged
	attempts int           // 1 when the first attempt was acknowledged
	entries  int
	size     uint64 // log size after the batch
}

// generator appends batches for one table the way cdc-ingest does: one
// batch in flight, (commit_lsn, tx_index) strictly increasing, and a batch
// that was not acknowledged resent as it was until it is (replays are
// deduplicated by the witness). It computes, independently of the witness,
// the log its acknowledged batches make, and checks every acknowledgement
// against it.
type generator struct {
	c        *cluster
	table    string
	rng      *rand.Rand
	maxBatch int
	lsn      uint64

	mu      sync.Mutex
	want    *tlog.Log
	leaves  [][]byte
	entries []*witnessv1.Entry // acknowledged, in log order
	acks    []ack
	target  *node   // where the next attempt goes
	only    []*node // if set, the nodes appends may go to

	acked atomic.Int64 // batches acknowledged
}

func newGenerator(c *cluster, seed uint64, maxBatch int) *generator {
	return &generator{
		c: c, table: table, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		maxBatch: maxBatch, lsn: 0x1000000, want: tlog.New(), target: c.nodes[0],
	}
}

// register creates the table (append-only, few buckets: small snapshots).
func (g *generator) register(ctx context.Context) error {
	_, err := g.call(ctx, func(ctx context.Context, n *node) error {
		_, err := n.client.RegisterTable(ctx, connect.NewRequest(&witnessv1.RegisterTableRequest{
			Table: g.table, Mode: witnessv1.TableMode_TABLE_MODE_APPEND_ONLY, Buckets: 64,
		}))
		return err
	})
	return err
}

// nextBatch makes the entries of the next transaction: 1 to maxBatch
// INSERTs with random 32-byte commitments.
func (g *generator) nextBatch() []*witnessv1.Entry {
	g.lsn += 0x100 + uint64(g.rng.IntN(0x1000))
	es := make([]*witnessv1.Entry, 1+g.rng.IntN(g.maxBatch))
	for i := range es {
		k, d := make([]byte, 32), make([]byte, 32)
		for j := 0; j < 32; j += 8 {
			putUint64(k[j:], g.rng.Uint64())
			putUint64(d[j:], g.rng.Uint64())
		}
		es[i] = &witnessv1.Entry{
			CommitLsn: g.lsn, TxIndex: uint32(i), Op: witnessv1.Op_OP_INSERT,
			KeyCommit: k, DataCommit: d,
			CommitTimeMicros: 1_760_000_000_000_000 + int64(g.lsn), Xid: uint32(g.lsn >> 8),
		}
	}
	return es
}

func putUint64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}

// appendN appends n batches, each until it is acknowledged.
func (g *generator) appendN(ctx context.Context, n int) error {
	for range n {
		if err := g.appendOne(ctx, g.nextBatch()); err != nil {
			return err
		}
	}
	return nil
}

// appendFor appends batches until d has passed.
func (g *generator) appendFor(ctx context.Context, d time.Duration) error {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if err := g.appendOne(ctx, g.nextBatch()); err != nil {
			return err
		}
	}
	return nil
}

// appendOne sends one batch until it is acknowledged and checks the
// acknowledgement against the log the test computed.
func (g *generator) appendOne(ctx context.Context, es []*witnessv1.Entry) error {
	var resp *witnessv1.AppendResponse
	var sent time.Time
	var latency time.Duration
	attempts, err := g.call(ctx, func(ctx context.Context, n *node) error {
		start := time.Now()
		r, err := n.client.Append(ctx, connect.NewRequest(&witnessv1.AppendRequest{Table: g.table, Entries: es}))
		if err == nil {
			resp, sent, latency = r.Msg, start, time.Since(start)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("append batch at lsn %#x: %w", es[0].CommitLsn, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, x := range es {
		kc, dc := commitment.Commitment(x.KeyCommit), commitment.Commitment(x.DataCommit)
		e := commitment.Entry{Seq: g.want.Size(), CommitLSN: x.CommitLsn, TxIndex: x.TxIndex, Op: commitment.Op(x.Op),
			CommitTimeMicros: x.CommitTimeMicros, XID: x.Xid, KeyCommit: &kc, DataCommit: &dc}
		leaf := e.LeafHash()
		if err := g.want.Append(leaf); err != nil {
			return err
		}
		g.leaves = append(g.leaves, leaf[:])
		g.entries = append(g.entries, x)
	}
	root := g.want.Root()
	if resp.Size != g.want.Size() || !bytes.Equal(resp.Root, root[:]) {
		return fmt.Errorf("batch at lsn %#x acknowledged with size %d root %x; the acknowledged batches make size %d root %x",
			es[0].CommitLsn, resp.Size, resp.Root, g.want.Size(), root)
	}
	// A resent batch may have been committed by an attempt whose answer
	// was lost: then all of it is a replay, never part of it.
	if d := int(resp.Duplicates); d != 0 && (attempts == 1 || d != len(es)) {
		return fmt.Errorf("batch of %d at lsn %#x acknowledged after %d attempts with %d duplicates", len(es), es[0].CommitLsn, attempts, d)
	}
	g.acks = append(g.acks, ack{sent: sent, at: time.Now(), latency: latency, attempts: attempts, entries: len(es), size: resp.Size})
	g.acked.Add(1)
	return nil
}

// call runs rpc against the node the generator believes leads, following
// redirects and moving on to another node on errors that a failover
// explains, until it succeeds or a minute has passed. It returns the
// number of attempts.
func (g *generator) call(ctx context.Context, rpc func(context.Context, *node) error) (int, error) {
	deadline := time.Now().Add(time.Minute)
	for attempt := 1; ; attempt++ {
		g.mu.Lock()
		n := g.target
		g.mu.Unlock()
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := rpc(actx, n)
		cancel()
		if err == nil {
			return attempt, nil
		}
		if ctx.Err() != nil {
			return attempt, ctx.Err()
		}
		var cerr *connect.Error
		switch code := connect.CodeOf(err); {
		case code == connect.CodeFailedPrecondition && errors.As(err, &cerr) && cerr.Meta().Get("witnz-leader") != "":
			next := g.c.byAPI(cerr.Meta().Get("witnz-leader"))
			if next == nil {
				return attempt, fmt.Errorf("%s names an unknown leader: %w", n.id, err)
			}
			g.retarget(next, false)
		case code == connect.CodeUnavailable, code == connect.CodeDeadlineExceeded, code == connect.CodeUnknown, code == connect.CodeCanceled:
			// The node is gone, cut off, or between leaders.
			g.retarget(n, true)
		default:
			return attempt, fmt.Errorf("%s: %w", n.id, err)
		}
		if time.Now().After(deadline) {
			return attempt, fmt.Errorf("no node acknowledged within a minute; last answer from %s: %w", n.id, err)
		}
		time.Sleep(20 * time.Millisecond) // between retries, as a client backs off
	}
}

// retarget points the next attempt at n, or with following set at the
// node after n among the allowed ones.
func (g *generator) retarget(n *node, following bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	allowed := g.only
	if allowed == nil {
		allowed = g.c.nodes
	}
	i := slices.Index(allowed, n)
	if !following && i >= 0 {
		g.target = n
		return
	}
	g.target = allowed[(i+1)%len(allowed)]
}

// restrict limits appends to the given nodes (nil: any node).
func (g *generator) restrict(nodes []*node) {
	g.mu.Lock()
	g.only = nodes
	if nodes != nil && !slices.Contains(nodes, g.target) {
		g.target = nodes[0]
	}
	g.mu.Unlock()
}

// expected is the acknowledged log: size, root and leaf hashes.
func (g *generator) expected() (uint64, []byte, [][]byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	root := g.want.Root()
	return g.want.Size(), root[:], slices.Clone(g.leaves)
}

// acknowledged returns a copy of the acknowledgements so far.
func (g *generator) acknowledged() []ack {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.acks)
}

// firstSentAfter is the first acknowledgement of an attempt sent after t.
func (g *generator) firstSentAfter(t time.Time) (ack, bool) {
	for _, a := range g.acknowledged() {
		if a.sent.After(t) {
			return a, true
		}
	}
	return ack{}, false
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
