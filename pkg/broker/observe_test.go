package broker_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/metrics"
	"github.com/agentjit/jit/pkg/metrics/metricstest"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// TestConsumeRecoversPanic: a handler that panics on one event does not
// take the service down: that message is terminated (not redelivered),
// reported as jit.rejected (stage event, code internal) and counted, and the
// loop goes on handling the events before and after it.
func TestConsumeRecoversPanic(t *testing.T) {
	env := natstest.Setup(t)
	ctx := context.Background()
	pub := broker.NewPublisher(env.JS, "test")
	emit := func(id, agent, detail string) {
		t.Helper()
		_, _, err := pub.Emit(ctx, id, events.TypeGuardrailFired, agent, events.GuardrailFired{Agent: agent, Rule: "r", Detail: detail, FiredAt: time.Now()})
		require.NoError(t, err)
	}
	emit("ev-1", "a1", "fine")
	emit("ev-2", "a2", "boom")
	emit("ev-3", "a2", "fine") // same agent, after the panic: the agent's worker still runs
	const durable = "panicky"
	panicsBefore := testutil.ToFloat64(metrics.HandlerPanics.WithLabelValues(durable))
	rejectedBefore := testutil.ToFloat64(metrics.Rejected.WithLabelValues(events.StageEvent, events.CodeInternal))

	var (
		mu      sync.Mutex
		handled = map[string]int{}
	)
	c, err := broker.Consume(ctx, env.JS, broker.ConsumerConfig{Durable: durable, FilterSubjects: []string{"guardrail.fired.>"}},
		func(_ context.Context, e events.Event, _ broker.Delivery) error {
			g, err := events.DataAs[events.GuardrailFired](e)
			if err != nil {
				return err
			}
			mu.Lock()
			handled[e.ID()]++
			mu.Unlock()
			if g.Detail == "boom" {
				var m map[string]int
				m["nil map"] = 1 // a real bug: a nil map write
			}
			return nil
		}, pub.RejectMalformed(durable), env.Log)
	require.NoError(t, err)
	t.Cleanup(c.Stop)
	emit("ev-4", "a1", "fine")

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return handled["ev-1"] > 0 && handled["ev-3"] > 0 && handled["ev-4"] > 0
	}, 10*time.Second, 10*time.Millisecond, "events before and after the panic are handled")

	var rej events.Rejection
	require.Eventually(t, func() bool {
		got := env.AuditEvents(t, "jit.rejected.a2")
		if len(got) != 1 {
			return false
		}
		e, err := events.Decode(got[0].Data)
		require.NoError(t, err)
		rej, err = events.DataAs[events.Rejection](e)
		require.NoError(t, err)
		return true
	}, 10*time.Second, 10*time.Millisecond, "the panic is reported as jit.rejected")
	require.Equal(t, events.StageEvent, rej.Stage)
	require.Equal(t, events.CodeInternal, rej.Code)
	require.Equal(t, "guardrail.fired.a2", rej.Subject)
	require.Contains(t, rej.Message, "nil map")

	cons, err := env.JS.Consumer(ctx, broker.AuditStream, durable)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		ci, err := cons.Info(ctx)
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
	}, 10*time.Second, 10*time.Millisecond, "the panicking message is terminated, not left to redeliver")
	mu.Lock()
	require.Equal(t, 1, handled["ev-2"], "the panicking message is not redelivered")
	mu.Unlock()
	require.Equal(t, panicsBefore+1, testutil.ToFloat64(metrics.HandlerPanics.WithLabelValues(durable)))
	require.Equal(t, rejectedBefore+1, testutil.ToFloat64(metrics.Rejected.WithLabelValues(events.StageEvent, events.CodeInternal)))
}

// TestStuckMessageShows: a message whose handler keeps failing is retried,
// and shows in its consumer's state (and so in the jit_consumer_* series):
// unacknowledged, redelivered, with a growing age; the failures are counted.
func TestStuckMessageShows(t *testing.T) {
	env := natstest.Setup(t)
	ctx := context.Background()
	pub := broker.NewPublisher(env.JS, "test")
	_, _, err := pub.Emit(ctx, "ev-stuck", events.TypeGuardrailFired, "a1", events.GuardrailFired{Agent: "a1", Rule: "r", FiredAt: time.Now()})
	require.NoError(t, err)
	const durable = "stuck-probe"
	failuresBefore := testutil.ToFloat64(metrics.HandlerFailures.WithLabelValues(durable))
	c, err := broker.Consume(ctx, env.JS, broker.ConsumerConfig{Durable: durable, FilterSubjects: []string{"guardrail.fired.>"}},
		func(context.Context, events.Event, broker.Delivery) error { return errors.New("the store is down") }, nil, env.Log)
	require.NoError(t, err)
	t.Cleanup(c.Stop)

	var st metrics.ConsumerState
	require.Eventually(t, func() bool {
		for _, s := range metrics.Consumers(ctx, "stuck") {
			if s.Durable == durable {
				st = s
			}
		}
		return st.AckPending == 1 && st.Redelivered == 1 && st.OldestUnackedAge > 200*time.Millisecond
	}, 10*time.Second, 20*time.Millisecond, "the stuck message shows: %+v", st)
	require.Empty(t, st.Error)
	require.Equal(t, broker.AuditStream, st.Stream)
	require.GreaterOrEqual(t, testutil.ToFloat64(metrics.HandlerFailures.WithLabelValues(durable)), failuresBefore+2)

	fam := metricstest.ScrapeHandler(t, metrics.Handler())
	age, ok := fam.Value("jit_consumer_oldest_unacked_age_seconds", "consumer", durable)
	require.True(t, ok)
	require.Greater(t, age, 0.2)
}
