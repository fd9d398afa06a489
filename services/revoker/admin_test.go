package revoker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// adminRevoke calls the revoker's internal revoke endpoint as the approval
// service does once it has authenticated the approver named approver ("" for
// none: an actor that is no approver).
func adminRevoke(t *testing.T, f *fixture, approver string, in broker.RevokeInput) (broker.ActionResult, error) {
	t.Helper()
	var out broker.ActionResult
	err := broker.Call(ctx(t), f.env.NC, broker.InternalRevoke, "", broker.Authorized[broker.RevokeInput]{Input: in, By: f.approver(t, approver)}, &out)
	return out, err
}

func TestAdminRevoke(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.start(t)

	t.Run("an org-admin revokes at once", func(t *testing.T) {
		key, g := f.grant(t, agentB, time.Minute)
		out, err := adminRevoke(t, f, "bob", broker.RevokeInput{GrantID: g.GrantID, Comment: "incident INC-9"})
		require.NoError(t, err)
		assert.Equal(t, "revoked", out.Outcome)
		assert.Equal(t, agentB, out.Agent)
		rs := revocationsOf(t, f, g.GrantID)
		require.Len(t, rs, 1)
		assert.Equal(t, events.RevokedAdmin, rs[0].Reason)
		assert.Equal(t, "incident INC-9", rs[0].Detail)
		assert.Equal(t, events.Actor{Kind: events.ActorApprover, ID: "bob", Roles: []string{config.RoleOrgAdmin}}, rs[0].RevokedBy)
		assert.Equal(t, events.LeaseRevoked, f.lease(t, key).State)

		_, err = adminRevoke(t, f, "alice", broker.RevokeInput{GrantID: g.GrantID})
		ae := apiErr(t, err)
		assert.Equal(t, 409, ae.Status)
		require.True(t, hasRejection(t, f, events.StageRevoke, events.CodeConflict, g.GrantID))
		require.Len(t, revocationsOf(t, f, g.GrantID), 1)
	})

	_, g := f.grant(t, agentA, time.Minute)
	for _, c := range []struct {
		name, approver, grantID string
		status                  int
		code                    string
	}{
		// Tokens are the approval service's to check (its tests); the
		// revoker checks what an internal call says.
		{"no approver", "", g.GrantID, 403, events.CodeForbidden},
		{"operator", "carol", g.GrantID, 403, events.CodeForbidden},
		{"unknown grant", "alice", "grt_nothere", 404, events.CodeNotFound},
		{"invalid grant id", "alice", "grt.*", 400, events.CodeMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := adminRevoke(t, f, c.approver, broker.RevokeInput{GrantID: c.grantID})
			ae := apiErr(t, err)
			assert.Equal(t, c.status, ae.Status, ae.Message)
			assert.Equal(t, c.code, ae.Code)
			require.True(t, hasRejection(t, f, events.StageRevoke, c.code, ""))
		})
	}
	require.Empty(t, revocationsOf(t, f, g.GrantID), "refusals revoke nothing")
}

// TestAdminRevokeRefusalsNameTheRequest: a refused revocation of an
// existing grant is audited with the grant's request (requestid extension,
// request_id) and agent, even when refused before the grant is looked at.
func TestAdminRevokeRefusalsNameTheRequest(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.start(t)
	_, g := f.grant(t, agentA, time.Minute)
	for _, c := range []struct {
		name, approver, comment string
		code                    string
	}{
		{"no approver", "", "", events.CodeForbidden},
		{"operator", "carol", "", events.CodeForbidden},
		{"comment too long", "alice", strings.Repeat("c", 5000), events.CodeMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(rejections(t, f))
			_, err := adminRevoke(t, f, c.approver, broker.RevokeInput{GrantID: g.GrantID, Comment: c.comment})
			require.Equal(t, c.code, apiErr(t, err).Code)
			evs, rs := stored[events.Rejection](t, f, "jit.rejected.>")
			require.Len(t, rs, before+1)
			e, r := evs[before], rs[before]
			assert.Equal(t, g.RequestID, r.RequestID)
			assert.Equal(t, g.RequestID, events.RequestID(e), "requestid extension")
			assert.Equal(t, g.GrantID, r.GrantID)
			assert.Equal(t, agentA, r.Agent)
		})
	}
	require.Empty(t, revocationsOf(t, f, g.GrantID), "refusals revoke nothing")
}
