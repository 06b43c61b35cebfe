package livefeed

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protojson"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/testenv"
)

// flakyClient fails while down is set and records what it sent.
type flakyClient struct {
	mu   sync.Mutex
	down bool
	sent []string
}

func (c *flakyClient) Publish(_ context.Context, _ string, payloads [][]byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down {
		return 0, errors.New("connection refused")
	}
	for _, p := range payloads {
		var a alertv1.Alert
		if err := protojson.Unmarshal(p, &a); err != nil {
			return 0, err
		}
		c.sent = append(c.sent, a.GetAlertId())
	}
	return len(payloads), nil
}

func (c *flakyClient) setDown(v bool) {
	c.mu.Lock()
	c.down = v
	c.mu.Unlock()
}

func (c *flakyClient) sentIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.sent...)
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func alerts(ids ...string) []*alertv1.Alert {
	var out []*alertv1.Alert
	for _, id := range ids {
		out = append(out, &alertv1.Alert{AlertId: id, Type: "t", Severity: alertv1.Severity_SEVERITY_LOW, Message: "m"})
	}
	return out
}

// waitUntil polls cond until it holds or 5 s pass.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRetriesInOrderAfterOutage(t *testing.T) {
	c := &flakyClient{}
	p := New(c, "ch", discard, Options{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	p.Publish(ctx, alerts("a"))
	c.setDown(true)
	p.Publish(ctx, alerts("b", "c"))
	c.setDown(false)
	// While b and c wait for a retry, d queues behind them to keep order.
	p.Publish(ctx, alerts("d"))
	waitUntil(t, "the backlog is published", func() bool { return p.Backlog() == 0 && len(c.sentIDs()) == 4 })
	if diff := cmp.Diff([]string{"a", "b", "c", "d"}, c.sentIDs()); diff != "" {
		t.Errorf("published (-want +got):\n%s", diff)
	}
}

func TestGivesUpAfterMaxAge(t *testing.T) {
	c := &flakyClient{down: true}
	p := New(c, "ch", discard, Options{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, MaxAge: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	p.Publish(ctx, alerts("old"))
	waitUntil(t, "the expired alert is dropped", func() bool { return p.Backlog() == 0 })
	c.setDown(false)
	p.Publish(ctx, alerts("new"))
	if diff := cmp.Diff([]string{"new"}, c.sentIDs()); diff != "" {
		t.Errorf("published (-want +got):\n%s", diff)
	}
}

func TestBacklogBounded(t *testing.T) {
	c := &flakyClient{down: true}
	p := New(c, "ch", discard, Options{MaxBacklog: 2})
	p.Publish(t.Context(), alerts("a", "b", "c"))
	if got := p.Backlog(); got != 2 {
		t.Errorf("backlog = %d, want 2", got)
	}
}

func TestRedisClient(t *testing.T) {
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	ctx := t.Context()
	sub := rdb.Subscribe(ctx, "alerts")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	p := New(RedisClient{Redis: rdb}, "alerts", discard, Options{})
	p.Publish(ctx, alerts("one"))
	p.Publish(ctx, alerts("two", "three"))
	var got []string
	for range 3 {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := sub.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			t.Fatalf("received %v, then: %v", got, err)
		}
		var a alertv1.Alert
		if err := protojson.Unmarshal([]byte(msg.Payload), &a); err != nil {
			t.Fatal(err)
		}
		got = append(got, a.GetAlertId())
	}
	if diff := cmp.Diff([]string{"one", "two", "three"}, got); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
}
