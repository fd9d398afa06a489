package broker

import (
	"strings"

	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ToMsg carries e on a NATS message for subject in structured mode: the body
// is the CloudEvent's JSON and Nats-Msg-Id is its id, so the stream stores a
// republished event once.
func ToMsg(subject string, e events.Event) (*nats.Msg, error) {
	body, err := events.Encode(e)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(subject)
	m.Data = body
	m.Header.Set("Content-Type", events.ContentType)
	m.Header.Set(jetstream.MsgIDHeader, e.ID())
	return m, nil
}

// FromMsg decodes the CloudEvent a message carries: binary mode when it has
// a ce-specversion header, structured mode otherwise. It validates as
// events.Decode does.
func FromMsg(h nats.Header, data []byte) (events.Event, error) {
	for k := range h {
		if strings.EqualFold(k, "ce-specversion") {
			return events.DecodeBinary(h, data)
		}
	}
	return events.Decode(data)
}
