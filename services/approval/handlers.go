package approval

import (
	"context"
	"fmt"
	"strings"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
)

// onDecision decodes one jit.decided event and decides it. A message that is
// not a valid decision is recorded as jit.rejected and terminated; a
// transient failure is retried.
func (s *Service) onDecision(ctx context.Context, e events.Event, d broker.Delivery) error {
	l := s.log.With().Str("event_id", e.ID()).Str("type", e.Type()).Str("subject", d.Subject).
		Uint64("delivery", d.NumDelivered).Logger()
	ctx = l.WithContext(ctx)
	if e.Type() != events.TypeDecided {
		return s.malformed(ctx, d, fmt.Errorf("%w: %s event on %s, want %s", events.ErrMalformed, e.Type(), d.Subject, events.TypeDecided))
	}
	dec, err := events.DataAs[events.Decision](e)
	if err != nil {
		return s.malformed(ctx, d, err)
	}
	if err := dec.Validate(); err != nil {
		return s.malformed(ctx, d, err)
	}
	if agent := broker.AgentOfSubject(d.Subject); dec.Agent != agent {
		return s.malformed(ctx, d, fmt.Errorf("%w: decision: agent %s does not match the subject's agent %q", events.ErrInvalid, dec.Agent, agent))
	}
	ctx = l.With().Str("request_id", dec.RequestID).Str("agent", dec.Agent).Str("outcome", dec.Outcome).Logger().WithContext(ctx)
	return s.decide(ctx, dec, d)
}

func (s *Service) malformed(ctx context.Context, d broker.Delivery, err error) error {
	if rerr := s.pub.RejectMalformed(DurableDecisions)(ctx, d, err); rerr != nil {
		return rerr
	}
	return broker.Permanent(err)
}

// onPendingChange handles one message of the pending bucket's stream: an
// expiry marker (MaxAge) times its request out; every other operation is
// ignored.
func (s *Service) onPendingChange(ctx context.Context, _ []byte, d broker.Delivery) error {
	if d.Op != "MaxAge" {
		return nil
	}
	l := s.log.With().Str("subject", d.Subject).Uint64("seq", d.StreamSeq).Uint64("delivery", d.NumDelivered).Logger()
	agent, requestID, ok := broker.SplitKey(strings.TrimPrefix(d.Subject, pendingSubjectPrefix))
	if !ok || !events.ValidID(agent) || !events.ValidID(requestID) {
		l.Warn().Msg("expiry marker for a key that is not <agent>.<request_id>; ignored")
		return nil
	}
	return s.timeOut(l.WithContext(ctx), agent, requestID, nil)
}

// Endpoint handlers: the API entry (service.Serve) has decoded the body
// and authenticated the approver.

func (s *Service) handlePending(ctx context.Context, c service.Call, _ struct{}) (any, error) {
	return s.listPending(ctx)
}

func (s *Service) handleApprove(ctx context.Context, c service.Call, in broker.ApproveInput) (any, error) {
	return s.answer(ctx, c.Approver, in, events.OutcomeApproved)
}

func (s *Service) handleDeny(ctx context.Context, c service.Call, in broker.ApproveInput) (any, error) {
	return s.answer(ctx, c.Approver, in, events.OutcomeDenied)
}
