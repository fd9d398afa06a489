package config_test

import (
	"strings"
	"testing"

	"github.com/agentjit/jit/pkg/config"
	"github.com/stretchr/testify/require"
)

func TestApprovalExtValidation(t *testing.T) {
	base := `
agents:
  - id: a1
    owner: alice
    base: [data:read]
    eligible: [data:write]
    max_jit_duration: 30m
approvers:
  - name: alice
    roles: [security-admin]
    token_sha256: ` + hashAlice + `
notifiers:
  - name: hook
    type: webhook
    url: http://127.0.0.1:9/hook
    secret: s3cret
rules:
`
	rule := "  - name: r1\n    permissions: [data:write]\n    mode: require-approval\n    approver_roles: [security-admin]\n"
	ok, err := config.Parse("x.yaml", []byte(replace(base, "owner: alice", "owner: intel-team")+rule+"    approval_window: 5m\n    separate_owner: true\n    notify: [hook]\n"))
	require.NoError(t, err)
	require.Equal(t, "5m0s", ok.Rules[0].ApprovalWindow.D().String())

	// Ownership: by name or by team; an empty owner is nobody's.
	a := config.Approver{Name: "alice", Teams: []string{"pricing-team"}}
	require.True(t, a.Owns("alice"))
	require.True(t, a.Owns("pricing-team"))
	require.False(t, a.Owns("intel-team"))
	require.False(t, a.Owns(""))

	for name, tc := range map[string]struct{ yaml, want string }{
		"two-person rule, one approver": {base + rule + "    approvals: 2\n", "needs 2 distinct approvers but only 1"},
		"separate_owner leaves nobody":  {base + rule + "    separate_owner: true\n", `needs 1 distinct approvers for agent "a1" but only 0 hold one of [security-admin] without owning it`},
		"negative approvals":            {base + rule + "    approvals: -1\n", "approvals must not be negative"},
		"window too short":              {base + rule + "    approval_window: 10ms\n", "approval_window 10ms must be between 1s and 24h"},
		"unknown notifier":              {base + rule + "    notify: [pager]\n", `notify names "pager"`},
		"approvals on auto-approve":     {base + "  - name: r1\n    permissions: [data:write]\n    mode: auto-approve\n    approvals: 2\n", "need mode require-approval"},
		"webhook without secret":        {replace(base, "    secret: s3cret\n", "") + rule, "needs a secret"},
		"bad notifier type":             {replace(base, "type: webhook", "type: pager") + rule, `type "pager" must be webhook or slack`},
		"bad notifier url":              {replace(base, "http://127.0.0.1:9/hook", "ftp://x") + rule, "must be an absolute http or https URL"},
		"bad console url":               {"console: {url: nope}\n" + base + rule, `console: url "nope"`},
		"empty team":                    {replace(base, "    roles: [security-admin]\n", "    roles: [security-admin]\n    teams: [\"\"]\n") + rule, "teams must not contain an empty name"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := config.Parse("x.yaml", []byte(tc.yaml))
			require.ErrorIs(t, err, config.ErrInvalid)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func replace(s, old, new string) string {
	return strings.Replace(s, old, new, 1)
}
