package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/metrics"
	"github.com/agentjit/jit/pkg/tracing"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publisher publishes events to the audit stream and waits for the stream's
// acknowledgement, so that a returned nil means the event is stored.
type Publisher struct {
	js     jetstream.JetStream
	source string
}

// NewPublisher returns a Publisher whose events name source (a service).
func NewPublisher(js jetstream.JetStream, source string) *Publisher {
	return &Publisher{js: js, source: source}
}

// Source is the service name events are attributed to.
func (p *Publisher) Source() string { return p.source }

// Emit builds an event of type typ about agent with the given id and data,
// publishes it on events.Subject(typ, agent) and returns the event and its
// stream sequence. A duplicate of an event already stored (same id within
// the duplicate window) is not stored twice and returns the original's
// sequence.
func (p *Publisher) Emit(ctx context.Context, id, typ, agent string, data any, opts ...events.Option) (events.Event, uint64, error) {
	e, err := events.New(id, typ, p.source, agent, data, opts...)
	if err != nil {
		return events.Event{}, 0, err
	}
	seq, _, err := p.publish(ctx, events.Subject(typ, agent), e, data, nil)
	return e, seq, err
}

// ErrForeignDuplicate is returned when the audit stream answers a publish
// as a duplicate of an event that is not the publisher's own: another
// publisher used the id first, so this event is not stored. With the
// broker's permissions only services publish on the stream, so this means a
// bug or a compromised service; it is never taken for success.
var ErrForeignDuplicate = errors.New("the event id is taken by another event")

// EmitChecked is Emit whose duplicate check also asks same whether the
// stored event stands for this one (see PublishChecked).
func (p *Publisher) EmitChecked(ctx context.Context, id, typ, agent string, data any, same func(stored events.Event) error, opts ...events.Option) (events.Event, uint64, error) {
	e, err := events.New(id, typ, p.source, agent, data, opts...)
	if err != nil {
		return events.Event{}, 0, err
	}
	seq, _, err := p.publish(ctx, events.Subject(typ, agent), e, data, same)
	return e, seq, err
}

// Publish publishes e on subject and waits for the stream's ack. A
// duplicate acknowledgement (the id was stored before, within the
// de-duplication window) is checked: the stored event must be this
// publisher's event of the same type on the same subject, or
// ErrForeignDuplicate is returned.
func (p *Publisher) Publish(ctx context.Context, subject string, e events.Event) (uint64, error) {
	seq, _, err := p.PublishChecked(ctx, subject, e, nil)
	return seq, err
}

// PublishChecked is Publish whose duplicate check also asks same (if not
// nil) whether the stored event stands for e; stored is returned for a
// duplicate (nil otherwise).
func (p *Publisher) PublishChecked(ctx context.Context, subject string, e events.Event, same func(stored events.Event) error) (uint64, *events.Event, error) {
	return p.publish(ctx, subject, e, nil, same)
}

// publish is PublishChecked for an event built from payload (nil if not
// known), which the metrics read instead of decoding e's data.
func (p *Publisher) publish(ctx context.Context, subject string, e events.Event, payload any, same func(stored events.Event) error) (uint64, *events.Event, error) {
	end := tracing.StartPublish(ctx, p.source, subject, &e) // a span per write; traceparent on e
	m, err := ToMsg(subject, e)
	if err != nil {
		end(err)
		return 0, nil, err
	}
	ack, err := p.publishMsg(ctx, m)
	end(err)
	if err != nil {
		metrics.PublishErrors.Inc()
		return 0, nil, fmt.Errorf("publish %s %s: %w", e.Type(), e.ID(), err)
	}
	if !ack.Duplicate {
		metrics.ObservePayload(e, payload)
		return ack.Sequence, nil, nil
	}
	stored, err := p.stored(ctx, ack.Sequence, subject, e)
	if err != nil {
		return 0, nil, err
	}
	if same != nil {
		if err := same(stored); err != nil {
			return 0, &stored, err
		}
	}
	return ack.Sequence, &stored, nil
}

// errCodeDupInProcess is the stream's answer to a message whose id another
// publish of the same id is storing at this instant (several replicas of a
// service publishing one derived id at once, on a clustered stream).
const errCodeDupInProcess jetstream.ErrorCode = 10158

// publishAttempt bounds one attempt of a publish. A publish the stream's
// leader took with it when it died is never answered, and a clustered
// stream without a leader answers none until JetStream elects another
// (4-9 s): asked again after this, under the same id (stored once), the
// event is stored soon after the election instead of when the caller's
// whole deadline (a handler's 10 s) runs out.
const publishAttempt = 2 * time.Second

// publishMsg publishes m to the audit stream. While another publish of the
// same id is in process it asks again shortly, so that the answer is the
// stream's: stored, or a duplicate of what the other stored. An attempt
// that gets no answer within publishAttempt is asked again until ctx ends.
func (p *Publisher) publishMsg(ctx context.Context, m *nats.Msg) (*jetstream.PubAck, error) {
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		actx, cancel := context.WithTimeout(ctx, publishAttempt)
		ack, err := p.js.PublishMsg(actx, m, jetstream.WithExpectStream(AuditStream))
		cancel()
		if err == nil || ctx.Err() != nil || !Unavailable(err) {
			return ack, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
	}
}

// stored reads the event at seq and checks it is e's publisher's, of e's
// type, id and subject.
func (p *Publisher) stored(ctx context.Context, seq uint64, subject string, e events.Event) (events.Event, error) {
	st, err := p.js.Stream(ctx, AuditStream)
	if err != nil {
		return events.Event{}, fmt.Errorf("check duplicate of %s: %w", e.ID(), err)
	}
	raw, err := st.GetMsg(ctx, seq)
	if err != nil {
		return events.Event{}, fmt.Errorf("check duplicate of %s at %d: %w", e.ID(), seq, err)
	}
	stored, err := events.Decode(raw.Data)
	switch {
	case err != nil:
		return events.Event{}, fmt.Errorf("%w: %s at %d does not decode", ErrForeignDuplicate, e.ID(), seq)
	case raw.Subject != subject || stored.ID() != e.ID() || stored.Type() != e.Type() || stored.Source() != e.Source():
		return events.Event{}, fmt.Errorf("%w: %s on %s (%s from %s) is stored as %s on %s from %s", ErrForeignDuplicate,
			e.ID(), subject, e.Type(), e.Source(), stored.Type(), raw.Subject, stored.Source())
	}
	return stored, nil
}
