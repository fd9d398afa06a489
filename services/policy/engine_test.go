package policy

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

// featuresYAML exercises every rule feature the policy engine adds: CEL
// conditions over each variable, label matching, conditional deny, the rate
// limit, holidays and the history parts of the risk score.
const featuresYAML = `
timezone: Europe/Paris
holidays: ["2025-12-25"]
rate_limit: {requests: 3, per: 1m}
agents:
  - id: bot
    owner: pricing-team
    base: [data:read]
    eligible: [data:write, data:delete, reports:run, tickets:write, cache:flush, mail:send, secrets:read]
    max_jit_duration: 60m
    labels: {tier: prod, team: pricing}
  - id: dev-bot
    eligible: [data:write, cache:flush]
    max_jit_duration: 60m
    labels: {tier: dev}
rules:
  - name: freeze-on-holidays
    permissions: ["data:*"]
    mode: deny
    condition: time.holiday
  - name: offenders
    permissions: ["*"]
    mode: deny
    condition: agent.guardrail_fires_24h >= 2 || agent.denials_24h > 5
  - name: short-writes
    agents: [bot]
    permissions: [data:write]
    mode: auto-approve
    condition: request.duration <= duration("10m") && request.reason.contains("SKU")
  - name: ticketed-writes
    permissions: [data:write]
    mode: auto-approve
    condition: '"ticket" in request.context && request.context["ticket"].startsWith("OPS-")'
  - name: writes-need-a-human
    permissions: [data:write]
    mode: require-approval
    approver_roles: [security-admin]
  - name: prod-cache
    agent_labels: {tier: prod}
    permissions: [cache:flush]
    mode: auto-approve
    max_duration: 15m
  - name: dev-cache
    agent_labels: {tier: dev}
    permissions: [cache:flush]
    mode: deny
  - name: office-reports
    permissions: [reports:run]
    mode: auto-approve
    condition: time.hour >= 9 && time.hour < 18 && !(time.weekday in ["sat", "sun"])
  - name: low-risk-tickets
    permissions: [tickets:write]
    mode: auto-approve
    condition: risk.score < 50 && risk.parts["sensitivity"] <= 30 && agent.owner == "pricing-team" && agent.labels["team"] == "pricing"
  - name: mail-once
    permissions: [mail:send]
    mode: auto-approve
    condition: agent.grants_24h == 0 && agent.requests_1m < 2 && "data:read" in agent.base && agent.max_duration >= duration("1h")
  - name: broken-condition
    permissions: [secrets:read]
    mode: auto-approve
    condition: request.context["vault"] == "main"
  - name: delete-by-policy
    permissions: [data:delete]
    mode: policy
    policy: {max_risk: 80}
risk:
  sensitivity: {data:write: 30, data:delete: 60, tickets:write: 20}
  guardrail_fires: 15
  denials: 5
  request_rate: 10
` + approversYAML

// parisWed1000 is Wednesday 5 March 2025, 10:00 in Paris.
var parisWed1000 = time.Date(2025, 3, 5, 9, 0, 0, 0, time.UTC)

