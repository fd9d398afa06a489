package revoker

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/agentjit/jit/pkg/service"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExpiryYieldsToTheReplicaThatDecided: at a grant's expiry, a replica
// that finds the revocation decided by another moments ago leaves it to
// that one and says until when; one decided longer ago than takeoverGrace,
// or one this replica failed to finish itself, it finishes at once.
func TestExpiryYieldsToTheReplicaThatDecided(t *testing.T) {
	t.Parallel()
	env := natstest.Setup(t)
	now := time.Now().UTC()
	s := New(service.Deps{NC: env.NC, JS: env.JS, Buckets: env.Buckets, Log: env.Log, Now: func() time.Time { return now }})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Each case has an agent of its own: its jit.revoked subject tells
	// whether anything was published for it.
	revoking := func(t *testing.T, agent string, decidedAgo time.Duration) (string, events.Grant) {
		t.Helper()
		req := events.NewID("req")
		g := events.Grant{
			GrantID: events.GrantIDFor(req), RequestID: req, Agent: agent, Permissions: []string{"data:write"},
			GrantedAt: now.Add(-time.Minute), ExpiresAt: now.Add(-decidedAgo), Status: events.GrantActive,
		}
		r := revocationOf(g, events.RevokedExpired, systemActor, "", now.Add(-decidedAgo))
		key := broker.GrantKey(g.Agent, g.GrantID)
		b, err := json.Marshal(events.Lease{Grant: g, State: events.LeaseRevoking, Revocation: &r})
		require.NoError(t, err)
		_, err = env.Buckets.Leases.Create(ctx, key, b)
		require.NoError(t, err)
		return key, g
	}
	stored := func(t *testing.T, g events.Grant) bool {
		t.Helper()
		st, err := env.JS.Stream(ctx, broker.AuditStream)
		require.NoError(t, err)
		m, err := st.GetLastMsgForSubject(ctx, "jit.revoked."+g.Agent)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return false
		}
		require.NoError(t, err)
		assert.Equal(t, events.RevokedEventID(g.GrantID), m.Header.Get(jetstream.MsgIDHeader))
		return true
	}

	t.Run("decided a moment ago: yielded", func(t *testing.T) {
		key, g := revoking(t, "svc-yield-1", 200*time.Millisecond)
		res, err := s.revokeOrYield(ctx, key, events.RevokedExpired, systemActor, "", true)
		require.NoError(t, err)
		assert.Equal(t, now.Add(-200*time.Millisecond).Add(takeoverGrace), res.YieldUntil, "the decider's time plus the grace")
		assert.Equal(t, events.LeaseRevoking, lease(t, env, key).State, "left to the decider")
		assert.False(t, stored(t, g), "nothing published")
	})
	t.Run("decided longer ago than the grace: finished", func(t *testing.T) {
		key, g := revoking(t, "svc-yield-2", 2*takeoverGrace)
		res, err := s.revokeOrYield(ctx, key, events.RevokedExpired, systemActor, "", true)
		require.NoError(t, err)
		assert.True(t, res.YieldUntil.IsZero())
		assert.Equal(t, events.LeaseRevoked, lease(t, env, key).State)
		assert.True(t, stored(t, g))
	})
	t.Run("a decider's clock far ahead: yielded for the grace at most", func(t *testing.T) {
		key, _ := revoking(t, "svc-yield-3", -time.Hour)
		res, err := s.revokeOrYield(ctx, key, events.RevokedExpired, systemActor, "", true)
		require.NoError(t, err)
		assert.Equal(t, now.Add(takeoverGrace), res.YieldUntil)
	})
	t.Run("this replica's own failed attempt: finished", func(t *testing.T) {
		key, g := revoking(t, "svc-yield-4", 100*time.Millisecond)
		failed := errors.New("stream unavailable")
		s.failing.observe(key, g.Agent, g.GrantID, events.RevokedExpired, s.now, &failed)
		res, err := s.revokeOrYield(ctx, key, events.RevokedExpired, systemActor, "", true)
		require.NoError(t, err)
		assert.True(t, res.YieldUntil.IsZero())
		assert.Equal(t, events.LeaseRevoked, lease(t, env, key).State)
		assert.True(t, stored(t, g))
		assert.False(t, s.failing.has(key), "the success clears it")
	})
	t.Run("without yield (done, admin, a takeover): finished", func(t *testing.T) {
		key, g := revoking(t, "svc-yield-5", 100*time.Millisecond)
		res, err := s.revoke(ctx, key, events.RevokedExpired, systemActor, "")
		require.NoError(t, err)
		assert.True(t, res.YieldUntil.IsZero())
		assert.True(t, stored(t, g))
	})
}

func lease(t *testing.T, env *natstest.Env, key string) events.Lease {
	t.Helper()
	var l events.Lease
	_, err := broker.GetJSON(context.Background(), env.Buckets.Leases, key, &l)
	require.NoError(t, err)
	return l
}
