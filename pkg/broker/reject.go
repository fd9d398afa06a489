package broker

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/events"
)

// Reject publishes a jit.rejected event with id (random with
// events.NewID("rej") for API input, RejectedEventID for stream messages)
// on jit.rejected.<agent>, stamping RejectedAt if unset.
func (p *Publisher) Reject(ctx context.Context, id string, r events.Rejection) error {
	if r.RejectedAt.IsZero() {
		r.RejectedAt = time.Now().UTC()
	}
	var opts []events.Option
	if r.RequestID != "" {
		opts = append(opts, events.WithRequestID(r.RequestID))
	}
	if r.GrantID != "" {
		opts = append(opts, events.WithGrantID(r.GrantID))
	}
	agent := r.Agent
	if !events.ValidID(agent) {
		agent = events.UnknownAgent
	}
	_, _, err := p.Emit(ctx, id, events.TypeRejected, agent, r, opts...)
	return err
}

// RejectMalformed returns a MalformedFunc that records an undecodable
// message read by consumer durable as a jit.rejected event (stage "event",
// code malformed or too_large), naming the subject it arrived on. Its id is
// derived from the stream sequence, so a redelivery records it once.
func (p *Publisher) RejectMalformed(durable string) MalformedFunc {
	return func(ctx context.Context, d Delivery, err error) error {
		code := events.CodeMalformed
		if errors.Is(err, events.ErrTooLarge) {
			code = events.CodeTooLarge
		}
		return p.Reject(ctx, RejectedEventID(durable, d.StreamSeq), events.Rejection{
			Stage:   events.StageEvent,
			Code:    code,
			Message: err.Error(),
			Agent:   AgentOfSubject(d.Subject),
			Actor:   events.Actor{Kind: events.ActorSystem, ID: p.source},
			Subject: d.Subject,
		})
	}
}

// AgentOfSubject returns the agent token of an event subject
// ("jit.granted.market-intel" → "market-intel"), or "" if it has none valid.
func AgentOfSubject(subject string) string {
	i := strings.LastIndexByte(subject, '.')
	if i < 0 {
		return ""
	}
	if a := subject[i+1:]; events.ValidID(a) {
		return a
	}
	return ""
}
