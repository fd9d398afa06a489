package requester

import (
	"context"
	"fmt"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
)

// handleWithdraw serves broker.APIWithdraw for the calling agent: an agent
// withdraws only its own requests (the request is named by its agent and
// id, so naming another agent's id withdraws nothing of that agent's).
func (s *Service) handleWithdraw(ctx context.Context, c service.Call, in broker.WithdrawInput) (any, error) {
	agent, err := c.Agent(in.Agent)
	if err != nil {
		return nil, service.Refuse(asAPIError(err), s.rejection(c, broker.RequestInput{Agent: in.Agent, RequestID: in.RequestID}))
	}
	actor := events.Actor{Kind: events.ActorAgent, ID: agent}
	out, err := s.Withdraw(ctx, actor, in)
	log := s.log.With().Str("agent", actor.ID).Str("request_id", in.RequestID).Logger()
	if err != nil {
		log.Info().Err(err).Msg("withdrawal refused")
	} else {
		log.Info().Msg("request withdrawn")
	}
	return out, err
}

// Withdraw records that actor no longer waits for its request in.RequestID:
// it publishes jit.withdrawn.<agent> with id events.WithdrawnEventID, so a
// retry is stored once. The approval service then denies the request if it
// is pending and the revoker revokes a grant made from it (see
// docs/events.md). Withdrawing a request that was denied, has ended or never
// existed changes nothing but is still recorded. A refusal (malformed id,
// unknown agent) is an *broker.APIError recorded as jit.rejected.
func (s *Service) Withdraw(ctx context.Context, actor events.Actor, in broker.WithdrawInput) (broker.ActionResult, error) {
	rin := broker.RequestInput{Agent: actor.ID}
	if !events.ValidID(in.RequestID) {
		err := broker.Errorf(400, events.CodeMalformed, "request_id %s is not a valid id (1-64 letters, digits, '-' or '_')", quote(in.RequestID))
		s.reject(ctx, actor, rin, err)
		return broker.ActionResult{}, err
	}
	rin.RequestID = in.RequestID
	if _, err := checkAgent(s.d.Config.Current(), actor); err != nil {
		s.reject(ctx, actor, rin, err)
		return broker.ActionResult{}, err
	}
	w := events.Withdrawal{RequestID: in.RequestID, Agent: actor.ID, WithdrawnBy: actor, WithdrawnAt: s.now().UTC()}
	if _, _, err := s.pub.Emit(ctx, events.WithdrawnEventID(in.RequestID), events.TypeWithdrawn, actor.ID, w,
		events.WithRequestID(in.RequestID)); err != nil {
		return broker.ActionResult{}, fmt.Errorf("publish withdrawal of %s: %w", in.RequestID, err)
	}
	return broker.ActionResult{RequestID: in.RequestID, Agent: actor.ID, Outcome: "withdrawn"}, nil
}
