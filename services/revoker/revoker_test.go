package revoker_test

import (
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/services/revoker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestExpiry(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.start(t)
	k1, g1 := f.grant(t, agentA, time.Second)
	k2, g2 := f.grant(t, agentB, 2*time.Second)

	require.Eventually(t, func() bool { return len(revocations(t, f)) == 2 }, waitFor, tick)
	for _, c := range []struct {
		key string
		g   events.Grant
	}{{k1, g1}, {k2, g2}} {
		t.Run(c.g.Agent, func(t *testing.T) {
			rs := revocationsOf(t, f, c.g.GrantID)
			require.Len(t, rs, 1)
			r := rs[0]
			assert.Equal(t, events.RevokedExpired, r.Reason)
			assert.Equal(t, events.Actor{Kind: events.ActorSystem, ID: revoker.Name}, r.RevokedBy)
			assert.Equal(t, c.g.Agent, r.Agent)
			assert.Equal(t, c.g.RequestID, r.RequestID)
			assert.Equal(t, c.g.Permissions, r.Permissions)
			assert.False(t, r.RevokedAt.Before(c.g.ExpiresAt), "revoked before expiry")
			// Loose on purpose: -race on a busy machine is not a benchmark.
			assert.Less(t, r.RevokedAt.Sub(c.g.ExpiresAt), time.Second, "revoked late")
			t.Logf("revoked %v after expires_at", r.RevokedAt.Sub(c.g.ExpiresAt))
			assert.Equal(t, events.LeaseRevoked, f.lease(t, c.key).State)
		})
	}
	// The TTL markers that follow find the grants revoked: no second event.
	f.waitMarkerHandled(t, k1)
	f.waitMarkerHandled(t, k2)
	require.Len(t, revocations(t, f), 2)
}

func TestKillAndRestart(t *testing.T) {
	t.Parallel()

	t.Run("grant expired while the revoker was down", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		first := f.start(t)
		first.Stop()
		key, g := f.grant(t, agentA, time.Second)
		// The key's disappearance is the TTL marker being written.
		require.Eventually(t, func() bool { _, ok := f.grantValue(t, key); return !ok }, waitFor, tick)

		f.start(t)
		require.Eventually(t, func() bool { return len(revocations(t, f)) == 1 }, waitFor, tick)
		f.waitMarkerHandled(t, key)
		rs := revocations(t, f)
		require.Len(t, rs, 1)
		assert.Equal(t, g.GrantID, rs[0].GrantID)
		assert.Equal(t, events.RevokedExpired, rs[0].Reason)
		assert.Equal(t, events.LeaseRevoked, f.lease(t, key).State)
	})

	t.Run("stopped with the lease revoking", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		key, g := f.grant(t, agentA, time.Minute)
		// What a revoker leaves when killed between steps 2 and 4.
		r := events.Revocation{
			GrantID: g.GrantID, RequestID: g.RequestID, Agent: g.Agent, Permissions: g.Permissions,
			Reason: events.RevokedCompleted, RevokedBy: events.Actor{Kind: events.ActorAgent, ID: g.Agent},
			RevokedAt: time.Now().UTC(), GrantedAt: g.GrantedAt, ExpiresAt: g.ExpiresAt,
		}
		_, err := f.env.Buckets.Leases.Put(ctx(t), key, mustJSON(t, events.Lease{Grant: g, State: events.LeaseRevoking, Revocation: &r}))
		require.NoError(t, err)

		f.start(t)
		require.Eventually(t, func() bool { return f.lease(t, key).State == events.LeaseRevoked }, waitFor, tick)
		rs := revocations(t, f)
		require.Len(t, rs, 1)
		assert.Equal(t, events.RevokedCompleted, rs[0].Reason, "the recorded reason stands")
		assert.True(t, r.RevokedAt.Equal(rs[0].RevokedAt))
		gv, ok := f.grantValue(t, key)
		require.True(t, ok)
		assert.Equal(t, events.GrantRevoked, gv.Status)
	})

	t.Run("stopped with timers pending", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		first := f.start(t)
		var keys []string
		for range 20 {
			k, _ := f.grant(t, agentB, 2*time.Second)
			keys = append(keys, k)
		}
		first.Stop()
		f.start(t)
		require.Eventually(t, func() bool { return len(revocations(t, f)) == 20 }, waitFor, tick)
		for _, k := range keys {
			f.waitMarkerHandled(t, k)
		}
		seen := map[string]int{}
		for _, r := range revocations(t, f) {
			seen[r.GrantID]++
			assert.Equal(t, events.RevokedExpired, r.Reason)
		}
		assert.Len(t, seen, 20)
		for id, n := range seen {
			assert.Equal(t, 1, n, id)
		}
	})

	t.Run("broker restarted on the same store", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		f1 := setupAt(t, dir)
		first := f1.start(t)
		key, g := f1.grant(t, agentA, 2*time.Second)
		first.Stop()
		f1.env.Server.Shutdown()
		f1.env.Server.WaitForShutdown()

		f2 := setupAt(t, dir)
		f2.start(t)
		require.Eventually(t, func() bool { return len(revocations(t, f2)) == 1 }, waitFor, tick)
		f2.waitMarkerHandled(t, key)
		rs := revocations(t, f2)
		require.Len(t, rs, 1)
		assert.Equal(t, g.GrantID, rs[0].GrantID)
		assert.Equal(t, events.RevokedExpired, rs[0].Reason)
	})
}

