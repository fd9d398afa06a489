package checker_test

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/checker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

const agent = "market-intel" // base data:read, eligible data:write in examples/jit.yaml

// clock is a settable clock for WithClock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

type fixture struct {
	env   *natstest.Env
	chk   *checker.Checker
	clock *clock
	ctx   context.Context
}

func setup(t testing.TB) *fixture {
	t.Helper()
	env := natstest.Setup(t)
	yml, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	src := env.ApplyConfig(t, string(yml))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	clk := &clock{t: time.Now()}
	chk := checker.New(env.JS, src, checker.WithClock(clk.Now), checker.WithLogger(env.Log))
	require.NoError(t, chk.Start(ctx))
	t.Cleanup(chk.Stop)
	return &fixture{env: env, chk: chk, clock: clk, ctx: ctx}
}

func grant(id, agent string, expires time.Time, perms ...string) events.Grant {
	return events.Grant{
		GrantID: id, RequestID: "req_" + id, Agent: agent, Permissions: perms,
		Reason: "test", Mode: events.ModeAutoApprove, GrantedAt: expires.Add(-time.Hour),
		ExpiresAt: expires, Status: events.GrantActive,
	}
}

func (f *fixture) putGrant(t testing.TB, g events.Grant) {
	t.Helper()
	b, err := json.Marshal(g)
	require.NoError(t, err)
	_, err = f.env.Buckets.Grants.Put(f.ctx, broker.GrantKey(g.Agent, g.GrantID), b)
	require.NoError(t, err)
}

func (f *fixture) suspend(t *testing.T, agent string) {
	t.Helper()
	b, err := json.Marshal(events.Suspension{Agent: agent, Rule: "price-floor", GuardrailID: "grd_1", SuspendedAt: time.Now()})
	require.NoError(t, err)
	_, err = f.env.Buckets.Suspensions.Put(f.ctx, agent, b)
	require.NoError(t, err)
}

func eventually(t testing.TB, cond func() bool, msg string) {
	t.Helper()
	require.Eventually(t, cond, 5*time.Second, 5*time.Millisecond, msg)
}

func TestBaseAndUnknown(t *testing.T) {
	f := setup(t)
	for _, tc := range []struct {
		name, agent, perm string
		allowed, base     bool
	}{
		{"base permission", agent, "data:read", true, true},
		{"no grant", agent, "data:write", false, false},
		{"unknown agent", "nobody", "data:read", false, false},
		{"empty agent", "", "data:read", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.allowed, f.chk.Allowed(tc.agent, tc.perm))
			r := f.chk.Check(tc.agent, tc.perm)
			require.Equal(t, tc.allowed, r.Allowed, r.Reason)
			require.Equal(t, tc.base, r.Base)
			require.NotEmpty(t, r.Reason)
		})
	}
	require.Contains(t, f.chk.Check("nobody", "data:read").Reason, "unknown agent")
}