func TestRuleFeatures(t *testing.T) {
	cfg := parse(t, "features.yaml", featuresYAML)
	christmas := time.Date(2025, 12, 25, 10, 0, 0, 0, time.UTC)
	sunday := time.Date(2025, 3, 9, 10, 0, 0, 0, time.UTC)
	evening := time.Date(2025, 3, 5, 19, 30, 0, 0, time.UTC) // 20:30 in Paris

	type tc struct {
		name    string
		agent   string
		perm    string
		dur     time.Duration
		reason  string
		ctx     map[string]string
		now     time.Time
		hist    Counts
		outcome string
		mode    string
		rule    string
		reason2 string // a part of the decision's reason
	}
	cases := []tc{
		{name: "condition on duration and reason holds", agent: "bot", perm: "data:write", dur: 10 * time.Minute, reason: "fix SKU prices",
			outcome: events.OutcomeApproved, mode: events.ModeAutoApprove, rule: "short-writes", reason2: "rule short-writes auto-approves data:write (its condition holds)"},
		{name: "condition false falls through to the next rule", agent: "bot", perm: "data:write", dur: 20 * time.Minute, reason: "fix SKU prices",
			outcome: events.OutcomePending, mode: events.ModeRequireApproval, rule: "writes-need-a-human"},
		{name: "condition on request context", agent: "bot", perm: "data:write", dur: 20 * time.Minute, ctx: map[string]string{"ticket": "OPS-7"},
			outcome: events.OutcomeApproved, rule: "ticketed-writes"},
		{name: "context present but wrong", agent: "bot", perm: "data:write", dur: 20 * time.Minute, ctx: map[string]string{"ticket": "HR-7"},
			outcome: events.OutcomePending, rule: "writes-need-a-human"},
		{name: "agents restriction: dev-bot is not bot", agent: "dev-bot", perm: "data:write", dur: 5 * time.Minute, reason: "SKU",
			outcome: events.OutcomePending, rule: "writes-need-a-human"},
		{name: "conditional deny on a holiday wins over an earlier-matching approve", agent: "bot", perm: "data:write", dur: 5 * time.Minute, reason: "SKU", now: christmas,
			outcome: events.OutcomeDenied, mode: events.ModeDeny, rule: "freeze-on-holidays", reason2: "rule freeze-on-holidays denies data:write for bot"},
		{name: "history: guardrail fires deny", agent: "bot", perm: "reports:run", dur: 5 * time.Minute, hist: Counts{GuardrailFires: 2},
			outcome: events.OutcomeDenied, mode: events.ModeDeny, rule: "offenders"},
		{name: "history: denials deny", agent: "bot", perm: "reports:run", dur: 5 * time.Minute, hist: Counts{Denials: 6},
			outcome: events.OutcomeDenied, rule: "offenders"},
		{name: "labels: prod agent", agent: "bot", perm: "cache:flush", dur: 5 * time.Minute,
			outcome: events.OutcomeApproved, rule: "prod-cache"},
		{name: "labels: prod agent over the rule's cap", agent: "bot", perm: "cache:flush", dur: 20 * time.Minute,
			outcome: events.OutcomeDenied, mode: events.ModeAutoApprove, rule: "prod-cache", reason2: "20m exceeds the max_duration of rule prod-cache (15m)"},
		{name: "labels: dev agent denied", agent: "dev-bot", perm: "cache:flush", dur: 5 * time.Minute,
			outcome: events.OutcomeDenied, mode: events.ModeDeny, rule: "dev-cache"},
		{name: "time: office hours in the configured zone", agent: "bot", perm: "reports:run", dur: 5 * time.Minute,
			outcome: events.OutcomeApproved, rule: "office-reports"},
		{name: "time: evening in Paris", agent: "bot", perm: "reports:run", dur: 5 * time.Minute, now: evening,
			outcome: events.OutcomeDenied, mode: events.ModeDefaultDeny, reason2: "no rule allows reports:run for bot; default is deny"},
		{name: "time: weekday", agent: "bot", perm: "reports:run", dur: 5 * time.Minute, now: sunday,
			outcome: events.OutcomeDenied, mode: events.ModeDefaultDeny},
		{name: "risk and agent in a condition", agent: "bot", perm: "tickets:write", dur: 5 * time.Minute,
			outcome: events.OutcomeApproved, rule: "low-risk-tickets"},
		{name: "risk too high for the condition", agent: "bot", perm: "tickets:write", dur: 5 * time.Minute, hist: Counts{Denials: 4, RequestsLastMinute: 1},
			outcome: events.OutcomeDenied, mode: events.ModeDefaultDeny},
		{name: "history in a condition", agent: "bot", perm: "mail:send", dur: 5 * time.Minute, hist: Counts{RequestsLastMinute: 1},
			outcome: events.OutcomeApproved, rule: "mail-once"},
		{name: "history in a condition: a grant today", agent: "bot", perm: "mail:send", dur: 5 * time.Minute, hist: Counts{Grants: 1},
			outcome: events.OutcomeDenied, mode: events.ModeDefaultDeny},
		{name: "a condition that cannot be evaluated fails closed", agent: "bot", perm: "secrets:read", dur: 5 * time.Minute,
			outcome: events.OutcomeDenied, mode: events.ModeDeny, rule: "broken-condition", reason2: "the condition of rule broken-condition could not be evaluated for secrets:read (no such key: vault); denied"},
		{name: "the same condition evaluates once the key is there", agent: "bot", perm: "secrets:read", dur: 5 * time.Minute, ctx: map[string]string{"vault": "main"},
			outcome: events.OutcomeApproved, rule: "broken-condition"},
		{name: "policy max_risk sees the history parts", agent: "bot", perm: "data:delete", dur: 5 * time.Minute, hist: Counts{GuardrailFires: 1},
			outcome: events.OutcomeApproved, mode: events.ModePolicy, rule: "delete-by-policy"},
		{name: "policy max_risk exceeded by history", agent: "bot", perm: "data:delete", dur: 5 * time.Minute, hist: Counts{GuardrailFires: 1, Denials: 1},
			outcome: events.OutcomeDenied, mode: events.ModePolicy, reason2: "risk 82 above 80"},
		{name: "rate limit", agent: "bot", perm: "reports:run", dur: 5 * time.Minute, hist: Counts{RequestsInRateWindow: 3},
			outcome: events.OutcomeDenied, mode: events.ModeDeny, rule: RateLimitRule,
			reason2: "rate limit: agent bot made 3 requests in the 1m before this one; the limit is 3 per 1m, so it is denied without asking an approver"},
		{name: "rate limit denies what would wait for a human", agent: "bot", perm: "data:write", dur: 30 * time.Minute, hist: Counts{RequestsInRateWindow: 7},
			outcome: events.OutcomeDenied, rule: RateLimitRule},
		{name: "under the rate limit", agent: "bot", perm: "reports:run", dur: 5 * time.Minute, hist: Counts{RequestsInRateWindow: 2},
			outcome: events.OutcomeApproved, rule: "office-reports"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			now := c.now
			if now.IsZero() {
				now = parisWed1000
			}
			req := request(c.agent, c.dur, c.perm)
			req.Reason, req.Context = c.reason, c.ctx
			in := Input{Request: req, Now: now, History: c.hist}
			d := Evaluate(cfg, in)
			require.Equal(t, c.outcome, d.Outcome, d.Reason)
			if c.mode != "" {
				require.Equal(t, c.mode, d.Mode, d.Reason)
			}
			if c.rule != "" {
				require.Equal(t, c.rule, d.Rule, d.Reason)
			}
			require.Contains(t, d.Reason, c.reason2)
			require.Equal(t, d, Evaluate(cfg, in), "deterministic")
			require.Equal(t, d, Explain(cfg, in).Decision, "explain decides as the service does")
		})
	}
}