func TestDone(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.start(t)

	t.Run("revokes at once and tombstones the grant", func(t *testing.T) {
		key, g := f.grant(t, agentA, 2*time.Second)
		out, err := done(t, f, g.GrantID)
		require.NoError(t, err)
		assert.Equal(t, broker.ActionResult{GrantID: g.GrantID, RequestID: g.RequestID, Agent: agentA, Outcome: "revoked"}, out)

		rs := revocationsOf(t, f, g.GrantID)
		require.Len(t, rs, 1)
		assert.Equal(t, events.RevokedCompleted, rs[0].Reason)
		assert.Equal(t, events.Actor{Kind: events.ActorAgent, ID: agentA}, rs[0].RevokedBy)
		assert.True(t, rs[0].RevokedAt.Before(g.ExpiresAt))
		assert.Equal(t, events.LeaseRevoked, f.lease(t, key).State)

		gv, ok := f.grantValue(t, key)
		require.True(t, ok, "the tombstone stays until the grant's expiry")
		assert.Equal(t, events.GrantRevoked, gv.Status)
		assert.False(t, gv.ActiveAt(time.Now()))

		// The tombstone kept a TTL: it vanishes, and its marker is no second
		// revocation.
		require.Eventually(t, func() bool { _, ok := f.grantValue(t, key); return !ok }, waitFor, tick)
		f.waitMarkerHandled(t, key)
		require.Len(t, revocationsOf(t, f, g.GrantID), 1)
	})

	t.Run("twice", func(t *testing.T) {
		_, g := f.grant(t, agentB, time.Minute)
		_, err := done(t, f, g.GrantID)
		require.NoError(t, err)
		_, err = done(t, f, g.GrantID)
		ae := apiErr(t, err)
		assert.Equal(t, 409, ae.Status)
		assert.Equal(t, events.CodeConflict, ae.Code)
		assert.Contains(t, ae.Message, "already ended (completed)")
		require.Len(t, revocationsOf(t, f, g.GrantID), 1)
		require.True(t, hasRejection(t, f, events.StageCompletion, events.CodeConflict, g.GrantID))
	})

	for _, c := range []struct {
		name, grantID string
		status        int
		code          string
	}{
		{"unknown grant", "grt_doesnotexist", 404, events.CodeNotFound},
		{"invalid grant id", "grt.*", 400, events.CodeMalformed},
		{"empty grant id", "", 400, events.CodeMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(rejections(t, f))
			_, err := done(t, f, c.grantID)
			ae := apiErr(t, err)
			assert.Equal(t, c.status, ae.Status)
			assert.Equal(t, c.code, ae.Code)
			rj := rejections(t, f)
			require.Len(t, rj, before+1)
			assert.Equal(t, events.StageCompletion, rj[before].Stage)
			assert.Equal(t, c.code, rj[before].Code)
		})
	}

	t.Run("malformed body", func(t *testing.T) {
		before := len(rejections(t, f))
		resp, err := f.env.NC.RequestWithContext(ctx(t), broker.APIDone, []byte(`{"grant":1}`))
		require.NoError(t, err)
		assert.Equal(t, "400", resp.Header.Get("Nats-Service-Error-Code"))
		require.Len(t, rejections(t, f), before+1)
	})
}

