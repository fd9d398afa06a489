package policy

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// benchConfig builds a configuration with n rules over n/10 agents (at
// least 1), each eligible for ten permissions; a third of the rules carry a
// CEL condition, and a wildcard deny with a condition sits in front of all.
func benchConfig(b *testing.B, n int) string {
	var y strings.Builder
	agents := max(n/10, 1)
	y.WriteString("agents:\n")
	for a := range agents {
		fmt.Fprintf(&y, "  - id: agent-%d\n    eligible: [", a)
		for p := range 10 {
			if p > 0 {
				y.WriteString(", ")
			}
			fmt.Fprintf(&y, "area%d:act%d", p, p)
		}
		y.WriteString("]\n    max_jit_duration: 60m\n    labels: {tier: prod}\n")
	}
	y.WriteString("rules:\n  - name: frozen\n    permissions: [\"*\"]\n    mode: deny\n    condition: time.holiday || agent.guardrail_fires_24h > 2\n")
	for i := 1; i < n; i++ {
		a, p := i%agents, (i/agents)%10
		fmt.Fprintf(&y, "  - name: rule-%d\n    agents: [agent-%d]\n    permissions: [area%d:act%d]\n", i, a, p, p)
		switch i % 3 {
		case 0:
			y.WriteString("    mode: auto-approve\n    condition: request.duration <= duration(\"30m\") && risk.score < 80\n")
		case 1:
			y.WriteString("    mode: policy\n    policy: {max_risk: 90, max_duration: 45m}\n")
		default:
			y.WriteString("    mode: require-approval\n    approver_roles: [security-admin]\n")
		}
	}
	y.WriteString(approversYAML)
	return y.String()
}

func benchDecide(b *testing.B, n int) {
	cfg := parse(b, "bench.yaml", benchConfig(b, n))
	if len(cfg.Rules) != n {
		b.Fatalf("%d rules, want %d", len(cfg.Rules), n)
	}
	// area3:act3 of agent-0 is decided by an auto-approve rule with a
	// condition (rule-3 of 10, rule-300 of 1,000), after the wildcard deny's
	// condition is evaluated and found false: two CEL evaluations, the path
	// of a rule that decides.
	req := request("agent-0", 20*time.Minute, "area3:act3")
	in := Input{Request: req, Now: wed1000, History: Counts{Grants: 1, RequestsLastMinute: 1}}
	want := "rule-3"
	if n >= 100 {
		want = "rule-300"
	}
	if d := Evaluate(cfg, in); d.Outcome != "approved" || d.Rule != want {
		b.Fatalf("decided %s by %q (%s), want approved by %s", d.Outcome, d.Rule, d.Reason, want)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		Evaluate(cfg, in)
	}
}

// BenchmarkDecide10 and BenchmarkDecide1000 measure one decision (risk
// score, rule index lookup, CEL conditions, reason) with 10 and 1,000 rules.
func BenchmarkDecide10(b *testing.B)   { benchDecide(b, 10) }
func BenchmarkDecide1000(b *testing.B) { benchDecide(b, 1000) }
