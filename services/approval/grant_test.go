package approval

import (
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

func TestApprovedDecisionGrantsOnce(t *testing.T) {
	h := newHarness(t)
	h.start()
	reqID := events.NewID("req")
	dec := approved(agentIntel, reqID, time.Minute)
	h.emitPolicy(dec)

	got := h.waitGranted(reqID)
	grantID := events.GrantIDFor(reqID)
	want := dec.DecidedAt.Add(time.Minute)
	require.True(t, want.Equal(got.ExpiresAt), "expires_at = decided_at + duration: %s", got.ExpiresAt)
	require.Equal(t, grantID, got.GrantID)
	require.Equal(t, reqID, got.RequestID)
	require.Equal(t, []string{"data:write"}, got.Permissions)
	require.Equal(t, dec.Request.Reason, got.Reason)
	require.Equal(t, dec.Request.Context, got.Context)
	require.Equal(t, "market-intel-write", got.Rule)
	require.Equal(t, events.ModeAutoApprove, got.Mode)
	require.Equal(t, dec.DecidedBy, got.ApprovedBy)
	require.Equal(t, events.GrantActive, got.Status)

	lease, ok := h.lease(agentIntel, reqID)
	require.True(t, ok, "lease created")
	require.Equal(t, events.LeaseActive, lease.State)
	require.Equal(t, grantID, lease.Grant.GrantID)

	kvGrant, ok := h.grantKey(agentIntel, reqID)
	require.True(t, ok, "grant key created")
	require.True(t, want.Equal(kvGrant.ExpiresAt))
	require.Equal(t, events.GrantActive, kvGrant.Status)

	// The key carries a per-key TTL covering expires_at (whole seconds).
	st, err := h.env.JS.Stream(ctxT(t), "KV_"+broker.BucketGrants)
	require.NoError(t, err)
	raw, err := st.GetLastMsgForSubject(ctxT(t), "$KV."+broker.BucketGrants+"."+broker.GrantKey(agentIntel, grantID))
	require.NoError(t, err)
	ttl, err := time.ParseDuration(raw.Header.Get(jetstream.MsgTTLHeader))
	require.NoError(t, err, "grant key has a TTL header")
	require.GreaterOrEqual(t, ttl, 59*time.Second)
	require.LessOrEqual(t, ttl, 61*time.Second)
	rev := raw.Sequence

	// The same decision again, under another event id (a republish), and the
	// same event again (a redelivery): still one grant, one jit.granted.
	h.emit(events.NewID("evt"), dec)
	h.emit(events.NewID("evt"), dec)
	h.barrier()
	h.requireOneGranted(reqID)
	raw, err = st.GetLastMsgForSubject(ctxT(t), "$KV."+broker.BucketGrants+"."+broker.GrantKey(agentIntel, grantID))
	require.NoError(t, err)
	require.Equal(t, rev, raw.Sequence, "the grant key was not written again")
}

// TestApprovedDecisionTooLateIsDenied: a decision handled after its grant
// would have ended (or too close to it to announce it in time) is answered
// with a denial the agent sees, mode expired_before_grant, and nothing
// else: no jit.granted, no lease for the revoker to revoke, no grant key.
func TestApprovedDecisionTooLateIsDenied(t *testing.T) {
	h := newHarness(t)
	h.start()
	for _, age := range []time.Duration{time.Hour, time.Minute - 100*time.Millisecond} {
		reqID := events.NewID("req")
		dec := approved(agentIntel, reqID, time.Minute)
		dec.DecidedAt = time.Now().Add(-age).UTC()
		h.emitPolicy(dec)

		d := h.waitDecision(reqID, events.ModeExpiredBeforeGrant)
		require.Equal(t, events.OutcomeDenied, d.Outcome)
		require.Equal(t, events.ModeExpiredBeforeGrant, d.Mode)
		require.Contains(t, d.Reason, "nothing was granted")
		require.Equal(t, dec.Permissions, d.Permissions)
		h.emit(events.NewID("evt"), dec) // again: still one denial
		h.barrier()
		require.Len(t, h.decisionsBy(reqID, events.ModeExpiredBeforeGrant), 1)
		_, ok := h.lease(agentIntel, reqID)
		require.False(t, ok, "no lease: nothing to revoke")
		_, ok = h.grantKey(agentIntel, reqID)
		require.False(t, ok, "no grant key")
		require.Empty(t, h.auditFor("jit.granted.>", reqID))
	}
}

func TestApprovedDecisionForSuspendedAgentIsDenied(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.suspend(agentOptimizer)
	reqID := events.NewID("req")
	dec := approved(agentOptimizer, reqID, time.Minute)
	h.emitPolicy(dec)

	d := h.waitDecision(reqID, "suspended")
	require.Equal(t, events.OutcomeDenied, d.Outcome)
	require.Equal(t, events.ModeSuspended, d.Mode)
	require.Contains(t, d.Reason, "suspended")
	require.Contains(t, d.Reason, "price-floor")
	require.Equal(t, events.Actor{Kind: events.ActorSystem, ID: Name}, d.DecidedBy)
	require.Equal(t, dec.Permissions, d.Permissions)

	h.emit(events.NewID("evt"), dec) // again: still one denial
	h.barrier()
	require.Len(t, h.decisionsBy(reqID, "suspended"), 1)
	_, ok := h.lease(agentOptimizer, reqID)
	require.False(t, ok, "no lease")
	_, ok = h.grantKey(agentOptimizer, reqID)
	require.False(t, ok, "no grant")
	require.Empty(t, h.auditFor("jit.granted.>", reqID))
}

func TestMalformedDecisionsAreRejected(t *testing.T) {
	h := newHarness(t)
	h.start()
	ctx := ctxT(t)

	valid := approved(agentIntel, events.NewID("req"), time.Minute)
	wrongAgent := approved(agentIntel, events.NewID("req"), time.Minute)
	noDuration := approved(agentIntel, events.NewID("req"), time.Minute)
	noDuration.DurationMS = 0
	badOutcome := approved(agentIntel, events.NewID("req"), time.Minute)
	badOutcome.Outcome = "maybe"

	rawEvent := func(t *testing.T, typ string, data any) []byte {
		e, err := events.New(events.NewID("evt"), typ, "policy", agentIntel, data)
		require.NoError(t, err)
		b, err := events.Encode(e)
		require.NoError(t, err)
		return b
	}
	cases := []struct {
		name    string
		subject string
		body    []byte
	}{
		{"not a cloudevent", "jit.decided.x", []byte("not json at all")},
		{"unknown field in data", "jit.decided." + agentIntel, rawEvent(t, events.TypeDecided, map[string]any{"request_id": "r1", "agent": agentIntel, "outcome": "approved", "bogus": 1})},
		{"wrong event type", "jit.decided." + agentIntel, rawEvent(t, events.TypeGranted, events.Grant{GrantID: "g1"})},
		{"agent differs from subject", "jit.decided." + agentOptimizer, rawEvent(t, events.TypeDecided, wrongAgent)},
		{"approved without duration", "jit.decided." + agentIntel, rawEvent(t, events.TypeDecided, noDuration)},
		{"unknown outcome", "jit.decided." + agentIntel, rawEvent(t, events.TypeDecided, badOutcome)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := nats.NewMsg(tc.subject)
			m.Data = tc.body
			m.Header.Set(jetstream.MsgIDHeader, events.NewID("raw"))
			ack, err := h.env.JS.PublishMsg(ctx, m)
			require.NoError(t, err)
			want := events.RejectedEventID(DurableDecisions, ack.Sequence)
			require.Eventually(t, func() bool {
				for _, e := range h.audit("jit.rejected.>") {
					if e.ID() == want {
						r := dataOf[events.Rejection](t, e)
						return r.Stage == events.StageEvent && r.Subject == tc.subject && r.Code == events.CodeMalformed
					}
				}
				return false
			}, waitFor, tick, "jit.rejected %s", want)
		})
	}

	// The queue is not blocked: a valid decision after them is granted.
	h.emitPolicy(valid)
	h.waitGranted(valid.RequestID)
	require.Empty(t, h.auditFor("jit.granted.>", noDuration.RequestID))
	require.Empty(t, h.auditFor("jit.granted.>", wrongAgent.RequestID))
}
