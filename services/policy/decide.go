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

// Decide decides req at now under cfg. It is pure: the same inputs give the
// same decision. suspended says whether the agent is suspended.
//
// The rules of docs/architecture.md "Decision": an agent no longer
// configured, a suspended agent, a permission the agent is not eligible for
// or a duration beyond its maxJitDuration is denied. Otherwise each
// permission is decided by the rules in file order: a matching deny rule
// wins, else the first matching rule decides, else it is denied by default.
// Across permissions any deny denies (with the first deny's mode, rule and
// reason), any require-approval makes the request pending for an approver
// holding a role common to all those rules (denied if there is none), else
// it is approved. Every decision carries the risk score and a Reason a human
// reads.
func Decide(cfg *config.Config, req events.Request, now time.Time, suspended bool) events.Decision {
	d := events.Decision{
		RequestID:   req.RequestID,
		Agent:       req.Agent,
		Permissions: req.Permissions,
		DurationMS:  req.DurationMS,
		DecidedAt:   now.UTC(),
		Request:     req,
	}
	agent, known := cfg.Agent(req.Agent)
	risk := Score(cfg, agent, req, now)
	d.Risk = &risk
	deny := func(mode, reason string) events.Decision {
		d.Outcome, d.Mode, d.Reason, d.DecidedBy = events.OutcomeDenied, mode, reason, systemActor
		return d
	}

	if !known {
		return deny(events.ModeDefaultDeny, fmt.Sprintf("agent %s is not configured; nothing can be granted to it", req.Agent))
	}
	if suspended {
		return deny(events.ModeSuspended, fmt.Sprintf("agent %s is suspended; nothing is granted until an org-admin or security-admin reinstates it", agent.ID))
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
		return deny(events.ModeDefaultDeny, fmt.Sprintf("%s exceeds the maxJitDuration of %s (%s)", fmtMS(req.DurationMS), agent.ID, fmtDur(maxD)))
	}
	dur := req.Duration()
	for _, p := range req.Permissions {
		if !agent.IsEligible(p) {
			return deny(events.ModeDefaultDeny, fmt.Sprintf("agent %s is not eligible for %s (eligible: %s)", agent.ID, p, strings.Join(agent.Eligible, ", ")))
		}
	}

	local := now.In(cfg.Location())
	verdicts := make([]verdict, 0, len(req.Permissions))
	for _, p := range req.Permissions {
		verdicts = append(verdicts, decidePermission(cfg, agent.ID, p, dur, risk.Score, local))
	}
	return combine(cfg, d, verdicts, now)
}

// decidePermission applies the rules to one permission.
func decidePermission(cfg *config.Config, agent, p string, dur time.Duration, score int, local time.Time) verdict {
	var first *config.Rule
	for i := range cfg.Rules {
		r := &cfg.Rules[i]
		if !r.Matches(agent, p) {
			continue
		}
		if r.Mode == config.ModeDeny {
			return verdict{perm: p, rule: r, outcome: events.OutcomeDenied, mode: events.ModeDeny,
				reason: fmt.Sprintf("rule %s denies %s for %s", r.Name, p, agent)}
		}
		if first == nil {
			first = r
		}
	}
	if first == nil {
		return verdict{perm: p, outcome: events.OutcomeDenied, mode: events.ModeDefaultDeny,
			reason: fmt.Sprintf("no rule allows %s for %s; default is deny", p, agent)}
	}
	r := first
	v := verdict{perm: p, rule: r, mode: r.Mode}
	capped := r.MaxDuration > 0 && dur > r.MaxDuration.D()

	switch r.Mode {
	case config.ModeAutoApprove:
		if capped {
			v.outcome = events.OutcomeDenied
			v.reason = fmt.Sprintf("%s exceeds the max_duration of rule %s (%s) for %s", fmtDur(dur), r.Name, fmtDur(r.MaxDuration.D()), p)
			return v
		}
		v.outcome = events.OutcomeApproved
		v.reason = fmt.Sprintf("rule %s auto-approves %s", r.Name, p)
	case config.ModePolicy:
		failed, held := conditions(r, dur, score, local)
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
			v.reason = fmt.Sprintf("%s exceeds the max_duration of rule %s (%s) for %s", fmtDur(dur), r.Name, fmtDur(r.MaxDuration.D()), p)
			return v
		}
		v.outcome = events.OutcomePending
		v.reason = fmt.Sprintf("rule %s requires a human approver for %s", r.Name, p)
	default:
		// A validated configuration has no other mode; refuse rather than guess.
		v.outcome, v.mode = events.OutcomeDenied, events.ModeDefaultDeny
		v.reason = fmt.Sprintf("rule %s has unknown mode %q; default is deny", r.Name, r.Mode)
	}
	return v
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
				fmt.Sprintf("duration %s above %s", fmtDur(dur), fmtDur(p.MaxDuration.D())),
				fmt.Sprintf("duration %s at most %s", fmtDur(dur), fmtDur(p.MaxDuration.D())))
		}
	}
	if r.MaxDuration > 0 && dur > r.MaxDuration.D() {
		failed = append(failed, fmt.Sprintf("duration %s above the rule's max_duration %s", fmtDur(dur), fmtDur(r.MaxDuration.D())))
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
	return fmtDur(time.Duration(ms) * time.Millisecond)
}

// fmtDur writes a duration as people do: 45m, 1h30m, 2s, 1.5s.
func fmtDur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
