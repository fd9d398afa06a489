package requester

import (
	"context"
	"fmt"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go/micro"
)

// handleWithdraw serves broker.APIWithdraw: decode → identify → Withdraw →
// answer.
func (s *Service) handleWithdraw(req micro.Request) {
	ctx, done, ok := s.begin()
	if !ok {
		broker.Respond(req, nil, broker.Errorf(503, "unavailable", "the requester is shutting down; retry"))
		return
	}
	defer done()
	var in broker.WithdrawInput
	if err := broker.DecodeInput(req.Data(), &in); err != nil {
		s.reject(ctx, events.Actor{Kind: events.ActorAgent, ID: events.UnknownAgent}, broker.RequestInput{}, err)
		broker.Respond(req, nil, err)
		return
	}
	actor := identify(req.Headers(), broker.RequestInput{Agent: in.Agent})
	out, err := s.Withdraw(ctx, actor, in)
	log := s.log.With().Str("agent", actor.ID).Str("request_id", in.RequestID).Logger()
	if err != nil {
		log.Info().Err(err).Msg("withdrawal refused")
	} else {
		log.Info().Msg("request withdrawn")
	}
	broker.Respond(req, out, err)
}

// Withdraw records that actor no longer waits for its request in.RequestID:
// it publishes jit.withdrawn.<agent> with id broker.WithdrawnEventID, so a
// retry is stored once. The approval service then denies the request if it
// is pending and the revoker revokes a grant made from it (see
// docs/events.md). Withdrawing a request that was denied, has ended or never
// existed changes nothing but is still recorded. A refusal (malformed id,
// unknown agent) is an *broker.APIError recorded as jit.rejected.
func (s *Service) Withdraw(ctx context.Context, actor events.Actor, in broker.WithdrawInput) (broker.ActionResult, error) {
	rin := broker.RequestInput{Agent: in.Agent}
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
	if _, _, err := s.pub.Emit(ctx, broker.WithdrawnEventID(in.RequestID), events.TypeWithdrawn, actor.ID, w,
		events.WithRequestID(in.RequestID)); err != nil {
		return broker.ActionResult{}, fmt.Errorf("publish withdrawal of %s: %w", in.RequestID, err)
	}
	return broker.ActionResult{RequestID: in.RequestID, Agent: actor.ID, Outcome: "withdrawn"}, nil
}
