package config

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/events"
)

// Notifier types.
const (
	NotifierWebhook = "webhook"
	NotifierSlack   = "slack"
)

// validateApprovalExt validates what human approval adds to the
// configuration: approvals per rule, approval windows, separation of duties
// and notifiers.
func (c *Config) validateApprovalExt(bad badFunc) {
	notifiers := map[string]bool{}
	for _, n := range c.Notifiers {
		what := fmt.Sprintf("notifier %q", n.Name)
		if !events.ValidID(n.Name) {
			bad(0, what, "name must be 1-64 letters, digits, '-' or '_'")
		}
		if notifiers[n.Name] {
			bad(0, what, "defined twice")
		}
		notifiers[n.Name] = true
		switch n.Type {
		case NotifierWebhook:
			if n.Secret == "" && !c.Redacted {
				bad(0, what, "a webhook needs a secret to sign its bodies")
			}
		case NotifierSlack:
		default:
			bad(0, what, "type %q must be webhook or slack", n.Type)
		}
		if !httpURL(n.URL) && !(c.Redacted && n.URL == "") {
			bad(0, what, "url %q must be an absolute http or https URL", n.URL)
		}
	}
	for i := range c.Approvers {
		a := &c.Approvers[i]
		for _, t := range a.Teams {
			if strings.TrimSpace(t) == "" {
				bad(0, fmt.Sprintf("approver %q", a.Name), "teams must not contain an empty name")
			}
		}
	}
	if c.Console.URL != "" && !httpURL(c.Console.URL) {
		bad(0, "console", "url %q must be an absolute http or https URL", c.Console.URL)
	}

	for i := range c.Rules {
		r := &c.Rules[i]
		what := fmt.Sprintf("rule %q", r.Name)
		if r.Approvals < 0 {
			bad(r.line, what, "approvals must not be negative")
		}
		if (r.Approvals > 0 || r.ApprovalWindow != 0 || r.SeparateOwner || len(r.Notify) > 0) && r.Mode != ModeRequireApproval {
			bad(r.line, what, "approvals, approval_window, separate_owner and notify need mode require-approval")
			continue
		}
		if r.Mode != ModeRequireApproval {
			continue
		}
		if r.ApprovalWindow != 0 && (r.ApprovalWindow < Duration(time.Second) || r.ApprovalWindow > Duration(MaxGrantDuration)) {
			bad(r.line, what, "approval_window %s must be between 1s and 24h", r.ApprovalWindow.D())
		}
		// Enough distinct approvers must be able to answer, or every
		// request under the rule could only time out.
		able := 0
		for j := range c.Approvers {
			if c.Approvers[j].HasRole(r.ApproverRoles...) {
				able++
			}
		}
		need := max(r.Approvals, 1)
		if len(r.ApproverRoles) > 0 && able < need {
			bad(r.line, what, "needs %d distinct approvers but only %d hold one of %v", need, able, r.ApproverRoles)
		} else if len(r.ApproverRoles) > 0 && r.SeparateOwner {
			// Under separation of duties the owners of an agent do not
			// count for that agent's requests.
			for k := range c.Agents {
				ag := &c.Agents[k]
				if !r.MatchesAgent(ag) {
					continue
				}
				eligible := 0
				for j := range c.Approvers {
					if ap := &c.Approvers[j]; ap.HasRole(r.ApproverRoles...) && !ap.Owns(ag.Owner) {
						eligible++
					}
				}
				if eligible < need {
					bad(r.line, what, "needs %d distinct approvers for agent %q but only %d hold one of %v without owning it (separate_owner)",
						need, ag.ID, eligible, r.ApproverRoles)
				}
			}
		}
		for _, n := range r.Notify {
			if !notifiers[n] {
				bad(r.line, what, "notify names %q, which is not in notifiers", n)
			}
		}
		if len(r.Notify) != len(slices.Compact(slices.Sorted(slices.Values(r.Notify)))) {
			bad(r.line, what, "notify names a notifier twice")
		}
	}
}

func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// Owns reports whether the approver counts as the owner of an agent whose
// owner is owner: the owner names the approver itself or one of its teams.
// An empty owner is owned by nobody. Rules with separate_owner refuse such
// an approver.
func (a *Approver) Owns(owner string) bool {
	return owner != "" && (a.Name == owner || slices.Contains(a.Teams, owner))
}
