package rows

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	gatewayv1 "github.com/witnz/witnz/libs/gen/witnz/gateway/v1"
	"github.com/witnz/witnz/libs/gen/witnz/gateway/v1/gatewayv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/tools/bench/internal/cpuuse"
	"github.com/witnz/witnz/tools/bench/internal/report"
	"github.com/witnz/witnz/tools/bench/internal/stack"
	"github.com/witnz/witnz/tools/bench/internal/stats"
	"google.golang.org/protobuf/encoding/protojson"
)

const (
	b3Clients = 100
	// b3Gap separates two tampering UPDATEs (and two baseline publishes).
	b3Gap = 100 * time.Millisecond
	// b3Channel is the Redis channel of the baseline, beside the stack's.
	b3Channel = "bench:b3"
)

// b3 is UPDATE on an append-only table → alert received by 100 clients
// subscribed to the gateway's live feed (Connect SubscribeAlerts streams),
// against a Redis pub/sub round trip to 100 subscribers.
type b3 struct {
	lat, base         []float64 // ms, one per (client, alert)
	last, baseLast    []float64 // ms, per alert: the slowest client
	missing, baseMiss int
	updates           int
	cpuMeas, cpuBase  cpuuse.Usage
}

func runB3(ctx context.Context, e *Env) []report.Row {
	b := &b3{}
	err := e.WithStack(ctx, func(s *stack.Stack) error {
		if err := b.baseline(ctx, e, s); err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		return b.measure(ctx, e, s)
	})
	if err != nil {
		return []report.Row{failed("B3", "UPDATE → alert on 100 stream clients", err)}
	}
	return []report.Row{b.row(e)}
}

// delivery is one alert seen by one client.
type delivery struct {
	client int
	key    string
	at     time.Time
	sent   time.Time // the commit (or publish) time it is measured from
}

func (b *b3) measure(ctx context.Context, e *Env, s *stack.Stack) error {
	cfg, err := mtls.Load(mtls.Files{Cert: s.Info.TLS.Cert, Key: s.Info.TLS.Key, CA: s.Info.TLS.CA})
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deliveries := make(chan delivery, 1<<16)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	e.Logf("B3: %d clients subscribe to the gateway's live feed, each over its own connection", b3Clients)
	for i := range b3Clients {
		// One HTTP client (one TLS connection) per subscriber, like
		// separate dashboards.
		hc := cfg.HTTPClient()
		gw := gatewayv1connect.NewGatewayServiceClient(hc, s.Info.Gateway, rpcserver.ClientOptions()...)
		wg.Go(func() {
			defer hc.CloseIdleConnections()
			subscribe(sctx, gw, i, deliveries)
		})
	}

	conn, err := pgx.Connect(ctx, s.Info.Postgres.DSN)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	n := e.D.B3Updates
	var first, lastID int64
	if err := conn.QueryRow(ctx, "WITH r AS (INSERT INTO audit_log (actor, action) SELECT 'bench', 'login' FROM generate_series(1, $1) RETURNING id) SELECT min(id), max(id) FROM r", n+100).Scan(&first, &lastID); err != nil {
		return err
	}
	update := func(id int64) error {
		_, err := conn.Exec(ctx, "UPDATE audit_log SET action = 'tampered' WHERE id = $1", id)
		return err
	}

	// Warm up until every client has an alert: then all are subscribed.
	seen := map[int]bool{}
	var got []delivery
	warm := first + int64(n)
	deadline := time.Now().Add(60 * time.Second)
	for len(seen) < b3Clients {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d clients received the warm-up alerts within 60 s", len(seen), b3Clients)
		}
		if warm > lastID {
			return fmt.Errorf("ran out of warm-up rows with %d of %d clients subscribed", len(seen), b3Clients)
		}
		if err := update(warm); err != nil {
			return err
		}
		warm++
		drainUntil(deliveries, time.Now().Add(500*time.Millisecond), func(d delivery) { seen[d.client] = true })
	}
	drainUntil(deliveries, time.Now().Add(time.Second), func(delivery) {})

	e.Logf("B3: %d UPDATEs on the append-only table, %s apart", n, b3Gap)
	cpu := e.cpuMeter()
	want := map[string]bool{}
	for k := range n {
		id := first + int64(k)
		want[strconv.FormatInt(id, 10)] = true
		if err := update(id); err != nil {
			return err
		}
		drainUntil(deliveries, time.Now().Add(b3Gap), func(d delivery) { got = append(got, d) })
	}
	drainUntil(deliveries, time.Now().Add(5*time.Second), func(d delivery) { got = append(got, d) })
	b.cpuMeas = cpu()
	b.updates = n
	b.lat, b.last, b.missing = latencies(got, want)
	if len(b.lat) == 0 {
		return fmt.Errorf("no client received any of the %d alerts", n)
	}
	return nil
}

