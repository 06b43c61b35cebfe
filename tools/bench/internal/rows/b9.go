package rows

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/tools/bench/internal/cpuuse"
	"github.com/witnz/witnz/tools/bench/internal/report"
	"github.com/witnz/witnz/tools/bench/internal/stack"
	"github.com/witnz/witnz/tools/bench/internal/stats"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	b9Clients = 4
	b9Batch   = 100
	b9Warmup  = time.Second
	// b9Channel is the alert service's default Redis channel, which
	// `witnz up` keeps.
	b9Channel = "witnz:alerts"
	// b9Migration is the alert service's schema: the baseline inserts into
	// the very same table and indexes.
	b9Migration = "services/alert/internal/store/migrations/0001_init.sql"
	// b9InsertSQL is the statement the alert service runs per alert.
	b9InsertSQL = `INSERT INTO alerts (alert_id, type, severity, message, source, host, table_name, detail, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, coalesce($9, now()))
ON CONFLICT (alert_id) DO NOTHING
RETURNING occurred_at, received_at`
)

// b9 is alert ingest: alerts/s stored by the alert service through
// IngestAlerts (and published on Redis), against a PostgreSQL batch INSERT
// of the same rows into the same schema.
type b9 struct {
	rate      float64
	window    report.Window
	stored    int64
	published int64
	pubRate   float64
	pubLag    stats.Summary
	rpcLat    stats.Summary
	baseRates []float64
	cpuBase   []cpuuse.Usage
	cpuMeas   cpuuse.Usage
}

func runB9(ctx context.Context, e *Env) []report.Row {
	b := &b9{}
	err := e.WithStack(ctx, func(s *stack.Stack) error {
		dsn, drop, err := e.bareDatabase(ctx, "bench_b9")
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		defer drop()
		ddl, err := os.ReadFile(filepath.Join(e.Repo, b9Migration))
		if err != nil {
			return fmt.Errorf("baseline: the alert service's schema: %w", err)
		}
		if err := execSQL(ctx, dsn, string(ddl)); err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		if err := b.baseline(ctx, e, dsn); err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		if err := b.measure(ctx, e, s); err != nil {
			return err
		}
		return b.baseline(ctx, e, dsn)
	})
	if err != nil {
		return []report.Row{failed("B9", "alert ingest", err)}
	}
	return []report.Row{b.row(e)}
}

// alertSeq numbers the generated alerts.
var alertSeq atomic.Int64

// newAlerts builds n alerts shaped like cdc-ingest's, each with a fresh id.
func newAlerts(n int) []*alertv1.Alert {
	out := make([]*alertv1.Alert, n)
	now := timestamppb.Now()
	for i := range out {
		k := alertSeq.Add(1)
		detail, _ := structpb.NewStruct(map[string]any{
			"table": "public.audit_log", "op": "UPDATE", "key": map[string]any{"id": fmt.Sprint(k)},
			"xid": float64(1000 + k), "commit_lsn": "0/1A2B3C", "commit_time": now.AsTime().Format(time.RFC3339Nano), "lsn": "0/1A2B00",
		})
		out[i] = &alertv1.Alert{
			AlertId: uuid(), Type: "cdc.update_on_append_only", Severity: alertv1.Severity_SEVERITY_CRITICAL,
			Message: fmt.Sprintf("UPDATE on append-only table public.audit_log (id=%d) in xid %d at 0/1A2B3C", k, 1000+k),
			Source:  "bench", Table: "public.audit_log", Detail: detail, OccurredAt: now,
		}
	}
	return out
}

