package metrics

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// ConsumerState is what one durable consumer holds back: the figures an
// operator needs to see a service fall behind or a message stuck.
type ConsumerState struct {
	Stream  string `json:"stream"`
	Durable string `json:"durable"`
	// Pending is how many matching messages are not delivered yet.
	Pending uint64 `json:"pending"`
	// AckPending is how many were delivered and not yet acknowledged.
	AckPending int `json:"ack_pending"`
	// Redelivered is how many of those were delivered more than once.
	Redelivered int `json:"redelivered"`
	// OldestUnackedAge is how long ago the broker stored the first message
	// past the consumer's ack floor, when messages wait for an
	// acknowledgement (0 otherwise): a stuck message shows as a growing age.
	OldestUnackedAge time.Duration `json:"oldest_unacked_age_ns"`
	// Error, if set, is why the consumer's state could not be read (it was
	// deleted, the broker does not answer).
	Error string `json:"error,omitempty"`
}

type watchedConsumer struct {
	js      jetstream.JetStream
	cons    jetstream.Consumer
	stream  string
	durable string
	filters []string
	refs    int
}

type consumerSet struct {
	mu sync.Mutex
	m  map[string]*watchedConsumer
}

var consumerRegistry = &consumerSet{m: map[string]*watchedConsumer{}}

// WatchConsumer adds the durable consumer cons of stream to the consumer
// series and to Consumers until the returned function is called (the
// consume loop calls it when it stops).
func WatchConsumer(js jetstream.JetStream, cons jetstream.Consumer, stream, durable string, filters []string) (unwatch func()) {
	k := stream + "/" + durable
	r := consumerRegistry
	r.mu.Lock()
	w := r.m[k]
	if w == nil {
		w = &watchedConsumer{stream: stream, durable: durable}
		r.m[k] = w
	}
	// The latest handle wins: a service restarted in the same process
	// reads its consumer through its new connection.
	w.js, w.cons, w.filters = js, cons, slices.Clone(filters)
	w.refs++
	r.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			if w.refs--; w.refs == 0 && r.m[k] == w {
				delete(r.m, k)
			}
		})
	}
}

// Consumers reads the state of every watched consumer whose durable name
// is service's own ("approval", "approval-timeouts"), or of every one if
// service is empty, sorted by stream and name. Each read is bounded by ctx.
func Consumers(ctx context.Context, service string) []ConsumerState {
	r := consumerRegistry
	r.mu.Lock()
	ws := make([]*watchedConsumer, 0, len(r.m))
	for _, w := range r.m {
		if service == "" || w.durable == service || strings.HasPrefix(w.durable, service+"-") {
			ws = append(ws, w)
		}
	}
	r.mu.Unlock()
	out := make([]ConsumerState, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Go(func() { out[i] = w.state(ctx) })
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b ConsumerState) int {
		return strings.Compare(a.Stream+"/"+a.Durable, b.Stream+"/"+b.Durable)
	})
	return out
}

func (w *watchedConsumer) state(ctx context.Context) ConsumerState {
	st := ConsumerState{Stream: w.stream, Durable: w.durable}
	consumerRegistry.mu.Lock()
	js, cons, filters := w.js, w.cons, w.filters
	consumerRegistry.mu.Unlock()
	info, err := cons.Info(ctx)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	st.Pending, st.AckPending, st.Redelivered = info.NumPending, info.NumAckPending, info.NumRedelivered
	if info.NumAckPending > 0 {
		st.OldestUnackedAge = oldestAge(ctx, js, w.stream, filters, info.AckFloor.Stream+1)
	}
	return st
}

// oldestAge is the age of the first message of stream at or after seq that
// filters match (0 if it cannot be read).
func oldestAge(ctx context.Context, js jetstream.JetStream, stream string, filters []string, seq uint64) time.Duration {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	if len(filters) == 0 {
		filters = []string{""}
	}
	var oldest time.Time
	for _, f := range filters {
		var opts []jetstream.GetMsgOpt
		if f != "" {
			opts = append(opts, jetstream.WithGetMsgSubject(f))
		}
		m, err := s.GetMsg(ctx, seq, opts...)
		if err != nil {
			continue
		}
		if oldest.IsZero() || m.Time.Before(oldest) {
			oldest = m.Time
		}
	}
	if oldest.IsZero() {
		return 0
	}
	return max(time.Since(oldest), 0)
}

var (
	descConsumerPending     = prometheus.NewDesc("jit_consumer_pending_messages", "Messages a durable consumer has not delivered yet (its backlog).", []string{"stream", "consumer"}, nil)
	descConsumerAckPending  = prometheus.NewDesc("jit_consumer_ack_pending_messages", "Messages a durable consumer delivered and that are not acknowledged yet.", []string{"stream", "consumer"}, nil)
	descConsumerRedelivered = prometheus.NewDesc("jit_consumer_redelivered_messages", "Unacknowledged messages of a durable consumer that were delivered more than once.", []string{"stream", "consumer"}, nil)
	descConsumerOldest      = prometheus.NewDesc("jit_consumer_oldest_unacked_age_seconds", "Age of the first message past a durable consumer's ack floor while messages wait for acknowledgement (0 when none wait).", []string{"stream", "consumer"}, nil)
	descConsumerUp          = prometheus.NewDesc("jit_consumer_up", "1 if the durable consumer's state could be read from the broker, 0 if not (deleted, broker unreachable).", []string{"stream", "consumer"}, nil)
)

type consumerCollector struct{}

var consumers prometheus.Collector = consumerCollector{}

func (consumerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConsumerPending, descConsumerAckPending, descConsumerRedelivered, descConsumerOldest, descConsumerUp} {
		ch <- d
	}
}

func (consumerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for _, st := range Consumers(ctx, "") {
		l := []string{st.Stream, st.Durable}
		up := 1.0
		if st.Error != "" {
			up = 0
		}
		ch <- prometheus.MustNewConstMetric(descConsumerUp, prometheus.GaugeValue, up, l...)
		if st.Error != "" {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descConsumerPending, prometheus.GaugeValue, float64(st.Pending), l...)
		ch <- prometheus.MustNewConstMetric(descConsumerAckPending, prometheus.GaugeValue, float64(st.AckPending), l...)
		ch <- prometheus.MustNewConstMetric(descConsumerRedelivered, prometheus.GaugeValue, float64(st.Redelivered), l...)
		ch <- prometheus.MustNewConstMetric(descConsumerOldest, prometheus.GaugeValue, st.OldestUnackedAge.Seconds(), l...)
	}
}
