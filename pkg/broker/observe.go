package broker

import (
	"errors"

	"github.com/agentjit/jit/pkg/metrics"
	"github.com/nats-io/nats.go/jetstream"
)

// The broker adapter's instrumentation: every event a Publisher stores,
// every durable consumer's backlog and every message a consume loop gives
// up on or retries is measured here, so services need no code of their own
// for it (pkg/metrics, docs/operations.md "Metrics").

// watch adds the consumer to the jit_consumer_* series until Stop.
func watch(js jetstream.JetStream, cons jetstream.Consumer, cfg ConsumerConfig) func() {
	return metrics.WatchConsumer(js, cons, cfg.Stream, cfg.Durable, cfg.FilterSubjects)
}

// observeTerm counts a message the loop terminated (and a panic).
func observeTerm(durable string, err error) {
	metrics.Terminated.WithLabelValues(durable).Inc()
	if errors.Is(err, ErrPanic) {
		metrics.HandlerPanics.WithLabelValues(durable).Inc()
	}
}

// observeFailure counts a message whose handler failed and that comes again.
func observeFailure(durable string) { metrics.HandlerFailures.WithLabelValues(durable).Inc() }

// Held is how many agents the view holds as suspended (or about to be, see
// Hold): the jit_agents_suspended gauge.
func (v *SuspensionView) Held() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.agents)
}
