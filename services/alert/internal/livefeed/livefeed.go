// Package livefeed publishes stored alerts on Redis pub/sub, where gateways
// pick them up for their live feeds. Each alert goes out as
// protojson.Marshal(alert) on one channel.
//
// Publication is best effort but retried: an alert is already stored when
// it is handed over, so a Redis outage must not fail ingestion. Alerts that
// could not be published wait in a bounded in-memory backlog and are retried
// with backoff for a short while (MaxAge) before they are dropped; the
// stored copy stays available through ListAlerts.
package livefeed

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protojson"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
)

// Client sends payloads on a pub/sub channel in order. It returns how many
// leading payloads were sent when it fails part way.
type Client interface {
	Publish(ctx context.Context, channel string, payloads [][]byte) (int, error)
}

// Options tune a Publisher; zero fields take the defaults.
type Options struct {
	// AttemptTimeout bounds one publish attempt (default 2 s).
	AttemptTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between retries (default
	// 100 ms and 2 s).
	MinBackoff, MaxBackoff time.Duration
	// MaxAge is how long an alert is retried before it is dropped (default
	// 1 min).
	MaxAge time.Duration
	// MaxBacklog bounds the alerts waiting for a retry (default 10000);
	// beyond it new failures are dropped.
	MaxBacklog int
	// Registerer receives the publisher's metrics; nil registers none.
	Registerer prometheus.Registerer
}

func (o *Options) defaults() {
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 2 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(2*time.Second, o.MinBackoff)
	}
	if o.MaxAge <= 0 {
		o.MaxAge = time.Minute
	}
	if o.MaxBacklog <= 0 {
		o.MaxBacklog = 10000
	}
}

// Publisher publishes alerts on one channel; see the package comment.
type Publisher struct {
	client  Client
	channel string
	log     *slog.Logger
	opts    Options

	mu      sync.Mutex
	backlog []pending
	wake    chan struct{}

	published prometheus.Counter
	failures  prometheus.Counter
	dropped   prometheus.Counter
	waiting   prometheus.Gauge
}

type pending struct {
	id      string
	payload []byte
	since   time.Time
}

// New returns a Publisher; call Run to retry failed publications.
func New(client Client, channel string, log *slog.Logger, opts Options) *Publisher {
	opts.defaults()
	p := &Publisher{
		client:  client,
		channel: channel,
		log:     log,
		opts:    opts,
		wake:    make(chan struct{}, 1),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "witnz_alert_published_total",
			Help: "Alerts published on the Redis live-feed channel.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "witnz_alert_publish_failures_total",
			Help: "Failed attempts to publish alerts on Redis (each is retried).",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "witnz_alert_publish_dropped_total",
			Help: "Stored alerts never published on Redis (retries exhausted or backlog full).",
		}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "witnz_alert_publish_backlog",
			Help: "Stored alerts waiting to be published on Redis.",
		}),
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(p.published, p.failures, p.dropped, p.waiting)
	}
	return p
}

// Publish publishes alerts now, in order. On failure, or while older alerts
// still wait for a retry (so order is kept), they join the backlog that Run
// retries. It never fails: the alerts are already stored.
func (p *Publisher) Publish(ctx context.Context, alerts []*alertv1.Alert) {
	if len(alerts) == 0 {
		return
	}
	now := time.Now()
	items := make([]pending, 0, len(alerts))
	for _, a := range alerts {
		b, err := protojson.Marshal(a)
		if err != nil {
			// Cannot happen for a message that was just decoded and stored.
			p.log.Error("encode alert for the live feed", "alert_id", a.GetAlertId(), "error", err)
			p.dropped.Inc()
			continue
		}
		items = append(items, pending{id: a.GetAlertId(), payload: b, since: now})
	}

	p.mu.Lock()
	behind := len(p.backlog) > 0
	p.mu.Unlock()
	if !behind {
		// The caller's request may end any moment; the publication must not.
		n, err := p.send(context.WithoutCancel(ctx), items)
		if err == nil {
			return
		}
		p.log.Warn("publish alerts on redis failed; retrying in the background",
			"channel", p.channel, "alerts", len(items)-n, "error", err)
		items = items[n:]
	}
	p.enqueue(items)
}

