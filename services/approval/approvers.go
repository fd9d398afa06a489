package approval

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
)

// What the approvers' other ways in, the console and the HTTP JSON API
// (package web), ask of the service: the same admission, token check,
// refusal record, pending list and answer as the NATS API, and the
// gateway's forwarding of revocations and reinstatements. Each call is
// admitted by Enter and ends with its done.

// Enter admits a call that comes another way than the NATS API like an
// API call: refused before Start and once Stop has begun (ok false),
// bounded by apiTimeout and by parent, ended by done. Stop waits for every
// call admitted.
func (s *Service) Enter(parent context.Context) (context.Context, func(), bool) {
	if s.ctx == nil || !s.enter() {
		return nil, nil, false
	}
	ctx, cancel := context.WithTimeout(s.ctx, apiTimeout)
	stop := context.AfterFunc(parent, cancel)
	return ctx, func() { stop(); cancel(); s.inflight.Done() }, true
}

// Authenticate is the approvers' one token check (service.Approvers, the
// one the NATS API uses, with the same lockout) for approvers who call
// another way: the console and the HTTP API. about is what a refusal
// records; the refusal is returned, not recorded (see Approvers).
func (s *Service) Authenticate(ctx context.Context, p service.Presented, about events.Rejection) (*config.Approver, error) {
	return s.approvers.Authenticate(ctx, p, nil, about)
}

// Refuse records a refusal of an approver's call made outside the NATS API
// as jit.rejected at stage approval (service.RecordRefusal) and returns ae,
// the answer.
func (s *Service) Refuse(ctx context.Context, ae *broker.APIError, r events.Rejection) error {
	return s.refuse(ctx, ae, r)
}

// Gone explains why no request requestID waits (404, or 409 stale when it
// timed out or was decided); it records nothing.
func (s *Service) Gone(ctx context.Context, requestID string) *broker.APIError {
	return s.gone(ctx, requestID)
}

// PendingView is one request waiting for a human, as the console and the
// HTTP API show it.
type PendingView struct {
	RequestID     string            `json:"request_id"`
	Agent         string            `json:"agent"`
	Rule          string            `json:"rule,omitempty"`
	Permissions   []string          `json:"permissions"`
	Duration      string            `json:"duration"`
	DurationMS    int64             `json:"duration_ms"`
	Reason        string            `json:"reason"`
	Context       map[string]string `json:"context,omitempty"`
	Risk          *events.Risk      `json:"risk,omitempty"`
	ApproverRoles []string          `json:"approver_roles"`
	Deadline      time.Time         `json:"deadline"`
	Required      int               `json:"approvals_required"`
	ApprovedBy    []string          `json:"approved_by"`
	// CanAnswer says whether the approver asking may answer it; if not,
	// WhyNot says why.
	CanAnswer bool   `json:"can_answer"`
	WhyNot    string `json:"why_not,omitempty"`
}

// Pending lists the live pending requests, soonest deadline first, as
// approver a sees them (the console and GET /api/v1/pending).
func (s *Service) Pending(ctx context.Context, a *config.Approver) ([]PendingView, error) {
	entries, err := s.pendingEntries(ctx, ">")
	if err != nil {
		return nil, err
	}
	cfg := s.d.Config.Current()
	now := s.now()
	out := []PendingView{}
	for _, e := range entries {
		if e.rec.Answer != nil || !now.Before(e.rec.Deadline) {
			continue
		}
		d := e.rec.Decision
		ar := ruleOf(cfg, d.Rule)
		v := PendingView{
			RequestID: d.RequestID, Agent: d.Agent, Rule: d.Rule, Permissions: d.Permissions,
			Duration: events.MSDuration(d.DurationMS).String(), DurationMS: d.DurationMS,
			Reason: d.Request.Reason, Context: d.Request.Context, Risk: d.Risk, ApproverRoles: d.ApproverRoles,
			Deadline: e.rec.Deadline, Required: max(e.rec.Required, ar.required), ApprovedBy: []string{},
		}
		if v.Reason == "" {
			v.Reason = d.Reason
		}
		for _, vt := range e.rec.Votes {
			v.ApprovedBy = append(v.ApprovedBy, vt.Approver.ID)
		}
		v.WhyNot = whyNot(cfg, a, d, ar, e.rec)
		v.CanAnswer = v.WhyNot == ""
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Deadline.Before(out[j].Deadline) })
	return out, nil
}

// whyNot says why approver a may not answer the pending decision d, or ""
// if it may. It mirrors the checks of answer, which remains the authority.
func whyNot(cfg *config.Config, a *config.Approver, d events.Decision, ar approvalRule, rec pendingRecord) string {
	switch {
	case a == nil:
		return "not signed in"
	case len(d.ApproverRoles) == 0 || !a.HasRole(d.ApproverRoles...):
		return "it needs " + rolesNeeded(d.ApproverRoles) + "; you hold " + RolesList(a.Roles)
	case a.Name == d.Agent:
		return "an agent cannot answer its own request"
	}
	if ar.separateOwner {
		if ag, ok := cfg.Agent(d.Agent); ok && a.Owns(ag.Owner) {
			return "you own this agent (owner " + ag.Owner + "); the rule needs another approver"
		}
	}
	if _, ok := rec.votedBy(a.Name); ok {
		return "you approved already; waiting for other approvers"
	}
	return ""
}

// Revoke asks the revoker (broker.InternalRevoke) to end a grant for
// approver a, whom this service authenticated; the revoker checks the role
// and audits. A refusal is the revoker's *broker.APIError; a revoker that
// does not answer is a 503.
func (s *Service) Revoke(ctx context.Context, a *config.Approver, grantID, comment string) (broker.ActionResult, error) {
	var res broker.ActionResult
	err := broker.Call(ctx, s.d.NC, broker.InternalRevoke, "", broker.Authorized[broker.RevokeInput]{
		Input: broker.RevokeInput{GrantID: grantID, Comment: comment}, By: service.ApproverActor(a)}, &res)
	return res, callErr(err)
}

// Reinstate asks the revoker (broker.InternalReinstate) to lift a
// suspension for approver a, as Revoke.
func (s *Service) Reinstate(ctx context.Context, a *config.Approver, agent, comment string) (broker.ActionResult, error) {
	var res broker.ActionResult
	err := broker.Call(ctx, s.d.NC, broker.InternalReinstate, "", broker.Authorized[broker.ReinstateInput]{
		Input: broker.ReinstateInput{Agent: agent, Comment: comment}, By: service.ApproverActor(a)}, &res)
	return res, callErr(err)
}

// callErr keeps the revoker's API errors and turns a transport failure into
// a 503 the caller may retry.
func callErr(err error) error {
	if err == nil {
		return nil
	}
	var ae *broker.APIError
	if errors.As(err, &ae) {
		return ae
	}
	return broker.Errorf(503, events.CodeUnavailable, "the revoker did not answer: %v", err)
}
