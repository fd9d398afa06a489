package revoker_test

import (
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/failpoint"
	"github.com/agentjit/jit/pkg/natstest"
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
