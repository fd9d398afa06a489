package policy

import (
	"os"
	"testing"
	"time"
	_ "time/tzdata" // the zone tests do not depend on the host's zoneinfo

	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

// Fixed instants: 5 March 2025 is a Wednesday.
var (
	wed1000 = time.Date(2025, 3, 5, 10, 0, 0, 0, time.UTC)
	wed2000 = time.Date(2025, 3, 5, 20, 0, 0, 0, time.UTC)
	sat1000 = time.Date(2025, 3, 8, 10, 0, 0, 0, time.UTC)
)

const approversYAML = `
approvers:
  - name: alice
    roles: [security-admin]
    token_sha256: b5402af3712c50a173de2faf5a994576c14970651e00e3e99ef81a5ec7d76a6e
  - name: bob
    roles: [org-admin]
    token_sha256: ef164568fad920bebac8dcc6061d0df675f3b2e2c00d0d5c6766a00370b11be0
  - name: carol
    roles: [operator]
    token_sha256: 3a34ac1adbf1b4a9d7d607cf0b647d2f186d6db30e7edb026d5491dd4e5e74de
`

// rulesYAML exercises every rule feature with one agent, a1 (max 60m).
const rulesYAML = `
timezone: UTC
approval_window: 10m
agents:
  - id: a1
    base: [data:read]
    eligible: [data:write, data:delete, reports:run, integrations:write, secrets:read, billing:write, misc:thing]
    max_jit_duration: 60m
rules:
  - name: data-auto
    agents: [a1]
    permissions: ["data:*"]
    mode: auto-approve
    max_duration: 30m
  - name: no-delete
    permissions: [data:delete]
    mode: deny
  - name: office-hours
    permissions: [reports:run]
    mode: policy
    policy:
      hours: "09:00-17:00"
      weekdays: [mon, tue, wed, thu, fri]
      max_risk: 45
      max_duration: 20m
  - name: reports-auto
    permissions: ["reports:*"]
    mode: auto-approve
  - name: integrations
    permissions: ["integrations:*"]
    mode: require-approval
    approver_roles: [security-admin, org-admin]
  - name: secrets
    permissions: [secrets:read]
    mode: require-approval
    approver_roles: [security-admin]
  - name: billing
    permissions: [billing:write]
    mode: require-approval
    approver_roles: [operator]
risk:
  sensitivity:
    data:write: 30
    data:delete: 60
    integrations:write: 50
    default: 10
  duration: 20
  off_hours: 20
  business_hours: "08:00-18:00"
  breadth: 10
` + approversYAML

// zoneYAML reads hours in New York.
const zoneYAML = `
timezone: America/New_York
agents:
  - id: a1
    eligible: [reports:run]
    max_jit_duration: 60m
rules:
  - name: office-hours
    permissions: [reports:run]
    mode: policy
    policy:
      hours: "09:00-17:00"
risk:
  duration: 20
  off_hours: 20
  business_hours: "08:00-18:00"
  breadth: 10
` + approversYAML

func parse(t testing.TB, name, yml string) *config.Config {
	t.Helper()
	c, err := config.Parse(name, []byte(yml))
	require.NoError(t, err)
	return c
}

func example(t testing.TB) *config.Config {
	t.Helper()
	b, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	return parse(t, "jit.yaml", string(b))
}

func request(agent string, d time.Duration, perms ...string) events.Request {
	return events.Request{
		RequestID:   "req-1",
		Agent:       agent,
		Permissions: perms,
		DurationMS:  d.Milliseconds(),
		Reason:      "test",
		RequestedBy: events.Actor{Kind: events.ActorAgent, ID: agent},
		RequestedAt: wed1000.Add(-time.Second),
	}
}

func rule(names string) events.Actor { return events.Actor{Kind: events.ActorRule, ID: names} }

func TestDecide(t *testing.T) {
	rules := parse(t, "rules.yaml", rulesYAML)
	ex := example(t)
	zone := parse(t, "zone.yaml", zoneYAML)

	cases := []struct {
		name      string
		cfg       *config.Config
		req       events.Request
		now       time.Time
		suspended bool

		outcome, mode, rule, reason string
		by                          events.Actor
		score                       int
		roles                       []string
	}{
		{
			name: "auto-approve", cfg: rules, req: request("a1", 30*time.Minute, "data:write"), now: wed1000,
			outcome: events.OutcomeApproved, mode: events.ModeAutoApprove, rule: "data-auto", by: rule("data-auto"), score: 40,
			reason: "rule data-auto auto-approves data:write",
		},
		{
			name: "auto-approve cap exceeded", cfg: rules, req: request("a1", 45*time.Minute, "data:write"), now: wed1000,
			outcome: events.OutcomeDenied, mode: events.ModeAutoApprove, rule: "data-auto", by: rule("data-auto"), score: 45,
			reason: "45m exceeds the max_duration of rule data-auto (30m) for data:write",
		},
		{
			name: "explicit deny wins over an earlier auto-approve", cfg: rules, req: request("a1", 10*time.Minute, "data:delete"), now: wed1000,
			outcome: events.OutcomeDenied, mode: events.ModeDeny, rule: "no-delete", by: rule("no-delete"), score: 63,
			reason: "rule no-delete denies data:delete for a1",
		},
		{
			name: "default deny", cfg: rules, req: request("a1", 10*time.Minute, "misc:thing"), now: wed1000,
			outcome: events.OutcomeDenied, mode: events.ModeDefaultDeny, by: systemActor, score: 13,
			reason: "no rule allows misc:thing for a1; default is deny",
		},
		{
			name: "policy passes every condition", cfg: rules, req: request("a1", 15*time.Minute, "reports:run"), now: wed1000,
			outcome: events.OutcomeApproved, mode: events.ModePolicy, rule: "office-hours", by: rule("office-hours"), score: 15,
			reason: "rule office-hours allows reports:run (10:00 UTC within hours 09:00-17:00; wed is one of mon, tue, wed, thu, fri; risk 15 at most 45; duration 15m at most 20m)",
		},
		{
			name: "policy fails hours; the first matching rule decides, not a later auto-approve", cfg: rules, req: request("a1", 15*time.Minute, "reports:run"), now: wed2000,
			outcome: events.OutcomeDenied, mode: events.ModePolicy, rule: "office-hours", by: rule("office-hours"), score: 35,
			reason: "rule office-hours does not allow reports:run: decided at 20:00 UTC, outside hours 09:00-17:00",
		},
		{
			name: "policy fails weekday", cfg: rules, req: request("a1", 15*time.Minute, "reports:run"), now: sat1000,
			outcome: events.OutcomeDenied, mode: events.ModePolicy, rule: "office-hours", by: rule("office-hours"), score: 35,
			reason: "rule office-hours does not allow reports:run: decided on sat, not one of mon, tue, wed, thu, fri",
		},
		{
			name: "policy fails duration", cfg: rules, req: request("a1", 25*time.Minute, "reports:run"), now: wed1000,
			outcome: events.OutcomeDenied, mode: events.ModePolicy, rule: "office-hours", by: rule("office-hours"), score: 18,
			reason: "rule office-hours does not allow reports:run: duration 25m above 20m",
		},
		{
			name: "policy fails risk in a mixed request", cfg: rules, req: request("a1", 20*time.Minute, "data:write", "reports:run"), now: wed1000,
			outcome: events.OutcomeDenied, mode: events.ModePolicy, rule: "office-hours", by: rule("office-hours"), score: 47,
			reason: "rule office-hours does not allow reports:run: risk 47 above 45",
		},
		{
			name: "example: policy lists every failed condition", cfg: ex, req: request("svc-price-optimizer", 30*time.Minute, "data:write"), now: sat1000,
			outcome: events.OutcomeDenied, mode: events.ModePolicy, rule: "optimizer-write-low-risk", by: rule("optimizer-write-low-risk"), score: 70,
			reason: "rule optimizer-write-low-risk does not allow data:write: risk 70 above 60; duration 30m above 20m",
		},
		{
			name: "example: policy approves", cfg: ex, req: request("svc-price-optimizer", 15*time.Minute, "data:write"), now: wed1000,
			outcome: events.OutcomeApproved, mode: events.ModePolicy, rule: "optimizer-write-low-risk", by: rule("optimizer-write-low-risk"), score: 40,
			reason: "rule optimizer-write-low-risk allows data:write (risk 40 at most 60; duration 15m at most 20m)",
		},
		{
			name: "mixed auto-approve and policy approve with mode policy", cfg: rules, req: request("a1", 10*time.Minute, "data:write", "reports:run"), now: wed1000,
			outcome: events.OutcomeApproved, mode: events.ModePolicy, rule: "data-auto,office-hours", by: rule("data-auto,office-hours"), score: 43,
			reason: "rule data-auto auto-approves data:write; rule office-hours allows reports:run (10:00 UTC within hours 09:00-17:00; wed is one of mon, tue, wed, thu, fri; risk 43 at most 45; duration 10m at most 20m)",
		},
		{
			name: "require-approval", cfg: rules, req: request("a1", 10*time.Minute, "integrations:write"), now: wed1000,
			outcome: events.OutcomePending, mode: events.ModeRequireApproval, rule: "integrations", by: rule("integrations"), score: 53,
			roles:  []string{"security-admin", "org-admin"},
			reason: "rule integrations requires a human approver for integrations:write; an approver holding security-admin or org-admin must answer by 2025-03-05T10:10:00Z or the request is denied",
		},
		{
			name: "require-approval roles intersect", cfg: rules, req: request("a1", 10*time.Minute, "integrations:write", "secrets:read"), now: wed1000,
			outcome: events.OutcomePending, mode: events.ModeRequireApproval, rule: "integrations,secrets", by: rule("integrations,secrets"), score: 63,
			roles:  []string{"security-admin"},
			reason: "rule integrations requires a human approver for integrations:write; rule secrets requires a human approver for secrets:read; an approver holding security-admin must answer by 2025-03-05T10:10:00Z or the request is denied",
		},
		{
			name: "mixed auto-approve and require-approval is pending", cfg: rules, req: request("a1", 10*time.Minute, "data:write", "integrations:write"), now: wed1000,
			outcome: events.OutcomePending, mode: events.ModeRequireApproval, rule: "data-auto,integrations", by: rule("data-auto,integrations"), score: 63,
			roles:  []string{"security-admin", "org-admin"},
			reason: "rule data-auto auto-approves data:write; rule integrations requires a human approver for integrations:write; an approver holding security-admin or org-admin must answer by 2025-03-05T10:10:00Z or the request is denied",
		},
		{
			name: "role intersection empty", cfg: rules, req: request("a1", 10*time.Minute, "integrations:write", "billing:write"), now: wed1000,
			outcome: events.OutcomeDenied, mode: events.ModeRequireApproval, rule: "integrations,billing", by: rule("integrations,billing"), score: 63,
			reason: "no single approver role can approve all of integrations:write, billing:write; request them separately",
		},
		{
			name: "any deny denies a mixed request, naming the first deny", cfg: rules, req: request("a1", 10*time.Minute, "data:write", "misc:thing", "data:delete"), now: wed1000,
			outcome: events.OutcomeDenied, mode: events.ModeDefaultDeny, by: systemActor, score: 83,
			reason: "no rule allows misc:thing for a1; default is deny",
		},
		{
			name: "deny beats require-approval", cfg: rules, req: request("a1", 10*time.Minute, "integrations:write", "data:delete"), now: wed1000,
			outcome: events.OutcomeDenied, mode: events.ModeDeny, rule: "no-delete", by: rule("no-delete"), score: 73,
			reason: "rule no-delete denies data:delete for a1",
		},
		{
			name: "hours in the configured zone: 15:00 UTC is 10:00 in New York", cfg: zone, req: request("a1", 30*time.Minute, "reports:run"), now: time.Date(2025, 3, 5, 15, 0, 0, 0, time.UTC),
			outcome: events.OutcomeApproved, mode: events.ModePolicy, rule: "office-hours", by: rule("office-hours"), score: 30,
			reason: "rule office-hours allows reports:run (10:00 EST within hours 09:00-17:00)",
		},
		{
			name: "hours in the configured zone: 10:00 UTC is 05:00 in New York", cfg: zone, req: request("a1", 30*time.Minute, "reports:run"), now: wed1000,
			outcome: events.OutcomeDenied, mode: events.ModePolicy, rule: "office-hours", by: rule("office-hours"), score: 50,
			reason: "rule office-hours does not allow reports:run: decided at 05:00 EST, outside hours 09:00-17:00",
		},
		{
			name: "suspended", cfg: rules, req: request("a1", 10*time.Minute, "data:write"), now: wed1000, suspended: true,
			outcome: events.OutcomeDenied, mode: events.ModeSuspended, by: systemActor, score: 33,
			reason: "agent a1 is suspended; nothing is granted until an org-admin or security-admin reinstates it",
		},
		{
			name: "agent no longer configured", cfg: rules, req: request("gone", 10*time.Minute, "data:write"), now: wed1000,
			outcome: events.OutcomeDenied, mode: events.ModeDefaultDeny, by: systemActor, score: 50,
			reason: "agent gone is not configured; nothing can be granted to it",
		},
		{
			name: "permission no longer eligible", cfg: rules, req: request("a1", 10*time.Minute, "data:write", "admin:all"), now: wed1000,
			outcome: events.OutcomeDenied, mode: events.ModeDefaultDeny, by: systemActor, score: 43,
			reason: "agent a1 is not eligible for admin:all (eligible: data:write, data:delete, reports:run, integrations:write, secrets:read, billing:write, misc:thing)",
		},
		{
			name: "duration above maxJitDuration", cfg: rules, req: request("a1", 90*time.Minute, "data:write"), now: wed1000,
			outcome: events.OutcomeDenied, mode: events.ModeDefaultDeny, by: systemActor, score: 50,
			reason: "1h30m exceeds the maxJitDuration of a1 (1h)",
		},
		{
			name: "no permissions", cfg: rules, req: request("a1", 10*time.Minute), now: wed1000,
			outcome: events.OutcomeDenied, mode: events.ModeDefaultDeny, by: systemActor, score: 3,
			reason: "the request names no permission",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.cfg, tc.req, tc.now, tc.suspended)
			require.Equal(t, tc.outcome, d.Outcome)
			require.Equal(t, tc.mode, d.Mode)
			require.Equal(t, tc.rule, d.Rule)
			require.Equal(t, tc.reason, d.Reason)
			require.Equal(t, tc.by, d.DecidedBy)
			require.NotNil(t, d.Risk, "every decision carries a risk score")
			require.Equal(t, tc.score, d.Risk.Score)
			require.Equal(t, tc.roles, d.ApproverRoles)
			if tc.outcome == events.OutcomePending {
				require.NotNil(t, d.ApprovalDeadline)
				require.Equal(t, tc.now.Add(tc.cfg.ApprovalWindow.D()), *d.ApprovalDeadline)
			} else {
				require.Nil(t, d.ApprovalDeadline)
			}
			require.Equal(t, tc.req, d.Request)
			require.Equal(t, tc.req.RequestID, d.RequestID)
			require.Equal(t, tc.req.Agent, d.Agent)
			require.Equal(t, tc.req.Permissions, d.Permissions)
			require.Equal(t, tc.req.DurationMS, d.DurationMS)
			require.Equal(t, tc.now, d.DecidedAt)
			require.Equal(t, d, Decide(tc.cfg, tc.req, tc.now, tc.suspended), "deterministic")
		})
	}
}

