package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
)

// DefaultRatePer is the rate limit's window when rate_limit.requests is set
// without per.
const DefaultRatePer = time.Minute

// reservedRateLimitRule names the decisions of the rate limit
// (services/policy.RateLimitRule).
const reservedRateLimitRule = "rate-limit"

// HistoryWindow is how far back the agent history offered to conditions and
// the risk score reaches; a rate limit's window may not exceed it.
const HistoryWindow = 24 * time.Hour

// policyExt is what the policy engine derives from a configuration when it
// loads: the compiled rule conditions (aligned with Rules) and, for every
// configured agent and each permission it is eligible for, the rules that
// match them in file order. It is rebuilt by validate, so a configuration
// read back from the KV bucket (FromJSON) carries it too.
type policyExt struct {
	progs    []cel.Program
	index    map[string]map[string][]int
	holidays map[string]bool
}

// validatePolicyExt validates what the policy engine adds to the
// configuration: rule conditions, agent labels, holidays, the rate limit and
// the history weights of the risk score. It also compiles the conditions and
// indexes the rules.
func (c *Config) validatePolicyExt(bad badFunc) {
	if c.RateLimit.Requests < 0 || c.RateLimit.Per < 0 {
		bad(0, "rate_limit", "requests and per must not be negative")
	}
	if c.RateLimit.Requests > 0 && c.RateLimit.Per == 0 {
		c.RateLimit.Per = Duration(DefaultRatePer)
	}
	if c.RateLimit.Per.D() > HistoryWindow {
		bad(0, "rate_limit", "per %s is above %s, the history the policy keeps", c.RateLimit.Per.D(), HistoryWindow)
	}
	if c.RateLimit.Per > 0 && c.RateLimit.Requests == 0 {
		bad(0, "rate_limit", "per needs requests (how many requests per %s)", c.RateLimit.Per.D())
	}
	for name, w := range map[string]int{"guardrail_fires": c.Risk.GuardrailFires, "denials": c.Risk.Denials, "request_rate": c.Risk.RequestRate} {
		if w < 0 || w > 100 {
			bad(0, "risk", "%s must be 0-100 points", name)
		}
	}
	for p := range c.Risk.Sensitivity {
		if p != "default" && !ValidPermission(p) {
			bad(0, "risk", "sensitivity: %q is not a permission area:action or default", p)
		}
	}

	c.pol = policyExt{progs: make([]cel.Program, len(c.Rules)), holidays: map[string]bool{}}
	for _, h := range c.Holidays {
		if _, err := time.Parse(time.DateOnly, h); err != nil {
			bad(0, "holidays", "%q is not a date YYYY-MM-DD", h)
		}
		c.pol.holidays[h] = true
	}

	for i := range c.Rules {
		r := &c.Rules[i]
		what := fmt.Sprintf("rule %q", r.Name)
		if strings.TrimSpace(r.Name) == "" {
			what = fmt.Sprintf("rule #%d", i+1)
		}
		if r.Name == reservedRateLimitRule {
			bad(r.line, what, "the name %s is reserved for decisions of the rate limit", reservedRateLimitRule)
		}
		for k, v := range r.AgentLabels {
			if strings.TrimSpace(k) == "" || strings.TrimSpace(v) == "" {
				bad(r.line, what, "agent_labels: label names and values must not be empty")
			}
		}
		matched := c.agentsOf(r)
		if len(r.AgentLabels) > 0 {
			if len(matched) == 0 {
				bad(r.line, what, "agent_labels %s match no agent", labelText(r.AgentLabels))
			}
			for _, a := range matched {
				if r.MaxDuration > a.MaxJitDuration && !slices.Contains(r.Agents, a.ID) {
					bad(r.line, what, "max_duration %s is above agent %q's max_jit_duration %s", r.MaxDuration.D(), a.ID, a.MaxJitDuration.D())
				}
			}
		}
		for _, p := range r.Permissions {
			if strings.Contains(p, "*") || !ValidPermission(p) {
				continue
			}
			if !slices.ContainsFunc(matched, func(a *Agent) bool { return a.IsEligible(p) }) {
				bad(r.line, what, "unknown permission %q: no agent the rule matches is eligible for it", p)
			}
		}
		if strings.TrimSpace(r.Condition) != "" {
			prg, err := compileCondition(r.Condition)
			if err != nil {
				bad(r.line, what, "condition: %v", err)
			} else {
				c.pol.progs[i] = prg
			}
		}
	}

	c.pol.index = make(map[string]map[string][]int, len(c.Agents))
	for ai := range c.Agents {
		a := &c.Agents[ai]
		perms := make(map[string][]int, len(a.Eligible))
		for _, p := range a.Eligible {
			var rules []int
			for i := range c.Rules {
				if c.Rules[i].MatchesAgent(a) && matchPerm(c.Rules[i].Permissions, p) {
					rules = append(rules, i)
				}
			}
			perms[p] = rules
		}
		c.pol.index[a.ID] = perms
	}
}

// agentsOf lists the configured agents rule r applies to.
func (c *Config) agentsOf(r *Rule) []*Agent {
	var out []*Agent
	for i := range c.Agents {
		if r.MatchesAgent(&c.Agents[i]) {
			out = append(out, &c.Agents[i])
		}
	}
	return out
}

// MatchesAgent reports whether the rule applies to agent a: a is named by
// Agents (or Agents is empty or "*") and carries every label of AgentLabels.
func (r *Rule) MatchesAgent(a *Agent) bool {
	if !matchAgent(r.Agents, a.ID) {
		return false
	}
	for k, v := range r.AgentLabels {
		if a.Labels[k] != v {
			return false
		}
	}
	return true
}

// MatchesPermission reports whether one of the rule's permission patterns
// matches p.
func (r *Rule) MatchesPermission(p string) bool { return matchPerm(r.Permissions, p) }

// HasCondition reports whether the rule has a CEL condition.
func (r *Rule) HasCondition() bool { return strings.TrimSpace(r.Condition) != "" }

// Candidates returns the indices (into Rules, in file order) of the rules
// that match agent and permission p before conditions are evaluated. It is
// computed when the configuration loads, for every configured agent and each
// permission it is eligible for; other pairs have no candidates. The caller
// must not modify the result.
func (c *Config) Candidates(agent, p string) []int {
	return c.pol.index[agent][p]
}

// IsHoliday reports whether date (YYYY-MM-DD) is a configured holiday.
func (c *Config) IsHoliday(date string) bool { return c.pol.holidays[date] }

func labelText(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ", ")
}
