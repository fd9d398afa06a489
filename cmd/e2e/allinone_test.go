package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/cmd/internal/allinone"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/stretchr/testify/require"
)

func startJitd(t *testing.T, dataDir, configFile string) *allinone.App {
	t.Helper()
	app := allinone.New(allinone.Options{
		ConfigFile: configFile,
		DataDir:    dataDir,
		NATSListen: "127.0.0.1:-1",
		HTTPListen: "127.0.0.1:0",
	}, natstest.Logger(t))
	require.NoError(t, app.Run(context.Background()))
	t.Cleanup(app.Close)
	register(t, app.NATSURL(), filepath.Join(dataDir, "keys"), app.CredsDir())
	checkContract(t, app.NATSURL())
	return app
}

// TestWalkthrough is the README's story, step by step, against jitd and the
// jitctl binary: auto-approval, expiry, policy, a human approval, task
// completion, a guardrail with suspension, reinstatement, bad input, the
// audit trail, and a restart on the same data directory.
func TestWalkthrough(t *testing.T) {
	bin := bins(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	app := startJitd(t, dataDir, exampleConfig(t))
	url := app.NATSURL()
	c := cli{t: t, bin: bin, url: url}

	// 1. Auto-approve: market-intel may get data:write for up to 60m.
	r := c.run("request", "--agent", "market-intel", "--perm", "data:write", "--duration", "2s",
		"--reason", "clean up orphaned SKUs", "--context", "ticket=OPS-42", "--json")
	require.Equal(t, 0, r.Code, r.Stderr)
	g := r.JSON(t)
	require.Equal(t, "granted", g["outcome"])
	shortGrant := g["grant_id"].(string)
	require.NotEmpty(t, g["request_id"])
	require.Equal(t, 0, c.run("check", "--agent", "market-intel", "--perm", "data:write").Code)
	require.Equal(t, 0, c.run("check", "--agent", "market-intel", "--perm", "data:read").Code, "base permission")
	require.Equal(t, 1, c.run("check", "--agent", "market-intel", "--perm", "data:delete").Code)

	// 2. The grant expires by itself: refused, and exactly one jit.revoked.
	waitFor(t, "grant expires", 10*time.Second, func() bool {
		return c.run("check", "--agent", "market-intel", "--perm", "data:write").Code == 1
	})
	waitFor(t, "expiry revocation event", 10*time.Second, func() bool { return len(revocationsOf(t, url, shortGrant)) == 1 })
	require.Equal(t, events.RevokedExpired, revocationsOf(t, url, shortGrant)[0].Reason)

	// 3. Policy-based: a short data:write for the optimizer passes its policy,
	// a long one does not.
	r = c.run("request", "--agent", "svc-price-optimizer", "--perm", "data:write", "--duration", "10m", "--reason", "reprice winter catalogue", "--json")
	require.Equal(t, 0, r.Code, r.Stderr)
	policyGrant := r.JSON(t)["grant_id"].(string)
	r = c.run("request", "--agent", "svc-price-optimizer", "--perm", "data:write", "--duration", "25m", "--reason", "reprice everything", "--json")
	require.Equal(t, 1, r.Code, "denied by policy")
	require.Equal(t, "denied", r.JSON(t)["outcome"])

	// 4. Human approval: integrations:write needs a security-admin; the agent
	// blocks until alice answers. carol (operator) may not.
	wait := c.background("request", "--agent", "svc-price-optimizer", "--perm", "integrations:write", "--duration", "10m",
		"--reason", "sync prices to the storefront", "--json")
	var reqID string
	waitFor(t, "request pending", 20*time.Second, func() bool {
		for _, p := range c.as("dev-alice").run("pending", "--json").JSONLines(t) {
			if p["agent"] == "svc-price-optimizer" {
				reqID, _ = p["request_id"].(string)
				return reqID != ""
			}
		}
		return false
	})
	r = c.as("dev-carol").run("approve", reqID, "--comment", "lgtm")
	require.Equal(t, 2, r.Code, "an operator may not approve what needs a security-admin")
	require.Equal(t, 2, c.run("approve", reqID).Code, "no token")
	require.Equal(t, 0, c.as("dev-alice").run("approve", reqID, "--comment", "change ticket CHG-7").Code)
	r = wait()
	require.Equal(t, 0, r.Code, r.Stderr)
	humanGrant := r.JSON(t)["grant_id"].(string)
	require.Equal(t, 0, c.run("check", "--agent", "svc-price-optimizer", "--perm", "integrations:write").Code)
	require.Equal(t, 2, c.as("dev-alice").run("approve", reqID).Code, "an answered request cannot be answered again")

	// 5. Task completion ends the grant at once.
	require.Equal(t, 0, c.run("done", humanGrant).Code)
	require.Equal(t, 1, c.run("check", "--agent", "svc-price-optimizer", "--perm", "integrations:write").Code)
	waitFor(t, "completion event", 10*time.Second, func() bool { return len(revocationsOf(t, url, humanGrant)) == 1 })
	require.Equal(t, events.RevokedCompleted, revocationsOf(t, url, humanGrant)[0].Reason)
	require.Equal(t, 2, c.run("done", humanGrant).Code, "a grant ends once")

	// 6. A guardrail fires: every grant of the agent is revoked and it is
	// suspended; its requests are refused and it loses even base access.
	require.Equal(t, 0, c.run("guardrail", "fire", "--agent", "svc-price-optimizer", "--rule", "price-floor", "--detail", "SKU 1182 at 0.40, floor 2.00").Code)
	waitFor(t, "guardrail revocation", 10*time.Second, func() bool { return len(revocationsOf(t, url, policyGrant)) == 1 })
	require.Equal(t, events.RevokedGuardrail, revocationsOf(t, url, policyGrant)[0].Reason)
	require.Equal(t, 1, c.run("check", "--agent", "svc-price-optimizer", "--perm", "data:write").Code)
	require.Equal(t, 1, c.run("check", "--agent", "svc-price-optimizer", "--perm", "data:read").Code)
	r = c.run("request", "--agent", "svc-price-optimizer", "--perm", "data:write", "--duration", "5m", "--reason", "try again")
	require.Equal(t, 2, r.Code)
	require.Contains(t, r.Stderr, "suspended")

	// 7. Reinstatement needs an org-admin or security-admin.
	require.Equal(t, 2, c.as("dev-carol").run("reinstate", "--agent", "svc-price-optimizer").Code)
	require.Equal(t, 0, c.as("dev-bob").run("reinstate", "--agent", "svc-price-optimizer", "--comment", "floor bug fixed").Code)
	require.Equal(t, 0, c.run("check", "--agent", "svc-price-optimizer", "--perm", "data:read").Code)
	r = c.run("request", "--agent", "svc-price-optimizer", "--perm", "data:write", "--duration", "5m", "--reason", "finish repricing", "--json")
	require.Equal(t, 0, r.Code, r.Stderr)
	liveGrant := r.JSON(t)["grant_id"].(string)

	// 8. Bad input: a clear error, exit 2, and an audit event each.
	// An agent the configuration does not know: a credential can be issued
	// for it (jitctl creds issue, with the data directory's keys), but the
	// requester refuses it.
	require.Equal(t, 0, c.run("creds", "issue", "agent", "ghost", "--data-dir", dataDir).Code)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"request", "--agent", "ghost", "--perm", "data:write", "--duration", "5m", "--reason", "x"}, "unknown agent"},
		{[]string{"request", "--agent", "svc-price-optimizer", "--perm", "data:write", "--duration", "45m", "--reason", "x"}, "maxJitDuration"},
		{[]string{"request", "--agent", "market-intel", "--perm", "data:delete", "--duration", "5m", "--reason", "x"}, "not eligible"},
		{[]string{"request", "--agent", "market-intel", "--perm", "data:write", "--duration", "5m", "--reason", " "}, "reason"},
	} {
		r := c.run(tc.args...)
		require.Equal(t, 2, r.Code)
		require.Contains(t, r.Stderr, tc.want)
	}
	require.GreaterOrEqual(t, len(audit(t, url, "jit.rejected.>")), 4+3, "every refusal is audited")
	require.Equal(t, 2, c.as("dev-alice").run("deny", "req_nonexistent").Code, "deny needs a comment")

	// 9. The audit trail has every kind of event, one revocation per grant.
	r = c.run("audit", "--json")
	require.Equal(t, 0, r.Code)
	seen := map[string]int{}
	revoked := map[string]int{}
	for _, e := range r.JSONLines(t) {
		seen[e["type"].(string)]++
		if e["type"] == events.TypeRevoked {
			revoked[e["grantid"].(string)]++
		}
	}
	for _, typ := range []string{events.TypeRequested, events.TypeDecided, events.TypeGranted, events.TypeRevoked,
		events.TypeGuardrailFired, events.TypeSuspended, events.TypeReinstated, events.TypeRejected, events.TypeConfigApplied} {
		require.Positive(t, seen[typ], "audit has %s", typ)
	}
	for g, n := range revoked {
		require.Equal(t, 1, n, "grant %s revoked once", g)
	}
	requireRequestIDs(t, r.JSONLines(t))
	require.Equal(t, 0, c.run("audit").Code, "human output")

	// 10. A suspension and a live grant survive a restart of jitd on the same
	// data directory, as does the audit trail.
	require.Equal(t, 0, c.run("guardrail", "fire", "--agent", "market-intel", "--rule", "price-floor").Code)
	waitFor(t, "market-intel suspended", 10*time.Second, func() bool {
		return c.run("check", "--agent", "market-intel", "--perm", "data:read").Code == 1
	})
	before := len(audit(t, url, ">"))
	app.Close()

	app2 := startJitd(t, dataDir, "")
	c.url = app2.NATSURL()
	require.Equal(t, 1, c.run("check", "--agent", "market-intel", "--perm", "data:read").Code, "still suspended")
	require.Equal(t, 0, c.run("check", "--agent", "svc-price-optimizer", "--perm", "data:write").Code, "live grant kept")
	r = c.run("grants", "--json")
	require.Equal(t, 0, r.Code)
	require.True(t, strings.Contains(r.Stdout, liveGrant))
	require.GreaterOrEqual(t, len(audit(t, c.url, ">")), before)
}
