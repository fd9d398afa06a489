package approval

import (
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

// An approver who could not answer a request learns nothing of its state:
// carol (operator) gets 403 for a request that never existed and for one
// already decided, where alice (security-admin) is told what happened.
func TestApproverOutsideTheRolesLearnsNothing(t *testing.T) {
	h := newHarness(t)
	h.start()

	_, err := h.approve("dev-carol", "req_never_existed", "")
	h.requireRefused(err, 403, events.CodeForbidden)
	_, err = h.approve("dev-alice", "req_never_existed", "")
	h.requireRefused(err, 404, events.CodeNotFound)

	reqID := events.NewID("req")
	h.emitPolicy(pendingDecision(reqID, time.Minute))
	h.waitPending(agentOptimizer, reqID)
	_, err = h.approve("dev-alice", reqID, "ok")
	require.NoError(t, err)

	_, err = h.approve("dev-carol", reqID, "")
	h.requireRefused(err, 403, events.CodeForbidden)
	_, err = h.approve("dev-alice", reqID, "")
	var ae *broker.APIError
	require.ErrorAs(t, err, &ae)
	require.NotEqual(t, 403, ae.Status, "alice may know the request was answered: %s", ae.Message)
}
