package revoker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/failpoint"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/agentjit/jit/services/revoker"
	"github.com/stretchr/testify/require"
)

// The revoker binary, built with failpoints, runs as a child process and
// kills itself with SIGKILL between `revoking` and `revoked`: before the
// jit.revoked is published, or after. Started again, it finishes the
// revocation from the ledger, and the stream holds exactly one jit.revoked
// (docs/architecture.md, "Exactly one revocation per grant").
func TestKillBetweenRevokingAndRevoked(t *testing.T) {
	for _, tc := range []struct {
		point     string
		published bool // whether the kill comes after the event
	}{
		{failpoint.RevokerAfterRevoking, false},
		{failpoint.RevokerAfterEvent, true},
	} {
		t.Run(tc.point, func(t *testing.T) {
			f := setup(t)
			bin := natstest.BuildFailpoint(t, "github.com/agentjit/jit/services/revoker/cmd/revoker")
			env := []string{"NATS_URL=" + f.env.Server.ClientURL(), "LOG_LEVEL=debug"}
			key, g := f.grant(t, agentA, time.Second) // revoked by its timer at expires_at

			p := natstest.StartProc(t, bin, append(env, natstest.Failpoint(tc.point))...)
			p.WaitKilled(60 * time.Second)

			l := f.lease(t, key)
			require.Equal(t, events.LeaseRevoking, l.State, "killed before the lease says revoked")
			require.NotNil(t, l.Revocation)
			require.Equal(t, events.RevokedExpired, l.Revocation.Reason)
			if tc.published {
				require.Len(t, revocationsOf(t, f, g.GrantID), 1)
			} else {
				require.Empty(t, revocationsOf(t, f, g.GrantID), "killed before the event")
			}

			p = natstest.StartProc(t, bin, env...)
			require.Eventually(t, func() bool { return f.lease(t, key).State == events.LeaseRevoked }, waitFor, tick,
				"the restarted revoker finishes the revocation")
			rs := revocationsOf(t, f, g.GrantID)
			require.Len(t, rs, 1, "exactly one jit.revoked")
			require.Equal(t, *l.Revocation, rs[0], "the revocation decided before the kill")
			p.Stop()
			require.Len(t, revocationsOf(t, f, g.GrantID), 1)
		})
	}
}

// Two replicas arm the same expiry; the one whose timer fires first decides
// the revocation and is SIGKILLed before publishing it (a child process at
// the failpoint). The other, whose clock runs 300 ms behind, finds the
// lease revoking, leaves it to the decider for takeoverGrace (it cannot
// know the decider is dead), then finishes it: one jit.revoked, with the
// dead replica's decision, within 3 s of the expiry.
func TestKillOfTheReplicaThatDecidedAnExpiry(t *testing.T) {
	f := setup(t)
	bin := natstest.BuildFailpoint(t, "github.com/agentjit/jit/services/revoker/cmd/revoker")
	p := natstest.StartProc(t, bin, "NATS_URL="+f.env.Server.ClientURL(), "LOG_LEVEL=debug", natstest.Failpoint(failpoint.RevokerAfterRevoking))
	require.Eventually(t, func() bool { return strings.Contains(p.Output(), "restored the leases") }, waitFor, tick, "the child follows the leases")

	behind := f.deps
	behind.Now = func() time.Time { return time.Now().Add(-300 * time.Millisecond) }
	s := revoker.New(behind)
	require.NoError(t, s.Start(ctx(t)))
	t.Cleanup(s.Stop)

	key, g := f.grant(t, agentA, 1500*time.Millisecond)
	// The grant key's TTL marker would end the grant within a second of
	// its expiry whoever holds it: pushed back here, so that only the
	// hand-over can finish what the dead replica decided.
	e, err := f.env.Buckets.Grants.Get(ctx(t), key)
	require.NoError(t, err)
	_, err = broker.PutKeepTTL(ctx(t), f.env.JS, broker.BucketGrants, key, e.Value(), e.Revision(), time.Minute)
	require.NoError(t, err)
	p.WaitKilled(waitFor)
	require.Eventually(t, func() bool { return f.lease(t, key).State == events.LeaseRevoked }, waitFor, tick,
		"the survivor finishes the dead replica's revocation")
	rs := revocationsOf(t, f, g.GrantID)
	require.Len(t, rs, 1, "exactly one jit.revoked")
	l := f.lease(t, key)
	require.NotNil(t, l.Revocation)
	require.Equal(t, *l.Revocation, rs[0], "the dead replica's decision stands")
	late := time.Since(g.ExpiresAt)
	require.Less(t, late, 3*time.Second, "handed over within takeoverGrace of the decision")
	t.Logf("finished %s after the expiry", late.Round(time.Millisecond))
}
