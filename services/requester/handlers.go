package requester

import (
	"encoding/json"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go/micro"
)

// handleRequest serves broker.APIRequest: decode → identify → Request →
// answer. A body that does not decode is answered 413 or 400 and recorded
// as jit.rejected like every other refusal.
func (s *Service) handleRequest(req micro.Request) {
	ctx, done, ok := s.begin()
	if !ok {
		broker.Respond(req, nil, broker.Errorf(503, "unavailable", "the requester is shutting down; retry with the same request_id"))
		return
	}
	defer done()

	var in broker.RequestInput
	if err := broker.DecodeInput(req.Data(), &in); err != nil {
		// The body is refused, but a JSON object that merely has a bad field
		// may still name its agent and request id: record them in the audit
		// event so that the refusal can be traced to its sender.
		partial := partialInput(req.Data())
		s.reject(ctx, identify(req.Headers(), partial), partial, err)
		broker.Respond(req, nil, err)
		return
	}
	actor := identify(req.Headers(), in)
	log := s.log.With().Str("agent", actor.ID).Str("request_id", in.RequestID).Logger()
	out, err := s.Request(ctx, actor, in)
	if err != nil {
		log.Info().Err(err).Msg("request refused")
	} else {
		log.Debug().Str("request_id", out.RequestID).Uint64("seq", out.Seq).Msg("request accepted")
	}
	broker.Respond(req, out, err)
}

// partialInput reads what it can of a body that failed strict decoding:
// only a body within the size limit, only its agent and request id.
func partialInput(data []byte) broker.RequestInput {
	var p struct {
		Agent     any `json:"agent"`
		RequestID any `json:"request_id"`
	}
	if len(data) > broker.MaxAPIBody || json.Unmarshal(data, &p) != nil {
		return broker.RequestInput{}
	}
	var in broker.RequestInput
	if a, ok := p.Agent.(string); ok && events.ValidID(a) {
		in.Agent = a
	}
	if r, ok := p.RequestID.(string); ok && events.ValidID(r) {
		in.RequestID = r
	}
	return in
}
