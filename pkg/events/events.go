// Package events is the one place that knows the JIT system's CloudEvents:
// event types, subjects, the typed payload of each, constructors and a
// decoder that validates. It never imports a NATS package, so agents, SIEM
// consumers and the services share it without pulling in a broker client.
package events

import (
	"errors"
	"regexp"
)

// Event types. Every type is also the subject prefix: an event of type T
// about agent A is published on subject "T.A" (e.g. jit.granted.market-intel),
// so stream filters and permissions can scope by agent.
const (
	TypeRequested      = "jit.requested"    // a request passed the edge's validation
	TypeRejected       = "jit.rejected"     // bad input refused anywhere in the system
	TypeDecided        = "jit.decided"      // approved, denied or pending a human
	TypeGranted        = "jit.granted"      // a grant exists in the grants bucket
	TypeRevoked        = "jit.revoked"      // a grant ended: expired, completed, guardrail, admin
	TypeGuardrailFired = "guardrail.fired"  // a guardrail system reports a violation
	TypeSuspended      = "jit.suspended"    // an agent is suspended after a guardrail
	TypeReinstated     = "jit.reinstated"   // a suspension was lifted by an admin
	TypeConfigApplied  = "jit.config"       // a configuration was validated and stored
	TypeApproved       = "jit.approved"     // one approver approved a pending request
	TypeNotification   = "jit.notification" // a notifier delivered a pending request, or gave up
	TypeWithdrawn      = "jit.withdrawn"    // an agent withdrew its request before or while it was decided
	TypeCheckpoint     = "jit.checkpoint"   // the auditor signed the audit stream's hash chain up to a sequence
)

// AllTypes lists every event type, in lifecycle order.
var AllTypes = []string{
	TypeRequested, TypeRejected, TypeDecided, TypeGranted, TypeRevoked,
	TypeGuardrailFired, TypeSuspended, TypeReinstated, TypeConfigApplied,
	TypeApproved, TypeNotification, TypeWithdrawn, TypeCheckpoint,
}

// Extension attribute names carried on events (CloudEvents extensions are
// lower-case alphanumerics).
const (
	ExtRequestID = "requestid" // every event of one request carries its id
	ExtGrantID   = "grantid"   // every event about one grant carries its id
	// ExtPrincipal names the credential that reported an outside event
	// (guardrail.fired): "guardrail:<source>". The revoker's ingress sets
	// it from the broker-authenticated connection, never from the sender.
	ExtPrincipal = "jitprincipal"
)

// SpecVersion is the CloudEvents version the system emits.
const SpecVersion = "1.0"

// SourcePrefix prefixes every event's source; the rest names the emitter,
// e.g. "/jit/requester".
const SourcePrefix = "/jit/"

// UnknownAgent is the agent token used on subjects when the input was too
// malformed to name a valid agent.
const UnknownAgent = "_unknown"

// SystemToken is the last subject token of events that concern no agent
// (configuration changes).
const SystemToken = "_system"

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidID reports whether s may be used as an agent, approver, rule or grant
// id: 1–64 characters of letters, digits, '-' and '_', not starting with '-'
// or '_'. Such an id is always a single valid NATS subject token and KV key
// token.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// SystemTypes are the event types that concern no agent: their subject is
// "<type>._system".
var SystemTypes = []string{TypeConfigApplied, TypeCheckpoint}

// Subject returns the subject for an event of type typ about agent. An agent
// that is not a ValidID is replaced by UnknownAgent so that untrusted input
// can never inject subject tokens or wildcards.
// Events of SystemTypes always get the subject "<type>._system".
func Subject(typ, agent string) string {
	for _, t := range SystemTypes {
		if typ == t {
			return typ + "." + SystemToken
		}
	}
	if !ValidID(agent) {
		agent = UnknownAgent
	}
	return typ + "." + agent
}

// Named errors returned by Decode and the payload validators.
var (
	ErrMalformed   = errors.New("malformed event")
	ErrUnknownType = errors.New("unknown event type")
	ErrTooLarge    = errors.New("event too large")
	ErrInvalid     = errors.New("invalid event data")
)

// MaxEventSize bounds any encoded event the system accepts from outside.
const MaxEventSize = 64 << 10
