package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
)

// systemActor decides when no rule does.
var systemActor = events.Actor{Kind: events.ActorSystem, ID: "policy"}

// verdict is the outcome for one permission.
type verdict struct {
	perm    string
	rule    *config.Rule // nil when no rule decided
	outcome string
	mode    string
	reason  string
}

// RateLimitRule is the rule name of a decision denied by the per-agent rate
// limit (config rate_limit). No configured rule may take this name.
const RateLimitRule = "rate-limit"

// Input is everything a decision depends on; the same Input under the same
// configuration always gives the same decision.
type Input struct {
	Request events.Request
	// Now is the decision time: off-hours, rule hours and time in
	// conditions are read from it.
	Now       time.Time
	Suspended bool
	// History is the agent's recent history before this request.
	History Counts
}

// Counts is an agent's history before a request, as the policy service's
// history window counts it (see History).
type Counts struct {
	// Grants, Denials and GuardrailFires are counted over the 24 hours
	// before the request.
	Grants         int `json:"grants" yaml:"grants"`
	Denials        int `json:"denials" yaml:"denials"`
	GuardrailFires int `json:"guardrail_fires" yaml:"guardrail_fires"`
	// RequestsLastMinute counts the agent's requests in the minute before
	// this one; RequestsInRateWindow those in the rate limit's window
	// (rate_limit.per).
	RequestsLastMinute   int `json:"requests_last_minute" yaml:"requests_last_minute"`
	RequestsInRateWindow int `json:"requests_in_rate_window" yaml:"requests_in_rate_window"`
}

// Decide decides req at now under cfg with no agent history: Evaluate with
// an empty History.
func Decide(cfg *config.Config, req events.Request, now time.Time, suspended bool) events.Decision {
	return Evaluate(cfg, Input{Request: req, Now: now, Suspended: suspended})
}

// Evaluate decides in under cfg. It is pure: the same inputs give the same
// decision. Explain runs the very same evaluation and records why.
//
// The order (docs/configuration.md "Order of decision"): an agent no longer
// configured, a suspended agent, an agent over its rate limit, a request
// with no permission, a duration that is not positive or beyond the agent's
// maxJitDuration, or a permission the agent is not eligible for is denied.
// Otherwise each permission is decided by the rules that match the agent
// and the permission and whose condition holds, in file order: a matching
// deny rule wins, else the first matching rule decides, else it is denied
// by default. A condition that cannot be evaluated denies (fail closed).
// Across permissions any deny denies (with the first deny's mode, rule and
// reason), any require-approval makes the request pending for an approver
// holding a role common to all those rules (denied if there is none), else
// it is approved. Every decision carries the risk score with its parts and
// a Reason a human reads.
func Evaluate(cfg *config.Config, in Input) events.Decision {
	return evaluate(cfg, in, nil)
}

func evaluate(cfg *config.Config, in Input, tr *trace) events.Decision {
	req, now := in.Request, in.Now
	d := events.Decision{
		RequestID:   req.RequestID,
		Agent:       req.Agent,
		Permissions: req.Permissions,
		DurationMS:  req.DurationMS,
		DecidedAt:   now.UTC(),
		Request:     req,
	}
	agent, known := cfg.Agent(req.Agent)
	risk := Score(cfg, agent, req, now, in.History)
	d.Risk = &risk
	deny := func(mode, reason string) events.Decision {
		d.Outcome, d.Mode, d.Reason, d.DecidedBy = events.OutcomeDenied, mode, reason, systemActor
		if tr != nil {
			tr.gate = reason
		}
		return d
	}

	if !known {
		return deny(events.ModeDefaultDeny, fmt.Sprintf("agent %s is not configured; nothing can be granted to it", req.Agent))
	}
	if in.Suspended {
		return deny(events.ModeSuspended, fmt.Sprintf("agent %s is suspended; nothing is granted until an org-admin or security-admin reinstates it", agent.ID))
	}
	if rl := cfg.RateLimit; rl.Requests > 0 && in.History.RequestsInRateWindow >= rl.Requests {
		d = deny(events.ModeDeny, fmt.Sprintf("rate limit: agent %s made %d requests in the %s before this one; the limit is %d per %s, so it is denied without asking an approver",
			agent.ID, in.History.RequestsInRateWindow, events.FormatDuration(rl.Per.D()), rl.Requests, events.FormatDuration(rl.Per.D())))
		d.Rule = RateLimitRule
		d.DecidedBy = events.Actor{Kind: events.ActorRule, ID: RateLimitRule}
		return d
	}
	if len(req.Permissions) == 0 {
		return deny(events.ModeDefaultDeny, "the request names no permission")
	}
	// Compare in milliseconds: req.Duration() of an absurd duration_ms
	// overflows and could wrap into range.
	if req.DurationMS <= 0 {
		return deny(events.ModeDefaultDeny, fmt.Sprintf("the requested duration %s is not positive", fmtMS(req.DurationMS)))
	}
	if maxD := agent.MaxJitDuration.D(); req.DurationMS > maxD.Milliseconds() {
		return deny(events.ModeDefaultDeny, fmt.Sprintf("%s exceeds the maxJitDuration of %s (%s)", fmtMS(req.DurationMS), agent.ID, events.FormatDuration(maxD)))
	}
	for _, p := range req.Permissions {
		if !agent.IsEligible(p) {
			return deny(events.ModeDefaultDeny, fmt.Sprintf("agent %s is not eligible for %s (eligible: %s)", agent.ID, p, strings.Join(agent.Eligible, ", ")))
		}
	}

	e := &evaluator{cfg: cfg, in: &in, agent: agent, dur: req.Duration(), risk: &risk, local: now.In(cfg.Location())}
	verdicts := make([]verdict, 0, len(req.Permissions))
	for _, p := range req.Permissions {
		var pt *PermissionTrace
		if tr != nil {
			tr.perms = append(tr.perms, PermissionTrace{Permission: p})
			pt = &tr.perms[len(tr.perms)-1]
		}
		v := e.decidePermission(p, pt)
		if pt != nil {
			pt.Outcome, pt.Reason = v.outcome, v.reason
		}
		verdicts = append(verdicts, v)
	}
	return combine(cfg, d, verdicts, now)
}

