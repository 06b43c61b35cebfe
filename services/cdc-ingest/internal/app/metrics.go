package app

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
)

// metrics are cdc-ingest's Prometheus metrics (on --admin-listen /metrics).
type metrics struct {
	entries    *prometheus.CounterVec
	duplicates *prometheus.CounterVec
	batch      *prometheus.HistogramVec
	appendTook *prometheus.HistogramVec
	resent     *prometheus.CounterVec
	alerts     *prometheus.CounterVec
	witnessed  prometheus.Histogram
	read       prometheus.Histogram
}

// latencyBuckets resolve the commit → witnessed latency finely where its
// targets lie (a few milliseconds) and coarsely up to a minute.
var latencyBuckets = []float64{
	0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.0035, 0.004, 0.005, 0.006, 0.007, 0.008, 0.009, 0.010,
	0.0125, 0.015, 0.0175, 0.020, 0.025, 0.030, 0.040, 0.050, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
}

// gauges are read at scrape time.
type gauges struct {
	confirmedLSN func() float64
	lagBytes     func() float64
	heartbeatAge func() float64
	pending      func() float64
	streaming    func() float64
}

func newMetrics(reg prometheus.Registerer, g gauges) *metrics {
	m := &metrics{
		entries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "witnz_cdc_entries_committed_total",
			Help: "Entries the witness quorum acknowledged, by table (replays it skipped are not counted); rate() is rows per second.",
		}, []string{"table"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "witnz_cdc_entries_replayed_total",
			Help: "Entries sent again after a reconnect that the witness skipped as replays, by table.",
		}, []string{"table"}),
		batch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "witnz_cdc_append_batch_entries",
			Help:    "Entries per Append to the witness cluster.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}, []string{"table"}),
		appendTook: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "witnz_cdc_append_seconds",
			Help:    "Time from sending an Append to the quorum's acknowledgement, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"table"}),
		resent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "witnz_cdc_append_resent_total",
			Help: "Pipelined Appends the witness refused because the batch before them was not logged yet, sent again once it was, by table.",
		}, []string{"table"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "witnz_cdc_alerts_raised_total",
			Help: "Alerts delivered to the alert service, by type and severity.",
		}, []string{"type", "severity"}),
		witnessed: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "witnz_cdc_commit_to_witnessed_seconds",
			Help:    "Per transaction with protected rows: from its commit (PostgreSQL's commit timestamp) until the witness quorum acknowledged every entry of it; the time a committed row stays unwitnessed. Clock skew between the database server and this host adds to it.",
			Buckets: latencyBuckets,
		}),
		read: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "witnz_cdc_commit_to_read_seconds",
			Help:    "Per transaction with protected rows: from its commit (PostgreSQL's commit timestamp) until cdc-ingest read its commit record from the stream.",
			Buckets: latencyBuckets,
		}),
	}
	reg.MustRegister(m.entries, m.duplicates, m.batch, m.appendTook, m.resent, m.alerts, m.witnessed, m.read,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "witnz_cdc_slot_confirmed_lsn", Help: "Position confirmed to PostgreSQL (the slot's confirmed flush LSN as a number)."}, g.confirmedLSN),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "witnz_cdc_slot_lag_bytes", Help: "WAL bytes between the server's position and the slot's confirmed flush LSN, at the last check."}, g.lagBytes),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "witnz_cdc_heartbeat_age_seconds", Help: "Seconds since the newest heartbeat came back through the stream (-1 before the first)."}, g.heartbeatAge),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "witnz_cdc_pending_entries", Help: "Entries and alerts read but not yet acknowledged."}, g.pending),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "witnz_cdc_streaming", Help: "1 while the replication stream is connected."}, g.streaming),
	)
	return m
}

func (m *metrics) onAppend(table string, entries, duplicates int, took time.Duration) {
	m.entries.WithLabelValues(table).Add(float64(entries - min(duplicates, entries)))
	if duplicates > 0 {
		m.duplicates.WithLabelValues(table).Add(float64(duplicates))
	}
	m.batch.WithLabelValues(table).Observe(float64(entries))
	m.appendTook.WithLabelValues(table).Observe(took.Seconds())
}

func (m *metrics) onResend(table string) { m.resent.WithLabelValues(table).Inc() }

func (m *metrics) onWitnessed(commitTime, read, witnessed time.Time) {
	m.read.Observe(max(read.Sub(commitTime), 0).Seconds())
	m.witnessed.Observe(max(witnessed.Sub(commitTime), 0).Seconds())
}

// alertSender delivers alerts.
type alertSender interface {
	Send(ctx context.Context, alerts []*alertv1.Alert) error
}

// countingSender counts the alerts it delivers.
type countingSender struct {
	alertSender
	m *metrics
}

func (s countingSender) Send(ctx context.Context, batch []*alertv1.Alert) error {
	if err := s.alertSender.Send(ctx, batch); err != nil {
		return err
	}
	for _, a := range batch {
		s.m.alerts.WithLabelValues(a.GetType(), a.GetSeverity().String()).Inc()
	}
	return nil
}
