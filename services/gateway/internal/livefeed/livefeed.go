// Package livefeed follows the alert service's Redis pub/sub channel with
// one subscription per gateway process and fans each alert out to every
// in-process subscriber through a broadcast.Broadcaster.
//
// go-redis re-establishes a lost pub/sub connection and subscribes again by
// itself; this package notices (Redis confirms every subscription), logs
// the outage and the recovery, and health-checks an idle connection with
// PING so a silently dead one is replaced.
package livefeed

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protojson"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/services/gateway/internal/broadcast"
)

// Options tune a Feed; zero fields take the defaults.
type Options struct {
	// Buffer is how many alerts each subscriber may fall behind before it
	// is dropped (default 256).
	Buffer int
	// HealthInterval is how long the subscription may stay silent before
	// it is checked with PING (default 15 s).
	HealthInterval time.Duration
	// Registerer receives the feed's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Feed is the process's live alert feed.
type Feed struct {
	rdb     *redis.Client
	channel string
	log     *slog.Logger
	opts    Options
	b       *broadcast.Broadcaster[*alertv1.Alert]

	subscribed atomic.Bool
	// Only Run's goroutine uses these.
	everSubscribed, warned bool

	received     prometheus.Counter
	decodeErrors prometheus.Counter
	reconnects   prometheus.Counter
}

// New returns a Feed on channel; call Run to follow it.
func New(rdb *redis.Client, channel string, log *slog.Logger, opts Options) *Feed {
	if opts.Buffer <= 0 {
		opts.Buffer = 256
	}
	if opts.HealthInterval <= 0 {
		opts.HealthInterval = 15 * time.Second
	}
	f := &Feed{
		rdb:     rdb,
		channel: channel,
		log:     log,
		opts:    opts,
		b:       broadcast.New[*alertv1.Alert](opts.Buffer),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "witnz_gateway_alerts_received_total",
			Help: "Alerts received from the Redis live-feed channel.",
		}),
		decodeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "witnz_gateway_alerts_undecodable_total",
			Help: "Messages on the live-feed channel that were not a protojson alert.v1.Alert.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "witnz_gateway_redis_resubscriptions_total",
			Help: "Times the Redis live-feed subscription was re-established after a loss.",
		}),
	}
	if r := opts.Registerer; r != nil {
		r.MustRegister(f.received, f.decodeErrors, f.reconnects,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "witnz_gateway_alert_subscribers",
				Help: "Live alert streams currently subscribed.",
			}, func() float64 { return float64(f.b.Len()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "witnz_gateway_alert_subscribers_dropped_total",
				Help: "Live alert streams disconnected because they could not keep up.",
			}, func() float64 { return float64(f.b.DroppedTotal()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "witnz_gateway_redis_subscribed",
				Help: "1 while the Redis live-feed subscription is established.",
			}, func() float64 {
				if f.subscribed.Load() {
					return 1
				}
				return 0
			}),
		)
	}
	return f
}

// Subscribe registers a live subscriber for alerts of at least
// minSeverity. Call Close on the subscription when done.
func (f *Feed) Subscribe(minSeverity alertv1.Severity) *broadcast.Subscription[*alertv1.Alert] {
	return f.b.Subscribe(func(a *alertv1.Alert) bool { return a.GetSeverity() >= minSeverity })
}

// Subscribers is the number of live subscribers.
func (f *Feed) Subscribers() int { return f.b.Len() }

// DroppedTotal is the number of subscribers dropped for falling behind.
func (f *Feed) DroppedTotal() uint64 { return f.b.DroppedTotal() }

// Subscribed reports whether the Redis subscription is established now.
func (f *Feed) Subscribed() bool { return f.subscribed.Load() }

// Run follows the channel until ctx ends.
func (f *Feed) Run(ctx context.Context) {
	for ctx.Err() == nil {
		f.follow(ctx)
	}
}

// follow runs one PubSub until ctx ends or its connection has to be
// replaced because it stopped answering.
func (f *Feed) follow(ctx context.Context) {
	const (
		minBackoff = 100 * time.Millisecond
		maxBackoff = 5 * time.Second
	)
	ps := f.rdb.Subscribe(ctx, f.channel)
	// Receive does not watch ctx; closing the PubSub ends a blocked read.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer func() {
		stop()
		ps.Close()
		f.subscribed.Store(false)
	}()

	backoff := minBackoff
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, f.opts.HealthInterval)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if isTimeout(err) {
				if pinged {
					f.lost(errors.New("the subscription connection did not answer PING; replacing it"))
					return
				}
				pinged = true
				if err = ps.Ping(ctx); err == nil {
					continue
				}
			}
			// go-redis has dropped the broken connection; the next
			// Receive dials again and subscribes again.
			f.lost(err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				f.established()
				backoff = minBackoff
			}
		case *redis.Message:
			var a alertv1.Alert
			if err := protojson.Unmarshal([]byte(m.Payload), &a); err != nil {
				f.decodeErrors.Inc()
				f.log.Warn("ignoring a live-feed message that is not an alert", "channel", m.Channel, "bytes", len(m.Payload), "error", err)
				continue
			}
			f.received.Inc()
			f.b.Publish(&a)
		case *redis.Pong:
		}
	}
}

// lost records a failed subscription: a warning when it was up (or on the
// first failure of an outage), debug while it stays down.
func (f *Feed) lost(err error) {
	switch {
	case f.subscribed.Swap(false):
		f.log.Warn("redis live-feed subscription lost; reconnecting", "addr", f.rdb.Options().Addr, "channel", f.channel, "error", err)
		f.warned = true
	case !f.warned:
		f.log.Warn("cannot subscribe to the redis live feed yet; retrying (is redis-server running? check --redis-addr)", "addr", f.rdb.Options().Addr, "error", err)
		f.warned = true
	default:
		f.log.Debug("redis live feed still unavailable", "error", err)
	}
}

// established records a confirmed subscription.
func (f *Feed) established() {
	f.subscribed.Store(true)
	if f.everSubscribed {
		f.reconnects.Inc()
		f.log.Info("redis live-feed subscription re-established", "addr", f.rdb.Options().Addr, "channel", f.channel)
	} else {
		f.log.Info("subscribed to the redis live feed", "addr", f.rdb.Options().Addr, "channel", f.channel)
	}
	f.everSubscribed = true
	f.warned = false
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
