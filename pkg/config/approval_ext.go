package config

import "fmt"

// validateApprovalExt validates what human approval adds to the
// configuration: approvals per rule, approval windows, separation of duties
// and notifiers.
func (c *Config) validateApprovalExt(bad badFunc) {
	for i := range c.Rules {
		r := &c.Rules[i]
		what := fmt.Sprintf("rule %q", r.Name)
		if r.Approvals < 0 {
			bad(r.line, what, "approvals must not be negative")
		}
		if (r.Approvals > 0 || r.ApprovalWindow != 0 || r.SeparateOwner) && r.Mode != ModeRequireApproval {
			bad(r.line, what, "approvals, approval_window and separate_owner need mode require-approval")
		}
	}
}
