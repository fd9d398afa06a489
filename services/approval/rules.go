package approval

import (
	"slices"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
)

// approvalRule is what the configuration says about answering a pending
// decision, merged over the require-approval rules it names (a decision's
// rule may be "a,b" when several permissions matched several rules): the
// most approvals any of them needs, the shortest approval window, separation
// of duties if any asks for it, and every notifier named.
type approvalRule struct {
	required      int
	window        time.Duration // 0: none set on the rules
	separateOwner bool
	notify        []string
}

// ruleOf reads the approval settings of the rules named in ruleNames from
// cfg. A rule no longer in the configuration contributes nothing; required
// is at least 1.
func ruleOf(cfg *config.Config, ruleNames string) approvalRule {
	ar := approvalRule{required: 1}
	if cfg == nil {
		return ar
	}
	for _, name := range strings.Split(ruleNames, ",") {
		name = strings.TrimSpace(name)
		for i := range cfg.Rules {
			r := &cfg.Rules[i]
			if r.Name != name || r.Mode != config.ModeRequireApproval {
				continue
			}
			ar.required = max(ar.required, r.Approvals)
			if w := r.ApprovalWindow.D(); w > 0 && (ar.window == 0 || w < ar.window) {
				ar.window = w
			}
			ar.separateOwner = ar.separateOwner || r.SeparateOwner
			for _, n := range r.Notify {
				if !slices.Contains(ar.notify, n) {
					ar.notify = append(ar.notify, n)
				}
			}
		}
	}
	return ar
}

// vote is one approver's approval recorded in a pending record.
type vote struct {
	Approver    events.Actor `json:"approver"`
	Comment     string       `json:"comment,omitempty"`
	Permissions []string     `json:"permissions"`
	DurationMS  int64        `json:"duration_ms"`
	At          time.Time    `json:"at"`
}

func (r *pendingRecord) votedBy(name string) (vote, bool) {
	for _, v := range r.Votes {
		if v.Approver.ID == name {
			return v, true
		}
	}
	return vote{}, false
}

// narrow checks an approver's narrowing of the pending decision p: the
// permissions must be a non-empty subset of those requested (empty means
// all), the duration positive, whole seconds or more, and no longer than
// requested (empty means as requested). It returns what is approved.
func narrow(p events.Decision, in broker.ApproveInput) ([]string, int64, *broker.APIError) {
	perms := slices.Clone(p.Permissions)
	if len(in.Permissions) > 0 {
		perms = nil
		for _, q := range in.Permissions {
			if !slices.Contains(p.Permissions, q) {
				return nil, 0, broker.Errorf(400, events.CodeMalformed,
					"permission %q was not requested: an approver may approve only a subset of %s", truncate(q, 80), strings.Join(p.Permissions, ", "))
			}
			if !slices.Contains(perms, q) {
				perms = append(perms, q)
			}
		}
	}
	ms := p.DurationMS
	if in.Duration != "" {
		d, err := time.ParseDuration(in.Duration)
		if err != nil {
			return nil, 0, broker.Errorf(400, events.CodeInvalidDuration, "duration %q is not a duration such as 10m", truncate(in.Duration, 40))
		}
		if d < time.Second || d.Milliseconds() > p.DurationMS {
			return nil, 0, broker.Errorf(400, events.CodeInvalidDuration,
				"duration %s must be at least 1s and at most the %s requested", events.ShortDuration(d), events.ShortDuration(events.MSDuration(p.DurationMS)))
		}
		ms = d.Milliseconds()
	}
	return perms, ms, nil
}

// combine is what all the votes approve together: the permissions every
// approver approved, for the shortest duration any approved.
func combine(votes []vote) ([]string, int64) {
	if len(votes) == 0 {
		return nil, 0
	}
	perms := slices.Clone(votes[0].Permissions)
	ms := votes[0].DurationMS
	for _, v := range votes[1:] {
		perms = slices.DeleteFunc(perms, func(p string) bool { return !slices.Contains(v.Permissions, p) })
		ms = min(ms, v.DurationMS)
	}
	return perms, ms
}

func approverNames(votes []vote) string {
	names := make([]string, len(votes))
	for i, v := range votes {
		names[i] = v.Approver.ID
	}
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// narrowedText says how an approval differs from the request, or "".
func narrowedText(p events.Decision, perms []string, ms int64) string {
	var parts []string
	if len(perms) != len(p.Permissions) {
		parts = append(parts, "permissions narrowed to "+strings.Join(perms, ", "))
	}
	if ms != p.DurationMS {
		parts = append(parts, "duration shortened to "+events.ShortDuration(events.MSDuration(ms)))
	}
	return strings.Join(parts, "; ")
}

// ApprovedEventID is the id of the jit.approved event of approver's approval
// of request.
func ApprovedEventID(requestID, approver string) string {
	return requestID + "/approved/" + approver
}

// OrList writes xs as a reader would: "a", "a or b", "a, b or c" (the
// console words roles with it too).
func OrList(xs []string) string {
	switch len(xs) {
	case 0:
		return ""
	case 1:
		return xs[0]
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " or " + xs[len(xs)-1]
}

// rolesNeeded says which roles an approver needs: "the role a", "one of
// the roles a or b".
func rolesNeeded(roles []string) string {
	switch len(roles) {
	case 0:
		return "a role no approver holds"
	case 1:
		return "the role " + roles[0]
	}
	return "one of the roles " + OrList(roles)
}

// RolesList names the roles an approver holds: "operator", "org-admin and
// operator", "no role" (the console words roles with it too).
func RolesList(roles []string) string {
	switch len(roles) {
	case 0:
		return "no role"
	case 1:
		return roles[0]
	}
	return strings.Join(roles[:len(roles)-1], ", ") + " and " + roles[len(roles)-1]
}
