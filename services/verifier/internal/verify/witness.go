package verify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/witnz/witnz/libs/commitment"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/statedigest"
)

// statusTimeout bounds one GetStatus call while looking for the leader.
const statusTimeout = 5 * time.Second

// cluster holds a client per witness node.
type cluster struct {
	urls    []string
	clients []witnessv1connect.WitnessServiceClient
}

func newCluster(hc *http.Client, urls []string) *cluster {
	c := &cluster{urls: urls}
	for _, u := range urls {
		c.clients = append(c.clients, witnessv1connect.NewWitnessServiceClient(hc, u, rpcserver.ClientOptions()...))
	}
	return c
}

// leaderView is what the leader said about the cluster and one table.
type leaderView struct {
	url    string
	client witnessv1connect.WitnessServiceClient
	status *witnessv1.GetStatusResponse
	// table is the table's info on the leader, nil when it has no log.
	table *witnessv1.TableInfo
}

// leader asks every node for its status at once and returns the leader's
// answer. Reads go to the leader: it has applied every entry the quorum
// acknowledged to cdc-ingest. Without a leader (no quorum) or without any
// answer the error wraps ErrWitness and says what each node answered.
func (c *cluster) leader(parent context.Context, table string) (*leaderView, error) {
	type answer struct {
		i    int
		resp *witnessv1.GetStatusResponse
		err  error
	}
	ctx, cancel := context.WithTimeout(parent, statusTimeout)
	defer cancel()
	answers := make(chan answer, len(c.clients))
	for i, cl := range c.clients {
		go func() {
			resp, err := cl.GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
			a := answer{i: i, err: err}
			if err == nil {
				a.resp = resp.Msg
			}
			answers <- a
		}()
	}
	var best *answer
	var notes []string
	answered := 0
	for range c.clients {
		a := <-answers
		if a.err != nil {
			notes = append(notes, fmt.Sprintf("%s unreachable (%s)", c.urls[a.i], oneLine(a.err)))
			continue
		}
		answered++
		if a.resp.GetState() == "Leader" {
			if best == nil || a.resp.GetTerm() > best.resp.GetTerm() {
				best = &a
			}
			continue
		}
		leader := a.resp.GetLeaderId()
		if leader == "" {
			leader = "none"
		}
		notes = append(notes, fmt.Sprintf("%s (%s) is %s, leader %s", a.resp.GetNodeId(), c.urls[a.i], a.resp.GetState(), leader))
	}
	if err := parent.Err(); err != nil {
		return nil, err
	}
	slices.Sort(notes)
	if best == nil {
		if answered == 0 {
			return nil, fmt.Errorf("%w: no witness node answered: %s; check that the witness cluster is running and --witness names its nodes", ErrWitness, strings.Join(notes, "; "))
		}
		return nil, fmt.Errorf("%w: the witness cluster has no leader (no quorum?): %s; a table cannot be verified until a majority of its nodes is up", ErrWitness, strings.Join(notes, "; "))
	}
	lv := &leaderView{url: c.urls[best.i], client: c.clients[best.i], status: best.resp}
	for _, t := range best.resp.GetTables() {
		if t.GetName() == table {
			lv.table = t
		}
	}
	return lv, nil
}

// entry reads one entry of the table from the leader.
func (lv *leaderView) entry(ctx context.Context, seq uint64) (*commitment.Entry, []byte, error) {
	var out *commitment.Entry
	var enc []byte
	err := lv.entries(ctx, seq, seq+1, func(e *commitment.Entry, raw []byte) error {
		out, enc = e, raw
		return nil
	})
	if err == nil && out == nil {
		err = fmt.Errorf("%w: entry %d of %s: the leader sent nothing", ErrWitness, seq, lv.table.GetName())
	}
	return out, enc, err
}

// entries streams the entries [start, end) of the table, decoded from the
// bytes the witness hashed.
func (lv *leaderView) entries(ctx context.Context, start, end uint64, fn func(e *commitment.Entry, encoded []byte) error) error {
	return lv.entriesIn(ctx, start, end, nil, fn)
}

// entriesIn streams the entries [start, end) of the table; with buckets,
// only those whose key commitment is in one of them and those without a
// key commitment (the witness filters; a witness that does not know the
// filter sends every entry, and the caller keeps its buckets anyway).
func (lv *leaderView) entriesIn(ctx context.Context, start, end uint64, buckets []uint32, fn func(e *commitment.Entry, encoded []byte) error) error {
	if start >= end {
		return nil
	}
	name := lv.table.GetName()
	stream, err := lv.client.GetEntries(ctx, connect.NewRequest(&witnessv1.GetEntriesRequest{Table: name, Start: start, End: end, Buckets: buckets}))
	if err != nil {
		return witnessError("GetEntries", lv.url, err)
	}
	defer stream.Close()
	next := start
	for stream.Receive() {
		for _, le := range stream.Msg().GetEntries() {
			e, err := commitment.DecodeEntry(le.GetEncoded())
			if err != nil {
				return fmt.Errorf("%w: entry %d of %s from %s: %v", ErrWitness, next, name, lv.url, err)
			}
			if e.Seq != next && (buckets == nil || e.Seq < next || e.Seq >= end) {
				return fmt.Errorf("%w: %s sent entry %d of %s where %d was due", ErrWitness, lv.url, e.Seq, name, next)
			}
			if err := fn(e, le.GetEncoded()); err != nil {
				return err
			}
			next = e.Seq + 1
		}
	}
	if err := stream.Err(); err != nil {
		return witnessError("GetEntries", lv.url, err)
	}
	if buckets == nil && next != end {
		return fmt.Errorf("%w: %s sent entries %d to %d of %s, want up to %d", ErrWitness, lv.url, start, next, name, end)
	}
	return nil
}

