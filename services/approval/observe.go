package approval

import (
	"github.com/agentjit/jit/pkg/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// ProvideNotificationMetrics puts the notification counters c (Counters)
// on the process's /metrics under the names the console's own /metrics
// has always used, until remove is called.
func ProvideNotificationMetrics(c *NotifyCounters) (remove func()) {
	type counter struct {
		desc *prometheus.Desc
		v    func() int64
	}
	cs := []counter{
		{prometheus.NewDesc("jit_notifications_delivered_total", "Notifications delivered to a notifier.", nil, nil), c.Delivered.Load},
		{prometheus.NewDesc("jit_notifications_failed_total", "Notifications that failed after every attempt.", nil, nil), c.Failed.Load},
		{prometheus.NewDesc("jit_notifications_dropped_total", "Notifications dropped because the queue was full.", nil, nil), c.Dropped.Load},
		{prometheus.NewDesc("jit_notification_retries_total", "Notification attempts retried after a failure.", nil, nil), c.Retries.Load},
	}
	return metrics.Provide("jit_notifications", func(ch chan<- prometheus.Metric) {
		for _, x := range cs {
			ch <- prometheus.MustNewConstMetric(x.desc, prometheus.CounterValue, float64(x.v()))
		}
	})
}
