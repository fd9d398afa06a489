package policy

import (
	"context"
	"fmt"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
)

// handle is the consumer's handler: decode → decide → ack. A message that is
// not a valid jit.requested event is recorded as jit.rejected and
// terminated; a broker failure naks it for a retry.
func (s *Service) handle(ctx context.Context, e events.Event, d broker.Delivery) error {
	log := s.log.With().Str("event_id", e.ID()).Str("type", e.Type()).Str("subject", d.Subject).
		Uint64("seq", d.StreamSeq).Uint64("delivery", d.NumDelivered).Logger()
	req, err := decodeRequest(e, d.Subject)
	if err != nil {
		if rerr := s.pub.RejectMalformed(Durable)(ctx, d, err); rerr != nil {
			return fmt.Errorf("record rejection: %w", rerr)
		}
		return broker.Permanent(err)
	}
	log = log.With().Str("request_id", req.RequestID).Str("agent", req.Agent).Logger()
	// The history counts by the broker's clock (History.Add): so does the
	// request's own place in it.
	at := d.Timestamp
	if at.IsZero() {
		at = e.Time()
	}
	return s.decide(ctx, req, d.StreamSeq, at, log)
}

// decodeRequest returns the request an event on subject carries. It refuses
// another event type, data that does not decode, ids that are not valid and
// an agent that differs from the subject's agent token.
func decodeRequest(e events.Event, subject string) (events.Request, error) {
	if e.Type() != events.TypeRequested {
		return events.Request{}, fmt.Errorf("%w: a %s event on %s; only %s belongs there", events.ErrInvalid, e.Type(), subject, events.TypeRequested)
	}
	req, err := events.DataAs[events.Request](e)
	if err != nil {
		return events.Request{}, err
	}
	if err := req.Validate(); err != nil {
		return events.Request{}, err
	}
	if subject != "" && broker.AgentOfSubject(subject) != req.Agent {
		return events.Request{}, fmt.Errorf("%w: request for agent %s arrived on %s", events.ErrInvalid, req.Agent, subject)
	}
	return req, nil
}
