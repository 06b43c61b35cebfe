package witnessclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/services/cdc-ingest/internal/backoff"
)

// node is a witness node's API: a leader that stores entries, or a
// follower that names the leader.
type node struct {
	witnessv1connect.UnimplementedWitnessServiceHandler
	leader string // follower when set
	// hintInMessage names the leader only in the error message.
	hintInMessage bool
	deny          bool // refuses every call as PermissionDenied

	mu         sync.Mutex
	registered map[string]witnessv1.TableMode
	entries    int
	calls      int
}

func (n *node) check() error {
	n.mu.Lock()
	n.calls++
	n.mu.Unlock()
	if n.deny {
		return connect.NewError(connect.CodePermissionDenied, errors.New("only spiffe://witnz/service/cdc-ingest may append"))
	}
	if n.leader != "" {
		if n.hintInMessage {
			return connect.NewError(connect.CodeFailedPrecondition, errors.New("not the leader; the leader is "+n.leader+"."))
		}
		err := connect.NewError(connect.CodeFailedPrecondition, errors.New("not the leader"))
		err.Meta().Set(LeaderHeader, n.leader)
		return err
	}
	return nil
}

func (n *node) RegisterTable(_ context.Context, req *connect.Request[witnessv1.RegisterTableRequest]) (*connect.Response[witnessv1.RegisterTableResponse], error) {
	if err := n.check(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.registered == nil {
		n.registered = map[string]witnessv1.TableMode{}
	}
	n.registered[req.Msg.Table] = req.Msg.Mode
	return connect.NewResponse(&witnessv1.RegisterTableResponse{Created: true}), nil
}

func (n *node) Append(_ context.Context, req *connect.Request[witnessv1.AppendRequest]) (*connect.Response[witnessv1.AppendResponse], error) {
	if err := n.check(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.registered[req.Msg.Table]; !ok {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("unknown table"))
	}
	n.entries += len(req.Msg.Entries)
	return connect.NewResponse(&witnessv1.AppendResponse{Size: uint64(n.entries)}), nil
}

// start serves n over TLS with HTTP/2 and returns its URL and a client
// that trusts it.
func start(t *testing.T, n *node) (string, *http.Client) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(witnessv1connect.NewWitnessServiceHandler(n))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL, srv.Client()
}

func newClient(urls []string, httpc *http.Client) *Client {
	c := New(urls, httpc, slog.New(slog.DiscardHandler), connect.WithGRPC())
	c.retry = backoff.Policy{Min: time.Millisecond, Max: 5 * time.Millisecond}
	return c
}

// deadURL is an https URL nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "https://" + addr
}

func TestFollowsLeaderAndFailsOver(t *testing.T) {
	for _, inMessage := range []bool{false, true} {
		t.Run(fmt.Sprintf("hint in message %v", inMessage), func(t *testing.T) {
			testFollowsLeader(t, inMessage)
		})
	}
}

func testFollowsLeader(t *testing.T, hintInMessage bool) {
	leader := &node{}
	leaderURL, httpc := start(t, leader)
	followerURL, _ := start(t, &node{leader: leaderURL, hintInMessage: hintInMessage})
	// Unreachable first, then a follower that names the leader.
	c := newClient([]string{deadURL(t), followerURL}, httpc)

	if _, err := c.RegisterTable(t.Context(), "public.t", witnessv1.TableMode_TABLE_MODE_APPEND_ONLY); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Append(t.Context(), "public.t", []*witnessv1.Entry{{CommitLsn: 1}})
	if err != nil || resp.Size != 1 {
		t.Fatalf("Append = %v, %v", resp, err)
	}
	if got := c.target(); got != leaderURL {
		t.Errorf("client targets %s, want the leader %s", got, leaderURL)
	}
}

func TestAppendRegistersUnknownTable(t *testing.T) {
	n := &node{}
	url, httpc := start(t, n)
	c := newClient([]string{url}, httpc)
	if _, err := c.RegisterTable(t.Context(), "public.t", witnessv1.TableMode_TABLE_MODE_MUTABLE); err != nil {
		t.Fatal(err)
	}
	// The cluster lost the table (a fresh cluster): Append registers it again.
	n.mu.Lock()
	n.registered = nil
	n.mu.Unlock()
	if _, err := c.Append(t.Context(), "public.t", []*witnessv1.Entry{{CommitLsn: 1}}); err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.registered["public.t"] != witnessv1.TableMode_TABLE_MODE_MUTABLE {
		t.Errorf("table registered as %v", n.registered)
	}
}

func TestRegisterTablePermanentError(t *testing.T) {
	url, httpc := start(t, &node{deny: true})
	c := newClient([]string{url}, httpc)
	_, err := c.RegisterTable(t.Context(), "public.t", witnessv1.TableMode_TABLE_MODE_APPEND_ONLY)
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("RegisterTable = %v, want permission denied at once", err)
	}
}

func TestAppendNeverGivesUp(t *testing.T) {
	n := &node{deny: true}
	url, httpc := start(t, n)
	c := newClient([]string{url}, httpc)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Append(ctx, "public.t", []*witnessv1.Entry{{CommitLsn: 1}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Append = %v, want it to retry until the context ends", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.calls < 2 {
		t.Errorf("%d calls, want retries", n.calls)
	}
}