// tailWindow is how many entries below the comparison's log size are
// read to look for transactions the snapshot does not see.
const tailWindow = 4096

// boundary returns s, the number of entries whose commit_lsn is below x
// (entries are in commit_lsn order, so they form a prefix; every entry
// below lo is known to be below x), and the last entries below s (up to
// tailWindow of them, from lo on). Usually one read of the log's end
// finds both; when more than tailWindow entries are at or after x, a
// bisection finds s.
func (lv *leaderView) boundary(ctx context.Context, lo, x uint64) (uint64, []*commitment.Entry, error) {
	n := lv.table.GetSize()
	if n <= lo {
		return n, nil, nil
	}
	start := lo
	if n-lo > tailWindow {
		start = n - tailWindow
	}
	tail, err := lv.collect(ctx, start, n)
	if err != nil {
		return 0, nil, err
	}
	i := slices.IndexFunc(tail, func(e *commitment.Entry) bool { return e.CommitLSN >= x })
	switch {
	case i < 0:
		return n, tail, nil
	case i > 0 || start == lo:
		return start + uint64(i), tail[:i], nil
	}
	hi := start
	for lo < hi {
		mid := lo + (hi-lo)/2
		e, _, err := lv.entry(ctx, mid)
		if err != nil {
			return 0, nil, err
		}
		if e.CommitLSN < x {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	from := uint64(0)
	if lo > tailWindow {
		from = lo - tailWindow
	}
	tail, err = lv.collect(ctx, from, lo)
	return lo, tail, err
}

// collect reads the entries [start, end).
func (lv *leaderView) collect(ctx context.Context, start, end uint64) ([]*commitment.Entry, error) {
	out := make([]*commitment.Entry, 0, end-start)
	err := lv.entries(ctx, start, end, func(e *commitment.Entry, _ []byte) error {
		out = append(out, e)
		return nil
	})
	return out, err
}

// digest fetches the table's state digest as of size.
func (lv *leaderView) digest(ctx context.Context, size uint64) (*statedigest.Digest, error) {
	resp, err := lv.client.GetStateDigest(ctx, connect.NewRequest(&witnessv1.GetStateDigestRequest{Table: lv.table.GetName(), AsOfSize: size}))
	if connect.CodeOf(err) == connect.CodeFailedPrecondition {
		if strings.Contains(err.Error(), "before the table's last reset") {
			// The expected state was reset (a new epoch, a mutable
			// TRUNCATE) after the snapshot's position: a fresh snapshot
			// is needed.
			return nil, fmt.Errorf("%w: %s", errRetry, oneLine(err))
		}
		return nil, fmt.Errorf("%w: the witnesses cannot give the state digest of %s: %s", ErrWitness, lv.table.GetName(), oneLine(err))
	}
	if err != nil {
		return nil, witnessError("GetStateDigest", lv.url, err)
	}
	if resp.Msg.GetSize() != size {
		return nil, fmt.Errorf("%w: %s answered the digest as of %d, asked for %d", ErrWitness, lv.url, resp.Msg.GetSize(), size)
	}
	b := len(resp.Msg.GetBuckets())
	enc := make([]byte, 0, statedigest.EncodedSize(b))
	enc = append(enc, statedigest.EncodingVersion, byte(b>>24), byte(b>>16), byte(b>>8), byte(b))
	for i, bd := range resp.Msg.GetBuckets() {
		if bd.GetBucket() != uint32(i) || len(bd.GetLthash()) != 2048 {
			return nil, fmt.Errorf("%w: %s sent a malformed state digest (bucket %d)", ErrWitness, lv.url, i)
		}
		c := bd.GetCount()
		enc = append(enc, byte(c>>56), byte(c>>48), byte(c>>40), byte(c>>32), byte(c>>24), byte(c>>16), byte(c>>8), byte(c))
		enc = append(enc, bd.GetLthash()...)
	}
	d, err := statedigest.Unmarshal(enc)
	if err != nil {
		return nil, fmt.Errorf("%w: %s sent a malformed state digest: %v", ErrWitness, lv.url, err)
	}
	return d, nil
}

// witnessError wraps a failed call to the leader.
func witnessError(rpc, url string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %s on %s: %s", ErrWitness, rpc, url, oneLine(err))
}