func TestHistoryRiskParts(t *testing.T) {
	cfg := parse(t, "features.yaml", featuresYAML)
	bot, _ := cfg.Agent("bot")
	req := request("bot", 6*time.Minute, "tickets:write")
	christmas := time.Date(2025, 12, 25, 10, 0, 0, 0, time.UTC)
	r := Score(cfg, bot, req, christmas, Counts{GuardrailFires: 1, Denials: 3, RequestsLastMinute: 0})
	require.Equal(t, events.Risk{Score: 72, Parts: []events.RiskPart{
		{Name: "sensitivity", Points: 20, Detail: "tickets:write is the most sensitive permission requested: 20 points"},
		{Name: "duration", Points: 2, Detail: "6m of the agent's 1h maximum: 2 of 20 points"},
		{Name: "off_hours", Points: 20, Detail: "decided on a holiday (2025-12-25, Thu 11:00 CET): 20 points"},
		{Name: "breadth", Points: 0, Detail: "a single permission"},
		{Name: "guardrail_fires", Points: 15, Detail: "1 guardrail fire in the last 24h at 15 points: 15 points"},
		{Name: "denials", Points: 15, Detail: "3 denied requests in the last 24h at 5 points each: 15 points"},
		{Name: "request_rate", Points: 0, Detail: "no other requests in the last minute"},
	}}, r)
	// Huge counts saturate instead of overflowing.
	r = Score(cfg, bot, req, christmas, Counts{GuardrailFires: 1 << 40})
	require.Equal(t, 100, r.Score)
}

