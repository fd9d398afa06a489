package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/approval"
	"github.com/agentjit/jit/services/policy"
	"github.com/stretchr/testify/require"
)

func TestPolicyTestCommand(t *testing.T) {
	h := &harness{t: t, vars: map[string]string{}, ctx: t.Context()}
	r := h.run("policy", "test", "../../examples/policy-tests.yaml")
	require.Equal(t, 0, r.code, "stdout %s stderr %s", r.stdout, r.stderr)
	require.Contains(t, r.stdout, "ok    market-intel writes data, auto-approved\n")
	require.Contains(t, r.stdout, "8 passed, 0 failed")

	// A changed policy breaks an expectation: exit 1 and the mismatch.
	dir := t.TempDir()
	ex, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	changed := filepath.Join(dir, "jit.yaml")
	require.NoError(t, os.WriteFile(changed, []byte(strings.Replace(string(ex), "max_risk: 60", "max_risk: 30", 1)), 0o600))
	r = h.run("policy", "test", "../../examples/policy-tests.yaml", "--config", changed)
	require.Equal(t, 1, r.code, r.stdout)
	require.Contains(t, r.stdout, `FAIL  the optimizer writes data for 10m by policy: outcome is "denied", want "approved"`)
	require.Contains(t, r.stdout, "reason: rule optimizer-write-low-risk does not allow data:write: risk 37 above 30")
	require.Contains(t, r.stdout, "6 passed, 2 failed")

	r = h.run("policy", "test", filepath.Join(dir, "missing.yaml"))
	require.Equal(t, 2, r.code)
}

func TestPolicyExplainCommand(t *testing.T) {
	// Offline, against a file.
	h := &harness{t: t, vars: map[string]string{}, ctx: t.Context()}
	r := h.run("policy", "explain", "--config", "../../examples/jit.yaml", "--agent", "svc-price-optimizer", "--perm", "data:write",
		"--duration", "25m", "--reason", "reprice everything", "--at", "2025-03-05T10:00:00Z")
	require.Equal(t, 0, r.code, r.stderr)
	for _, want := range []string{
		"- repeat-offenders [deny] (line " + exampleLine(t, "- name: repeat-offenders") + "): matches the agent and data:write, but its condition is false: agent.guardrail_fires_24h >= 3",
		"- market-intel-write [auto-approve] (line " + exampleLine(t, "- name: market-intel-write") + "): does not apply to agent svc-price-optimizer (agents: market-intel)",
		"+ optimizer-write-low-risk [policy] (line " + exampleLine(t, "- name: optimizer-write-low-risk") + "): matches the agent and data:write: the first matching rule decides",
		"risk 47/100:",
		"duration          17  25m of the agent's 30m maximum: 17 of 20 points",
		"decision: denied (mode policy, rule optimizer-write-low-risk)",
		"reason: rule optimizer-write-low-risk does not allow data:write: duration 25m above 20m",
	} {
		require.Contains(t, r.stdout, want)
	}

	// Live: the active configuration and the agent's history from the
	// audit stream; nothing is requested.
	h = newHarness(t)
	h.applyExampleConfig()
	r = h.run("--json", "policy", "explain", "--agent", "market-intel", "--perm", "data:write", "--duration", "10m", "--reason", "clean up")
	require.Equal(t, 0, r.code, r.stderr)
	l := r.lines(t)
	require.Len(t, l, 1)
	require.Equal(t, "approved", l[0]["decision"].(map[string]any)["outcome"])
	require.Empty(t, h.env.AuditEvents(t, "jit.>"), "a dry run creates nothing")

	r = h.run("policy", "explain", "--agent", "market-intel", "--perm", "data:write", "--reason", "x")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "--duration must be positive")
}

func TestConfigCommands(t *testing.T) {
	h := newHarness(t)
	h.applyExampleConfig()
	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := config.Watch(wctx, h.env.Buckets.Config, natstest.Logger(t))
	require.NoError(t, err)
	p := policy.New(service.Deps{NC: h.env.NC, JS: h.env.JS, Buckets: h.env.Buckets, Config: src, Log: natstest.Logger(t)})
	require.NoError(t, p.Start(context.Background()))
	t.Cleanup(p.Stop)
	// The approval service authenticates the approver and hands the file
	// to the policy service.
	a := approval.New(service.Deps{NC: h.env.NC, JS: h.env.JS, Buckets: h.env.Buckets, Config: h.env.WatchSecrets(t), Log: natstest.Logger(t)})
	require.NoError(t, a.Start(context.Background()))
	t.Cleanup(a.Stop)

	dir := t.TempDir()
	ex, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	good := filepath.Join(dir, "good.yaml")
	require.NoError(t, os.WriteFile(good, []byte(strings.Replace(string(ex), "max_risk: 60", "max_risk: 55", 1)), 0o600))
	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte(strings.Replace(string(ex), "condition: agent.guardrail_fires_24h >= 3", "condition: agent.guardrail_fires >= 3", 1)), 0o600))

	r := h.run("config", "apply", good)
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "JIT_TOKEN is not set")

	h.vars["JIT_TOKEN"] = "dev-alice"
	r = h.run("config", "apply", bad)
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "refused: invalid configuration:\n"+bad+":"+exampleLine(t, "- name: repeat-offenders")+`: rule "repeat-offenders": condition: 1:6: undefined field 'guardrail_fires'`)

	r = h.run("config", "apply", good)
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `^applied .*good.yaml: revision 2, digest [0-9a-f]{16}\n$`, r.stdout)
	require.Eventually(t, func() bool { return src.Revision() == 2 }, 5*time.Second, 10*time.Millisecond)

	r = h.run("config", "show")
	require.Equal(t, 0, r.code, r.stderr)
	require.True(t, strings.HasPrefix(r.stdout, "# active configuration: revision 2, digest "+src.Current().Digest()+"\n"), r.stdout)
	require.Contains(t, r.stdout, "max_risk: 55")
	// What an operator may read: no token hash, no webhook secret.
	require.NotContains(t, r.stdout, "token_sha256")
	require.NotContains(t, r.stdout, "b5402af3712c50a173de2faf5a994576c14970651e00e3e99ef81a5ec7d76a6e")
	require.Contains(t, r.stdout, "only the approval service's to read")
	require.NotContains(t, r.stdout, "redacted")

	r = h.run("config", "nope")
	require.Equal(t, 2, r.code)
}

// exampleLine is the line of examples/jit.yaml that contains s.
func exampleLine(t *testing.T, s string) string {
	t.Helper()
	b, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	for i, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			return strconv.Itoa(i + 1)
		}
	}
	t.Fatalf("%q is not in examples/jit.yaml", s)
	return ""
}