func TestScore(t *testing.T) {
	rules := parse(t, "rules.yaml", rulesYAML)
	a1, ok := rules.Agent("a1")
	require.True(t, ok)

	cases := []struct {
		name  string
		agent *config.Agent
		req   events.Request
		now   time.Time
		want  events.Risk
	}{
		{
			name: "business hours, one permission", agent: a1, req: request("a1", 30*time.Minute, "data:write"), now: wed1000,
			want: events.Risk{Score: 40, Parts: []events.RiskPart{
				{Name: "sensitivity", Points: 30, Detail: "data:write is the most sensitive permission requested: 30 points"},
				{Name: "duration", Points: 10, Detail: "30m of the agent's 1h maximum: 10 of 20 points"},
				{Name: "off_hours", Points: 0, Detail: "decided at Wed 10:00 UTC, within business hours 08:00-18:00"},
				{Name: "breadth", Points: 0, Detail: "a single permission"},
			}},
		},
		{
			name: "weekend, two permissions, default sensitivity", agent: a1, req: request("a1", 20*time.Minute, "misc:thing", "integrations:write"), now: sat1000,
			want: events.Risk{Score: 87, Parts: []events.RiskPart{
				{Name: "sensitivity", Points: 50, Detail: "integrations:write is the most sensitive permission requested: 50 points"},
				{Name: "duration", Points: 7, Detail: "20m of the agent's 1h maximum: 7 of 20 points"},
				{Name: "off_hours", Points: 20, Detail: "decided on a weekend (Sat 10:00 UTC): 20 points"},
				{Name: "breadth", Points: 10, Detail: "2 permissions, 1 beyond the first at 10 points each"},
			}},
		},
		{
			name: "evening, default sensitivity only", agent: a1, req: request("a1", 60*time.Minute, "misc:thing"), now: wed2000,
			want: events.Risk{Score: 50, Parts: []events.RiskPart{
				{Name: "sensitivity", Points: 10, Detail: "misc:thing is the most sensitive permission requested: 10 points (the default sensitivity)"},
				{Name: "duration", Points: 20, Detail: "1h of the agent's 1h maximum: 20 of 20 points"},
				{Name: "off_hours", Points: 20, Detail: "decided at Wed 20:00 UTC, outside business hours 08:00-18:00: 20 points"},
				{Name: "breadth", Points: 0, Detail: "a single permission"},
			}},
		},
		{
			name: "clamped at 100", agent: a1, req: request("a1", 60*time.Minute, "data:delete", "data:write", "integrations:write", "reports:run", "misc:thing"), now: sat1000,
			want: events.Risk{Score: 100, Parts: []events.RiskPart{
				{Name: "sensitivity", Points: 60, Detail: "data:delete is the most sensitive permission requested: 60 points"},
				{Name: "duration", Points: 20, Detail: "1h of the agent's 1h maximum: 20 of 20 points"},
				{Name: "off_hours", Points: 20, Detail: "decided on a weekend (Sat 10:00 UTC): 20 points"},
				{Name: "breadth", Points: 40, Detail: "5 permissions, 4 beyond the first at 10 points each"},
			}},
		},
		{
			name: "unknown agent scores the full duration weight", agent: nil, req: request("gone", 5*time.Minute, "data:write"), now: wed1000,
			want: events.Risk{Score: 50, Parts: []events.RiskPart{
				{Name: "sensitivity", Points: 30, Detail: "data:write is the most sensitive permission requested: 30 points"},
				{Name: "duration", Points: 20, Detail: "5m with no maxJitDuration to compare with: the full 20 points"},
				{Name: "off_hours", Points: 0, Detail: "decided at Wed 10:00 UTC, within business hours 08:00-18:00"},
				{Name: "breadth", Points: 0, Detail: "a single permission"},
			}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, Score(rules, tc.agent, tc.req, tc.now, Counts{}))
		})
	}
}
