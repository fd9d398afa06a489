package events

import (
	"math"
	"strings"
	"time"
)

// Actor is who or what caused an event. It is set in one place per service,
// from what the transport or an authenticated token says, never copied from
// an untrusted payload.
type Actor struct {
	// Kind is one of ActorAgent, ActorApprover, ActorRule, ActorGuardrail,
	// ActorSystem, or for a refused call of another client principal
	// ActorOperator, ActorChecker, ActorSIEM.
	Kind string `json:"kind"`
	// ID names the actor: the agent id, approver name, rule name, guardrail
	// rule or system component.
	ID string `json:"id"`
	// Roles are the approver's roles at the time of the action.
	Roles []string `json:"roles,omitempty"`
}

// Actor kinds.
const (
	ActorAgent     = "agent"
	ActorApprover  = "approver"
	ActorRule      = "rule"
	ActorGuardrail = "guardrail"
	ActorSystem    = "system"
	// The other client principals (pkg/auth), named when one of their
	// calls is refused.
	ActorOperator = "operator"
	ActorChecker  = "checker"
	ActorSIEM     = "siem"
)

func (a Actor) String() string {
	if a.Kind == "" {
		return "unknown"
	}
	return a.Kind + ":" + a.ID
}

// Request is the data of jit.requested: a request that passed validation at
// the edge (known agent, eligible permissions, duration within the agent's
// maxJitDuration, not suspended, a reason).
type Request struct {
	RequestID   string            `json:"request_id"`
	Agent       string            `json:"agent"`
	Permissions []string          `json:"permissions"`
	DurationMS  int64             `json:"duration_ms"`
	Reason      string            `json:"reason"`
	Context     map[string]string `json:"context,omitempty"`
	RequestedBy Actor             `json:"requested_by"`
	RequestedAt time.Time         `json:"requested_at"`
}

// Duration returns the requested duration. A duration_ms too large for a
// time.Duration saturates at the largest one instead of wrapping around, so
// a crafted value can never read as a short duration.
func (r Request) Duration() time.Duration { return MSDuration(r.DurationMS) }

