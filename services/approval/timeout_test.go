package approval

import (
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/stretchr/testify/require"
)

func TestUnansweredRequestTimesOut(t *testing.T) {
	cases := []struct {
		name     string
		window   string
		deadline time.Duration // ApprovalDeadline = now + deadline, if set
	}{
		{name: "approval window from the configuration", window: "1s"},
		{name: "approval deadline on the decision", deadline: 1500 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			yml := exampleConfig(t)
			if tc.window != "" {
				yml = withWindow(t, yml, tc.window)
			}
			h := harnessOn(t, natstest.Setup(t), yml)
			h.start()
			reqID := events.NewID("req")
			dec := pendingDecision(reqID, time.Minute)
			if tc.deadline > 0 {
				dl := time.Now().Add(tc.deadline).UTC()
				dec.ApprovalDeadline = &dl
			}
			h.emitPolicy(dec)
			rec := h.waitPending(agentOptimizer, reqID)

			d := h.waitDecision(reqID, "timeout")
			require.False(t, time.Now().Before(rec.Deadline), "not timed out before the deadline")
			require.Equal(t, events.OutcomeDenied, d.Outcome)
			require.Equal(t, events.ModeTimeout, d.Mode)
			require.Equal(t, "approval timed out", d.Reason)
			require.Equal(t, events.Actor{Kind: events.ActorSystem, ID: Name}, d.DecidedBy)
			require.Equal(t, agentOptimizer, d.Agent)
			require.Equal(t, reqID, d.RequestID)

			_, err := h.approve("dev-alice", reqID, "")
			var ae *broker.APIError
			require.ErrorAs(t, err, &ae)
			require.Contains(t, []int{404, 409}, ae.Status, ae.Message)
			h.requireRefused(err, ae.Status, ae.Code)

			h.barrier()
			require.Len(t, h.decisionsBy(reqID, "timeout"), 1)
			require.Empty(t, h.decisionsBy(reqID, "human"))
			require.Empty(t, h.listPending("dev-alice").Pending)
			_, ok := h.pendingKey(agentOptimizer, reqID)
			require.False(t, ok)
		})
	}
}

func TestPendingDecisionPastItsDeadlineTimesOutAtOnce(t *testing.T) {
	h := newHarness(t)
	h.start()
	reqID := events.NewID("req")
	dec := pendingDecision(reqID, time.Minute)
	dl := time.Now().Add(-time.Second).UTC()
	dec.ApprovalDeadline = &dl
	h.emitPolicy(dec)

	d := h.waitDecision(reqID, "timeout")
	require.Equal(t, events.ModeTimeout, d.Mode)
	require.Equal(t, dec.Permissions, d.Permissions, "the denial carries the request")
	h.emit(events.NewID("evt"), dec)
	h.barrier()
	require.Len(t, h.decisionsBy(reqID, "timeout"), 1)
	_, ok := h.pendingKey(agentOptimizer, reqID)
	require.False(t, ok, "never stored")
}
