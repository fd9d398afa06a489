package service

import (
	"context"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
)

// Approvers is the one check of an approver token, whichever way it came:
// the NATS API entry (Serve, for an Endpoint.Approver) and the approval
// service's console and HTTP API both call Authenticate, so that a token is
// refused, counted in one lockout and audited the same everywhere. It is
// safe for concurrent use.
type Approvers struct {
	cfg   *config.Source
	pub   *broker.Publisher
	now   func() time.Time
	stage string
	locks *Lockout
}

// NewApprovers checks tokens against d.Config (the whole configuration:
// only the approval service has the token hashes) and records the start of
// a lockout with pub, at stage when the refusal names none.
func NewApprovers(d Deps, pub *broker.Publisher, stage string) *Approvers {
	return &Approvers{cfg: d.Config, pub: pub, now: d.Clock(), stage: stage, locks: NewLockout(d.Clock())}
}

// Presented is an approver token as one call presented it.
type Presented struct {
	// Token is the token; empty if the call carried none.
	Token string
	// Key is what this caller's wrong tokens count against in the lockout
	// (its NATS user, its client address); empty counts nothing (an
	// internal caller, trusted).
	Key string
	// Caller names the caller in the lockout's messages: a principal
	// ("operator:ops"), a client address.
	Caller string
	// Missing is the message of the refusal of a call without a token: it
	// says how this way of calling carries one.
	Missing string
	// Unknown, if set, is the message of the refusal of a token that names
	// no approver ("the approver token is not recognised" otherwise).
	Unknown string
}

// LockedOut is the refusal of a caller locked out for wrong tokens (429
// rate_limited); RetryAfter is what is left of its lockout.
type LockedOut struct {
	*Refused
	RetryAfter time.Duration
}

// Unwrap lets errors.As find the *Refused (and its *broker.APIError).
func (l *LockedOut) Unwrap() error { return l.Refused }

// Authenticate returns the approver p's token names, if it holds one of
// roles (any role if roles is empty). Each refusal is a *Refused carrying
// about (the actor replaced by the approver once known), for the caller to
// answer and record: 401 without a token or with one that names nobody,
// 403 outside roles, and a *LockedOut (429) for a caller that gave
// MaxAuthFailures wrong tokens within AuthWindow, whatever it presents
// until the window ends, so that guessing teaches nothing. The wrong token
// that starts a lockout is recorded here, once, as a jit.rejected of its
// own (code rate_limited) besides its 401.
func (au *Approvers) Authenticate(ctx context.Context, p Presented, roles []string, about events.Rejection) (*config.Approver, error) {
	if p.Key != "" {
		if left, blocked := au.locks.Blocked(p.Key); blocked {
			return nil, &LockedOut{RetryAfter: left, Refused: &Refused{APIError: broker.Errorf(429, events.CodeRateLimited,
				"too many wrong approver tokens from %s: refused for another %s", p.Caller, left.Round(time.Second)), Rejection: about}}
		}
	}
	if p.Token == "" {
		return nil, Refuse(broker.Errorf(401, events.CodeUnauthenticated, "%s", p.Missing), about)
	}
	var appr *config.Approver
	ok := false
	if cfg := au.cfg.Current(); cfg != nil {
		appr, ok = cfg.Authenticate(p.Token)
	}
	if !ok {
		if p.Key != "" && au.locks.Fail(p.Key) {
			RecordRefusal(ctx, au.pub, au.now(), au.stage, broker.Errorf(429, events.CodeRateLimited,
				"%d wrong approver tokens from %s within %s: refusing it for %s", MaxAuthFailures, p.Caller, AuthWindow, AuthWindow), about)
		}
		msg := p.Unknown
		if msg == "" {
			msg = "the approver token is not recognised"
		}
		return nil, Refuse(broker.Errorf(401, events.CodeUnauthenticated, "%s", msg), about)
	}
	if p.Key != "" {
		au.locks.Succeed(p.Key)
	}
	if len(roles) > 0 && !appr.HasRole(roles...) {
		return nil, Refuse(broker.Errorf(403, events.CodeForbidden,
			"approver %s (roles: %s) may not do this: it needs one of the roles %s",
			appr.Name, strings.Join(appr.Roles, ", "), strings.Join(roles, ", ")),
			withActor(about, ApproverActor(appr)))
	}
	return appr, nil
}
