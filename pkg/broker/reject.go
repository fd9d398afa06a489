package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/events"
)

// Reject publishes a jit.rejected event with id (random with
// events.NewID("rej") for API input, events.RejectedEventID for stream messages)
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
// code malformed or too_large; internal for an event whose handler
// panicked, ErrPanic), naming the subject it arrived on. Its id is
// derived from the stream sequence, so a redelivery records it once.
func (p *Publisher) RejectMalformed(durable string) MalformedFunc {
	return func(ctx context.Context, d Delivery, err error) error {
		code := events.CodeMalformed
		switch {
		case errors.Is(err, events.ErrTooLarge):
			code = events.CodeTooLarge
		case errors.Is(err, ErrPanic):
			code = events.CodeInternal
		}
		return p.Reject(ctx, events.RejectedEventID(durable, d.StreamSeq), events.Rejection{
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

// Inbound is the data of an event that outsiders publish on an agent's
// subject (guardrail.fired, jit.withdrawn).
type Inbound interface {
	Validate() error
	AgentID() string
}

// DataFor decodes the data of e, which must be of type typ, as T and
// validates it, and checks that the agent it names is the agent token of the
// subject it arrived on: an event published on one agent's subject can never
// act on another. Errors wrap events.ErrInvalid.
func DataFor[T Inbound](e events.Event, typ, subject string) (T, error) {
	var zero T
	if e.Type() != typ {
		return zero, fmt.Errorf("%w: event type %q on %s, want %s", events.ErrInvalid, e.Type(), subject, typ)
	}
	v, err := events.DataAs[T](e)
	if err != nil {
		return zero, err
	}
	if err := v.Validate(); err != nil {
		return zero, err
	}
	if want := events.Subject(typ, v.AgentID()); subject != want {
		return zero, fmt.Errorf("%w: the event names agent %q but arrived on %s, want %s", events.ErrInvalid, v.AgentID(), subject, want)
	}
	return v, nil
}

// RejectInvalid records that the event consumer durable read at d carries
// data that cannot be acted on (cause) as a jit.rejected event (code
// malformed) and returns a Permanent error, so the consume loop terminates
// the message. If the audit event cannot be published, that error is
// returned instead and the message is redelivered.
func (p *Publisher) RejectInvalid(ctx context.Context, durable, stage string, actor events.Actor, at time.Time, d Delivery, cause error) error {
	err := p.Reject(ctx, events.RejectedEventID(durable, d.StreamSeq), events.Rejection{
		Stage:      stage,
		Code:       events.CodeMalformed,
		Message:    cause.Error(),
		Agent:      AgentOfSubject(d.Subject),
		Actor:      actor,
		Subject:    d.Subject,
		RejectedAt: at.UTC(),
	})
	if err != nil {
		return err
	}
	return Permanent(cause)
}

// RejectRecord reports a stored value that does not decode (cause) as a
// jit.rejected event (stage record, code malformed) naming the bucket and
// key: the reader sets it aside and goes on, so that one bad record never
// stops a start. The event is published once per revision
// (events.RecordRejectedEventID).
func (p *Publisher) RejectRecord(ctx context.Context, bucket, key string, rev uint64, cause error) error {
	agent, _, _ := SplitKey(key)
	if !events.ValidID(agent) {
		agent = ""
	}
	return p.Reject(ctx, events.RecordRejectedEventID(bucket, key, rev), events.Rejection{
		Stage:   events.StageRecord,
		Code:    events.CodeMalformed,
		Message: fmt.Sprintf("the value of %s in bucket %s (revision %d) does not decode and is set aside: %v", key, bucket, rev, cause),
		Agent:   agent,
		Actor:   events.Actor{Kind: events.ActorSystem, ID: p.source},
		Subject: "$KV." + bucket + "." + key,
	})
}