// MSDuration converts milliseconds to a time.Duration, saturating instead of
// overflowing; negative values give 0.
func MSDuration(ms int64) time.Duration {
	const maxMS = int64(math.MaxInt64 / int64(time.Millisecond))
	switch {
	case ms <= 0:
		return 0
	case ms > maxMS:
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(ms) * time.Millisecond
}

// ShortDuration writes d as people do: "10m", "1h30m", "45s", not Go's
// "10m0s" or "1h30m0s".
func ShortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// Decision outcomes.
const (
	OutcomeApproved = "approved"
	OutcomeDenied   = "denied"
	OutcomePending  = "pending" // waits for a human approver
)

// Decision modes: how the outcome was reached.
const (
	ModeAutoApprove     = "auto-approve"
	ModePolicy          = "policy"
	ModeRequireApproval = "require-approval"
	ModeDeny            = "deny"
	ModeDefaultDeny     = "default-deny" // no rule matched
	ModeHuman           = "human"        // a human approver answered
	ModeTimeout         = "timeout"      // nobody answered within the approval window
	ModeSuspended       = "suspended"    // the agent was suspended before the grant
	ModeWithdrawn       = "withdrawn"    // the agent withdrew the request before an answer
	// ModeExpiredBeforeGrant: the request was approved, but its decision
	// was handled (after a crash, or a long stop) too late to announce the
	// grant before its expires_at; nothing was granted.
	ModeExpiredBeforeGrant = "expired_before_grant"
)

// RiskPart is one explained contribution to a risk score.
type RiskPart struct {
	Name   string `json:"name"`
	Points int    `json:"points"`
	Detail string `json:"detail"`
}

// Risk is a deterministic, explainable score from 0 to 100.
type Risk struct {
	Score int        `json:"score"`
	Parts []RiskPart `json:"parts"`
}

// Decision is the data of jit.decided.
type Decision struct {
	RequestID   string   `json:"request_id"`
	Agent       string   `json:"agent"`
	Outcome     string   `json:"outcome"`
	Mode        string   `json:"mode"`
	Rule        string   `json:"rule,omitempty"`
	Reason      string   `json:"reason"`
	Permissions []string `json:"permissions"`
	DurationMS  int64    `json:"duration_ms"`
	Risk        *Risk    `json:"risk,omitempty"`
	// ApproverRoles, for a pending decision, are the roles of which an
	// approver must hold at least one.
	ApproverRoles []string `json:"approver_roles,omitempty"`
	// ApprovalDeadline, for a pending decision, is when an unanswered
	// request is denied as timed out.
	ApprovalDeadline *time.Time `json:"approval_deadline,omitempty"`
	Comment          string     `json:"comment,omitempty"`
	DecidedBy        Actor      `json:"decided_by"`
	DecidedAt        time.Time  `json:"decided_at"`
	// Request is the request decided on, so that a decision can be acted on
	// (granted) from this event alone.
	Request Request `json:"request"`
}

// Grant is the data of jit.granted and the value stored in the grants bucket.
type Grant struct {
	GrantID     string            `json:"grant_id"`
	RequestID   string            `json:"request_id"`
	Agent       string            `json:"agent"`
	Permissions []string          `json:"permissions"`
	Reason      string            `json:"reason"`
	Context     map[string]string `json:"context,omitempty"`
	Rule        string            `json:"rule,omitempty"`
	Mode        string            `json:"mode"`
	ApprovedBy  Actor             `json:"approved_by"`
	GrantedAt   time.Time         `json:"granted_at"`
	ExpiresAt   time.Time         `json:"expires_at"`
	// Status is "active" or "revoked" in the grants bucket; a revoked grant
	// stays as a tombstone until its TTL so it cannot be granted again.
	Status string `json:"status,omitempty"`
}

// Grant statuses in the grants bucket.
const (
	GrantActive  = "active"
	GrantRevoked = "revoked"
)

// ActiveAt reports whether the grant counts at t: status active and t before
// expires_at. Presence of a key alone never makes a grant count.
func (g Grant) ActiveAt(t time.Time) bool {
	return (g.Status == "" || g.Status == GrantActive) && t.Before(g.ExpiresAt)
}

// Has reports whether the grant includes permission p.
func (g Grant) Has(p string) bool {
	for _, q := range g.Permissions {
		if q == p {
			return true
		}
	}
	return false
}

// Revocation reasons.
const (
	RevokedExpired   = "expired"
	RevokedCompleted = "completed"
	RevokedGuardrail = "guardrail"
	RevokedAdmin     = "admin"
	RevokedWithdrawn = "withdrawn" // the agent withdrew its request after it was granted
)

// Revocation is the data of jit.revoked. Exactly one is published per grant.
type Revocation struct {
	GrantID     string    `json:"grant_id"`
	RequestID   string    `json:"request_id"`
	Agent       string    `json:"agent"`
	Permissions []string  `json:"permissions"`
	Reason      string    `json:"reason"`
	Detail      string    `json:"detail,omitempty"`
	RevokedBy   Actor     `json:"revoked_by"`
	RevokedAt   time.Time `json:"revoked_at"`
	GrantedAt   time.Time `json:"granted_at"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// GuardrailFired is the data of guardrail.fired, published by guardrail
// systems.
type GuardrailFired struct {
	Agent   string    `json:"agent"`
	Rule    string    `json:"rule"`
	Detail  string    `json:"detail,omitempty"`
	FiredAt time.Time `json:"fired_at"`
}

// Suspension is the data of jit.suspended and the value stored in the
// suspensions bucket.
type Suspension struct {
	Agent         string    `json:"agent"`
	Rule          string    `json:"rule"`
	Detail        string    `json:"detail,omitempty"`
	GuardrailID   string    `json:"guardrail_event_id"`
	SuspendedBy   Actor     `json:"suspended_by"`
	SuspendedAt   time.Time `json:"suspended_at"`
	RevokedGrants []string  `json:"revoked_grants"`
}

// Reinstatement is the data of jit.reinstated.
type Reinstatement struct {
	Agent        string    `json:"agent"`
	Comment      string    `json:"comment,omitempty"`
	ReinstatedBy Actor     `json:"reinstated_by"`
	ReinstatedAt time.Time `json:"reinstated_at"`
	// Suspension is the suspension that was lifted.
	Suspension Suspension `json:"suspension"`
}

// Rejection stages: where the bad input arrived.
const (
	StageRequest    = "request"
	StageApproval   = "approval"
	StageCompletion = "completion"
	StageGuardrail  = "guardrail"
	StageReinstate  = "reinstate"
	StageRevoke     = "revoke" // an admin's revocation of a grant
	StageEvent      = "event"  // a malformed event on a stream
	StageConfig     = "config"
	StageRecord     = "record" // a stored value (a bucket's key) that does not decode: set aside
)

// Rejection codes.
const (
	CodeMalformed        = "malformed"
	CodeTooLarge         = "too_large"
	CodeUnknownAgent     = "unknown_agent"
	CodeNotEligible      = "not_eligible"
	CodeDurationExceeded = "duration_exceeded"
	CodeInvalidDuration  = "invalid_duration"
	CodeEmptyReason      = "empty_reason"
	CodeReasonTooLong    = "reason_too_long" // a request's reason over the length limit
	CodeSuspended        = "suspended"
	CodeUnauthenticated  = "unauthenticated"
	CodeForbidden        = "forbidden"
	CodeNotFound         = "not_found"
	CodeStale            = "stale"
	CodeConflict         = "conflict"
	CodeInvalidConfig    = "invalid_config"
	CodeUnavailable      = "unavailable"  // the service is stopping or a dependency is down: retry
	CodeRateLimited      = "rate_limited" // too many failed sign-ins from one address
	CodeInternal         = "internal"     // a handler panicked on the event: it was terminated, not retried
)

// AllCodes lists every rejection code (docs/events.md documents each).
var AllCodes = []string{
	CodeMalformed, CodeTooLarge, CodeUnknownAgent, CodeNotEligible, CodeDurationExceeded, CodeInvalidDuration,
	CodeEmptyReason, CodeReasonTooLong, CodeSuspended, CodeUnauthenticated, CodeForbidden, CodeNotFound,
	CodeStale, CodeConflict, CodeInvalidConfig, CodeUnavailable, CodeRateLimited,
	CodeInternal,
}

// Rejection is the data of jit.rejected: input that was refused, with the
// reason given to its sender.
type Rejection struct {
	Stage      string    `json:"stage"`
	Code       string    `json:"code"`
	Message    string    `json:"message"`
	Agent      string    `json:"agent,omitempty"`
	RequestID  string    `json:"request_id,omitempty"`
	GrantID    string    `json:"grant_id,omitempty"`
	Actor      Actor     `json:"actor"`
	Subject    string    `json:"subject,omitempty"` // where a malformed event arrived
	RejectedAt time.Time `json:"rejected_at"`
}

// ConfigApplied is the data of jit.config.
type ConfigApplied struct {
	Outcome   string    `json:"outcome"` // applied | unchanged | refused
	Digest    string    `json:"digest"`
	Source    string    `json:"source"`
	Error     string    `json:"error,omitempty"`
	Revision  uint64    `json:"revision,omitempty"`
	AppliedBy Actor     `json:"applied_by"`
	AppliedAt time.Time `json:"applied_at"`
}

// Approval is the data of jit.approved: one approver's approval of a
// pending request. A rule that needs N approvers sees N of them before the
// jit.decided that approves; one approver's deny is a jit.decided at once.
type Approval struct {
	RequestID string `json:"request_id"`
	Agent     string `json:"agent"`
	Rule      string `json:"rule,omitempty"`
	Approver  Actor  `json:"approver"`
	Comment   string `json:"comment,omitempty"`
	// Permissions and DurationMS are what this approver approved: the
	// request's, or fewer and shorter.
	Permissions []string `json:"permissions"`
	DurationMS  int64    `json:"duration_ms"`
	// Approvals counts the distinct approvals so far, this one included;
	// Required is how many the rule needs.
	Approvals  int       `json:"approvals"`
	Required   int       `json:"required"`
	ApprovedAt time.Time `json:"approved_at"`
}

// Notification outcomes.
const (
	NotificationDelivered = "delivered"
	NotificationFailed    = "failed"
)

// Notification is the data of jit.notification: the end of the delivery of
// a pending request to one notifier.
type Notification struct {
	RequestID    string    `json:"request_id"`
	Agent        string    `json:"agent"`
	Notifier     string    `json:"notifier"`
	NotifierType string    `json:"notifier_type"`
	Outcome      string    `json:"outcome"` // delivered | failed
	Attempts     int       `json:"attempts"`
	HTTPStatus   int       `json:"http_status,omitempty"`
	Error        string    `json:"error,omitempty"`
	NotifiedAt   time.Time `json:"notified_at"`
}

// Withdrawal is the data of jit.withdrawn: an agent withdrew a request it
// no longer waits for. A pending request is then denied (mode withdrawn);
// a grant made from it is revoked (reason withdrawn).
type Withdrawal struct {
	RequestID   string    `json:"request_id"`
	Agent       string    `json:"agent"`
	WithdrawnBy Actor     `json:"withdrawn_by"`
	WithdrawnAt time.Time `json:"withdrawn_at"`
}

// AgentID is the agent the guardrail event is about.
func (g GuardrailFired) AgentID() string { return g.Agent }

// AgentID is the agent whose request is withdrawn.
func (w Withdrawal) AgentID() string { return w.Agent }

// MaxCheckpointEvents bounds the stream messages one checkpoint covers, so
// that its event stays below MaxEventSize (1,024 hashes are 43,692 bytes of
// base64).
const MaxCheckpointEvents = 1024

// SeqRange is an inclusive range of stream sequences.
type SeqRange struct {
	First uint64 `json:"first"`
	Last  uint64 `json:"last"`
}

// Checkpoint is the data of jit.checkpoint: the auditor's signed statement
// of the audit stream's hash chain over the messages with stream sequences
// first_seq..last_seq. Hashes lists each message's hash in stream order, so
// that a verifier can name the first message deleted, altered, inserted or
// reordered; Chain is the chain value after the last one. The signature
// covers every other field (package audit's SigningBytes).
type Checkpoint struct {
	Stream   string `json:"stream"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// Count is the number of messages covered: the range less Skipped.
	Count int `json:"count"`
	// Skipped are sequences of the range that were not on the stream when
	// the auditor read it (deleted or expired before they were chained).
	Skipped []SeqRange `json:"skipped,omitempty"`
	// PrevChain is the chain value before first_seq (hex), Chain the value
	// after last_seq.
	PrevChain string `json:"prev_chain"`
	Chain     string `json:"chain"`
	// Hashes is the base64 (standard, padded) of Count 32-byte message
	// hashes, in stream order.
	Hashes string `json:"hashes"`
	// CoveredUntil is the broker's timestamp of the message at last_seq.
	CoveredUntil time.Time `json:"covered_until"`
	// KeyID names the signing key: the first 8 bytes of the SHA-256 of the
	// Ed25519 public key, in hex.
	KeyID string `json:"key_id"`
	// Signature is the Ed25519 signature (base64) of the signing bytes.
	Signature string `json:"signature"`
}

// FormatDuration writes a duration as people do: 45m, 1h30m, 2h, 2s, 1.5s
// (Go's own form without its trailing zero units: not 45m0s or 2h0m0s).
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
