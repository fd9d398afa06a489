package requester

import (
	"context"
	"encoding/json"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
)

// handleRequest serves broker.APIRequest: the agent is the caller's
// credential's (an internal caller names it in the body); an agent naming
// another agent is refused 403 and recorded.
func (s *Service) handleRequest(ctx context.Context, c service.Call, in broker.RequestInput) (any, error) {
	agent, err := c.Agent(in.Agent)
	if err != nil {
		return nil, service.Refuse(asAPIError(err), s.rejection(c, in))
	}
	actor := events.Actor{Kind: events.ActorAgent, ID: agent}
	out, err := s.Request(ctx, actor, in)
	log := s.log.With().Str("agent", agent).Str("request_id", in.RequestID).Logger()
	if err != nil {
		log.Info().Err(err).Msg("request refused")
	} else {
		log.Debug().Str("request_id", out.RequestID).Uint64("seq", out.Seq).Msg("request accepted")
	}
	return out, err
}

// rejection is what a refusal of a request by c records besides the
// error: the caller, the agent and the request id it named.
func (s *Service) rejection(c service.Call, in broker.RequestInput) events.Rejection {
	r := events.Rejection{Actor: c.Actor, RejectedAt: s.now().UTC()}
	if c.Caller.Internal {
		r.Actor = events.Actor{Kind: events.ActorAgent, ID: events.UnknownAgent}
		if events.ValidID(in.Agent) {
			r.Actor.ID = in.Agent
		}
	}
	if r.Actor.Kind == events.ActorAgent && events.ValidID(r.Actor.ID) && r.Actor.ID != events.UnknownAgent {
		r.Agent = r.Actor.ID
	}
	if in.RequestID != "" && checkShape(in) == nil {
		r.RequestID = in.RequestID
	}
	return r
}

// describeRequest reads what it can of a body that failed strict decoding
// (only a body within the size limit, only its agent and request id), so
// that the refusal can be traced to its sender.
func describeRequest(c service.Call, data []byte) events.Rejection {
	var p struct {
		Agent     any `json:"agent"`
		RequestID any `json:"request_id"`
	}
	r := events.Rejection{Actor: c.Actor}
	if len(data) > broker.MaxAPIBody || json.Unmarshal(data, &p) != nil {
		if c.Caller.Internal {
			r.Actor = events.Actor{Kind: events.ActorAgent, ID: events.UnknownAgent}
		}
		return r
	}
	var in broker.RequestInput
	if a, ok := p.Agent.(string); ok && events.ValidID(a) {
		in.Agent = a
	}
	if id, ok := p.RequestID.(string); ok && events.ValidID(id) {
		in.RequestID = id
	}
	r.Actor = c.Actor
	if c.Caller.Internal {
		r.Actor = events.Actor{Kind: events.ActorAgent, ID: events.UnknownAgent}
		if in.Agent != "" {
			r.Actor.ID = in.Agent
		}
	}
	if r.Actor.Kind == events.ActorAgent && r.Actor.ID != events.UnknownAgent {
		r.Agent = r.Actor.ID
	}
	r.RequestID = in.RequestID
	return r
}

func asAPIError(err error) *broker.APIError {
	if ae, ok := err.(*broker.APIError); ok {
		return ae
	}
	return broker.Errorf(500, "internal", "%v", err)
}