func hasRejection(t *testing.T, f *fixture, stage, code, grantID string) bool {
	for _, r := range rejections(t, f) {
		if r.Stage == stage && r.Code == code && (grantID == "" || r.GrantID == grantID) {
			return true
		}
	}
	return false
}

func TestGuardrail(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.start(t)
	kA1, gA1 := f.grant(t, agentA, time.Minute)
	kA2, gA2 := f.grant(t, agentA, time.Minute)
	kB, _ := f.grant(t, agentB, time.Minute)

	fired := f.fire(t, events.NewID("grd"), agentA, agentA, "price-floor")
	var sus []events.Suspension
	require.Eventually(t, func() bool {
		_, sus = stored[events.Suspension](t, f, "jit.suspended.>")
		return len(sus) == 1
	}, waitFor, tick)

	want := []string{gA1.GrantID, gA2.GrantID}
	if want[0] > want[1] {
		want[0], want[1] = want[1], want[0]
	}
	assert.Equal(t, want, sus[0].RevokedGrants)
	assert.Equal(t, fired.ID(), sus[0].GuardrailID)
	assert.Equal(t, events.Actor{Kind: events.ActorGuardrail, ID: "price-floor"}, sus[0].SuspendedBy)

	rs := revocations(t, f)
	require.Len(t, rs, 2)
	for _, r := range rs {
		assert.Equal(t, events.RevokedGuardrail, r.Reason)
		assert.Equal(t, events.Actor{Kind: events.ActorGuardrail, ID: "price-floor"}, r.RevokedBy)
		assert.Equal(t, "price below floor", r.Detail)
	}
	for _, k := range []string{kA1, kA2} {
		assert.Equal(t, events.LeaseRevoked, f.lease(t, k).State)
		gv, ok := f.grantValue(t, k)
		require.True(t, ok)
		assert.Equal(t, events.GrantRevoked, gv.Status)
	}
	assert.Equal(t, events.LeaseActive, f.lease(t, kB).State, "the other agent is untouched")
	gv, _ := f.grantValue(t, kB)
	assert.Equal(t, events.GrantActive, gv.Status)

	s, ok := f.suspended(t, agentA)
	require.True(t, ok)
	assert.Equal(t, fired.ID(), s.GuardrailID)
	_, ok = f.suspended(t, agentB)
	assert.False(t, ok)

	t.Run("the same event again", func(t *testing.T) {
		f.fire(t, fired.ID(), agentA, agentA, "price-floor") // the stream de-duplicates it
		// A true redelivery: the same event under another message id.
		m, err := broker.ToMsg(events.Subject(events.TypeGuardrailFired, agentA), fired)
		require.NoError(t, err)
		m.Header.Set(nats.MsgIdHdr, "redelivery-1")
		_, err = f.env.JS.PublishMsg(ctx(t), m)
		require.NoError(t, err)
		f.waitGuardrailIdle(t)
		_, sus := stored[events.Suspension](t, f, "jit.suspended.>")
		assert.Len(t, sus, 1)
		assert.Len(t, revocations(t, f), 2)
		s2, _ := f.suspended(t, agentA)
		assert.Equal(t, s, s2)
	})

	t.Run("a second guardrail keeps the first suspension", func(t *testing.T) {
		f.fire(t, events.NewID("grd"), agentA, agentA, "another-rule")
		f.waitGuardrailIdle(t)
		s2, _ := f.suspended(t, agentA)
		assert.Equal(t, s, s2)
		assert.Len(t, revocations(t, f), 2)
	})

	t.Run("an agent not in the configuration is suspended all the same", func(t *testing.T) {
		f.fire(t, events.NewID("grd"), "ghost-agent", "ghost-agent", "price-floor")
		require.Eventually(t, func() bool { _, ok := f.suspended(t, "ghost-agent"); return ok }, waitFor, tick)
	})
}

