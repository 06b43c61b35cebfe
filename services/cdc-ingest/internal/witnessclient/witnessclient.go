// Package witnessclient calls the witness cluster: it finds the Raft leader
// (following the witnz-leader hint of followers), fails over between the
// configured nodes and retries with backoff, so callers see an Append as
// one call that succeeds or outlives its context.
package witnessclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"connectrpc.com/connect"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/services/cdc-ingest/internal/backoff"
)

// LeaderHeader is the response header in which a follower names the
// leader's API address.
const LeaderHeader = "witnz-leader"

// Client talks to the witness nodes.
type Client struct {
	urls  []string
	httpc connect.HTTPClient
	opts  []connect.ClientOption
	log   *slog.Logger
	retry backoff.Policy

	mu      sync.Mutex
	clients map[string]witnessv1connect.WitnessServiceClient
	current string // URL tried first: the last one that answered as leader
	next    int    // round-robin position in urls
	modes   map[string]witnessv1.TableMode
}

// New returns a client for the witness API URLs.
func New(urls []string, httpc connect.HTTPClient, log *slog.Logger, opts ...connect.ClientOption) *Client {
	return &Client{
		urls:    urls,
		httpc:   httpc,
		opts:    opts,
		log:     log,
		retry:   backoff.Default,
		clients: map[string]witnessv1connect.WitnessServiceClient{},
		current: urls[0],
		modes:   map[string]witnessv1.TableMode{},
	}
}

func (c *Client) client(url string) witnessv1connect.WitnessServiceClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.clients[url]
	if !ok {
		cl = witnessv1connect.NewWitnessServiceClient(c.httpc, url, c.opts...)
		c.clients[url] = cl
	}
	return cl
}

func (c *Client) target() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current
}

// leaderURL turns a witnz-leader hint into a URL; the hint is a URL or a
// bare host:port.
func leaderURL(hint string) string {
	hint = strings.TrimSpace(hint)
	if hint == "" || strings.Contains(hint, "://") {
		return hint
	}
	return "https://" + hint
}

// urlIn finds an https URL in a follower's error message.
func urlIn(msg string) string {
	i := strings.Index(msg, "https://")
	if i < 0 {
		return ""
	}
	u, _, _ := strings.Cut(msg[i:], " ")
	return strings.TrimRight(u, ".,;:)\"'")
}

// failover moves on: to the leader the error names, else to the next
// configured node. It reports whether the error named a leader.
func (c *Client) failover(failed string, err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	var cerr *connect.Error
	if errors.As(err, &cerr) && cerr.Code() == connect.CodeFailedPrecondition {
		hint := cerr.Meta().Get(LeaderHeader)
		if hint == "" {
			hint = urlIn(cerr.Message())
		}
		if l := leaderURL(hint); l != "" && l != failed {
			c.current = l
			return true
		}
	}
	if c.current == failed {
		c.next = (c.next + 1) % len(c.urls)
		c.current = c.urls[c.next]
	}
	return false
}

// permanent reports errors that retrying cannot fix: the request or this
// service's identity is wrong.
func permanent(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodePermissionDenied, connect.CodeUnauthenticated, connect.CodeAlreadyExists, connect.CodeUnimplemented:
		return true
	case connect.CodeFailedPrecondition:
		// A follower says "not the leader" and names it; anything else is
		// the state machine refusing the command.
		var cerr *connect.Error
		return errors.As(err, &cerr) && cerr.Meta().Get(LeaderHeader) == "" && !strings.Contains(cerr.Message(), "not the leader")
	}
	return false
}

// pending reports the witness's answer to a batch whose predecessor it has
// not logged yet (AppendAfter).
func pending(err error) bool { return connect.CodeOf(err) == connect.CodeAborted }

// do runs call against the leader, following leader hints and failing over
// between nodes with backoff. It retries every error until ctx ends, except
// permanent ones when stopOnPermanent is set and, for a pipelined Append,
// a pending predecessor.
func (c *Client) do(ctx context.Context, what string, stopOnPermanent, stopOnPending bool, call func(witnessv1connect.WitnessServiceClient) error) error {
	hops := 0
	for attempt := 0; ; {
		url := c.target()
		err := call(c.client(url))
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if stopOnPending && pending(err) {
			return fmt.Errorf("%w: %v", ErrPredecessorPending, err)
		}
		if stopOnPermanent && permanent(err) {
			if connect.CodeOf(err) == connect.CodePermissionDenied {
				return fmt.Errorf("witness %s refused %s: %w (the witness accepts only the identity named by its --ingest-identity; check --tls-cert)", url, what, err)
			}
			return fmt.Errorf("witness %s refused %s: %w", url, what, err)
		}
		// A leader hint is followed at once, a few times in a row; any
		// other failure waits before the next node is tried.
		if c.failover(url, err) && hops < len(c.urls)+1 {
			hops++
			continue
		}
		hops = 0
		c.log.Warn("witness call failed; retrying", "call", what, "witness", url, "attempt", attempt+1, "code", connect.CodeOf(err).String(), "error", err)
		if err := c.retry.Wait(ctx, attempt); err != nil {
			return err
		}
		attempt++
	}
}