func (p *Publisher) send(ctx context.Context, items []pending) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, p.opts.AttemptTimeout)
	defer cancel()
	payloads := make([][]byte, len(items))
	for i, it := range items {
		payloads[i] = it.payload
	}
	n, err := p.client.Publish(ctx, p.channel, payloads)
	p.published.Add(float64(n))
	if err != nil {
		p.failures.Inc()
	}
	return n, err
}

func (p *Publisher) enqueue(items []pending) {
	p.mu.Lock()
	room := p.opts.MaxBacklog - len(p.backlog)
	var lost []pending
	if len(items) > room {
		items, lost = items[:max(room, 0)], items[max(room, 0):]
	}
	p.backlog = append(p.backlog, items...)
	p.waiting.Set(float64(len(p.backlog)))
	p.mu.Unlock()
	if len(lost) > 0 {
		p.dropped.Add(float64(len(lost)))
		p.log.Error("live-feed backlog full; alerts stay stored but are not published",
			"dropped", len(lost), "first_alert_id", lost[0].id, "max_backlog", p.opts.MaxBacklog)
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Backlog is the number of alerts waiting for a retry.
func (p *Publisher) Backlog() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.backlog)
}

// Run retries the backlog until ctx ends.
func (p *Publisher) Run(ctx context.Context) {
	delay := p.opts.MinBackoff
	for {
		if p.Backlog() == 0 {
			delay = p.opts.MinBackoff
			select {
			case <-ctx.Done():
				return
			case <-p.wake:
			}
			continue
		}
		select {
		case <-ctx.Done():
			if n := p.Backlog(); n > 0 {
				p.log.Warn("stopping with alerts not yet published; they stay stored", "alerts", n)
			}
			return
		case <-time.After(delay):
		}
		if p.retry(ctx) {
			delay = p.opts.MinBackoff
		} else {
			delay = min(2*delay, p.opts.MaxBackoff)
		}
	}
}

// retry drops expired alerts and sends a chunk of the backlog; it reports
// whether the send succeeded.
func (p *Publisher) retry(ctx context.Context) bool {
	const chunk = 500
	p.mu.Lock()
	cutoff := time.Now().Add(-p.opts.MaxAge)
	expired := 0
	for expired < len(p.backlog) && p.backlog[expired].since.Before(cutoff) {
		expired++
	}
	var firstExpired string
	if expired > 0 {
		firstExpired = p.backlog[0].id
		p.backlog = p.backlog[expired:]
	}
	items := p.backlog[:min(chunk, len(p.backlog))]
	p.waiting.Set(float64(len(p.backlog)))
	p.mu.Unlock()

	if expired > 0 {
		p.dropped.Add(float64(expired))
		p.log.Error("gave up publishing alerts on redis; they stay stored but are not in the live feed",
			"dropped", expired, "first_alert_id", firstExpired, "max_age", p.opts.MaxAge)
	}
	if len(items) == 0 {
		return true
	}
	n, err := p.send(ctx, items)
	p.mu.Lock()
	// Only Run removes from the front, so the first n are still the ones
	// sent.
	p.backlog = p.backlog[n:]
	left := len(p.backlog)
	p.waiting.Set(float64(left))
	p.mu.Unlock()
	if err != nil {
		p.log.Warn("publish alerts on redis failed; will retry", "channel", p.channel, "waiting", left, "error", err)
		return false
	}
	if left == 0 {
		p.log.Info("live-feed backlog published; redis is back", "channel", p.channel)
	}
	return true
}

// RedisClient publishes through a go-redis client, pipelining batches.
type RedisClient struct {
	Redis redis.UniversalClient
}

// Publish implements Client.
func (c RedisClient) Publish(ctx context.Context, channel string, payloads [][]byte) (int, error) {
	if len(payloads) == 1 {
		if err := c.Redis.Publish(ctx, channel, payloads[0]).Err(); err != nil {
			return 0, err
		}
		return 1, nil
	}
	cmds, err := c.Redis.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, pl := range payloads {
			pipe.Publish(ctx, channel, pl)
		}
		return nil
	})
	for i, cmd := range cmds {
		if cmd.Err() != nil {
			return i, cmd.Err()
		}
	}
	if err != nil {
		return 0, err
	}
	return len(payloads), nil
}
