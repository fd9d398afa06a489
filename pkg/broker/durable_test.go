package broker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/metrics"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// handled records every delivery a handler saw, by event id.
type handled struct {
	mu    sync.Mutex
	seen  map[string][]broker.Delivery
	total int
}

func (h *handled) handler() broker.Handler {
	return func(_ context.Context, e events.Event, d broker.Delivery) error {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.seen == nil {
			h.seen = map[string][]broker.Delivery{}
		}
		h.seen[e.ID()] = append(h.seen[e.ID()], d)
		h.total++
		return nil
	}
}

func (h *handled) deliveries(id string) []broker.Delivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]broker.Delivery(nil), h.seen[id]...)
}

func (h *handled) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.total
}

func emit(t *testing.T, pub *broker.Publisher, ids ...string) uint64 {
	t.Helper()
	var seq uint64
	for _, id := range ids {
		_, s, err := pub.Emit(t.Context(), id, events.TypeGuardrailFired, "a1",
			events.GuardrailFired{Agent: "a1", Rule: "r", FiredAt: time.Now()})
		require.NoError(t, err)
		seq = s
	}
	return seq
}

func durableInfo(t *testing.T, js jetstream.JetStream, durable string) (*jetstream.ConsumerInfo, error) {
	t.Helper()
	c, err := js.Consumer(t.Context(), broker.AuditStream, durable)
	if err != nil {
		return nil, err
	}
	return c.Info(t.Context())
}

// A durable consumer deleted from under its consume loop is created again
// with the same configuration, starting after the ack floor the loop last
// read: what was acknowledged does not come again, and every event stored
// after the deletion (while the consumer was gone, and after) is handled
// once. A restart of the service on the re-created consumer keeps it.
func TestConsumeRecreatesADeletedConsumer(t *testing.T) {
	broker.SetDurablePoll(t, 20*time.Millisecond)
	env := natstest.Setup(t)
	pub := broker.NewPublisher(env.JS, "test")
	const durable = "test-recreated"
	cfg := broker.ConsumerConfig{Durable: durable, FilterSubjects: []string{"guardrail.fired.>"}, AckWait: 7 * time.Second, MaxAckPending: 100}
	var h handled
	c, err := broker.Consume(t.Context(), env.JS, cfg, h.handler(), nil, env.Log)
	require.NoError(t, err)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			c.Stop()
		}
	})

	last := emit(t, pub, "ev-1", "ev-2", "ev-3", "ev-4", "ev-5")
	require.Eventually(t, func() bool {
		ci, err := durableInfo(t, env.JS, durable)
		return err == nil && ci.AckFloor.Stream == last && c.Floor() == last
	}, 10*time.Second, 5*time.Millisecond, "acknowledged, and the loop has read the floor")
	before := testutil.ToFloat64(metrics.ConsumerRecreated.WithLabelValues(durable))

	require.NoError(t, env.JS.DeleteConsumer(t.Context(), broker.AuditStream, durable))
	emit(t, pub, "ev-6", "ev-7") // while it may be gone
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(metrics.ConsumerRecreated.WithLabelValues(durable)) == before+1
	}, 10*time.Second, 5*time.Millisecond, "created again")
	emit(t, pub, "ev-8")
	require.Eventually(t, func() bool { return h.count() == 8 }, 10*time.Second, 5*time.Millisecond)

	ci, err := durableInfo(t, env.JS, durable)
	require.NoError(t, err)
	require.Equal(t, jetstream.DeliverByStartSequencePolicy, ci.Config.DeliverPolicy)
	require.Equal(t, last+1, ci.Config.OptStartSeq, "starts after the last ack floor")
	require.Equal(t, []string{"guardrail.fired.>"}, ci.Config.FilterSubjects)
	require.Equal(t, jetstream.AckExplicitPolicy, ci.Config.AckPolicy)
	require.Equal(t, 7*time.Second, ci.Config.AckWait)
	require.Equal(t, 100, ci.Config.MaxAckPending)
	for i := 1; i <= 8; i++ {
		require.Len(t, h.deliveries(fmt.Sprintf("ev-%d", i)), 1, "ev-%d handled once", i)
	}
	require.False(t, h.deliveries("ev-8")[0].Again, "stored after the consumer was made again: new")

	// A restart binds the re-created consumer (whose start the broker does
	// not let an update change) and goes on from its position.
	c.Stop()
	stopped = true
	c2, err := broker.Consume(t.Context(), env.JS, cfg, h.handler(), nil, env.Log)
	require.NoError(t, err)
	t.Cleanup(c2.Stop)
	emit(t, pub, "ev-9")
	require.Eventually(t, func() bool { return h.count() == 9 }, 10*time.Second, 5*time.Millisecond)
	require.Len(t, h.deliveries("ev-9"), 1)
	require.Eventually(t, func() bool {
		ci, err := durableInfo(t, env.JS, durable)
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
	}, 10*time.Second, 5*time.Millisecond)
}

