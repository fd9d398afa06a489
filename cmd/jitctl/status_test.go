package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/cmd/internal/allinone"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/revoker"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func statusReport(t *testing.T, r result) StatusReport {
	t.Helper()
	var rep StatusReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), "stdout %q stderr %q", r.stdout, r.stderr)
	return rep
}

// TestStatusHealthyJitd: against a running jitd (its operator credential),
// jitctl status lists an instance of each of the five services with its
// version and uptime, each durable consumer's backlog, the configuration's
// revision and a suspended agent, and exits 0.
func TestStatusHealthyJitd(t *testing.T) {
	app := allinone.New(allinone.Options{ConfigFile: "../../examples/jit.yaml", DataDir: t.TempDir(), NATSListen: "127.0.0.1:-1"},
		zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	require.NoError(t, app.Run(context.Background()))
	t.Cleanup(app.Close)
	h := &harness{t: t, vars: map[string]string{"NATS_URL": app.NATSURL(), "JIT_CREDS_DIR": app.CredsDir()}, ctx: t.Context()}

	r := h.run("status", "--json")
	require.Equal(t, 0, r.code, "stdout %s stderr %s", r.stdout, r.stderr)
	rep := statusReport(t, r)
	require.Equal(t, "healthy", rep.Health, "%v", rep.Problems)
	services := map[string]Instance{}
	for _, in := range rep.Instances {
		services[in.Service] = in
	}
	durables := map[string]bool{}
	for _, name := range []string{"requester", "policy", "approval", "revoker", "auditor"} {
		in, ok := services[name]
		require.True(t, ok, "%s is listed", name)
		require.Equal(t, service.Version, in.Version)
		require.False(t, in.Started.IsZero())
		require.NotNil(t, in.Status, name)
		require.True(t, in.Status.Ready, "%s: %s", name, in.Status.NotReady)
		for _, c := range in.Status.Consumers {
			require.Empty(t, c.Error)
			durables[c.Durable] = true
		}
	}
	for _, d := range []string{"policy", "approval", "approval-timeouts", "revoker-expiry", "revoker-guardrail", "auditor"} {
		require.True(t, durables[d], "consumer %s is reported", d)
	}
	require.GreaterOrEqual(t, rep.ConfigRevision, uint64(1))
	require.Empty(t, rep.FailingRevocations)
	require.Empty(t, rep.Suspended)

	// A suspended agent is shown (and is not a degradation).
	r = h.run("guardrail", "fire", "--agent", "market-intel", "--rule", "price-floor", "--detail", "status test")
	require.Equal(t, 0, r.code, "stdout %s stderr %s", r.stdout, r.stderr)
	require.Eventually(t, func() bool {
		r = h.run("status", "--json")
		rep = statusReport(t, r)
		return len(rep.Suspended) == 1
	}, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, 0, r.code)
	require.Equal(t, "market-intel", rep.Suspended[0].Agent)

	r = h.run("status")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, "health: healthy")
	require.Contains(t, r.stdout, "consumer revoker-expiry")
	require.Contains(t, r.stdout, "suspended agents: 1")
}

// TestStatusDegradedShowsFailingRevocation: a revocation that keeps failing
// shows in jitctl status within seconds, with its grant, agent and last
// error, and the status is degraded (exit 1); so is a system missing
// services.
func TestStatusDegradedShowsFailingRevocation(t *testing.T) {
	h := newHarness(t)
	yml, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	d := service.Deps{NC: h.env.NC, JS: h.env.JS, Buckets: h.env.Buckets, Config: h.env.ApplyConfig(t, string(yml)), Log: h.env.Log}
	rv := revoker.New(d)
	require.NoError(t, rv.Start(h.ctx))
	t.Cleanup(rv.Stop)

	// A lease in a state the revoker does not know, whose grant key
	// expires in a second: its revocation fails on every attempt.
	now := time.Now().UTC()
	g := events.Grant{GrantID: "g-stuck", RequestID: "r-stuck", Agent: "market-intel", Permissions: []string{"data:write"},
		Reason: "t", Mode: events.ModeAutoApprove, GrantedAt: now, ExpiresAt: now.Add(time.Second), Status: events.GrantActive}
	key := broker.GrantKey(g.Agent, g.GrantID)
	lease, err := json.Marshal(events.Lease{Grant: g, State: "stuck"})
	require.NoError(t, err)
	_, err = h.env.Buckets.Leases.Create(h.ctx, key, lease)
	require.NoError(t, err)
	gb, err := json.Marshal(g)
	require.NoError(t, err)
	_, err = broker.PutKeepTTL(h.ctx, h.env.JS, broker.BucketGrants, key, gb, 0, broker.TTLFor(g.ExpiresAt, now))
	require.NoError(t, err)

	var r result
	var rep StatusReport
	require.Eventually(t, func() bool {
		r = h.run("status", "--json", "--wait", "300ms")
		rep = statusReport(t, r)
		return len(rep.FailingRevocations) == 1
	}, 10*time.Second, 50*time.Millisecond, "the failing revocation shows")
	require.Less(t, time.Since(g.ExpiresAt), 5*time.Second, "within seconds of the expiry")
	require.Equal(t, 1, r.code, "degraded")
	require.Equal(t, "degraded", rep.Health)
	f := rep.FailingRevocations[0]
	require.Equal(t, "g-stuck", f.GrantID)
	require.Equal(t, "market-intel", f.Agent)
	require.Contains(t, f.LastError, "unknown state")
	require.Contains(t, strings.Join(rep.Problems, "\n"), "no requester is running")

	r = h.run("status", "--wait", "300ms")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stdout, "g-stuck  agent market-intel")
}

// TestStatusUnreachable: no NATS server, exit 2.
func TestStatusUnreachable(t *testing.T) {
	h := &harness{t: t, vars: map[string]string{"NATS_URL": "nats://" + freeAddr(t)}, ctx: t.Context()}
	r := h.run("status", "--json")
	require.Equal(t, 2, r.code)
	require.Equal(t, "unreachable", statusReport(t, r).Health)
}
