package policy

import (
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/metrics"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// TestConsumerDeletedFromUnderThePolicy: the durable consumer on
// jit.requested.>, deleted while the service runs (as `nats consumer rm`
// with the administrator's credential does), is made again; a request
// stored while it was gone and one stored after are decided once each. The
// request decided before comes again (the consumer is made again after the
// ack floor the service read at its start, here before it): its decision
// has the same id and is not stored twice.
func TestConsumerDeletedFromUnderThePolicy(t *testing.T) {
	env := natstest.Setup(t)
	src := env.ApplyConfig(t, exampleYAML(t))
	startPolicy(t, env, src)
	publishRequest(t, env, "req-before", "market-intel", 30*time.Minute, "data:write")
	waitDecisions(t, env, 1)
	before := testutil.ToFloat64(metrics.ConsumerRecreated.WithLabelValues(Durable))

	require.NoError(t, env.JS.DeleteConsumer(t.Context(), broker.AuditStream, Durable))
	publishRequest(t, env, "req-gone", "market-intel", 30*time.Minute, "data:write")
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(metrics.ConsumerRecreated.WithLabelValues(Durable)) == before+1
	}, 10*time.Second, 10*time.Millisecond, "made again")
	publishRequest(t, env, "req-after", "market-intel", 30*time.Minute, "data:write")

	got := waitDecisions(t, env, 3) // fails if a decision is stored twice
	for _, id := range []string{"req-before", "req-gone", "req-after"} {
		d, ok := got[id+"/policy"]
		require.True(t, ok, id)
		require.Equal(t, events.OutcomeApproved, d.decision.Outcome)
	}
	require.Eventually(t, func() bool {
		i := consumerInfo(t, env)
		return i.NumPending == 0 && i.NumAckPending == 0
	}, 10*time.Second, 20*time.Millisecond, "everything acknowledged")
	require.Empty(t, env.AuditEvents(t, "jit.rejected.>"))
}

// TestHistoryConsumerDeletedFromUnderThePolicy: the history's ordered
// consumer, deleted while the service runs, is made again by the NATS
// client from the next sequence; a decision waits for the history to hold
// its request, so a request decided after the deletion shows the history
// goes on.
func TestHistoryConsumerDeletedFromUnderThePolicy(t *testing.T) {
	env := natstest.Setup(t)
	src := env.ApplyConfig(t, exampleYAML(t))
	startPolicy(t, env, src)
	publishRequest(t, env, "req-before", "market-intel", 30*time.Minute, "data:write")
	waitDecisions(t, env, 1)

	st, err := env.JS.Stream(t.Context(), broker.AuditStream)
	require.NoError(t, err)
	deleted := 0
	names := st.ConsumerNames(t.Context())
	for name := range names.Name() {
		if name != Durable {
			require.NoError(t, env.JS.DeleteConsumer(t.Context(), broker.AuditStream, name))
			deleted++
		}
	}
	require.NoError(t, names.Err())
	require.Equal(t, 1, deleted, "the history's consumer")

	publishRequest(t, env, "req-after", "market-intel", 30*time.Minute, "data:write")
	got := waitDecisions(t, env, 2)
	require.Contains(t, got, "req-after/policy")
}
