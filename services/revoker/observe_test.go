package revoker_test

import (
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/metrics"
	"github.com/agentjit/jit/pkg/metrics/metricstest"
	"github.com/stretchr/testify/require"
)

// TestFailingRevocationShows: a revocation that cannot complete (its lease
// record is in a state the revoker does not know) keeps being retried, and
// shows within seconds in the revoker's report (grant, agent, last error)
// and in jit_revocations_failing; once the record is repaired the retry
// revokes the grant once and the report empties.
func TestFailingRevocationShows(t *testing.T) {
	f := setup(t)
	s := f.start(t)
	key, g := f.grant(t, agentA, time.Second)
	// Corrupt the ledger before the expiry: no timer is kept for a lease
	// in an unknown state, and the grant key's TTL marker then fails to
	// revoke it on every delivery.
	var lease events.Lease
	rev, err := broker.GetJSON(ctx(t), f.env.Buckets.Leases, key, &lease)
	require.NoError(t, err)
	stuck := lease
	stuck.State = "stuck"
	rev, err = f.env.Buckets.Leases.Update(ctx(t), key, mustJSON(t, stuck), rev)
	require.NoError(t, err)

	var fr metrics.FailingRevocation
	require.Eventually(t, func() bool {
		for _, x := range s.Failing() {
			if x.GrantID == g.GrantID {
				fr = x
				return true
			}
		}
		return false
	}, waitFor, tick, "the failing revocation is reported")
	require.Equal(t, agentA, fr.Agent)
	require.Equal(t, events.RevokedExpired, fr.Reason)
	require.Contains(t, fr.LastError, "unknown state")
	require.Less(t, time.Since(g.ExpiresAt), 5*time.Second, "reported within seconds of the expiry")
	fam := metricstest.ScrapeHandler(t, metrics.Handler())
	n, ok := fam.Value("jit_revocations_failing")
	require.True(t, ok)
	require.GreaterOrEqual(t, n, 1.0)
	require.Empty(t, revocationsOf(t, f, g.GrantID), "not revoked while the record is broken")

	// Retried: the attempts grow.
	require.Eventually(t, func() bool {
		for _, x := range s.Failing() {
			if x.GrantID == g.GrantID && x.Attempts > fr.Attempts {
				return true
			}
		}
		return false
	}, waitFor, tick, "the revocation is retried")

	// Repair: the next attempt revokes it, once.
	_, err = f.env.Buckets.Leases.Update(ctx(t), key, mustJSON(t, lease), rev)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return len(revocationsOf(t, f, g.GrantID)) == 1 && len(s.Failing()) == 0
	}, 30*time.Second, tick, "revoked once, and no longer reported")
	fam = metricstest.ScrapeHandler(t, metrics.Handler())
	n, _ = fam.Value("jit_revocations_failing")
	require.Zero(t, n)
}