func TestGuardrailBadInput(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.start(t)
	pub := broker.NewPublisher(f.env.JS, "guardrail-test")

	cases := []struct {
		name    string
		subject string
		publish func(t *testing.T)
		stage   string
	}{
		{"not json", "guardrail.fired.x", func(t *testing.T) {
			_, err := f.env.JS.Publish(ctx(t), "guardrail.fired.x", []byte("not json"))
			require.NoError(t, err)
		}, events.StageEvent},
		{"agent differs from subject", "guardrail.fired." + agentA, func(t *testing.T) {
			f.fire(t, events.NewID("grd"), agentA, agentB, "price-floor")
		}, events.StageGuardrail},
		{"no rule", "guardrail.fired." + agentA, func(t *testing.T) {
			f.fire(t, events.NewID("grd"), agentA, agentA, "")
		}, events.StageGuardrail},
		{"unknown field", "guardrail.fired." + agentA, func(t *testing.T) {
			e, err := events.New(events.NewID("grd"), events.TypeGuardrailFired, "test", agentA,
				map[string]string{"agent": agentA, "rule": "price-floor", "severity": "high"})
			require.NoError(t, err)
			_, err = pub.Publish(ctx(t), "guardrail.fired."+agentA, e)
			require.NoError(t, err)
		}, events.StageGuardrail},
		{"another event type", "guardrail.fired." + agentA, func(t *testing.T) {
			e, err := events.New(events.NewID("evt"), events.TypeGranted, "test", agentA, events.Grant{Agent: agentA})
			require.NoError(t, err)
			_, err = pub.Publish(ctx(t), "guardrail.fired."+agentA, e)
			require.NoError(t, err)
		}, events.StageGuardrail},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(rejections(t, f))
			c.publish(t)
			require.Eventually(t, func() bool { return len(rejections(t, f)) == before+1 }, waitFor, tick)
			r := rejections(t, f)[before]
			assert.Equal(t, c.stage, r.Stage)
			assert.Equal(t, events.CodeMalformed, r.Code)
			assert.Equal(t, c.subject, r.Subject)
			_, ok := f.suspended(t, agentA)
			assert.False(t, ok)
		})
	}

	t.Run("the consumer is not blocked", func(t *testing.T) {
		f.fire(t, events.NewID("grd"), agentB, agentB, "price-floor")
		require.Eventually(t, func() bool { _, ok := f.suspended(t, agentB); return ok }, waitFor, tick)
		f.waitGuardrailIdle(t)
		assert.Len(t, rejections(t, f), len(cases))
	})
}

func TestSuspendedAgentNewGrant(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.start(t)
	f.fire(t, events.NewID("grd"), agentA, agentA, "price-floor")
	require.Eventually(t, func() bool { _, ok := f.suspended(t, agentA); return ok }, waitFor, tick)

	t.Run("live", func(t *testing.T) {
		key, g := f.grant(t, agentA, time.Minute)
		require.Eventually(t, func() bool { return f.lease(t, key).State == events.LeaseRevoked }, waitFor, tick)
		rs := revocationsOf(t, f, g.GrantID)
		require.Len(t, rs, 1)
		assert.Equal(t, events.RevokedGuardrail, rs[0].Reason)
		assert.Equal(t, events.Actor{Kind: events.ActorGuardrail, ID: "price-floor"}, rs[0].RevokedBy)
		gv, _ := f.grantValue(t, key)
		assert.Equal(t, events.GrantRevoked, gv.Status)
	})

}

