package notify

import (
	"github.com/agentjit/jit/pkg/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Series is one of the counters as a Prometheus series.
type Series struct {
	Name, Help string
	Value      int64
}

// Series are the counters' series, under the names the console's own
// /metrics has always used.
func (c *Counters) Series() []Series {
	return []Series{
		{"jit_notifications_delivered_total", "Notifications delivered to a notifier.", c.Delivered.Load()},
		{"jit_notifications_failed_total", "Notifications that failed after every attempt.", c.Failed.Load()},
		{"jit_notifications_dropped_total", "Notifications dropped because the queue was full.", c.Dropped.Load()},
		{"jit_notification_retries_total", "Notification attempts retried after a failure.", c.Retries.Load()},
	}
}

// ProvideMetrics puts c's series (Series) on the process's /metrics until
// remove is called.
func ProvideMetrics(c *Counters) (remove func()) {
	return metrics.Provide("jit_notifications", func(ch chan<- prometheus.Metric) {
		for _, x := range c.Series() {
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(x.Name, x.Help, nil, nil), prometheus.CounterValue, float64(x.Value))
		}
	})
}