// evaluator decides the permissions of one request.
type evaluator struct {
	cfg   *config.Config
	in    *Input
	agent *config.Agent
	dur   time.Duration
	risk  *events.Risk
	local time.Time
	cel   *config.CELInput // built on the first condition
}

// condition evaluates rule i's condition (true without one).
func (e *evaluator) condition(i int) (bool, error) {
	if !e.cfg.Rules[i].HasCondition() {
		return true, nil
	}
	if e.cel == nil {
		e.cel = celInput(e.cfg, e.in, e.agent, e.risk, e.local)
	}
	return e.cfg.EvalCondition(i, e.cel)
}

// decidePermission applies the rules to one permission: the candidates
// indexed for the agent and p, in file order.
func (e *evaluator) decidePermission(p string, pt *PermissionTrace) verdict {
	agent := e.agent.ID
	var first *config.Rule
	note := func(i int, matched bool, why string) {
		if pt != nil {
			pt.Rules = append(pt.Rules, RuleCheck{Rule: e.cfg.Rules[i].Name, Line: e.cfg.Rules[i].Line(), Mode: e.cfg.Rules[i].Mode, Matched: matched, Why: why})
		}
	}
	for _, i := range e.cfg.Candidates(agent, p) {
		r := &e.cfg.Rules[i]
		if first != nil && r.Mode != config.ModeDeny {
			note(i, false, fmt.Sprintf("matches the agent and %s but is not needed: rule %s, earlier in the file, decides unless a deny rule matches", p, first.Name))
			continue
		}
		ok, err := e.condition(i)
		if err != nil {
			note(i, true, fmt.Sprintf("its condition could not be evaluated (%v): fail closed", err))
			return verdict{perm: p, rule: r, outcome: events.OutcomeDenied, mode: events.ModeDeny,
				reason: fmt.Sprintf("the condition of rule %s could not be evaluated for %s (%v); denied", r.Name, p, err)}
		}
		if !ok {
			note(i, false, fmt.Sprintf("matches the agent and %s, but its condition is false: %s", p, r.Condition))
			continue
		}
		held := ""
		if r.HasCondition() {
			held = ", and its condition holds"
		}
		if r.Mode == config.ModeDeny {
			note(i, true, fmt.Sprintf("matches the agent and %s%s: an explicit deny wins", p, held))
			return verdict{perm: p, rule: r, outcome: events.OutcomeDenied, mode: events.ModeDeny,
				reason: fmt.Sprintf("rule %s denies %s for %s", r.Name, p, agent)}
		}
		note(i, true, fmt.Sprintf("matches the agent and %s%s: the first matching rule decides", p, held))
		first = r
	}
	if first == nil {
		return verdict{perm: p, outcome: events.OutcomeDenied, mode: events.ModeDefaultDeny,
			reason: fmt.Sprintf("no rule allows %s for %s; default is deny", p, agent)}
	}
	r := first
	dur, local := e.dur, e.local
	v := verdict{perm: p, rule: r, mode: r.Mode}
	capped := r.MaxDuration > 0 && dur > r.MaxDuration.D()

	switch r.Mode {
	case config.ModeAutoApprove:
		if capped {
			v.outcome = events.OutcomeDenied
			v.reason = fmt.Sprintf("%s exceeds the max_duration of rule %s (%s) for %s", events.FormatDuration(dur), r.Name, events.FormatDuration(r.MaxDuration.D()), p)
			return v
		}
		v.outcome = events.OutcomeApproved
		v.reason = fmt.Sprintf("rule %s auto-approves %s", r.Name, p)
	case config.ModePolicy:
		failed, held := conditions(r, dur, e.risk.Score, local)
		if len(failed) > 0 {
			v.outcome = events.OutcomeDenied
			v.reason = fmt.Sprintf("rule %s does not allow %s: %s", r.Name, p, strings.Join(failed, "; "))
			return v
		}
		v.outcome = events.OutcomeApproved
		if len(held) == 0 {
			v.reason = fmt.Sprintf("rule %s allows %s", r.Name, p)
		} else {
			v.reason = fmt.Sprintf("rule %s allows %s (%s)", r.Name, p, strings.Join(held, "; "))
		}
	case config.ModeRequireApproval:
		if capped {
			v.outcome = events.OutcomeDenied
			v.reason = fmt.Sprintf("%s exceeds the max_duration of rule %s (%s) for %s", events.FormatDuration(dur), r.Name, events.FormatDuration(r.MaxDuration.D()), p)
			return v
		}
		v.outcome = events.OutcomePending
		v.reason = fmt.Sprintf("rule %s requires a human approver for %s", r.Name, p)
	default:
		// A validated configuration has no other mode; refuse rather than guess.
		v.outcome, v.mode = events.OutcomeDenied, events.ModeDefaultDeny
		v.reason = fmt.Sprintf("rule %s has unknown mode %q; default is deny", r.Name, r.Mode)
	}
	if r.HasCondition() && v.outcome != events.OutcomeDenied {
		v.reason += " (its condition holds)"
	}
	return v
}

