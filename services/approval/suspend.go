package approval

import (
	"context"
	"fmt"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
)

// DurableSuspensions is the approval service's durable consumer on
// jit.suspended.>.
const DurableSuspensions = "approval-suspensions"

// startSuspensions runs the consumer that releases a suspended agent's
// waiting requests, until Stop.
func (s *Service) startSuspensions() error {
	return s.consume(DurableSuspensions, events.TypeSuspended+".>", s.onSuspended)
}

// onSuspended denies every request of the suspended agent that still waits
// for a human (mode suspended), so the waiting agent learns at once instead
// of at the end of the approval window, and an approver's later answer is
// refused as already decided. Each denial is recorded in its pending record
// by compare-and-set before it is published, like a human answer, so it
// races safely with approvers and the time-out; a redelivery finds the
// records answered or gone and publishes nothing twice.
func (s *Service) onSuspended(ctx context.Context, e events.Event, d broker.Delivery) error {
	sus, err := broker.DataFor[events.Suspension](e, events.TypeSuspended, d.Subject)
	if err != nil {
		return s.pub.RejectInvalid(ctx, DurableSuspensions, events.StageEvent,
			events.Actor{Kind: events.ActorSystem, ID: Name}, s.now(), d, err)
	}
	entries, err := s.pendingEntries(ctx, sus.Agent+".*")
	if err != nil {
		return err
	}
	for i := range entries {
		pe := &entries[i]
		if pe.rec.Answer == nil {
			reqID := pe.rec.Decision.RequestID
			dec := s.denial(pe.rec.Decision, events.ModeSuspended,
				fmt.Sprintf("agent %s was suspended by guardrail %s before an approver answered", sus.Agent, sus.Rule))
			dec.DecidedBy = sus.SuspendedBy
			if err := s.record(ctx, pe, dec, events.DecisionEventID(reqID, "suspended")); err != nil {
				return err // someone answered first: the next delivery sees that answer
			}
		}
		if err := s.finish(ctx, *pe); err != nil {
			return err
		}
		s.log.Info().Str("agent", sus.Agent).Str("request_id", pe.rec.Decision.RequestID).Str("answer", pe.rec.AnswerID).
			Msg("request of a suspended agent settled")
	}
	return nil
}
