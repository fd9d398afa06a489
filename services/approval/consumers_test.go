package approval

import (
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/metrics"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// TestConsumersDeletedFromUnderTheService: each of the service's durable
// consumers, deleted while it runs (as `nats consumer rm` with the
// administrator's credential does), is made again, and the work that
// comes through it afterwards is done exactly once: an approved decision
// is granted once, an unanswered request times out once, a withdrawal and
// a suspension deny a waiting request once.
func TestConsumersDeletedFromUnderTheService(t *testing.T) {
	cases := []struct {
		durable, stream string
		// work publishes what the consumer handles and checks that it was
		// done once.
		work func(t *testing.T, h *harness)
	}{
		{durable: DurableDecisions, stream: broker.AuditStream, work: func(t *testing.T, h *harness) {
			reqID := events.NewID("req")
			h.emitPolicy(approved(agentIntel, reqID, time.Minute))
			g := h.waitGranted(reqID)
			l, ok := h.lease(agentIntel, reqID)
			require.True(t, ok)
			require.Equal(t, events.LeaseActive, l.State)
			require.Equal(t, g.GrantID, l.Grant.GrantID)
			h.barrier()
			h.requireOneGranted(reqID)
		}},
		{durable: DurableTimeouts, stream: pendingStream, work: func(t *testing.T, h *harness) {
			reqID := events.NewID("req")
			dec := pendingDecision(reqID, time.Minute)
			dl := time.Now().Add(1500 * time.Millisecond).UTC()
			dec.ApprovalDeadline = &dl
			h.emitPolicy(dec)
			h.waitPending(agentOptimizer, reqID)
			d := h.waitDecision(reqID, "timeout")
			require.Equal(t, events.ModeTimeout, d.Mode)
			h.barrier()
			require.Len(t, h.decisionsBy(reqID, "timeout"), 1)
		}},
		{durable: DurableWithdrawals, stream: broker.AuditStream, work: func(t *testing.T, h *harness) {
			reqID := events.NewID("req")
			h.emitPolicy(pendingDecision(reqID, time.Minute))
			h.waitPending(agentOptimizer, reqID)
			w := events.Withdrawal{RequestID: reqID, Agent: agentOptimizer, WithdrawnAt: time.Now().UTC(),
				WithdrawnBy: events.Actor{Kind: events.ActorAgent, ID: agentOptimizer}}
			_, _, err := broker.NewPublisher(h.env.JS, "requester").Emit(ctxT(t), events.WithdrawnEventID(reqID),
				events.TypeWithdrawn, agentOptimizer, w, events.WithRequestID(reqID))
			require.NoError(t, err)
			d := h.waitDecision(reqID, "withdrawn")
			require.Equal(t, events.ModeWithdrawn, d.Mode)
			require.Eventually(t, func() bool { _, ok := h.pendingKey(agentOptimizer, reqID); return !ok }, waitFor, tick)
			h.barrier()
			require.Len(t, h.decisionsBy(reqID, "withdrawn"), 1)
		}},
		{durable: DurableSuspensions, stream: broker.AuditStream, work: func(t *testing.T, h *harness) {
			reqID := events.NewID("req")
			h.emitPolicy(pendingDecision(reqID, time.Minute))
			h.waitPending(agentOptimizer, reqID)
			sus := events.Suspension{Agent: agentOptimizer, Rule: "price-floor", GuardrailID: "grd_1",
				SuspendedBy: events.Actor{Kind: events.ActorGuardrail, ID: "price-floor"}, SuspendedAt: time.Now().UTC()}
			h.suspend(agentOptimizer)
			_, _, err := h.policy.Emit(ctxT(t), "grd_1/suspended", events.TypeSuspended, agentOptimizer, sus)
			require.NoError(t, err)
			d := h.waitDecision(reqID, "suspended")
			require.Equal(t, events.ModeSuspended, d.Mode)
			h.barrier()
			require.Len(t, h.decisionsBy(reqID, "suspended"), 1)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.durable, func(t *testing.T) {
			h := newHarness(t)
			h.start()
			h.barrier() // running, with a grant before the deletion
			before := testutil.ToFloat64(metrics.ConsumerRecreated.WithLabelValues(tc.durable))

			require.NoError(t, h.env.JS.DeleteConsumer(ctxT(t), tc.stream, tc.durable))
			require.Eventually(t, func() bool {
				return testutil.ToFloat64(metrics.ConsumerRecreated.WithLabelValues(tc.durable)) == before+1
			}, waitFor, tick, "made again")
			_, err := h.env.JS.Consumer(ctxT(t), tc.stream, tc.durable)
			require.NoError(t, err)
			tc.work(t, h)

			// What the consumer handled before the deletion came again
			// (it is made again after the ack floor read at the start)
			// and was not done twice.
			for id, n := range h.grantedCounts() {
				require.Equal(t, 1, n, "jit.granted for %s", id)
			}
			require.Empty(t, h.audit("jit.rejected.>"))
		})
	}
}
