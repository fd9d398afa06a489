package approval

import (
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/stretchr/testify/require"
)

// twoPersonConfig is the example configuration with a fourth approver,
// dave (security-admin, token dev-dave), who owns svc-price-optimizer, and
// optimizer-integrations needing two distinct approvers (security-admin or
// org-admin), separated from the agent's owner, with extra lines for the
// rule.
func twoPersonConfig(t *testing.T, extra string) string {
	t.Helper()
	yml := exampleConfig(t)
	for _, r := range []struct{ old, new string }{
		{"    owner: pricing-team\n", "    owner: dave\n"},
		{"    approver_roles: [security-admin]\n", "    approver_roles: [security-admin, org-admin]\n    approvals: 2\n    separate_owner: true\n" + extra},
		{"guardrails:\n", "  - name: dave\n    roles: [security-admin]\n    token_sha256: " + config.HashToken("dev-dave") + "\n\nguardrails:\n"},
	} {
		out := strings.Replace(yml, r.old, r.new, 1)
		require.NotEqual(t, yml, out, "the example configuration has %q", r.old)
		yml = out
	}
	return yml
}

func (h *harness) approveNarrow(token, reqID string, perms []string, dur string) (broker.ActionResult, error) {
	var res broker.ActionResult
	err := h.call(broker.APIApprove, token, broker.ApproveInput{RequestID: reqID, Permissions: perms, Duration: dur}, &res)
	return res, err
}

func (h *harness) approvals(reqID string) []events.Approval {
	h.t.Helper()
	var out []events.Approval
	for _, e := range h.auditFor("jit.approved.>", reqID) {
		out = append(out, dataOf[events.Approval](h.t, e))
	}
	return out
}

func TestTwoPersonRule(t *testing.T) {
	h := harnessOn(t, natstest.Setup(t), twoPersonConfig(t, ""))
	h.start()
	reqID := events.NewID("req")
	dec := pendingDecision(reqID, 2*time.Minute)
	dec.ApproverRoles = []string{config.RoleSecurityAdmin, config.RoleOrgAdmin}
	h.emitPolicy(dec)
	require.Equal(t, 2, h.waitPending(agentOptimizer, reqID).Required)

	res, err := h.approve("dev-alice", reqID, "first")
	require.NoError(t, err)
	require.Equal(t, events.OutcomePending, res.Outcome)
	require.Contains(t, res.Message, "1 of 2")
	// The same approver again counts once.
	res, err = h.approve("dev-alice", reqID, "first")
	require.NoError(t, err)
	require.Contains(t, res.Message, "alice already approved")
	require.Len(t, h.listPending("dev-bob").Pending, 1, "still pending after one approval")

	// The agent's owner may not be the second approver.
	_, err = h.approve("dev-dave", reqID, "")
	r := h.requireRefused(err, 403, events.CodeForbidden)
	require.Contains(t, r.Message, "separates duties")
	require.Equal(t, "dave", r.Actor.ID)

	res, err = h.approveNarrow("dev-bob", reqID, nil, "30s")
	require.NoError(t, err)
	require.Equal(t, events.OutcomeApproved, res.Outcome)

	d := h.waitDecision(reqID, "human")
	require.Equal(t, events.OutcomeApproved, d.Outcome)
	require.Equal(t, "approved by alice and bob; duration shortened to 30s", d.Reason)
	require.Equal(t, int64(30_000), d.DurationMS, "the shortest approved duration")
	g := h.waitGranted(reqID)
	require.True(t, d.DecidedAt.Add(30*time.Second).Equal(g.ExpiresAt))

	require.Eventually(t, func() bool { return len(h.approvals(reqID)) == 2 }, waitFor, tick)
	as := h.approvals(reqID)
	require.Len(t, as, 2, "one jit.approved per distinct approver")
	require.Equal(t, "alice", as[0].Approver.ID)
	require.Equal(t, 1, as[0].Approvals)
	require.Equal(t, 2, as[0].Required)
	require.Equal(t, "first", as[0].Comment)
	require.Equal(t, "bob", as[1].Approver.ID)
	require.Equal(t, 2, as[1].Approvals)
	require.Equal(t, int64(30_000), as[1].DurationMS)
}

func TestOneDenyEndsATwoPersonRequest(t *testing.T) {
	h := harnessOn(t, natstest.Setup(t), twoPersonConfig(t, ""))
	h.start()
	reqID := events.NewID("req")
	dec := pendingDecision(reqID, time.Minute)
	dec.ApproverRoles = []string{config.RoleSecurityAdmin, config.RoleOrgAdmin}
	h.emitPolicy(dec)
	h.waitPending(agentOptimizer, reqID)

	_, err := h.approve("dev-alice", reqID, "")
	require.NoError(t, err)
	_, err = h.deny("dev-bob", reqID, "not during the freeze")
	require.NoError(t, err)
	d := h.waitDecision(reqID, "human")
	require.Equal(t, events.OutcomeDenied, d.Outcome)
	require.Equal(t, "denied by bob: not during the freeze", d.Reason)

	_, err = h.approve("dev-dave", reqID, "")
	r := h.requireRefused(err, 409, events.CodeStale)
	require.Contains(t, r.Message, "already decided")
	h.barrier()
	require.Empty(t, h.auditFor("jit.granted.>", reqID))
}