// RegisterTable starts (or confirms) the log of a table on the cluster. It
// retries until the cluster answers, and fails on a refusal that retrying
// cannot fix.
func (c *Client) RegisterTable(ctx context.Context, table string, mode witnessv1.TableMode) (*witnessv1.RegisterTableResponse, error) {
	var resp *witnessv1.RegisterTableResponse
	err := c.do(ctx, "RegisterTable "+table, true, false, func(cl witnessv1connect.WitnessServiceClient) error {
		r, err := cl.RegisterTable(ctx, connect.NewRequest(&witnessv1.RegisterTableRequest{Table: table, Mode: mode}))
		if err != nil {
			return err
		}
		resp = r.Msg
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.modes[table] = mode
	c.mu.Unlock()
	return resp, nil
}

// ErrPredecessorPending is AppendAfter's answer when the cluster has not
// logged the batch the call follows yet: send it again once that batch is
// acknowledged.
var ErrPredecessorPending = errors.New("the witness has not logged the preceding batch yet")

// Position is a change's place in its table's stream: the commit LSN of
// its transaction and its index inside it.
type Position struct {
	CommitLSN uint64
	TxIndex   uint32
}

// Append commits a batch of entries for one table. It never gives up on a
// batch: it retries until the quorum has it or ctx ends, registering the
// table again if the cluster does not know it.
func (c *Client) Append(ctx context.Context, table string, entries []*witnessv1.Entry) (*witnessv1.AppendResponse, error) {
	return c.AppendAfter(ctx, table, Position{}, entries)
}

// AppendAfter is Append for a batch that follows the batch ending at after
// (zero: none). The cluster logs it only once it has logged that position,
// so several batches of a table may be in flight at once; when it has not,
// AppendAfter returns ErrPredecessorPending at once instead of retrying.
func (c *Client) AppendAfter(ctx context.Context, table string, after Position, entries []*witnessv1.Entry) (*witnessv1.AppendResponse, error) {
	req := &witnessv1.AppendRequest{Table: table, Entries: entries, AfterCommitLsn: after.CommitLSN, AfterTxIndex: after.TxIndex}
	var resp *witnessv1.AppendResponse
	err := c.do(ctx, "Append "+table, false, true, func(cl witnessv1connect.WitnessServiceClient) error {
		r, err := cl.Append(ctx, connect.NewRequest(req))
		if connect.CodeOf(err) == connect.CodeNotFound {
			c.mu.Lock()
			mode, ok := c.modes[table]
			c.mu.Unlock()
			if ok {
				if _, rerr := cl.RegisterTable(ctx, connect.NewRequest(&witnessv1.RegisterTableRequest{Table: table, Mode: mode})); rerr != nil {
					return rerr
				}
				r, err = cl.Append(ctx, connect.NewRequest(req))
			}
		}
		if err != nil {
			return err
		}
		resp = r.Msg
		return nil
	})
	return resp, err
}

// Ping asks the node tried first for its status, to tell whether the
// cluster is reachable.
func (c *Client) Ping(ctx context.Context) error {
	url := c.target()
	if _, err := c.client(url).GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{})); err != nil {
		return fmt.Errorf("witness %s: %w", url, err)
	}
	return nil
}

// AppendChecked is Append for callers that must hear about a refusal: it
// retries while the cluster is unreachable or electing, but returns at
// once when the cluster rejects the batch (INVALID_ARGUMENT,
// FAILED_PRECONDITION from the state machine, PERMISSION_DENIED...).
func (c *Client) AppendChecked(ctx context.Context, table string, entries []*witnessv1.Entry) (*witnessv1.AppendResponse, error) {
	var resp *witnessv1.AppendResponse
	err := c.do(ctx, "Append "+table, true, false, func(cl witnessv1connect.WitnessServiceClient) error {
		r, err := cl.Append(ctx, connect.NewRequest(&witnessv1.AppendRequest{Table: table, Entries: entries}))
		if err != nil {
			return err
		}
		resp = r.Msg
		return nil
	})
	return resp, err
}

// Status returns the leader's status, which holds every committed entry:
// it asks the node tried first and, when that is a follower, the leader it
// names. It retries until a node answers.
func (c *Client) Status(ctx context.Context) (*witnessv1.GetStatusResponse, error) {
	var resp *witnessv1.GetStatusResponse
	err := c.do(ctx, "GetStatus", true, false, func(cl witnessv1connect.WitnessServiceClient) error {
		r, err := cl.GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
		if err != nil {
			return err
		}
		resp = r.Msg
		if resp.GetState() == "Leader" || resp.GetLeaderApiAddress() == "" {
			return nil
		}
		lr, err := c.client(leaderURL(resp.GetLeaderApiAddress())).GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
		if err == nil {
			resp = lr.Msg
		}
		return nil
	})
	return resp, err
}

// TableInfo returns the leader's view of one table; nil when the table is
// not registered.
func (c *Client) TableInfo(ctx context.Context, table string) (*witnessv1.TableInfo, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return nil, err
	}
	for _, t := range st.GetTables() {
		if t.GetName() == table {
			return t, nil
		}
	}
	return nil, nil
}

// Entries streams the logged entries [start, end) of a table from the node
// tried first, calling fn for each in order.
func (c *Client) Entries(ctx context.Context, table string, start, end uint64, fn func(*witnessv1.LoggedEntry) error) error {
	url := c.target()
	stream, err := c.client(url).GetEntries(ctx, connect.NewRequest(&witnessv1.GetEntriesRequest{Table: table, Start: start, End: end}))
	if err != nil {
		return fmt.Errorf("witness %s: read entries [%d, %d) of %s: %w", url, start, end, table, err)
	}
	defer stream.Close()
	for stream.Receive() {
		for _, e := range stream.Msg().GetEntries() {
			if err := fn(e); err != nil {
				return err
			}
		}
	}
	if err := stream.Err(); err != nil {
		return fmt.Errorf("witness %s: read entries [%d, %d) of %s: %w", url, start, end, table, err)
	}
	return nil
}