// subscribe follows the live feed until ctx ends, reporting each alert with
// the PostgreSQL commit time from its detail.
func subscribe(ctx context.Context, gw gatewayv1connect.GatewayServiceClient, client int, out chan<- delivery) {
	for ctx.Err() == nil {
		stream, err := gw.SubscribeAlerts(ctx, connect.NewRequest(&gatewayv1.SubscribeAlertsRequest{}))
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for stream.Receive() {
			at := time.Now()
			a := stream.Msg().GetAlert()
			if a == nil {
				continue
			}
			d := a.GetDetail().AsMap()
			key, _ := d["key"].(map[string]any)
			id, _ := key["id"].(string)
			ct, err := time.Parse(time.RFC3339Nano, fmt.Sprint(d["commit_time"]))
			if err != nil || id == "" {
				continue
			}
			select {
			case out <- delivery{client: client, key: id, at: at, sent: ct}:
			case <-ctx.Done():
			}
		}
		_ = stream.Close()
	}
}

func drainUntil(ch <-chan delivery, until time.Time, f func(delivery)) {
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	for {
		select {
		case d := <-ch:
			f(d)
		case <-t.C:
			return
		}
	}
}

// latencies of the deliveries of the wanted keys, the slowest client per
// key, and how many (client, key) deliveries never came.
func latencies(got []delivery, want map[string]bool) (all, slowest []float64, missing int) {
	per := map[string]float64{}
	count := map[string]int{}
	dup := map[[2]string]bool{}
	for _, d := range got {
		if !want[d.key] || dup[[2]string{strconv.Itoa(d.client), d.key}] {
			continue
		}
		dup[[2]string{strconv.Itoa(d.client), d.key}] = true
		ms := float64(d.at.Sub(d.sent)) / float64(time.Millisecond)
		all = append(all, ms)
		per[d.key] = max(per[d.key], ms)
		count[d.key]++
	}
	for k := range want {
		missing += b3Clients - count[k]
		if v, ok := per[k]; ok {
			slowest = append(slowest, v)
		}
	}
	return all, slowest, missing
}

