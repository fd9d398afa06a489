package config_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/stretchr/testify/require"
)

const hashAlice = "b5402af3712c50a173de2faf5a994576c14970651e00e3e99ef81a5ec7d76a6e"

func TestExampleConfigLoads(t *testing.T) {
	c, err := config.LoadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	a, ok := c.Agent("svc-price-optimizer")
	require.True(t, ok)
	require.Equal(t, 30*time.Minute, a.MaxJitDuration.D())
	require.True(t, a.HasBase("data:read"))
	require.True(t, a.IsEligible("integrations:write"))
	require.False(t, a.IsEligible("data:delete"))

	ap, ok := c.Authenticate("dev-alice")
	require.True(t, ok)
	require.Equal(t, "alice", ap.Name)
	require.True(t, ap.HasRole(config.RoleSecurityAdmin))
	_, ok = c.Authenticate("dev-mallory")
	require.False(t, ok)
	_, ok = c.Authenticate("")
	require.False(t, ok)
	require.Equal(t, config.DefaultApprovalWindow, c.ApprovalWindow.D())
	_, ok = c.Guardrail("price-floor")
	require.True(t, ok)
}

func TestConfigErrorsNameFileLineAndWhat(t *testing.T) {
	base := `
agents:
  - id: a1
    base: [data:read]
    eligible: [data:write]
    max_jit_duration: 30m
approvers:
  - name: alice
    roles: [security-admin]
    token_sha256: ` + hashAlice + `
rules:
`
	for name, tc := range map[string]struct{ yaml, want string }{
		"unknown field":     {base + "  - name: r1\n    permissions: [data:write]\n    mode: auto-approve\n    colour: red\n", `x.yaml:15: rule "r1": unknown field "colour"`},
		"unknown fields":    {strings.Replace(base, "    base: [data:read]", "    bsae: [data:read]", 1) + "  - name: r1\n    permissions: [data:write]\n    mode: auto-approve\n  - permissions: [data:write]\n    mode: deny\n    colour: red\n", `x.yaml:4: agent "a1": unknown field "bsae"` + "\n" + `x.yaml:17: rule #2: unknown field "colour"`},
		"bad mode":          {base + "  - name: r1\n    permissions: [data:write]\n    mode: yolo\n", `x.yaml:12: rule "r1": mode "yolo"`},
		"cap above max":     {base + "  - name: r1\n    agents: [a1]\n    permissions: [data:write]\n    mode: auto-approve\n    max_duration: 2h\n", `max_duration 2h0m0s is above agent "a1"`},
		"unknown agent":     {base + "  - name: r1\n    agents: [ghost]\n    permissions: [data:write]\n    mode: auto-approve\n", `unknown agent "ghost"`},
		"role nobody holds": {base + "  - name: r1\n    permissions: [data:write]\n    mode: require-approval\n    approver_roles: [org-admin]\n", `approver role "org-admin" is held by no approver`},
		"unknown role":      {base + "  - name: r1\n    permissions: [data:write]\n    mode: require-approval\n    approver_roles: [king]\n", `unknown approver role "king"`},
		"policy without":    {base + "  - name: r1\n    permissions: [data:write]\n    mode: policy\n", "mode policy needs a policy block"},
		"bad hours":         {base + "  - name: r1\n    permissions: [data:write]\n    mode: policy\n    policy: {hours: \"9-5\"}\n", "policy.hours"},
		"bad permission":    {base + "  - name: r1\n    permissions: [DATA]\n    mode: auto-approve\n", `permission pattern "DATA"`},
		"duplicate rule":    {base + "  - name: r1\n    permissions: [data:write]\n    mode: deny\n  - name: r1\n    permissions: [data:write]\n    mode: deny\n", `rule "r1": defined twice`},
		"bad duration":      {strings.Replace(base, "30m", "soon", 1), "bad duration"},
		"approver is agent": {strings.Replace(base, "name: alice", "name: a1", 1), "an agent's identity can never approve"},
		"bad token hash":    {strings.Replace(base, hashAlice, "abc", 1), "token_sha256"},
		"max above 24h":     {strings.Replace(base, "30m", "48h", 1), "above the limit"},
		"bad timezone":      {"timezone: Mars/Olympus\n" + base, "timezone"},
		"bad agent id":      {strings.Replace(base, "id: a1", "id: a.1", 1), "id must be"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := config.Parse("x.yaml", []byte(tc.yaml))
			require.ErrorIs(t, err, config.ErrInvalid)
			require.Contains(t, err.Error(), "x.yaml")
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestPermissionMatching(t *testing.T) {
	r := config.Rule{Agents: []string{"a1"}, Permissions: []string{"integrations:*", "data:write"}}
	require.True(t, r.Matches("a1", "integrations:write"))
	require.True(t, r.Matches("a1", "data:write"))
	require.False(t, r.Matches("a1", "data:read"))
	require.False(t, r.Matches("a2", "data:write"))
	require.True(t, config.PermissionMatches("*", "x:y"))
}

func TestHoursAndWeekdays(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 11, 27, h, m, 0, 0, time.UTC) } // a Friday
	require.True(t, config.InHours("08:00-18:00", at(8, 0)))
	require.False(t, config.InHours("08:00-18:00", at(18, 0)))
	require.True(t, config.InHours("22:00-06:00", at(23, 30)), "a window may span midnight")
	require.True(t, config.InHours("22:00-06:00", at(5, 59)))
	require.False(t, config.InHours("22:00-06:00", at(12, 0)))
	require.False(t, config.InHours("nonsense", at(12, 0)))
	require.True(t, config.OnWeekday([]string{"fri"}, at(1, 0)))
	require.False(t, config.OnWeekday([]string{"mon", "tue"}, at(1, 0)))
	require.True(t, config.OnWeekday(nil, at(1, 0)))
}

func TestApplyStoresOnceAndWatchFollows(t *testing.T) {
	env := natstest.Setup(t)
	ctx := context.Background()
	c, err := config.LoadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	rev, changed, err := config.Apply(ctx, env.Buckets.Config, c)
	require.NoError(t, err)
	require.True(t, changed)
	rev2, changed, err := config.Apply(ctx, env.Buckets.Config, c)
	require.NoError(t, err)
	require.False(t, changed, "the same configuration is not stored twice")
	require.Equal(t, rev, rev2)

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	src, err := config.Watch(wctx, env.Buckets.Config, env.Log)
	require.NoError(t, err)
	require.Equal(t, c.Digest(), src.Current().Digest())

	// A change is picked up without restart.
	c2, err := config.Parse("v2.yaml", []byte(strings.Replace(string(mustRead(t)), "max_jit_duration: 30m", "max_jit_duration: 20m", 1)))
	require.NoError(t, err)
	_, changed, err = config.Apply(ctx, env.Buckets.Config, c2)
	require.NoError(t, err)
	require.True(t, changed)
	require.Eventually(t, func() bool { return src.Current().Digest() == c2.Digest() }, 5*time.Second, 10*time.Millisecond)

	// Garbage in the bucket is ignored: the last good configuration stays.
	_, err = env.Buckets.Config.Put(ctx, config.ActiveKey, []byte(`{"agents":"nope"}`))
	require.NoError(t, err)
	_, err = env.Buckets.Config.Put(ctx, config.ActiveKey, c.JSON())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return src.Current().Digest() == c.Digest() }, 5*time.Second, 10*time.Millisecond)
}

func mustRead(t *testing.T) []byte {
	b, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	return b
}

func TestConfigErrorsInFileOrderAndWildcardCap(t *testing.T) {
	yml := `
agents:
  - id: a1
    base: [data:read]
    eligible: [data:write]
    max_jit_duration: 30m
rules:
  - name: late
    permissions: [data:write]
    mode: yolo
  - name: everyone
    permissions: [data:write]
    mode: auto-approve
    max_duration: 2h
approvers:
  - name: a1
    roles: [security-admin]
    token_sha256: ` + hashAlice + `
`
	_, err := config.Parse("x.yaml", []byte(yml))
	require.ErrorIs(t, err, config.ErrInvalid)
	msg := err.Error()
	iMode := strings.Index(msg, `x.yaml:8: rule "late"`)
	iCap := strings.Index(msg, `x.yaml:11: rule "everyone": max_duration 2h0m0s is above every agent's max_jit_duration (the longest is 30m0s)`)
	iApprover := strings.Index(msg, `x.yaml:16: approver "a1"`)
	require.True(t, iMode >= 0 && iCap >= 0 && iApprover >= 0, msg)
	require.True(t, iMode < iCap && iCap < iApprover, "problems are listed in file order:\n%s", msg)
}
