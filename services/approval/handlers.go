package approval

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
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
	if err := validDecision(dec, broker.AgentOfSubject(d.Subject)); err != nil {
		return s.malformed(ctx, d, err)
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

// validDecision checks what this service relies on in a decision from the
// stream: ids usable as keys, the agent of its subject, and for an approved
// decision something to grant for a bounded time.
func validDecision(dec events.Decision, subjectAgent string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: decision: %s", events.ErrInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case !events.ValidID(dec.RequestID):
		return bad("request_id %q is not a valid id", truncate(dec.RequestID, 80))
	case !events.ValidID(dec.Agent):
		return bad("agent %q is not a valid id", truncate(dec.Agent, 80))
	case dec.Agent != subjectAgent:
		return bad("agent %s does not match the subject's agent %q", dec.Agent, subjectAgent)
	}
	switch dec.Outcome {
	case events.OutcomeDenied:
		return nil
	case events.OutcomeApproved:
		switch {
		case len(dec.Permissions) == 0:
			return bad("an approved decision names no permissions")
		case dec.DurationMS <= 0:
			return bad("duration_ms %d must be positive", dec.DurationMS)
		case time.Duration(dec.DurationMS)*time.Millisecond > config.MaxGrantDuration:
			return bad("duration_ms %d is above the %s limit", dec.DurationMS, config.MaxGrantDuration)
		case dec.DecidedAt.IsZero():
			return bad("an approved decision has no decided_at")
		}
		return nil
	case events.OutcomePending:
		if dec.DecidedAt.IsZero() && dec.ApprovalDeadline == nil {
			return bad("a pending decision has neither decided_at nor approval_deadline")
		}
		return nil
	default:
		return bad("unknown outcome %q", truncate(dec.Outcome, 40))
	}
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

// refuseInput records a body that does not decode, as a refusal r (who
// sent it, and the request or grant it was about, as far as known).
func (s *Service) refuseInput(ctx context.Context, err error, r events.Rejection) error {
	var ae *broker.APIError
	if !errors.As(err, &ae) {
		ae = broker.Errorf(400, events.CodeMalformed, "malformed request body: %v", err)
	}
	return s.refuse(ctx, ae, r)
}
