package revoker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
)

// RevokeRoles may end any grant at once (revocation reason "admin").
var RevokeRoles = config.ReinstateRoles

// adminRevoke ends the grant in.GrantID with reason events.RevokedAdmin and
// the comment as detail, for by, an approver holding one of RevokeRoles
// whom the approval service authenticated. Every refusal (400, 404, 409) is
// also a jit.rejected event with stage revoke. A grant that already ended
// is a 409.
func (s *Service) adminRevoke(ctx context.Context, by events.Actor, in broker.RevokeInput) (broker.ActionResult, error) {
	rej := events.Rejection{GrantID: in.GrantID, Actor: by}
	if !events.ValidID(in.GrantID) {
		rej.GrantID = ""
		return broker.ActionResult{}, s.refuse(ctx, events.StageRevoke, broker.Errorf(400, events.CodeMalformed,
			"grant_id %q is not a valid id (1-64 letters, digits, '-' or '_')", in.GrantID), rej)
	}
	if len(in.Comment) > maxComment {
		s.aboutGrant(ctx, &rej)
		return broker.ActionResult{}, s.refuse(ctx, events.StageRevoke, broker.Errorf(400, events.CodeMalformed,
			"comment is %d bytes; the limit is %d", len(in.Comment), maxComment), rej)
	}
	keys, err := s.leaseKeys(ctx, "*."+in.GrantID)
	if err != nil {
		return broker.ActionResult{}, err
	}
	if len(keys) == 0 {
		return broker.ActionResult{}, s.refuse(ctx, events.StageRevoke, broker.Errorf(404, events.CodeNotFound,
			"no grant %s", in.GrantID), rej)
	}
	key := keys[0]
	agent, _, _ := broker.SplitKey(key)
	rej.Agent = agent
	var lease events.Lease
	if _, err := broker.GetJSON(ctx, s.d.Buckets.Leases, key, &lease); err != nil {
		if errors.Is(err, broker.ErrNotFound) {
			return broker.ActionResult{}, s.refuse(ctx, events.StageRevoke, broker.Errorf(404, events.CodeNotFound,
				"no grant %s", in.GrantID), rej)
		}
		return broker.ActionResult{}, fmt.Errorf("read lease %s: %w", key, err)
	}
	rej.RequestID = lease.Grant.RequestID
	if lease.State != events.LeaseActive {
		return broker.ActionResult{}, s.refuse(ctx, events.StageRevoke, alreadyEnded(in.GrantID, lease), rej)
	}
	res, err := s.revoke(ctx, key, events.RevokedAdmin, by, strings.TrimSpace(in.Comment))
	if err != nil {
		return broker.ActionResult{}, err
	}
	if !res.Decided {
		return broker.ActionResult{}, s.refuse(ctx, events.StageRevoke, alreadyEnded(in.GrantID, res.Lease), rej)
	}
	return broker.ActionResult{GrantID: in.GrantID, RequestID: lease.Grant.RequestID, Agent: agent, Outcome: "revoked",
		Message: "revoked by " + by.ID}, nil
}

// aboutGrant fills in the agent and request of the grant r names, from its
// lease, for the audit event of a refusal that comes before the lease is
// read: the event belongs to that request. It leaves r as is when the grant
// id is not valid or no lease is found.
func (s *Service) aboutGrant(ctx context.Context, r *events.Rejection) {
	if !events.ValidID(r.GrantID) {
		return
	}
	keys, err := s.leaseKeys(ctx, "*."+r.GrantID)
	if err != nil || len(keys) == 0 {
		return
	}
	var lease events.Lease
	if _, err := broker.GetJSON(ctx, s.d.Buckets.Leases, keys[0], &lease); err != nil {
		return
	}
	r.Agent, r.RequestID = lease.Grant.Agent, lease.Grant.RequestID
}
