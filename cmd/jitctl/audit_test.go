package main

import (
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

// TestAuditPrintsEveryTypeReadably: jitctl audit prints one readable line
// for every event type the system emits, never the raw JSON of its data.
func TestAuditPrintsEveryTypeReadably(t *testing.T) {
	h := newHarness(t)
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	alice := events.Actor{Kind: events.ActorApprover, ID: "alice", Roles: []string{"security-admin"}}
	agent := events.Actor{Kind: events.ActorAgent, ID: "svc-price-optimizer"}
	const (
		ag  = "svc-price-optimizer"
		req = "req_7f3k"
		grt = "grt_7f3k"
	)
	cases := []struct {
		typ, agent string
		data       any
		want       string
	}{
		{events.TypeRequested, ag, events.Request{RequestID: req, Agent: ag, Permissions: []string{"integrations:write", "integrations:read"},
			DurationMS: 600_000, Reason: "sync prices", RequestedBy: agent, RequestedAt: at},
			`req_7f3k integrations:write,integrations:read for 10m: "sync prices"`},
		{events.TypeRejected, ag, events.Rejection{Stage: events.StageApproval, Code: events.CodeForbidden, Message: "needs security-admin",
			Agent: ag, RequestID: req, Actor: alice, RejectedAt: at},
			"req_7f3k approval/forbidden: needs security-admin"},
		{events.TypeDecided, ag, events.Decision{RequestID: req, Agent: ag, Outcome: events.OutcomeApproved, Mode: events.ModeHuman,
			Rule: "optimizer-integrations", Reason: "approved by alice; permissions narrowed to integrations:read",
			Permissions: []string{"integrations:read"}, DurationMS: 600_000, DecidedBy: alice, DecidedAt: at},
			"req_7f3k approved (human, rule optimizer-integrations) by alice: approved by alice; permissions narrowed to integrations:read"},
		{events.TypeApproved, ag, events.Approval{RequestID: req, Agent: ag, Rule: "optimizer-integrations", Approver: alice,
			Comment: "change CHG-7", Permissions: []string{"integrations:read"}, DurationMS: 600_000, Approvals: 1, Required: 2, ApprovedAt: at},
			`req_7f3k approved by alice (1 of 2): integrations:read for 10m ("change CHG-7")`},
		{events.TypeGranted, ag, events.Grant{GrantID: grt, RequestID: req, Agent: ag, Permissions: []string{"integrations:read"},
			Reason: "sync prices", Mode: events.ModeHuman, ApprovedBy: alice, GrantedAt: at, ExpiresAt: at.Add(10 * time.Minute)},
			"grt_7f3k integrations:read until 2030-01-02T03:14:05Z"},
		{events.TypeRevoked, ag, events.Revocation{GrantID: grt, RequestID: req, Agent: ag, Permissions: []string{"integrations:read"},
			Reason: events.RevokedAdmin, Detail: "done", RevokedBy: alice, RevokedAt: at},
			"grt_7f3k integrations:read: admin by approver:alice (done)"},
		{events.TypeGuardrailFired, ag, events.GuardrailFired{Agent: ag, Rule: "price-floor", Detail: "SKU 1182 at 0.40", FiredAt: at},
			"rule price-floor: SKU 1182 at 0.40"},
		{events.TypeSuspended, ag, events.Suspension{Agent: ag, Rule: "price-floor", SuspendedBy: events.Actor{Kind: events.ActorGuardrail, ID: "price-floor"},
			SuspendedAt: at, RevokedGrants: []string{grt}},
			"by guardrail price-floor; revoked 1 grant(s)"},
		{events.TypeReinstated, ag, events.Reinstatement{Agent: ag, Comment: "floor bug fixed", ReinstatedBy: alice, ReinstatedAt: at},
			"by approver:alice: floor bug fixed"},
		{events.TypeConfigApplied, "", events.ConfigApplied{Outcome: "applied", Digest: "sha256:ab12", Source: "jitctl", AppliedBy: alice, AppliedAt: at},
			"applied sha256:ab12 from jitctl"},
		{events.TypeNotification, ag, events.Notification{RequestID: req, Agent: ag, Notifier: "security-slack", NotifierType: "slack",
			Outcome: events.NotificationFailed, Attempts: 5, HTTPStatus: 503, Error: "answered 503", NotifiedAt: at},
			"req_7f3k to security-slack (slack): failed after 5 attempt(s), HTTP 503: answered 503"},
		{events.TypeWithdrawn, ag, events.Withdrawal{RequestID: req, Agent: ag, WithdrawnBy: agent, WithdrawnAt: at},
			"req_7f3k withdrawn by agent:svc-price-optimizer"},
		{events.TypeCheckpoint, events.SystemToken, events.Checkpoint{Stream: "JIT_AUDIT", FirstSeq: 1, LastSeq: 9, Count: 9,
			PrevChain: strings.Repeat("0", 64), Chain: strings.Repeat("ab", 32), CoveredUntil: at, KeyID: "0123456789abcdef", Signature: "c2ln"},
			"seq 1-9 (9 messages) chain abababababab… signed by 0123456789abcdef"},
	}
	covered := map[string]bool{}
	for i, c := range cases {
		covered[c.typ] = true
		_, _, err := h.pub.Emit(h.ctx, events.NewID("evt"), c.typ, c.agent, c.data)
		require.NoError(t, err, "event %d", i)
	}
	for _, typ := range events.AllTypes {
		require.True(t, covered[typ], "%s has no case here", typ)
	}

	r := h.run("audit")
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, len(cases))
	for i, c := range cases {
		f := strings.Fields(lines[i])
		require.GreaterOrEqual(t, len(f), 3, lines[i])
		require.Equal(t, c.typ, f[1], lines[i])
		require.True(t, strings.HasSuffix(lines[i], "  "+c.want), "%s:\n got %q\nwant suffix %q", c.typ, lines[i], c.want)
		require.NotContains(t, lines[i], "{", "%s prints raw JSON", c.typ)
	}
}
