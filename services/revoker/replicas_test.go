package revoker_test

import (
	"context"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/agentjit/jit/services/revoker"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// replica is one revoker instance with a connection of its own, so that it
// can be killed: its connection closed under it, with no Stop and no
// chance to finish what it was doing.
type replica struct {
	svc *revoker.Service
	nc  *nats.Conn
}

func (f *fixture) startReplica(t *testing.T) *replica {
	t.Helper()
	nc, _ := natstest.Connect(t, f.env.Server)
	d, err := f.deps.Rebind(ctx(t), nc)
	require.NoError(t, err)
	s := revoker.New(d)
	require.NoError(t, s.Start(ctx(t)))
	t.Cleanup(s.Stop)
	return &replica{svc: s, nc: nc}
}

// kill closes the replica's connection: from then on it can neither read
// nor write, as if its process had died.
func (r *replica) kill() { r.nc.Close() }

// TestReplicas: with two revokers running, each arming every grant's
// timer, every grant ends in exactly one jit.revoked; when one of them
// dies, the other revokes at the expiry, answers done, acts on a
// guardrail, and finishes within takeoverGrace a revocation the dead one
// had decided but not published.
func TestReplicas(t *testing.T) {
	t.Parallel()

	t.Run("both alive: each grant revoked once, on time", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		f.startReplica(t)
		f.startReplica(t)
		var grants []events.Grant
		for range 20 {
			_, g := f.grant(t, agentB, 1500*time.Millisecond)
			grants = append(grants, g)
		}
		require.Eventually(t, func() bool { return len(revocations(t, f)) >= len(grants) }, waitFor, tick)
		for _, g := range grants {
			rs := revocationsOf(t, f, g.GrantID)
			require.Len(t, rs, 1, g.GrantID)
			assert.Equal(t, events.RevokedExpired, rs[0].Reason)
			late := rs[0].RevokedAt.Sub(g.ExpiresAt)
			assert.GreaterOrEqual(t, late, time.Duration(0))
			assert.Less(t, late, time.Second)
			require.Eventually(t, func() bool { return f.lease(t, broker.GrantKey(g.Agent, g.GrantID)).State == events.LeaseRevoked }, waitFor, tick)
		}
	})

	t.Run("both alive: the replica that loses an expiry's race does not publish it again", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		// Every jit.revoked published, as published: the stream stores a
		// repeat once, so only a core subscription sees one.
		sub, err := f.env.NC.SubscribeSync("jit.revoked.>")
		require.NoError(t, err)
		a, b := f.startReplica(t), f.startReplica(t)
		var keys []string
		for range 20 {
			k, _ := f.grant(t, agentB, 1500*time.Millisecond)
			keys = append(keys, k)
		}
		for _, k := range keys {
			require.Eventually(t, func() bool { return f.lease(t, k).State == events.LeaseRevoked }, waitFor, tick)
		}
		// Stop waits for the jobs in flight: whatever either replica was
		// going to publish for these expiries is published by then, except
		// a yielded job's check, due takeoverGrace later, which finds the
		// lease revoked and publishes nothing.
		a.svc.Stop()
		b.svc.Stop()
		require.NoError(t, f.env.NC.Flush())
		published := 0
		for {
			if _, err := sub.NextMsg(0); err != nil {
				break
			}
			published++
		}
		assert.Equal(t, len(keys), published, "one publish per expiry, not one per replica")
		assert.Len(t, revocations(t, f), len(keys))
	})

	t.Run("one killed: expiry, done and guardrail by the other", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		a := f.startReplica(t)
		f.startReplica(t)
		_, before := f.grant(t, agentA, 2*time.Second) // armed by both
		_, toEnd := f.grant(t, agentA, time.Minute)
		_, toSuspend := f.grant(t, agentB, time.Minute)
		a.kill()
		_, after := f.grant(t, agentA, 2*time.Second) // only the survivor sees it

		_, err := done(t, f, toEnd.GrantID)
		require.NoError(t, err, "jitapi.done answered by the survivor")
		f.fire(t, "gr-1", agentB, agentB, "price-floor")

		require.Eventually(t, func() bool {
			return len(revocationsOf(t, f, before.GrantID)) > 0 && len(revocationsOf(t, f, after.GrantID)) > 0 &&
				len(revocationsOf(t, f, toSuspend.GrantID)) > 0
		}, waitFor, tick)
		for _, c := range []struct {
			g      events.Grant
			reason string
		}{{before, events.RevokedExpired}, {after, events.RevokedExpired}, {toEnd, events.RevokedCompleted}, {toSuspend, events.RevokedGuardrail}} {
			rs := revocationsOf(t, f, c.g.GrantID)
			require.Len(t, rs, 1, c.reason)
			assert.Equal(t, c.reason, rs[0].Reason)
			if c.reason == events.RevokedExpired {
				late := rs[0].RevokedAt.Sub(c.g.ExpiresAt)
				assert.GreaterOrEqual(t, late, time.Duration(0), "not before its end")
				assert.Less(t, late, time.Second, "the survivor's own timer, not a takeover")
				t.Logf("%s revoked %s after expires_at", c.g.GrantID, late)
			}
		}
	})

	t.Run("killed between the decision and the event: the other finishes it", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		f.startReplica(t)
		f.startReplica(t)
		key, g := f.grant(t, agentA, time.Minute)
		// What a replica leaves when killed between steps 2 and 4, written
		// while the others run (their lease watch sees it change).
		r := events.Revocation{
			GrantID: g.GrantID, RequestID: g.RequestID, Agent: g.Agent, Permissions: g.Permissions,
			Reason: events.RevokedCompleted, RevokedBy: events.Actor{Kind: events.ActorAgent, ID: g.Agent},
			RevokedAt: time.Now().UTC(), GrantedAt: g.GrantedAt, ExpiresAt: g.ExpiresAt,
		}
		c, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		_, err := f.env.Buckets.Leases.Put(c, key, mustJSON(t, events.Lease{Grant: g, State: events.LeaseRevoking, Revocation: &r}))
		require.NoError(t, err)
		left := time.Now()
		require.Eventually(t, func() bool { return f.lease(t, key).State == events.LeaseRevoked }, waitFor, tick)
		took := time.Since(left)
		rs := revocationsOf(t, f, g.GrantID)
		require.Len(t, rs, 1)
		assert.Equal(t, events.RevokedCompleted, rs[0].Reason, "the recorded reason stands")
		assert.True(t, r.RevokedAt.Equal(rs[0].RevokedAt))
		gv, ok := f.grantValue(t, key)
		require.True(t, ok)
		assert.Equal(t, events.GrantRevoked, gv.Status)
		assert.Less(t, took, 3*time.Second, "handed over within the bound")
		t.Logf("taken over after %s", took)
	})
}
