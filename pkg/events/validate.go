package events

import (
	"fmt"
	"strings"
	"time"
)

// Validation of each event's data: what every consumer of that event may
// rely on once DataAs has decoded it. A consumer calls Validate (broker.DataFor
// does, for events outsiders publish) and also checks what only it knows,
// such as the subject the event arrived on. Every error wraps ErrInvalid.

// MaxGrantDuration bounds the duration of any grant (and so any agent's
// max_jit_duration).
const MaxGrantDuration = 24 * time.Hour

// Validate checks a Request from the stream: ids usable as keys.
func (r Request) Validate() error {
	if !ValidID(r.RequestID) {
		return fmt.Errorf("%w: request_id %q is not a valid id", ErrInvalid, r.RequestID)
	}
	if !ValidID(r.Agent) {
		return fmt.Errorf("%w: agent %q is not a valid id", ErrInvalid, r.Agent)
	}
	return nil
}

// AgentID is the agent the request is for.
func (r Request) AgentID() string { return r.Agent }

// Validate checks a Decision from the stream: ids usable as keys, a known
// outcome, and for an approved decision something to grant for a bounded
// time from a known instant; a pending decision has a deadline or an
// instant to count one from.
func (d Decision) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: decision: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case !ValidID(d.RequestID):
		return bad("request_id %q is not a valid id", truncate(d.RequestID, 80))
	case !ValidID(d.Agent):
		return bad("agent %q is not a valid id", truncate(d.Agent, 80))
	}
	switch d.Outcome {
	case OutcomeDenied:
		return nil
	case OutcomeApproved:
		switch {
		case len(d.Permissions) == 0:
			return bad("an approved decision names no permissions")
		case d.DurationMS <= 0:
			return bad("duration_ms %d must be positive", d.DurationMS)
		case MSDuration(d.DurationMS) > MaxGrantDuration:
			return bad("duration_ms %d is above the %s limit", d.DurationMS, MaxGrantDuration)
		case d.DecidedAt.IsZero():
			return bad("an approved decision has no decided_at")
		}
		return nil
	case OutcomePending:
		if d.DecidedAt.IsZero() && d.ApprovalDeadline == nil {
			return bad("a pending decision has neither decided_at nor approval_deadline")
		}
		return nil
	default:
		return bad("unknown outcome %q", truncate(d.Outcome, 40))
	}
}

// AgentID is the agent the decision is about.
func (d Decision) AgentID() string { return d.Agent }

// Validate checks a Suspension from the stream or the suspensions bucket:
// the agent is a valid id.
func (s Suspension) Validate() error {
	if !ValidID(s.Agent) {
		return fmt.Errorf("%w: suspension: agent %q is not a valid id", ErrInvalid, truncate(s.Agent, 80))
	}
	return nil
}

// AgentID is the suspended agent.
func (s Suspension) AgentID() string { return s.Agent }

// Validate checks a GuardrailFired from an untrusted publisher.
func (g GuardrailFired) Validate() error {
	if !ValidID(g.Agent) {
		return fmt.Errorf("%w: agent %q is not a valid id", ErrInvalid, g.Agent)
	}
	if strings.TrimSpace(g.Rule) == "" || len(g.Rule) > 128 {
		return fmt.Errorf("%w: rule must be 1-128 characters", ErrInvalid)
	}
	if len(g.Detail) > 4096 {
		return fmt.Errorf("%w: detail longer than 4096 characters", ErrInvalid)
	}
	return nil
}

// Validate checks a Withdrawal read from the stream.
func (w Withdrawal) Validate() error {
	if !ValidID(w.Agent) {
		return fmt.Errorf("%w: agent %q is not a valid id", ErrInvalid, w.Agent)
	}
	if !ValidID(w.RequestID) {
		return fmt.Errorf("%w: request id %q is not a valid id", ErrInvalid, w.RequestID)
	}
	return nil
}

// truncate shortens s to at most n bytes for an error message, marking
// the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
