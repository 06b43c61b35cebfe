package livefeed

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protojson"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/testenv"
)

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

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// TestIdleSubscriptionHealthChecked lets the subscription sit idle for
// several health intervals: the PINGs must keep it, not replace it.
func TestIdleSubscriptionHealthChecked(t *testing.T) {
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	reg := prometheus.NewRegistry()
	const interval = 20 * time.Millisecond
	f := New(rdb, "ch", slog.New(slog.NewTextHandler(io.Discard, nil)), Options{HealthInterval: interval, Registerer: reg})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { f.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	waitUntil(t, "subscribed", f.Subscribed)

	sub := f.Subscribe(alertv1.Severity_SEVERITY_UNSPECIFIED)
	defer sub.Close()
	for i := range 3 {
		// Idle time is the point of the test, so this waits for time to
		// pass rather than for a condition.
		time.Sleep(5 * interval)
		b, _ := protojson.Marshal(&alertv1.Alert{AlertId: "a", Severity: alertv1.Severity_SEVERITY_LOW})
		if err := rdb.Publish(t.Context(), "ch", b).Err(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-sub.C():
		case <-time.After(2 * time.Second):
			t.Fatalf("round %d: alert not delivered after an idle period", i)
		}
	}
	if n := counter(t, reg, "witnz_gateway_redis_resubscriptions_total"); n != 0 {
		t.Errorf("the idle subscription was replaced %v times", n)
	}
	if n := counter(t, reg, "witnz_gateway_alerts_received_total"); n != 3 {
		t.Errorf("received %v alerts, want 3", n)
	}
}
