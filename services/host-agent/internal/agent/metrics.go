package agent

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	streamUp      prometheus.Gauge
	pending       prometheus.Gauge
	registrations prometheus.Counter
	heartbeats    prometheus.Counter
	acked         prometheus.Counter
	failures      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		streamUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "witnz_agent_stream_up",
			Help: "1 while the event stream to the alert service is up.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "witnz_agent_events_pending",
			Help: "Events sent or waiting to be sent that the alert service has not acknowledged.",
		}),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "witnz_agent_registrations_total",
			Help: "Successful RegisterAgent calls.",
		}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "witnz_agent_heartbeats_sent_total",
			Help: "Heartbeats sent on the event stream.",
		}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "witnz_agent_events_acked_total",
			Help: "Events the alert service acknowledged.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "witnz_agent_connection_failures_total",
			Help: "Registrations or event streams that failed and were retried.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.streamUp, m.pending, m.registrations, m.heartbeats, m.acked, m.failures)
	}
	return m
}
