package approval

import (
	"context"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/failpoint"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/stretchr/testify/require"
)

// Tests that kill: the approval binary, built with failpoints, runs as a
// child process, kills itself with SIGKILL at one instant of a write, and
// is started again. What it left and what the restart made of it are read
// from the broker: exactly one jit.granted, and never a grant key without
// its announcement (docs/architecture.md, "Announced before usable").

const approvalMain = "github.com/agentjit/jit/services/approval/cmd/approval"

// killWait bounds how long a child takes to start and reach its failpoint.
const killWait = 60 * time.Second

func (h *harness) childEnv(extra ...string) []string {
	return append([]string{"NATS_URL=" + h.env.Server.ClientURL(), "LOG_LEVEL=debug"}, extra...)
}

func TestKillDuringGrant(t *testing.T) {
	for _, tc := range []struct {
		point     string
		wantLease bool // what the kill leaves: the lease, and never the key
	}{
		{failpoint.ApprovalAfterGranted, false},
		{failpoint.ApprovalAfterLease, true},
	} {
		t.Run(tc.point, func(t *testing.T) {
			h := newHarness(t)
			bin := natstest.BuildFailpoint(t, approvalMain)
			reqID := events.NewID("req")

			p := natstest.StartProc(t, bin, h.childEnv(natstest.Failpoint(tc.point))...)
			h.emitPolicy(approved(agentIntel, reqID, time.Minute))
			p.WaitKilled(killWait)

			h.requireOneGranted(reqID)
			l, ok := h.lease(agentIntel, reqID)
			require.Equal(t, tc.wantLease, ok, "lease after a kill at %s", tc.point)
			if ok {
				require.Equal(t, events.LeaseActive, l.State)
			}
			_, ok = h.grantKey(agentIntel, reqID)
			require.False(t, ok, "no grant key before its lease")

			p = natstest.StartProc(t, bin, h.childEnv()...)
			g := h.waitGranted(reqID)
			h.barrier() // the restarted service has handled everything before it
			h.requireOneGranted(reqID)
			l, ok = h.lease(agentIntel, reqID)
			require.True(t, ok)
			require.Equal(t, events.LeaseActive, l.State)
			require.Equal(t, g, l.Grant, "the lease records the announced grant")
			key, ok := h.grantKey(agentIntel, reqID)
			require.True(t, ok)
			require.Equal(t, g, key, "the key is the announced grant")
			p.Stop()
		})
	}
}

// A human's answer recorded in the pending record, the service killed
// before the jit.decided: the restart publishes that answer, once, and the
// grant follows.
func TestKillBetweenAnswerAndDecision(t *testing.T) {
	h := newHarness(t)
	bin := natstest.BuildFailpoint(t, approvalMain)
	reqID := events.NewID("req")

	p := natstest.StartProc(t, bin, h.childEnv(natstest.Failpoint(failpoint.ApprovalAfterAnswer))...)
	h.emitPolicy(pendingDecision(reqID, time.Minute))
	// The child's API starts after its consumers: wait until it answers
	// and lists the request, so that the approval below reaches it.
	require.Eventually(t, func() bool {
		var out broker.PendingList
		return h.call(broker.APIPending, "dev-alice", struct{}{}, &out) == nil && len(out.Pending) == 1
	}, killWait, tick, "the child lists the pending request")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	answered := make(chan error, 1)
	go func() {
		var res broker.ActionResult
		answered <- broker.Call(ctx, h.env.NC, broker.APIApprove, "dev-alice", broker.ApproveInput{RequestID: reqID, Comment: "ok"}, &res)
	}()
	p.WaitKilled(killWait)
	cancel()
	require.Error(t, <-answered, "the approver got no answer from a killed service")

	rec, ok := h.pendingKey(agentOptimizer, reqID)
	require.True(t, ok, "the pending record stays until its decision is out")
	require.NotNil(t, rec.Answer, "the answer is recorded")
	require.Equal(t, events.DecisionEventID(reqID, "human"), rec.AnswerID)
	require.Empty(t, h.decisionsBy(reqID, "human"), "killed before the decision was published")
	require.Empty(t, h.auditFor("jit.granted.>", reqID))

	p = natstest.StartProc(t, bin, h.childEnv()...)
	d := h.waitDecision(reqID, "human")
	require.Equal(t, events.OutcomeApproved, d.Outcome)
	require.Equal(t, "alice", d.DecidedBy.ID, "the approver of the token dev-alice")
	h.waitGranted(reqID)
	require.Eventually(t, func() bool { _, ok := h.pendingKey(agentOptimizer, reqID); return !ok }, waitFor, tick,
		"the answered record is deleted")
	h.barrier()
	require.Len(t, h.decisionsBy(reqID, "human"), 1)
	h.requireOneGranted(reqID)
	p.Stop()
}

// A replica killed between a grant's announcement and its lease while
// another replica runs (a node lost in a cluster): the live replica records
// the announced grant's lease and key within seconds, not after a 30 s ack
// wait. The revoker arms its timers from leases, so until then nothing
// would end the grant: jitbench's node-loss phase saw such a grant's
// jit.revoked 26 s after its expires_at.
func TestAnnouncedGrantOfAKilledReplicaIsLeasedByAnother(t *testing.T) {
	h := newHarness(t)
	bin := natstest.BuildFailpoint(t, approvalMain)
	p := natstest.StartProc(t, bin, h.childEnv(natstest.Failpoint(failpoint.ApprovalAfterGranted))...)
	h.start() // the replica that lives, pulling all along

	// Both replicas pull; the broker picks which one takes a decision. One
	// decision at a time, until the child takes one and dies after its
	// jit.granted.
	var reqID string
	for killed := false; !killed; {
		require.Less(t, len(h.audit("jit.granted.>")), 100, "the child never took a decision")
		reqID = events.NewID("req")
		h.emitPolicy(approved(agentIntel, reqID, time.Minute))
		require.Eventually(t, func() bool {
			select {
			case <-p.Done():
				killed = true
				return true
			default:
			}
			_, leased := h.lease(agentIntel, reqID)
			return leased
		}, killWait, tick, "neither replica finished %s", reqID)
	}
	p.WaitKilled(killWait)
	killedAt := time.Now()
	g := h.requireOneGranted(reqID)
	_, ok := h.lease(agentIntel, reqID)
	require.False(t, ok, "the kill left the announcement without its lease")

	const bound = 12 * time.Second // the consumers' ack wait (5 s) and slack
	require.Eventually(t, func() bool {
		l, ok := h.lease(agentIntel, reqID)
		return ok && l.State == events.LeaseActive
	}, bound, tick, "the live replica leased the dead one's announced grant within %s", bound)
	t.Logf("leased %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	l, _ := h.lease(agentIntel, reqID)
	require.Equal(t, g, l.Grant, "the lease records the announced grant")
	require.Equal(t, g, h.waitGranted(reqID), "its key follows")
	h.requireOneGranted(reqID)
}
