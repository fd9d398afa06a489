package approval

import (
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

// A withdrawal that looked for live pending records just before the record
// was stored must not take the record for an ended request: it looks again
// (and the next delivery denies it), so the withdrawal is never lost.
func TestWithdrawalRacingThePendingRecordLooksAgain(t *testing.T) {
	h := newHarness(t)
	svc := h.start()
	reqID := events.NewID("req")
	h.emitPolicy(pendingDecision(reqID, time.Minute))
	h.waitPending(agentOptimizer, reqID)

	w := events.Withdrawal{RequestID: reqID, Agent: agentOptimizer, WithdrawnAt: time.Now().UTC()}
	key := broker.PendingKey(agentOptimizer, reqID)
	// As if this delivery's snapshot of live records had missed the record.
	require.ErrorIs(t, svc.notPending(ctxT(t), w, key), errNotYet, "a live record is not an ended request")

	_, err := h.deny("dev-alice", reqID, "not now")
	require.NoError(t, err)
	require.Eventually(t, func() bool { _, ok := h.pendingKey(agentOptimizer, reqID); return !ok }, waitFor, tick)
	require.NoError(t, svc.notPending(ctxT(t), w, key), "an answered request needs nothing more")
}