func TestGrantLifecycle(t *testing.T) {
	f := setup(t)
	expires := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	g := grant("grt_a", agent, expires, "data:write")
	key := broker.GrantKey(agent, g.GrantID)

	f.putGrant(t, g)
	eventually(t, func() bool { return f.chk.Allowed(agent, "data:write") }, "grant put → allowed")
	r := f.chk.Check(agent, "data:write")
	require.True(t, r.Allowed)
	require.Equal(t, "grt_a", r.GrantID)
	require.True(t, expires.Equal(r.ExpiresAt))
	require.False(t, r.Base)
	require.False(t, f.chk.Allowed(agent, "integrations:write"), "a grant allows only its permissions")
	require.False(t, f.chk.Allowed("svc-price-optimizer", "data:write"), "a grant allows only its agent")
	require.Len(t, f.chk.Grants(agent), 1)

	t.Run("exactly at expires_at is refused though the key is still there", func(t *testing.T) {
		f.clock.Set(expires.Add(-time.Nanosecond))
		require.True(t, f.chk.Allowed(agent, "data:write"))
		f.clock.Set(expires)
		require.False(t, f.chk.Allowed(agent, "data:write"))
		require.Contains(t, f.chk.Check(agent, "data:write").Reason, "no active grant")
		require.Empty(t, f.chk.Grants(agent))
		_, err := f.env.Buckets.Grants.Get(f.ctx, key)
		require.NoError(t, err, "the key must still exist: the refusal comes from the clock")
		require.True(t, f.chk.Allowed(agent, "data:read"), "base permissions do not expire")
		f.clock.Set(time.Now())
		require.True(t, f.chk.Allowed(agent, "data:write"))
	})

	t.Run("tombstone is refused", func(t *testing.T) {
		tomb := g
		tomb.Status = events.GrantRevoked
		f.putGrant(t, tomb)
		eventually(t, func() bool { return !f.chk.Allowed(agent, "data:write") }, "tombstone → refused")
		require.Empty(t, f.chk.Grants(""))
	})

	t.Run("purged key is refused", func(t *testing.T) {
		f.putGrant(t, g)
		eventually(t, func() bool { return f.chk.Allowed(agent, "data:write") }, "re-put → allowed")
		require.NoError(t, f.env.Buckets.Grants.Purge(f.ctx, key))
		eventually(t, func() bool { return !f.chk.Allowed(agent, "data:write") }, "purge → refused")
	})

	t.Run("deleted key is refused", func(t *testing.T) {
		f.putGrant(t, g)
		eventually(t, func() bool { return f.chk.Allowed(agent, "data:write") }, "re-put → allowed")
		require.NoError(t, f.env.Buckets.Grants.Delete(f.ctx, key))
		eventually(t, func() bool { return !f.chk.Allowed(agent, "data:write") }, "delete → refused")
	})
}

func TestTTLMarkerRemovesGrant(t *testing.T) {
	f := setup(t)
	// The clock stays in the past, so only the server's expiry marker can
	// remove the grant.
	f.clock.Set(time.Now().Add(-time.Hour))
	g := grant("grt_ttl", agent, time.Now().Add(time.Hour), "data:write")
	b, err := json.Marshal(g)
	require.NoError(t, err)
	_, err = f.env.Buckets.Grants.Create(f.ctx, broker.GrantKey(agent, g.GrantID), b, jetstream.KeyTTL(time.Second))
	require.NoError(t, err)
	eventually(t, func() bool { return f.chk.Allowed(agent, "data:write") }, "created → allowed")
	eventually(t, func() bool { return len(f.chk.Grants("")) == 0 }, "TTL marker → grant removed")
	require.False(t, f.chk.Allowed(agent, "data:write"))
}

func TestSuspension(t *testing.T) {
	f := setup(t)
	f.putGrant(t, grant("grt_s", agent, time.Now().Add(time.Hour), "data:write"))
	eventually(t, func() bool { return f.chk.Allowed(agent, "data:write") }, "grant → allowed")

	f.suspend(t, agent)
	eventually(t, func() bool { return !f.chk.Allowed(agent, "data:read") }, "suspended → base refused")
	require.False(t, f.chk.Allowed(agent, "data:write"), "suspended → grant refused")
	r := f.chk.Check(agent, "data:read")
	require.False(t, r.Allowed)
	require.Contains(t, r.Reason, "suspended")
	require.Contains(t, r.Reason, "price-floor")
	s, ok := f.chk.Suspended(agent)
	require.True(t, ok)
	require.Equal(t, "price-floor", s.Rule)
	require.True(t, f.chk.Allowed("svc-price-optimizer", "data:read"), "other agents are unaffected")

	require.NoError(t, f.env.Buckets.Suspensions.Delete(f.ctx, agent))
	eventually(t, func() bool { return f.chk.Allowed(agent, "data:read") }, "reinstated → base allowed")
	_, ok = f.chk.Suspended(agent)
	require.False(t, ok)
}

func TestUndecodableSuspensionFailsClosed(t *testing.T) {
	f := setup(t)
	_, err := f.env.Buckets.Suspensions.Put(f.ctx, agent, []byte("not json"))
	require.NoError(t, err)
	eventually(t, func() bool { return !f.chk.Allowed(agent, "data:read") }, "unreadable suspension still suspends")
}