func uuid() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// drive runs clients loops of send until d has passed and returns the
// stored-count points of every answer.
func drive(ctx context.Context, d time.Duration, send func(ctx context.Context) (int, error)) ([]stats.Point, time.Time, time.Time, error) {
	var (
		mu    sync.Mutex
		pts   []stats.Point
		total uint64
		first error
		wg    sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	for range b9Clients {
		wg.Go(func() {
			for time.Now().Before(end) && ctx.Err() == nil {
				n, err := send(ctx)
				mu.Lock()
				if err != nil {
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
				total += uint64(n)
				pts = append(pts, stats.Point{At: time.Now(), Count: total})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return append([]stats.Point{{At: start}}, pts...), start, time.Now(), first
}

func (b *b9) baseline(ctx context.Context, e *Env, dsn string) error {
	e.Logf("B9 baseline: %d clients, batch INSERT of %d alerts per transaction into the alert schema on the bare PostgreSQL, %s", b9Clients, b9Batch, e.D.B9Load/2)
	conns := make(chan *pgx.Conn, b9Clients)
	for range b9Clients {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer c.Close(context.Background())
		conns <- c
	}
	cpu := e.cpuMeter()
	pts, start, end, err := drive(ctx, e.D.B9Load/2, func(ctx context.Context) (int, error) {
		c := <-conns
		defer func() { conns <- c }()
		alerts := newAlerts(b9Batch)
		n := 0
		err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			batch := &pgx.Batch{}
			for _, a := range alerts {
				detail, err := json.Marshal(a.GetDetail().AsMap())
				if err != nil {
					return err
				}
				t := a.GetOccurredAt().AsTime()
				batch.Queue(b9InsertSQL, a.GetAlertId(), a.GetType(), int16(a.GetSeverity()), a.GetMessage(),
					a.GetSource(), a.GetHost(), a.GetTable(), detail, &t)
			}
			br := tx.SendBatch(ctx, batch)
			for range alerts {
				var occurred, received time.Time
				if err := br.QueryRow().Scan(&occurred, &received); err != nil {
					br.Close()
					return err
				}
				n++
			}
			return br.Close()
		})
		return n, err
	})
	b.cpuBase = append(b.cpuBase, cpu())
	if err != nil {
		return err
	}
	r, _, _, ok := stats.Rate(pts, start.Add(b9Warmup), end)
	if !ok {
		return fmt.Errorf("too few batches in %s", e.D.B9Load/2)
	}
	b.baseRates = append(b.baseRates, r)
	return execSQL(ctx, dsn, "TRUNCATE alerts", "CHECKPOINT")
}

func (b *b9) measure(ctx context.Context, e *Env, s *stack.Stack) error {
	cert, key, ca := s.ServiceCert("cdc-ingest")
	cfg, err := mtls.Load(mtls.Files{Cert: cert, Key: key, CA: ca})
	if err != nil {
		return err
	}
	hc := cfg.HTTPClient()
	defer hc.CloseIdleConnections()
	client := alertv1connect.NewAlertServiceClient(hc, s.Info.Services["alert"].URL, rpcserver.ClientOptions()...)

	rdb := redis.NewClient(&redis.Options{Addr: s.Info.Redis})
	defer rdb.Close()
	sub := rdb.Subscribe(ctx, b9Channel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		return fmt.Errorf("subscribe to Redis %s: %w", b9Channel, err)
	}
	var (
		pubMu  sync.Mutex
		pubPts []stats.Point
		pubLag []float64
	)
	msgs := sub.Channel(redis.WithChannelSize(100_000))
	go func() {
		var n uint64
		for m := range msgs {
			n++
			now := time.Now()
			var a struct {
				OccurredAt time.Time `json:"occurredAt"`
			}
			_ = json.Unmarshal([]byte(m.Payload), &a)
			pubMu.Lock()
			pubPts = append(pubPts, stats.Point{At: now, Count: n})
			if !a.OccurredAt.IsZero() {
				pubLag = append(pubLag, float64(now.Sub(a.OccurredAt))/float64(time.Millisecond))
			}
			pubMu.Unlock()
		}
	}()

	e.Logf("B9: %d clients, IngestAlerts with %d alerts per call, %s", b9Clients, b9Batch, e.D.B9Load)
	var rpcMu sync.Mutex
	var rpcLat []float64
	cpu := e.cpuMeter()
	pts, start, end, err := drive(ctx, e.D.B9Load, func(ctx context.Context) (int, error) {
		t0 := time.Now()
		resp, err := client.IngestAlerts(ctx, connect.NewRequest(&alertv1.IngestAlertsRequest{Alerts: newAlerts(b9Batch)}))
		if err != nil {
			return 0, err
		}
		rpcMu.Lock()
		rpcLat = append(rpcLat, float64(time.Since(t0))/float64(time.Millisecond))
		rpcMu.Unlock()
		return int(resp.Msg.GetStored()), nil
	})
	b.cpuMeas = cpu()
	if err != nil {
		return err
	}
	r, st, en, ok := stats.Rate(pts, start.Add(b9Warmup), end)
	if !ok {
		return fmt.Errorf("too few IngestAlerts calls in %s", e.D.B9Load)
	}
	b.rate = r
	b.window = report.Window{Start: st.At, End: en.At, Seconds: en.At.Sub(st.At).Seconds(),
		Description: fmt.Sprintf("stored alerts from %s after the load started to its end", b9Warmup)}
	b.stored = int64(pts[len(pts)-1].Count)
	b.rpcLat = stats.Summarize(rpcLat)
	// Every stored alert should be published: wait for the stragglers.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		pubMu.Lock()
		n := len(pubPts)
		pubMu.Unlock()
		if int64(n) >= b.stored {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	pubMu.Lock()
	defer pubMu.Unlock()
	b.published = int64(len(pubPts))
	b.pubLag = stats.Summarize(pubLag)
	if pr, _, _, ok := stats.Rate(append([]stats.Point{{At: start}}, pubPts...), start.Add(b9Warmup), end); ok {
		b.pubRate = pr
	}
	return nil
}

func (b *b9) row(e *Env) report.Row {
	var base float64
	for _, r := range b.baseRates {
		base += r / float64(len(b.baseRates))
	}
	baseCPU := make([]string, len(b.cpuBase))
	for i, u := range b.cpuBase {
		baseCPU[i] = u.String()
	}
	notes := []string{
		fmt.Sprintf("order: baseline %s, stack %s, baseline %s; %d clients, %d alerts per call or transaction, alerts shaped like cdc-ingest's (jsonb detail of 7 fields)", e.D.B9Load/2, e.D.B9Load, e.D.B9Load/2, b9Clients, b9Batch),
		fmt.Sprintf("IngestAlerts from the service/cdc-ingest identity over mutual TLS; call latency p50 %.1f ms, p99 %.1f ms", b.rpcLat.P50, b.rpcLat.P99),
		fmt.Sprintf("published on Redis %s: %d of %d stored alerts, %.0f alerts/s over the same window; occurred → received by a Redis subscriber p50 %.0f ms, p99 %.0f ms", b9Channel, b.published, b.stored, b.pubRate, b.pubLag.P50, b.pubLag.P99),
		fmt.Sprintf("the baseline is the mean of %s", joinRates(b.baseRates)),
		"CPU with the stack: " + b.cpuMeas.String(),
		"CPU during the baselines: " + joinNonEmpty(baseCPU, " | "),
	}
	notes = append(notes, noiseNote(append([]cpuuse.Usage{b.cpuMeas}, b.cpuBase...)...)...)
	return report.Row{
		ID: "B9", Title: "alert ingest",
		Metric: "alerts/s stored by the alert service through IngestAlerts (and published on Redis)",
		Value:  report.F(b.rate), Unit: "alerts/s",
		BaselineMetric: "PostgreSQL batch INSERT of the same rows, same statement, into the alert service's schema on a bare PostgreSQL",
		Baseline:       report.F(base),
		TargetText:     "≥ 20,000 alerts/s", Target: []report.Bound{{On: "value", Op: ">=", Value: 20000}},
		FloorText: "≥ 5,000 alerts/s", Floor: []report.Bound{{On: "value", Op: ">=", Value: 5000}},
		Window: &b.window, Samples: int(b.stored),
		Notes: notes,
	}
}

func joinRates(rs []float64) string {
	s := ""
	for i, r := range rs {
		if i > 0 {
			s += " and "
		}
		s += fmt.Sprintf("%.0f", r)
	}
	return s + " alerts/s"
}