func TestRestoreRevokesGrantsOfSuspendedAgents(t *testing.T) {
	t.Parallel()
	f := setup(t)
	key, g := f.grant(t, agentA, time.Minute)
	susp := events.Suspension{Agent: agentA, Rule: "price-floor", GuardrailID: "grd_x",
		SuspendedBy: events.Actor{Kind: events.ActorGuardrail, ID: "price-floor"}, SuspendedAt: time.Now().UTC()}
	_, err := f.env.Buckets.Suspensions.Create(ctx(t), agentA, mustJSON(t, susp))
	require.NoError(t, err)

	f.start(t)
	require.Eventually(t, func() bool { return f.lease(t, key).State == events.LeaseRevoked }, waitFor, tick)
	rs := revocationsOf(t, f, g.GrantID)
	require.Len(t, rs, 1)
	assert.Equal(t, events.RevokedGuardrail, rs[0].Reason)
}

func TestReinstate(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.start(t)
	fired := f.fire(t, events.NewID("grd"), agentA, agentA, "price-floor")
	require.Eventually(t, func() bool { _, ok := f.suspended(t, agentA); return ok }, waitFor, tick)

	for _, c := range []struct {
		name, token, agent string
		status             int
		code, mentions     string
	}{
		{"no approver", "", agentA, 403, events.CodeForbidden, "approver"},
		{"operator", "carol", agentA, 403, events.CodeForbidden, "org-admin"},
		{"invalid agent", "bob", "a.*", 400, events.CodeMalformed, "not a valid id"},
		{"not suspended", "bob", agentB, 404, events.CodeNotFound, "not suspended"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(rejections(t, f))
			_, err := reinstate(t, f, c.token, c.agent)
			ae := apiErr(t, err)
			assert.Equal(t, c.status, ae.Status)
			assert.Equal(t, c.code, ae.Code)
			assert.Contains(t, ae.Message, c.mentions)
			rj := rejections(t, f)
			require.Len(t, rj, before+1)
			assert.Equal(t, events.StageReinstate, rj[before].Stage)
			assert.Equal(t, c.code, rj[before].Code)
			assert.Contains(t, rj[before].Message, c.mentions)
			_, ok := f.suspended(t, agentA)
			assert.True(t, ok)
		})
	}

	t.Run("org-admin", func(t *testing.T) {
		out, err := reinstate(t, f, "bob", agentA)
		require.NoError(t, err)
		assert.Equal(t, broker.ActionResult{Agent: agentA, Outcome: "reinstated"}, out)
		_, ok := f.suspended(t, agentA)
		assert.False(t, ok)
		_, rein := stored[events.Reinstatement](t, f, "jit.reinstated.>")
		require.Len(t, rein, 1)
		assert.Equal(t, events.Actor{Kind: events.ActorApprover, ID: "bob", Roles: []string{"org-admin"}}, rein[0].ReinstatedBy)
		assert.Equal(t, fired.ID(), rein[0].Suspension.GuardrailID)
		assert.Equal(t, "fixed", rein[0].Comment)
	})

	t.Run("again", func(t *testing.T) {
		_, err := reinstate(t, f, "bob", agentA)
		assert.Equal(t, 404, apiErr(t, err).Status)
	})

	t.Run("new grants count again", func(t *testing.T) {
		key, _ := f.grant(t, agentA, time.Minute)
		out, err := done(t, f, f.lease(t, key).Grant.GrantID)
		require.NoError(t, err, "the grant was still active")
		assert.Equal(t, "revoked", out.Outcome)
	})
}