func TestPartlyApprovedRequestTimesOutUnderTheRulesWindow(t *testing.T) {
	// The rule's window (1s) is shorter than the policy's deadline (15m).
	h := harnessOn(t, natstest.Setup(t), twoPersonConfig(t, "    approval_window: 1s\n"))
	h.start()
	reqID := events.NewID("req")
	dec := pendingDecision(reqID, time.Minute)
	dl := dec.DecidedAt.Add(15 * time.Minute)
	dec.ApprovalDeadline = &dl
	dec.ApproverRoles = []string{config.RoleSecurityAdmin, config.RoleOrgAdmin}
	h.emitPolicy(dec)
	rec := h.waitPending(agentOptimizer, reqID)
	require.True(t, dec.DecidedAt.Add(time.Second).Equal(rec.Deadline), "the rule's shorter window wins")

	_, err := h.approve("dev-alice", reqID, "")
	if err != nil { // the 1s window may already have closed
		var ae *broker.APIError
		require.ErrorAs(t, err, &ae)
		require.Equal(t, events.CodeStale, ae.Code)
	}
	d := h.waitDecision(reqID, "timeout")
	require.Equal(t, "approval timed out", d.Reason)

	_, err = h.approve("dev-bob", reqID, "")
	r := h.requireRefused(err, 409, events.CodeStale)
	require.Contains(t, r.Message, "timed out")
	h.barrier()
	require.Empty(t, h.decisionsBy(reqID, "human"))
}

func TestNarrowedApproval(t *testing.T) {
	h := newHarness(t)
	h.start()
	reqID := events.NewID("req")
	dec := pendingDecision(reqID, 10*time.Minute)
	dec.Permissions = []string{"integrations:write", "integrations:read"}
	dec.Request.Permissions = dec.Permissions
	h.emitPolicy(dec)
	h.waitPending(agentOptimizer, reqID)

	for _, c := range []struct {
		name  string
		perms []string
		dur   string
		code  string
	}{
		{"a permission not requested", []string{"data:write"}, "", events.CodeMalformed},
		{"longer than requested", nil, "11m", events.CodeInvalidDuration},
		{"not a duration", nil, "soon", events.CodeInvalidDuration},
		{"under a second", nil, "500ms", events.CodeInvalidDuration},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := h.approveNarrow("dev-alice", reqID, c.perms, c.dur)
			h.requireRefused(err, 400, c.code)
		})
	}
	err := h.call(broker.APIDeny, "dev-alice", broker.ApproveInput{RequestID: reqID, Comment: "no", Duration: "1m"}, &broker.ActionResult{})
	h.requireRefused(err, 400, events.CodeMalformed)

	res, err := h.approveNarrow("dev-alice", reqID, []string{"integrations:read"}, "5m")
	require.NoError(t, err)
	require.Contains(t, res.Message, "integrations:read for 5m, as grant ")
	d := h.waitDecision(reqID, "human")
	require.Equal(t, []string{"integrations:read"}, d.Permissions)
	require.Equal(t, int64(5*60_000), d.DurationMS)
	require.Equal(t, "approved by alice; permissions narrowed to integrations:read; duration shortened to 5m", d.Reason)
	require.Equal(t, dec.Permissions, d.Request.Permissions, "the request stays as asked")
	g := h.waitGranted(reqID)
	require.Equal(t, []string{"integrations:read"}, g.Permissions, "the agent gets exactly what was approved")
	require.True(t, d.DecidedAt.Add(5*time.Minute).Equal(g.ExpiresAt))
	require.Len(t, h.approvals(reqID), 1)
}

// With owners that are team names (as in the example configuration),
// separate_owner refuses an approver who belongs to the owning team.
func TestSeparateOwnerByTeam(t *testing.T) {
	yml := exampleConfig(t)
	for _, r := range []struct{ old, new string }{
		{"    approver_roles: [security-admin]\n", "    approver_roles: [security-admin, org-admin]\n    separate_owner: true\n"},
		{"  - name: alice\n    roles: [security-admin]\n", "  - name: alice\n    roles: [security-admin]\n    teams: [pricing-team]\n"},
	} {
		out := strings.Replace(yml, r.old, r.new, 1)
		require.NotEqual(t, yml, out, "the example configuration has %q", r.old)
		yml = out
	}
	h := harnessOn(t, natstest.Setup(t), yml)
	s := h.start()
	reqID := events.NewID("req")
	dec := pendingDecision(reqID, time.Minute)
	dec.ApproverRoles = []string{config.RoleSecurityAdmin, config.RoleOrgAdmin}
	h.emitPolicy(dec)
	h.waitPending(agentOptimizer, reqID)

	// The console and the API say why alice cannot answer.
	cfg := h.cfg.Current()
	alice, ok := cfg.Approver("alice")
	require.True(t, ok)
	views, err := s.Pending(ctxT(t), alice)
	require.NoError(t, err)
	require.Len(t, views, 1)
	require.False(t, views[0].CanAnswer)
	require.Contains(t, views[0].WhyNot, "you own this agent (owner pricing-team)")

	_, err = h.approve("dev-alice", reqID, "")
	r := h.requireRefused(err, 403, events.CodeForbidden)
	require.Contains(t, r.Message, "alice owns agent svc-price-optimizer (owner pricing-team)")
	_, err = h.deny("dev-alice", reqID, "no")
	h.requireRefused(err, 403, events.CodeForbidden)

	res, err := h.approve("dev-bob", reqID, "not my team")
	require.NoError(t, err)
	require.Equal(t, events.OutcomeApproved, res.Outcome)
	require.Equal(t, []string{"integrations:write"}, h.waitGranted(reqID).Permissions)
}