// baseline publishes alert-sized payloads on Redis to 100 subscribers, each
// on its own connection, with the same spacing, on the stack's Redis.
func (b *b3) baseline(ctx context.Context, e *Env, s *stack.Stack) error {
	e.Logf("B3 baseline: Redis pub/sub to %d subscribers", b3Clients)
	sample := newAlerts(1)[0]
	payload, err := protojson.Marshal(sample)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.Info.Redis, PoolSize: 4})
	defer rdb.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deliveries := make(chan delivery, 1<<16)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i := range b3Clients {
		sub := rdb.Subscribe(sctx, b3Channel)
		if _, err := sub.Receive(sctx); err != nil {
			return err
		}
		ch := sub.Channel(redis.WithChannelSize(1024))
		wg.Go(func() {
			defer sub.Close()
			for {
				select {
				case <-sctx.Done():
					return
				case m, ok := <-ch:
					if !ok {
						return
					}
					at := time.Now()
					var env struct {
						Key  string    `json:"key"`
						Sent time.Time `json:"sent"`
					}
					if json.Unmarshal([]byte(m.Payload), &env) != nil {
						continue
					}
					select {
					case deliveries <- delivery{client: i, key: env.Key, at: at, sent: env.Sent}:
					case <-sctx.Done():
					}
				}
			}
		})
	}
	n := e.D.B3Updates
	want := map[string]bool{}
	var got []delivery
	cpu := e.cpuMeter()
	for k := range n {
		key := strconv.Itoa(k)
		want[key] = true
		// The alert's own JSON rides along, so the payload is alert-sized.
		msg, _ := json.Marshal(struct {
			Key   string          `json:"key"`
			Sent  time.Time       `json:"sent"`
			Alert json.RawMessage `json:"alert"`
		}{key, time.Now(), payload})
		if err := rdb.Publish(ctx, b3Channel, msg).Err(); err != nil {
			return err
		}
		drainUntil(deliveries, time.Now().Add(b3Gap), func(d delivery) { got = append(got, d) })
	}
	drainUntil(deliveries, time.Now().Add(time.Second), func(d delivery) { got = append(got, d) })
	b.cpuBase = cpu()
	b.base, b.baseLast, b.baseMiss = latencies(got, want)
	if len(b.base) == 0 {
		return fmt.Errorf("no subscriber received any of the %d messages", n)
	}
	return nil
}

func (b *b3) row(e *Env) report.Row {
	m, bl := stats.Summarize(b.lat), stats.Summarize(b.base)
	sl, bsl := stats.Summarize(b.last), stats.Summarize(b.baseLast)
	notes := []string{
		fmt.Sprintf("Connect SubscribeAlerts streams only: the gateway has no WebSocket feed yet, so the row's WebSocket client is not measured"),
		fmt.Sprintf("%d UPDATEs of distinct rows of the append-only table, %s apart, %d clients each on its own mutual-TLS connection; one sample per (client, alert)", b.updates, b3Gap, b3Clients),
		"measured from PostgreSQL's commit time (the alert's detail.commit_time) to arrival at the client: cdc-ingest → alert service (stored in PostgreSQL, published on Redis) → gateway → stream",
		fmt.Sprintf("slowest of the %d clients per alert: p50 %.1f ms, p99 %.1f ms (baseline p50 %.1f ms, p99 %.1f ms)", b3Clients, sl.P50, sl.P99, bsl.P50, bsl.P99),
		fmt.Sprintf("baseline: the same number of alert-sized payloads (%s apart) published on Redis to %d subscribers, each on its own connection, publish → receive", b3Gap, b3Clients),
		"CPU during the run: " + b.cpuMeas.String(),
		"CPU during the baseline: " + b.cpuBase.String(),
	}
	if b.missing > 0 || b.baseMiss > 0 {
		notes = append(notes, fmt.Sprintf("deliveries missing: %d with the stack, %d in the baseline", b.missing, b.baseMiss))
	}
	notes = append(notes, noiseNote(b.cpuMeas, b.cpuBase)...)
	return report.Row{
		ID: "B3", Title: "UPDATE → alert on 100 stream clients",
		Metric: fmt.Sprintf("UPDATE on the append-only table → alert received by each of %d Connect stream clients, ms", b3Clients),
		Value:  report.F(m.P99), Unit: "ms", Latency: &m, Samples: m.N,
		BaselineMetric: fmt.Sprintf("Redis pub/sub round trip to %d subscribers, p99", b3Clients),
		Baseline:       report.F(bl.P99), BaselineLatency: &bl,
		TargetText: "p50 ≤ 5 ms, p99 ≤ 25 ms", Target: []report.Bound{{On: "p50", Op: "<=", Value: 5}, {On: "p99", Op: "<=", Value: 25}},
		FloorText: "p99 ≤ 100 ms", Floor: []report.Bound{{On: "p99", Op: "<=", Value: 100}},
		Notes: notes,
	}
}
