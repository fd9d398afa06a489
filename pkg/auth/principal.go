// Package auth is who may do what on the JIT system's NATS: the principals
// (services, agents, guardrail sources, checkers, SIEM readers, operators,
// the break-glass administrator), the NATS accounts and user credentials
// that hold each of them to its part, and the identity a service reads from
// a call that crossed into its account.
//
// The model is NATS's decentralized JWT authentication. An operator key
// signs the accounts; the services and all JetStream state live in one
// account (JIT); every other principal has an account of its own with no
// JetStream, which reaches the services only through what JIT exports and
// the principal's account imports: a service import for each API subject it
// may call (the server then writes Nats-Request-Info, naming the caller),
// read-only JetStream requests (direct gets, its own audit consumer) under a
// prefix, and live feeds the streams republish. A principal therefore cannot
// write a grant, publish an event, touch a consumer or read what its account
// does not import, whatever it sends. See docs/security.md.
package auth

import (
	"errors"
	"fmt"
	"strings"

	"github.com/agentjit/jit/pkg/events"
)

// Principal kinds.
const (
	// KindService is one of the JIT services (requester, policy, approval,
	// revoker, auditor, jitd's own bootstrap). Services share the JIT
	// account; each is its own user with only the subjects it needs.
	KindService = "service"
	// KindAdmin is the break-glass administrator: every right in the JIT
	// account, the only principal that may delete or purge.
	KindAdmin = "admin"
	// KindAgent is an AI agent (a service account of the configuration).
	KindAgent = "agent"
	// KindGuardrail is a guardrail source that reports violations.
	KindGuardrail = "guardrail"
	// KindChecker is an enforcement point (a resource server).
	KindChecker = "checker"
	// KindSIEM reads the audit trail.
	KindSIEM = "siem"
	// KindOperator runs jitctl: the approver and admin API (approvers name
	// themselves with their token) and read access to audit and state.
	KindOperator = "operator"
)

// ClientKinds are the kinds a credential can be issued for with
// `jitctl creds issue`: every principal outside the services' account.
var ClientKinds = []string{KindAgent, KindGuardrail, KindChecker, KindSIEM, KindOperator}

// Principal names one party: its kind and its id (an agent id, a guardrail
// source's name, a service's name, or a name of the operator's choosing for
// checkers, SIEM readers and operators).
type Principal struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
}

// ErrBadPrincipal is returned for a name or kind that is not a principal.
var ErrBadPrincipal = errors.New("not a principal")

// String is the principal's name as its user JWT carries it: "kind:id".
func (p Principal) String() string { return p.Kind + ":" + p.ID }

// ParsePrincipal reads a principal from its name "kind:id".
func ParsePrincipal(name string) (Principal, error) {
	kind, id, ok := strings.Cut(name, ":")
	if !ok {
		return Principal{}, fmt.Errorf("%w: %q is not kind:id", ErrBadPrincipal, name)
	}
	p := Principal{Kind: kind, ID: id}
	return p, p.Validate()
}

// Validate checks that the kind is known and the id is a valid id.
func (p Principal) Validate() error {
	switch p.Kind {
	case KindService, KindAdmin, KindAgent, KindGuardrail, KindChecker, KindSIEM, KindOperator:
	default:
		return fmt.Errorf("%w: unknown kind %q (one of %s)", ErrBadPrincipal, p.Kind, strings.Join(append([]string{KindService, KindAdmin}, ClientKinds...), ", "))
	}
	if !events.ValidID(p.ID) {
		return fmt.Errorf("%w: %s id %q must be 1-64 letters, digits, '-' or '_'", ErrBadPrincipal, p.Kind, p.ID)
	}
	return nil
}

// IsClient reports whether p lives outside the services' account.
func (p Principal) IsClient() bool { return p.Kind != KindService && p.Kind != KindAdmin }

// CredsFile is the name of p's credentials file: "agent-<id>.creds" and
// "guardrail-<name>.creds"; "siem.creds", "checker.creds" and
// "operator.creds" for the default reader, checker and operator (whose id
// is their kind), "<kind>-<id>.creds" for others.
func (p Principal) CredsFile() string {
	if p.ID == p.Kind && p.Kind != KindAgent && p.Kind != KindGuardrail {
		return p.Kind + ".creds"
	}
	return p.Kind + "-" + p.ID + ".creds"
}

// InboxPrefix is the inbox prefix p's connections use for replies. Each
// client principal has an account of its own, so its inboxes are private
// whatever the prefix; services share the JIT account, so each has its own
// prefix and may subscribe only under it.
func (p Principal) InboxPrefix() string {
	if p.Kind == KindService {
		return "_INBOX_" + p.ID
	}
	return "_INBOX"
}

// AuditDurable is the name of the one durable consumer on the audit stream
// that a SIEM reader or an operator may read (jitctl audit --follow); ""
// for other kinds.
func (p Principal) AuditDurable() string {
	if p.Kind != KindSIEM && p.Kind != KindOperator {
		return ""
	}
	return "audit_" + p.Kind + "_" + p.ID
}

// Default principals: jitd makes a credential for each at first start.
var (
	DefaultOperator = Principal{Kind: KindOperator, ID: KindOperator}
	DefaultSIEM     = Principal{Kind: KindSIEM, ID: KindSIEM}
	DefaultChecker  = Principal{Kind: KindChecker, ID: KindChecker}
)

// Service names (the services' users in the JIT account).
const (
	ServiceRequester = "requester"
	ServicePolicy    = "policy"
	ServiceApproval  = "approval"
	ServiceRevoker   = "revoker"
	ServiceAuditor   = "auditor"
	// ServiceJitd is jitd's own bootstrap connection: it creates the
	// topology, applies the configuration and provisions readers' durables.
	ServiceJitd = "jitd"
)

// Services lists every service user, in start order.
var Services = []string{ServiceRevoker, ServiceApproval, ServicePolicy, ServiceRequester, ServiceAuditor, ServiceJitd}

// Service returns the principal of a service.
func Service(name string) Principal { return Principal{Kind: KindService, ID: name} }

// Admin is the break-glass administrator.
var Admin = Principal{Kind: KindAdmin, ID: "breakglass"}
