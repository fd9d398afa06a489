package broker

import (
	"context"
	"fmt"

	"github.com/agentjit/jit/pkg/events"
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
	subject := events.Subject(typ, agent)
	seq, err := p.Publish(ctx, subject, e)
	return e, seq, err
}

// Publish publishes e on subject and waits for the stream's ack.
func (p *Publisher) Publish(ctx context.Context, subject string, e events.Event) (uint64, error) {
	m, err := ToMsg(subject, e)
	if err != nil {
		return 0, err
	}
	ack, err := p.js.PublishMsg(ctx, m, jetstream.WithExpectStream(AuditStream))
	if err != nil {
		return 0, fmt.Errorf("publish %s %s: %w", e.Type(), e.ID(), err)
	}
	return ack.Sequence, nil
}