func TestUndecodableOrForeignGrantIgnored(t *testing.T) {
	f := setup(t)
	_, err := f.env.Buckets.Grants.Put(f.ctx, broker.GrantKey(agent, "grt_bad"), []byte("{"))
	require.NoError(t, err)
	// A grant of another agent stored under this agent's key grants nothing.
	f.putGrant(t, grant("grt_other", "svc-price-optimizer", time.Now().Add(time.Hour), "data:write"))
	foreign := grant("grt_foreign", "svc-price-optimizer", time.Now().Add(time.Hour), "data:write")
	b, _ := json.Marshal(foreign)
	_, err = f.env.Buckets.Grants.Put(f.ctx, broker.GrantKey(agent, foreign.GrantID), b)
	require.NoError(t, err)
	eventually(t, func() bool { return f.chk.Allowed("svc-price-optimizer", "data:write") }, "last put seen")
	require.False(t, f.chk.Allowed(agent, "data:write"))
}

func TestStartSeesExistingStateAndGrantsOrder(t *testing.T) {
	env := natstest.Setup(t)
	yml, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	src := env.ApplyConfig(t, string(yml))
	ctx := t.Context()
	now := time.Now()
	put := func(g events.Grant) {
		b, err := json.Marshal(g)
		require.NoError(t, err)
		_, err = env.Buckets.Grants.Put(ctx, broker.GrantKey(g.Agent, g.GrantID), b)
		require.NoError(t, err)
	}
	put(grant("grt_late", agent, now.Add(2*time.Hour), "data:write"))
	put(grant("grt_early", "svc-price-optimizer", now.Add(time.Hour), "integrations:write"))
	put(grant("grt_gone", agent, now.Add(-time.Minute), "data:write"))

	chk := checker.New(env.JS, src)
	require.NoError(t, chk.Start(ctx))
	t.Cleanup(chk.Stop)
	// No waiting: Start returns after the initial values.
	require.True(t, chk.Allowed(agent, "data:write"))
	require.True(t, chk.Allowed("svc-price-optimizer", "integrations:write"))
	all := chk.Grants("")
	require.Len(t, all, 2)
	require.Equal(t, "grt_early", all[0].GrantID)
	require.Equal(t, "grt_late", all[1].GrantID)
	require.Len(t, chk.Grants(agent), 1)
	require.Empty(t, chk.Grants("nobody"))
}

func TestNilConfigRefusesAll(t *testing.T) {
	env := natstest.Setup(t)
	chk := checker.New(env.JS, nil)
	require.NoError(t, chk.Start(t.Context()))
	t.Cleanup(chk.Stop)
	require.False(t, chk.Allowed(agent, "data:read"))
}

// withGrants stores a few grants of agent, the last one holding perm.
func withGrants(t testing.TB, perm string) *fixture {
	f := setup(t)
	exp := time.Now().Add(time.Hour)
	for _, id := range []string{"grt_1", "grt_2", "grt_3", "grt_4"} {
		f.putGrant(t, grant(id, agent, exp, "other:"+id))
	}
	f.putGrant(t, grant("grt_5", agent, exp, perm))
	eventually(t, func() bool { return f.chk.Allowed(agent, perm) }, "grants seen")
	return f
}

func TestAllowedDoesNotAllocate(t *testing.T) {
	f := withGrants(t, "data:write")
	for _, tc := range []struct{ name, agent, perm string }{
		{"grant", agent, "data:write"},
		{"base", agent, "data:read"},
		{"refused", agent, "integrations:write"},
		{"unknown", "nobody", "data:read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Zero(t, testing.AllocsPerRun(100, func() { f.chk.Allowed(tc.agent, tc.perm) }))
		})
	}
}

func BenchmarkAllowed(b *testing.B) {
	f := withGrants(b, "data:write")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if !f.chk.Allowed(agent, "data:write") {
			b.Fatal("refused")
		}
	}
}
