package config_test

import (
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/config"
	"github.com/stretchr/testify/require"
)

const policyBase = `
agents:
  - id: a1
    base: [data:read]
    eligible: [data:write, reports:run]
    max_jit_duration: 30m
    labels: {team: pricing}
  - id: a2
    eligible: [data:write]
    max_jit_duration: 10m
    labels: {team: intel}
approvers:
  - name: alice
    roles: [security-admin]
    token_sha256: ` + hashAlice + `
rules:
`

// TestPolicyConfigErrors is a table of every configuration error the policy
// engine adds; each names the file, the rule's line, the rule and what is
// wrong.
func TestPolicyConfigErrors(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, want string }{
		"CEL syntax error with position": {policyBase + "  - name: r1\n    permissions: [data:write]\n    mode: auto-approve\n    condition: \"request.duration <\"\n",
			`x.yaml:17: rule "r1": condition: 1:19: Syntax error`},
		"CEL unknown variable": {policyBase + "  - name: r1\n    permissions: [data:write]\n    mode: auto-approve\n    condition: \"user.admin\"\n",
			`x.yaml:17: rule "r1": condition: 1:1: undeclared reference to 'user'`},
		"CEL unknown field": {policyBase + "  - name: r1\n    permissions: [data:write]\n    mode: auto-approve\n    condition: \"agent.colour == 'red'\"\n",
			`rule "r1": condition: 1:6: undefined field 'colour'`},
		"CEL type error": {policyBase + "  - name: r1\n    permissions: [data:write]\n    mode: auto-approve\n    condition: \"risk.score < 'high'\"\n",
			`rule "r1": condition: 1:12: found no matching overload for '_<_'`},
		"CEL not a bool": {policyBase + "  - name: r1\n    permissions: [data:write]\n    mode: auto-approve\n    condition: \"risk.score\"\n",
			`rule "r1": condition: must be a bool expression, not int`},
		"unknown permission": {policyBase + "  - name: r1\n    agents: [a2]\n    permissions: [reports:run]\n    mode: auto-approve\n",
			`x.yaml:17: rule "r1": unknown permission "reports:run": no agent the rule matches is eligible for it`},
		"cap above a labelled agent's max": {policyBase + "  - name: r1\n    agent_labels: {team: intel}\n    permissions: [data:write]\n    mode: auto-approve\n    max_duration: 20m\n",
			`rule "r1": max_duration 20m0s is above agent "a2"'s max_jit_duration 10m0s`},
		"labels match no agent": {policyBase + "  - name: r1\n    agent_labels: {team: nobody}\n    permissions: [data:write]\n    mode: auto-approve\n",
			`rule "r1": agent_labels team=nobody match no agent`},
		"approver role nobody holds": {policyBase + "  - name: r1\n    permissions: [data:write]\n    mode: require-approval\n    approver_roles: [operator]\n",
			`x.yaml:17: rule "r1": approver role "operator" is held by no approver`},
		"unknown rule field": {policyBase + "  - name: r1\n    permissions: [data:write]\n    mode: auto-approve\n    conditon: \"true\"\n",
			`x.yaml:20: rule "r1": unknown field "conditon"`},
		"bad holiday":         {"holidays: [christmas]\n" + policyBase, `holidays: "christmas" is not a date`},
		"rate per too long":   {"rate_limit: {requests: 5, per: 48h}\n" + policyBase, "rate_limit: per 48h0m0s is above 24h0m0s"},
		"rate per alone":      {"rate_limit: {per: 1m}\n" + policyBase, "rate_limit: per needs requests"},
		"negative rate":       {"rate_limit: {requests: -1}\n" + policyBase, "rate_limit: requests and per must not be negative"},
		"history weight":      {"risk: {denials: 500}\n" + policyBase, "risk: denials must be 0-100 points"},
		"bad sensitivity key": {"risk: {sensitivity: {Data: 5}}\n" + policyBase, `risk: sensitivity: "Data" is not a permission`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := config.Parse("x.yaml", []byte(tc.yaml))
			require.ErrorIs(t, err, config.ErrInvalid)
			require.Contains(t, err.Error(), "x.yaml")
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestConditionsCompileAndSurviveTheKVRoundTrip(t *testing.T) {
	yml := "holidays: [\"2025-12-25\"]\nrate_limit: {requests: 3}\n" + policyBase + `  - name: r1
    agent_labels: {team: pricing}
    permissions: ["data:*"]
    mode: auto-approve
    condition: >-
      request.duration <= duration("15m") && agent.labels["team"] == "pricing" &&
      !time.holiday && risk.score < 50 && request.reason.contains("SKU")
`
	c, err := config.Parse("x.yaml", []byte(yml))
	require.NoError(t, err)
	require.Equal(t, config.DefaultRatePer, c.RateLimit.Per.D(), "requests without per count per minute")
	require.Equal(t, []int{0}, c.Candidates("a1", "data:write"))
	require.Empty(t, c.Candidates("a2", "data:write"), "a2 lacks the label")
	require.Empty(t, c.Candidates("a1", "reports:run"))
	require.True(t, c.IsHoliday("2025-12-25"))

	stored, err := config.FromJSON(c.JSON())
	require.NoError(t, err)
	require.Equal(t, c.Digest(), stored.Digest())
	in := &config.CELInput{
		Request: config.CELRequest{Agent: "a1", Permissions: []string{"data:write"}, Duration: 10 * time.Minute, Reason: "clean up SKUs"},
		Agent:   config.CELAgent{ID: "a1", Labels: map[string]string{"team": "pricing"}},
		Risk:    config.CELRisk{Score: 40},
	}
	for _, cfg := range []*config.Config{c, stored} {
		ok, err := cfg.EvalCondition(0, in)
		require.NoError(t, err)
		require.True(t, ok)
	}
	in.Time.Holiday = true
	ok, err := stored.EvalCondition(0, in)
	require.NoError(t, err)
	require.False(t, ok)
}
