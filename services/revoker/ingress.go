package revoker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go/micro"
)

// ingressIDPrefix prefixes the id under which a guardrail source's event is
// stored: "gr/<source>/<its id>". No service derives an id with it, so an
// outside id can never take one of theirs in the stream's de-duplication.
const ingressIDPrefix = "gr/"

// handleIngress serves auth.IngressGuardrail.<agent>: a guardrail source
// published guardrail.fired.<agent> in its own account, and the broker
// carried it here with the source's identity (Nats-Request-Info). The event
// must be a CloudEvent 1.0 of type guardrail.fired about that agent, for a
// guardrail the source may fire against that agent (its entry under
// guardrail_sources). It is then stored on the audit stream as
// guardrail.fired.<agent>, under the id "gr/<source>/<its id>" and with the
// source's principal in the jitprincipal extension, and the sender gets a
// JetStream acknowledgement, as if it had published on the stream itself. A
// refusal is a JetStream API error to the sender and a jit.rejected event.
func (s *Service) handleIngress(ctx context.Context, req micro.Request) {
	agent := req.Subject()[strings.LastIndexByte(req.Subject(), '.')+1:]
	seq, dup, err := s.ingest(ctx, req, agent)
	if err != nil {
		var ae *broker.APIError
		if !errors.As(err, &ae) {
			s.log.Error().Err(err).Str("agent", agent).Msg("guardrail ingress")
			ae = broker.Errorf(503, events.CodeUnavailable, "could not store the event; retry with the same id")
		}
		body, _ := json.Marshal(map[string]any{"error": map[string]any{"code": ae.Status, "description": ae.Message}})
		_ = req.Respond(body)
		return
	}
	body, _ := json.Marshal(map[string]any{"stream": broker.AuditStream, "seq": seq, "duplicate": dup})
	_ = req.Respond(body)
}

func (s *Service) ingest(ctx context.Context, req micro.Request, agent string) (uint64, bool, error) {
	rej := events.Rejection{Agent: agent, Subject: events.TypeGuardrailFired + "." + agent,
		Actor: events.Actor{Kind: events.ActorGuardrail, ID: events.UnknownAgent}}
	refuse := func(ae *broker.APIError) (uint64, bool, error) {
		if !events.ValidID(rej.Agent) {
			rej.Agent = ""
		}
		return 0, false, s.refuse(ctx, events.StageGuardrail, ae, rej)
	}
	caller, err := auth.CallerOf(req.Headers())
	if err != nil {
		return refuse(broker.Errorf(401, events.CodeUnauthenticated, "%v", err))
	}
	source := "internal"
	if !caller.Internal {
		if caller.Principal.Kind != auth.KindGuardrail {
			rej.Actor = events.Actor{Kind: caller.Principal.Kind, ID: caller.Principal.ID}
			return refuse(broker.Errorf(403, events.CodeForbidden, "%s is not a guardrail source", caller.Principal))
		}
		source = caller.Principal.ID
	}
	rej.Actor.ID = source
	if !events.ValidID(agent) {
		return refuse(broker.Errorf(400, events.CodeMalformed, "the subject names no valid agent"))
	}
	if len(req.Data()) > events.MaxEventSize {
		return refuse(broker.Errorf(413, events.CodeTooLarge, "the event is %d bytes; the limit is %d", len(req.Data()), events.MaxEventSize))
	}
	e, err := broker.FromMsg(natsHeader(req.Headers()), req.Data())
	if err != nil {
		return refuse(broker.Errorf(400, events.CodeMalformed, "not a CloudEvent 1.0: %v", err))
	}
	g, err := broker.DataFor[events.GuardrailFired](e, events.TypeGuardrailFired, events.TypeGuardrailFired+"."+agent)
	if err != nil {
		return refuse(broker.Errorf(400, events.CodeMalformed, "%v", err))
	}
	if !events.ValidID(e.ID()) {
		return refuse(broker.Errorf(400, events.CodeMalformed, "event id %q must be 1-64 letters, digits, '-' or '_' (it is stored as %s<source>/<id>)", truncate(e.ID(), 80), ingressIDPrefix))
	}
	cfg := s.config()
	if cfg == nil {
		return 0, false, errors.New("no active configuration")
	}
	if _, ok := cfg.Agent(agent); !ok {
		return refuse(broker.Errorf(404, events.CodeUnknownAgent, "unknown agent %s", agent))
	}
	if _, ok := cfg.Guardrail(g.Rule); !ok {
		return refuse(broker.Errorf(400, events.CodeMalformed, "guardrail %q is not configured", truncate(g.Rule, 64)))
	}
	if !caller.Internal {
		src, ok := cfg.GuardrailSource(source)
		switch {
		case !ok:
			return refuse(broker.Errorf(403, events.CodeForbidden, "guardrail source %s is not configured under guardrail_sources", source))
		case !src.May(g.Rule, agent):
			return refuse(broker.Errorf(403, events.CodeForbidden, "guardrail source %s may not fire %s against %s", source, g.Rule, agent))
		}
	}
	e.SetID(ingressIDPrefix + source + "/" + e.ID())
	e.SetExtension(events.ExtPrincipal, "guardrail:"+source)
	seq, stored, err := s.pub.PublishChecked(ctx, events.TypeGuardrailFired+"."+agent, e, nil)
	if err != nil {
		return 0, false, fmt.Errorf("store %s: %w", e.ID(), err)
	}
	return seq, stored != nil, nil
}

func natsHeader(h micro.Headers) map[string][]string { return h }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