// celInput builds what rule conditions see.
func celInput(cfg *config.Config, in *Input, agent *config.Agent, risk *events.Risk, local time.Time) *config.CELInput {
	req := in.Request
	parts := make(map[string]int64, len(risk.Parts))
	for _, p := range risk.Parts {
		parts[p.Name] = int64(p.Points)
	}
	date := local.Format(time.DateOnly)
	emptyIfNil := func(m map[string]string) map[string]string {
		if m == nil {
			return map[string]string{}
		}
		return m
	}
	return &config.CELInput{
		Request: config.CELRequest{
			Agent: req.Agent, Permissions: req.Permissions, Duration: req.Duration(),
			Reason: req.Reason, Context: emptyIfNil(req.Context),
		},
		Agent: config.CELAgent{
			ID: agent.ID, Owner: agent.Owner, Labels: emptyIfNil(agent.Labels),
			Base: agent.Base, Eligible: agent.Eligible, MaxDuration: agent.MaxJitDuration.D(),
			Grants24h: int64(in.History.Grants), Denials24h: int64(in.History.Denials),
			GuardrailFires: int64(in.History.GuardrailFires), Requests1m: int64(in.History.RequestsLastMinute),
		},
		Time: config.CELTime{
			Hour: int64(local.Hour()), Minute: int64(local.Minute()),
			Weekday: strings.ToLower(local.Format("Mon")), Date: date,
			Holiday: cfg.IsHoliday(date), Holidays: cfg.Holidays, Now: local,
		},
		Risk: config.CELRisk{Score: int64(risk.Score), Parts: parts},
	}
}

