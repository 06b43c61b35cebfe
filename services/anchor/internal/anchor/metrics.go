package anchor

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the anchor service's own metrics.
type Metrics struct {
	anchors    *prometheus.CounterVec
	lastAnchor prometheus.Gauge
	checks     *prometheus.CounterVec
	pending    prometheus.Gauge
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		anchors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "witnz_anchor_attempts_total",
			Help: "Anchoring attempts by result: anchored, failed, nothing (no cosigned checkpoint yet).",
		}, []string{"result"}),
		lastAnchor: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "witnz_anchor_last_anchored_timestamp_seconds",
			Help: "Time of the last object anchored and recorded by the witnesses.",
		}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "witnz_anchor_checks_total",
			Help: "Anchor checks (one per table of each receipt checked, or per damaged object) by result: ok, failed.",
		}, []string{"result"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "witnz_anchor_pending_receipts",
			Help: "Objects written to the sink whose receipt the witnesses have not recorded yet.",
		}),
	}
	reg.MustRegister(m.anchors, m.lastAnchor, m.checks, m.pending)
	return m
}

func (m *Metrics) attempt(result string) {
	if m != nil {
		m.anchors.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) anchored(unixSeconds float64) {
	if m != nil {
		m.lastAnchor.Set(unixSeconds)
	}
}

func (m *Metrics) checked(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.checks.WithLabelValues("ok").Inc()
	} else {
		m.checks.WithLabelValues("failed").Inc()
	}
}

func (m *Metrics) setPending(n int) {
	if m != nil {
		m.pending.Set(float64(n))
	}
}
