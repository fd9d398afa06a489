package policy

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
)

// trace records why an evaluation decided as it did. Evaluate runs without
// one; Explain runs the same code with one, so an explanation can never
// disagree with the decision the service publishes.
type trace struct {
	gate  string // set when the request was decided before any rule
	perms []PermissionTrace
}

// RuleCheck is what one rule made of one requested permission.
type RuleCheck struct {
	Rule    string `json:"rule"`
	Line    int    `json:"line,omitempty"`
	Mode    string `json:"mode"`
	Matched bool   `json:"matched"`
	Why     string `json:"why"`
}

// PermissionTrace is how one requested permission was decided: every rule
// of the configuration in file order, and the verdict.
type PermissionTrace struct {
	Permission string      `json:"permission"`
	Rules      []RuleCheck `json:"rules"`
	Outcome    string      `json:"outcome"`
	Reason     string      `json:"reason"`
}

// Explanation is a dry run: the decision Evaluate gives, and why.
type Explanation struct {
	Decision events.Decision `json:"decision"`
	// Gate, if set, is why the request was decided before any rule was
	// tried (unknown agent, suspension, rate limit, duration, eligibility).
	Gate        string            `json:"gate,omitempty"`
	Permissions []PermissionTrace `json:"permissions,omitempty"`
	History     Counts            `json:"history"`
}

// Explain evaluates in under cfg exactly as Evaluate does and records which
// rules matched, which did not and why. It creates nothing and publishes
// nothing.
func Explain(cfg *config.Config, in Input) Explanation {
	var tr trace
	d := evaluate(cfg, in, &tr)
	x := Explanation{Decision: d, Gate: tr.gate, History: in.History}
	agent, _ := cfg.Agent(in.Request.Agent)
	for _, pt := range tr.perms {
		x.Permissions = append(x.Permissions, completeTrace(cfg, agent, pt))
	}
	return x
}

// completeTrace adds the rules the index left out (they match neither the
// agent nor the permission), so the trace lists every rule in file order.
func completeTrace(cfg *config.Config, agent *config.Agent, pt PermissionTrace) PermissionTrace {
	seen := make(map[string]RuleCheck, len(pt.Rules))
	for _, rc := range pt.Rules {
		seen[rc.Rule] = rc
	}
	candidates := cfg.Candidates(agent.ID, pt.Permission)
	out := PermissionTrace{Permission: pt.Permission, Outcome: pt.Outcome, Reason: pt.Reason}
	for i := range cfg.Rules {
		r := &cfg.Rules[i]
		if rc, ok := seen[r.Name]; ok {
			out.Rules = append(out.Rules, rc)
			continue
		}
		rc := RuleCheck{Rule: r.Name, Line: r.Line(), Mode: r.Mode}
		switch {
		case slices.Contains(candidates, i):
			rc.Why = "not evaluated: an earlier rule already denied " + pt.Permission
		case !r.MatchesAgent(agent):
			rc.Why = "does not apply to agent " + agent.ID + agentScope(r)
		default:
			rc.Why = fmt.Sprintf("does not match %s (permissions: %s)", pt.Permission, strings.Join(r.Permissions, ", "))
		}
		out.Rules = append(out.Rules, rc)
	}
	return out
}

func agentScope(r *config.Rule) string {
	var s []string
	if len(r.Agents) > 0 {
		s = append(s, "agents: "+strings.Join(r.Agents, ", "))
	}
	if len(r.AgentLabels) > 0 {
		var l []string
		for _, k := range slices.Sorted(maps.Keys(r.AgentLabels)) {
			l = append(l, k+"="+r.AgentLabels[k])
		}
		s = append(s, "agent_labels: "+strings.Join(l, ", "))
	}
	if len(s) == 0 {
		return ""
	}
	return " (" + strings.Join(s, "; ") + ")"
}

// WriteText writes the explanation for people: the rules per permission,
// the risk score with its parts, and the decision.
func (x Explanation) WriteText(w io.Writer) {
	d := x.Decision
	fmt.Fprintf(w, "request: %s asks for %s for %s\n", d.Agent, strings.Join(d.Permissions, ", "), fmtMS(d.DurationMS))
	h := x.History
	fmt.Fprintf(w, "history: %d grants, %d denials, %d guardrail fires in the last 24h; %d requests in the last minute\n",
		h.Grants, h.Denials, h.GuardrailFires, h.RequestsLastMinute)
	if x.Gate != "" {
		fmt.Fprintf(w, "decided before any rule: %s\n", x.Gate)
	}
	for _, pt := range x.Permissions {
		fmt.Fprintf(w, "\n%s:\n", pt.Permission)
		for _, rc := range pt.Rules {
			mark := "-"
			if rc.Matched {
				mark = "+"
			}
			line := ""
			if rc.Line > 0 {
				line = fmt.Sprintf(" (line %d)", rc.Line)
			}
			fmt.Fprintf(w, "  %s %s [%s]%s: %s\n", mark, rc.Rule, rc.Mode, line, rc.Why)
		}
		fmt.Fprintf(w, "  => %s: %s\n", pt.Outcome, pt.Reason)
	}
	if d.Risk != nil {
		fmt.Fprintf(w, "\nrisk %d/100:\n", d.Risk.Score)
		for _, p := range d.Risk.Parts {
			fmt.Fprintf(w, "  %-16s %3d  %s\n", p.Name, p.Points, p.Detail)
		}
	}
	fmt.Fprintf(w, "\ndecision: %s (mode %s", d.Outcome, d.Mode)
	if d.Rule != "" {
		fmt.Fprintf(w, ", rule %s", d.Rule)
	}
	fmt.Fprintf(w, ")\nreason: %s\n", d.Reason)
	if len(d.ApproverRoles) > 0 {
		fmt.Fprintf(w, "approver roles: %s\n", strings.Join(d.ApproverRoles, ", "))
	}
}