func TestExplainOutput(t *testing.T) {
	cfg := parse(t, "features.yaml", featuresYAML)
	req := request("bot", 20*time.Minute, "data:write", "cache:flush")
	req.Reason = "fix SKU prices"
	x := Explain(cfg, Input{Request: req, Now: parisWed1000, History: Counts{Grants: 1, RequestsLastMinute: 1}})
	var b bytes.Buffer
	x.WriteText(&b)
	want := `request: bot asks for data:write, cache:flush for 20m
history: 1 grants, 0 denials, 0 guardrail fires in the last 24h; 1 requests in the last minute

data:write:
  - freeze-on-holidays [deny] (line 17): matches the agent and data:write, but its condition is false: time.holiday
  - offenders [deny] (line 21): matches the agent and data:write, but its condition is false: agent.guardrail_fires_24h >= 2 || agent.denials_24h > 5
  - short-writes [auto-approve] (line 25): matches the agent and data:write, but its condition is false: request.duration <= duration("10m") && request.reason.contains("SKU")
  - ticketed-writes [auto-approve] (line 30): matches the agent and data:write, but its condition is false: "ticket" in request.context && request.context["ticket"].startsWith("OPS-")
  + writes-need-a-human [require-approval] (line 34): matches the agent and data:write: the first matching rule decides
  - prod-cache [auto-approve] (line 38): does not match data:write (permissions: cache:flush)
  - dev-cache [deny] (line 43): does not apply to agent bot (agent_labels: tier=dev)
  - office-reports [auto-approve] (line 47): does not match data:write (permissions: reports:run)
  - low-risk-tickets [auto-approve] (line 51): does not match data:write (permissions: tickets:write)
  - mail-once [auto-approve] (line 55): does not match data:write (permissions: mail:send)
  - broken-condition [auto-approve] (line 59): does not match data:write (permissions: secrets:read)
  - delete-by-policy [policy] (line 63): does not match data:write (permissions: data:delete)
  => pending: rule writes-need-a-human requires a human approver for data:write

cache:flush:
  - freeze-on-holidays [deny] (line 17): does not match cache:flush (permissions: data:*)
  - offenders [deny] (line 21): matches the agent and cache:flush, but its condition is false: agent.guardrail_fires_24h >= 2 || agent.denials_24h > 5
  - short-writes [auto-approve] (line 25): does not match cache:flush (permissions: data:write)
  - ticketed-writes [auto-approve] (line 30): does not match cache:flush (permissions: data:write)
  - writes-need-a-human [require-approval] (line 34): does not match cache:flush (permissions: data:write)
  + prod-cache [auto-approve] (line 38): matches the agent and cache:flush: the first matching rule decides
  - dev-cache [deny] (line 43): does not apply to agent bot (agent_labels: tier=dev)
  - office-reports [auto-approve] (line 47): does not match cache:flush (permissions: reports:run)
  - low-risk-tickets [auto-approve] (line 51): does not match cache:flush (permissions: tickets:write)
  - mail-once [auto-approve] (line 55): does not match cache:flush (permissions: mail:send)
  - broken-condition [auto-approve] (line 59): does not match cache:flush (permissions: secrets:read)
  - delete-by-policy [policy] (line 63): does not match cache:flush (permissions: data:delete)
  => denied: 20m exceeds the max_duration of rule prod-cache (15m) for cache:flush

risk 57/100:
  sensitivity       30  data:write is the most sensitive permission requested: 30 points
  duration           7  20m of the agent's 1h maximum: 7 of 20 points
  off_hours          0  decided at Wed 10:00 CET, within business hours 08:00-18:00
  breadth           10  2 permissions, 1 beyond the first at 10 points each
  guardrail_fires    0  no guardrail fires in the last 24h
  denials            0  no denied requests in the last 24h
  request_rate      10  1 other request in the last minute at 10 points: 10 points

decision: denied (mode auto-approve, rule prod-cache)
reason: 20m exceeds the max_duration of rule prod-cache (15m) for cache:flush
`
	require.Equal(t, want, b.String())

	// Decided before any rule: the gate is explained.
	x = Explain(cfg, Input{Request: request("bot", 5*time.Minute, "reports:run"), Now: parisWed1000, History: Counts{RequestsInRateWindow: 3}})
	b.Reset()
	x.WriteText(&b)
	require.Contains(t, b.String(), "decided before any rule: rate limit: agent bot made 3 requests")
	require.Contains(t, b.String(), "decision: denied (mode deny, rule rate-limit)")
	require.Empty(t, x.Permissions)
}

func TestPolicyTestsExample(t *testing.T) {
	tf, err := LoadTestFile("../../examples/policy-tests.yaml")
	require.NoError(t, err)
	cfg, err := config.LoadFile(tf.Config)
	require.NoError(t, err)
	for _, r := range tf.Run(cfg) {
		require.True(t, r.Passed(), "%s: %v (reason: %s)", r.Name, r.Failures, r.Decision.Reason)
	}

	// A wrong expectation is reported.
	tf.Cases[0].Expect.Outcome = events.OutcomeDenied
	tf.Cases[0].Expect.ReasonContains = "nope"
	res := tf.Run(cfg)
	require.False(t, res[0].Passed())
	require.Equal(t, []string{`outcome is "approved", want "denied"`, `reason "rule market-intel-write auto-approves data:write" does not contain "nope"`}, res[0].Failures)
}

func TestLoadTestFileErrors(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct{ body, want string }{
		"unknown field": {"cases:\n  - name: a\n    agent: x\n    expect: {outcome: approved}\n    colour: red\n", "field colour not found"},
		"no cases":      {"config: x.yaml\n", "no cases"},
		"no outcome":    {"cases:\n  - name: a\n    agent: x\n", `case #1 "a" needs name, agent and expect.outcome`},
		"bad duration":  {"cases:\n  - name: a\n    agent: x\n    duration: soon\n    expect: {outcome: approved}\n", `case "a": duration`},
		"bad time":      {"at: yesterday\ncases:\n  - name: a\n    agent: x\n    expect: {outcome: approved}\n", `case "a": at`},
	} {
		t.Run(name, func(t *testing.T) {
			p := fmt.Sprintf("%s/%s.yaml", dir, strings.ReplaceAll(name, " ", "-"))
			require.NoError(t, writeFile(p, tc.body))
			_, err := LoadTestFile(p)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func writeFile(path, body string) error { return os.WriteFile(path, []byte(body), 0o600) }