// Messages acknowledged after the floor the loop last read come again when
// the consumer is created again, marked Again (their delivery count starts
// over): handlers are idempotent for them. Messages stored after that are
// new.
func TestRecreatedConsumerMarksWhatComesAgain(t *testing.T) {
	broker.SetDurablePoll(t, time.Hour) // the floor stays the one read at creation
	env := natstest.Setup(t)
	pub := broker.NewPublisher(env.JS, "test")
	const durable = "test-again"
	var h handled
	c, err := broker.Consume(t.Context(), env.JS, broker.ConsumerConfig{Durable: durable, FilterSubjects: []string{"guardrail.fired.>"}},
		h.handler(), nil, env.Log)
	require.NoError(t, err)
	t.Cleanup(c.Stop)
	last := emit(t, pub, "ev-1", "ev-2", "ev-3")
	require.Eventually(t, func() bool {
		ci, err := durableInfo(t, env.JS, durable)
		return err == nil && ci.AckFloor.Stream == last
	}, 10*time.Second, 5*time.Millisecond)
	require.Zero(t, c.Floor())
	before := testutil.ToFloat64(metrics.ConsumerRecreated.WithLabelValues(durable))

	require.NoError(t, env.JS.DeleteConsumer(t.Context(), broker.AuditStream, durable))
	require.Eventually(t, func() bool { return h.count() == 6 }, 10*time.Second, 5*time.Millisecond, "the three again")
	require.Equal(t, before+1, testutil.ToFloat64(metrics.ConsumerRecreated.WithLabelValues(durable)))
	for i := 1; i <= 3; i++ {
		ds := h.deliveries(fmt.Sprintf("ev-%d", i))
		require.Len(t, ds, 2)
		require.False(t, ds[0].Again)
		require.True(t, ds[1].Again, "delivered before the deletion: maybe handled")
		require.EqualValues(t, 1, ds[1].NumDelivered)
	}
	emit(t, pub, "ev-4")
	require.Eventually(t, func() bool { return h.count() == 7 }, 10*time.Second, 5*time.Millisecond)
	require.False(t, h.deliveries("ev-4")[0].Again)
}

// A consumer that cannot be made again (its stream is gone) is retried
// with a bounded backoff, shows as not readable, and Stop still returns.
func TestConsumerThatCannotBeMadeAgainIsRetriedUntilStop(t *testing.T) {
	env := natstest.Setup(t)
	js := env.JS
	_, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "SCRATCH", Subjects: []string{"scratch.>"}})
	require.NoError(t, err)
	const durable = "test-nostream"
	c, err := broker.ConsumeRaw(t.Context(), js, broker.ConsumerConfig{Stream: "SCRATCH", Durable: durable},
		func(context.Context, []byte, broker.Delivery) error { return nil }, env.Log)
	require.NoError(t, err)
	require.NoError(t, js.DeleteStream(t.Context(), "SCRATCH"))
	require.Eventually(t, func() bool {
		_, err := js.Consumer(t.Context(), "SCRATCH", durable)
		return errors.Is(err, jetstream.ErrStreamNotFound)
	}, 10*time.Second, 5*time.Millisecond)
	done := make(chan struct{})
	go func() { c.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("Stop did not return while the consumer could not be made again")
	}
}