// TestExactlyOnce races the ways a grant can end against each other: done
// at its expiry, and two replicas.
func TestExactlyOnce(t *testing.T) {
	t.Parallel()

	t.Run("done at the moment of expiry", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		f.start(t)
		const n = 20
		grants := make([]events.Grant, n)
		keys := make([]string, n)
		for i := range grants {
			keys[i], grants[i] = f.grant(t, agentA, time.Second)
		}
		// Aim the calls at the expiry (a target, not synchronisation).
		<-time.After(time.Until(grants[0].ExpiresAt.Add(-40 * time.Millisecond)))
		answers := make([]error, n)
		var wg sync.WaitGroup
		for i := range grants {
			wg.Go(func() { _, answers[i] = done(t, f, grants[i].GrantID) })
		}
		wg.Wait()
		require.Eventually(t, func() bool { return len(revocations(t, f)) == n }, waitFor, tick)
		for _, k := range keys {
			f.waitMarkerHandled(t, k)
		}
		byGrant := map[string][]events.Revocation{}
		for _, r := range revocations(t, f) {
			byGrant[r.GrantID] = append(byGrant[r.GrantID], r)
		}
		completed := 0
		for i, g := range grants {
			rs := byGrant[g.GrantID]
			require.Len(t, rs, 1, g.GrantID)
			if answers[i] == nil {
				assert.Equal(t, events.RevokedCompleted, rs[0].Reason, "done answered revoked")
				completed++
			} else {
				ae := apiErr(t, answers[i])
				assert.Equal(t, 409, ae.Status)
				assert.Equal(t, events.RevokedExpired, rs[0].Reason, "done answered already ended")
			}
		}
		t.Logf("%d of %d grants ended by done, the rest by expiry", completed, n)
	})

	t.Run("concurrent revokes in two replicas", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		a, b := f.start(t), f.start(t)
		const n = 10
		var keys []string
		for range n {
			k, _ := f.grant(t, agentB, time.Minute)
			keys = append(keys, k)
		}
		var wg sync.WaitGroup
		for _, k := range keys {
			for i, s := range []*revoker.Service{a, b, a, b} {
				reason := []string{events.RevokedAdmin, events.RevokedCompleted, events.RevokedGuardrail, events.RevokedExpired}[i]
				wg.Go(func() {
					assert.NoError(t, s.Revoke(ctx(t), k, reason, events.Actor{Kind: events.ActorSystem, ID: "test"}, ""))
				})
			}
		}
		wg.Wait()
		rs := revocations(t, f)
		require.Len(t, rs, n)
		for _, k := range keys {
			l := f.lease(t, k)
			assert.Equal(t, events.LeaseRevoked, l.State)
			require.NotNil(t, l.Revocation)
			// The stored event is the one the ledger recorded: first reason won.
			for _, r := range rs {
				if r.GrantID == l.Grant.GrantID {
					assert.Equal(t, l.Revocation.Reason, r.Reason)
				}
			}
		}
	})

	t.Run("a marker for a grant without a lease", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		f.start(t)
		gid := events.GrantIDFor(events.NewID("req"))
		key := broker.GrantKey(agentA, gid)
		now := time.Now()
		_, err := f.env.Buckets.Grants.Create(ctx(t), key, mustJSON(t, events.Grant{GrantID: gid, Agent: agentA, Status: events.GrantActive, ExpiresAt: now.Add(time.Second)}),
			jetstream.KeyTTL(time.Second))
		require.NoError(t, err)
		f.waitMarkerHandled(t, key)
		rs := revocations(t, f)
		require.Len(t, rs, 1)
		assert.Equal(t, gid, rs[0].GrantID)
		assert.Equal(t, events.RevokedExpired, rs[0].Reason)
		assert.Equal(t, events.LeaseRevoked, f.lease(t, key).State)
		// Revoking it again changes nothing.
		require.NoError(t, revoker.New(f.deps).Revoke(ctx(t), key, events.RevokedAdmin, events.Actor{Kind: events.ActorSystem, ID: "test"}, ""))
		require.Len(t, revocations(t, f), 1)
	})
}

func TestRevokeBadKey(t *testing.T) {
	t.Parallel()
	f := setup(t)
	s := revoker.New(f.deps)
	for _, k := range []string{"", "agent", "a.b.c", ".x", "*.x"} {
		err := s.Revoke(ctx(t), k, events.RevokedAdmin, events.Actor{Kind: events.ActorSystem, ID: "test"}, "")
		assert.ErrorIs(t, err, revoker.ErrBadKey, k)
	}
}