// conditions evaluates a policy rule's conditions (and the rule's own
// max_duration) and returns the failed ones and the ones that held, each as
// a short clause.
func conditions(r *config.Rule, dur time.Duration, score int, local time.Time) (failed, held []string) {
	check := func(ok bool, bad, good string) {
		if ok {
			held = append(held, good)
		} else {
			failed = append(failed, bad)
		}
	}
	if r.Policy != nil {
		p := r.Policy
		if p.Hours != "" {
			at := local.Format("15:04 MST")
			check(config.InHours(p.Hours, local),
				fmt.Sprintf("decided at %s, outside hours %s", at, p.Hours),
				fmt.Sprintf("%s within hours %s", at, p.Hours))
		}
		if len(p.Weekdays) > 0 {
			day := strings.ToLower(local.Format("Mon"))
			check(config.OnWeekday(p.Weekdays, local),
				fmt.Sprintf("decided on %s, not one of %s", day, strings.Join(p.Weekdays, ", ")),
				fmt.Sprintf("%s is one of %s", day, strings.Join(p.Weekdays, ", ")))
		}
		if p.MaxRisk > 0 {
			check(score <= p.MaxRisk,
				fmt.Sprintf("risk %d above %d", score, p.MaxRisk),
				fmt.Sprintf("risk %d at most %d", score, p.MaxRisk))
		}
		if p.MaxDuration > 0 {
			check(dur <= p.MaxDuration.D(),
				fmt.Sprintf("duration %s above %s", events.FormatDuration(dur), events.FormatDuration(p.MaxDuration.D())),
				fmt.Sprintf("duration %s at most %s", events.FormatDuration(dur), events.FormatDuration(p.MaxDuration.D())))
		}
	}
	if r.MaxDuration > 0 && dur > r.MaxDuration.D() {
		failed = append(failed, fmt.Sprintf("duration %s above the rule's max_duration %s", events.FormatDuration(dur), events.FormatDuration(r.MaxDuration.D())))
	}
	return failed, held
}

// combine turns the per-permission verdicts into the decision.
func combine(cfg *config.Config, d events.Decision, verdicts []verdict, now time.Time) events.Decision {
	ruleActor := func(names []string) events.Actor {
		if len(names) == 0 {
			return systemActor
		}
		return events.Actor{Kind: events.ActorRule, ID: strings.Join(names, ",")}
	}

	for _, v := range verdicts {
		if v.outcome != events.OutcomeDenied {
			continue
		}
		d.Outcome, d.Mode, d.Reason = events.OutcomeDenied, v.mode, v.reason
		if v.rule != nil {
			d.Rule = v.rule.Name
			d.DecidedBy = ruleActor([]string{v.rule.Name})
		} else {
			d.DecidedBy = systemActor
		}
		return d
	}

	var (
		all, approvalRules, needApproval, clauses []string
		roles                                     []string
		anyPending, anyPolicy                     bool
	)
	for _, v := range verdicts {
		all = appendUnique(all, v.rule.Name)
		clauses = append(clauses, v.reason)
		switch v.mode {
		case events.ModePolicy:
			anyPolicy = true
		case events.ModeRequireApproval:
			needApproval = append(needApproval, v.perm)
			if !slices.Contains(approvalRules, v.rule.Name) {
				if !anyPending {
					roles = slices.Clone(v.rule.ApproverRoles)
				} else {
					roles = slices.DeleteFunc(roles, func(role string) bool { return !slices.Contains(v.rule.ApproverRoles, role) })
				}
				approvalRules = append(approvalRules, v.rule.Name)
			}
			anyPending = true
		}
	}
	d.Rule = strings.Join(all, ",")

	if anyPending {
		if len(roles) == 0 {
			d.Outcome, d.Mode, d.Rule = events.OutcomeDenied, events.ModeRequireApproval, strings.Join(approvalRules, ",")
			d.Reason = fmt.Sprintf("no single approver role can approve all of %s; request them separately", strings.Join(needApproval, ", "))
			d.DecidedBy = ruleActor(approvalRules)
			return d
		}
		deadline := now.Add(cfg.ApprovalWindow.D()).UTC()
		d.Outcome, d.Mode = events.OutcomePending, events.ModeRequireApproval
		d.ApproverRoles = roles
		d.ApprovalDeadline = &deadline
		d.Reason = fmt.Sprintf("%s; an approver holding %s must answer by %s or the request is denied",
			strings.Join(clauses, "; "), orList(roles), deadline.Format(time.RFC3339))
		d.DecidedBy = ruleActor(all)
		return d
	}

	d.Outcome, d.Mode = events.OutcomeApproved, events.ModeAutoApprove
	if anyPolicy {
		d.Mode = events.ModePolicy
	}
	d.Reason = strings.Join(clauses, "; ")
	d.DecidedBy = ruleActor(all)
	return d
}

func appendUnique(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// orList writes roles as "a", "a or b", "a, b or c".
func orList(items []string) string {
	switch len(items) {
	case 0:
		return "no role"
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}

// fmtMS writes a duration in milliseconds, even one too long for a
// time.Duration.
func fmtMS(ms int64) string {
	if ms > int64(config.MaxGrantDuration/time.Millisecond)*1000 || ms < -int64(config.MaxGrantDuration/time.Millisecond)*1000 {
		return fmt.Sprintf("%dms", ms)
	}
	return events.FormatDuration(time.Duration(ms) * time.Millisecond)
}
