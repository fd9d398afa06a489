package approval

import (
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

// A guardrail suspends an agent while two of its requests wait for a human:
// both are denied at once (mode suspended), so the waiting agent is
// released, and a later answer is refused.
func TestSuspensionReleasesWaitingRequests(t *testing.T) {
	h := newHarness(t)
	h.start()
	r1, r2 := events.NewID("req"), events.NewID("req")
	h.emitPolicy(pendingDecision(r1, time.Minute))
	h.emitPolicy(pendingDecision(r2, time.Minute))
	h.waitPending(agentOptimizer, r1)
	h.waitPending(agentOptimizer, r2)

	sus := events.Suspension{Agent: agentOptimizer, Rule: "price-floor", GuardrailID: "grd_1",
		SuspendedBy: events.Actor{Kind: events.ActorGuardrail, ID: "price-floor"}, SuspendedAt: time.Now().UTC()}
	h.suspend(agentOptimizer)
	_, _, err := h.policy.Emit(ctxT(t), "grd_1/suspended", events.TypeSuspended, agentOptimizer, sus)
	require.NoError(t, err)

	for _, reqID := range []string{r1, r2} {
		d := h.waitDecision(reqID, "suspended")
		require.Equal(t, events.OutcomeDenied, d.Outcome)
		require.Equal(t, events.ModeSuspended, d.Mode)
		require.Equal(t, sus.SuspendedBy, d.DecidedBy)
		require.Contains(t, d.Reason, "suspended by guardrail price-floor")
		require.Eventually(t, func() bool { _, ok := h.pendingKey(agentOptimizer, reqID); return !ok }, waitFor, tick)
	}
	_, err = h.approve("dev-alice", r1, "too late")
	var ae *broker.APIError
	require.ErrorAs(t, err, &ae, "an answer after the suspension is refused")

	// The same suspension again (a redelivery under another id) decides
	// nothing twice.
	_, _, err = h.policy.Emit(ctxT(t), "grd_1/suspended-again", events.TypeSuspended, agentOptimizer, sus)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		ci, err := h.env.JS.Consumer(ctxT(t), broker.AuditStream, DurableSuspensions)
		return err == nil && ci.CachedInfo().NumPending == 0 && ci.CachedInfo().NumAckPending == 0 &&
			ci.CachedInfo().AckFloor.Stream >= ci.CachedInfo().Delivered.Stream && ci.CachedInfo().Delivered.Consumer >= 2
	}, waitFor, tick, "the suspension consumer handled both events")
	require.Len(t, h.decisionsBy(r1, "suspended"), 1)
	require.Len(t, h.decisionsBy(r2, "suspended"), 1)
	require.Empty(t, h.decisionsBy(r1, "human"))
}
