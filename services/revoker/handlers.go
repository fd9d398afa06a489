package revoker

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// markerMaxAge is the Nats-Marker-Reason of a per-key TTL expiry.
const markerMaxAge = "MaxAge"

// grantsSubjectPrefix prefixes the grants bucket's stream subjects.
const grantsSubjectPrefix = "$KV." + broker.BucketGrants + "."

// handleDone serves broker.APIDone.
func (s *Service) handleDone(req micro.Request) {
	serveAPI(s, req, broker.APIDone, events.StageCompletion, unknownAgent,
		func(ctx context.Context, _ string, in broker.DoneInput) (broker.ActionResult, error) {
			return s.done(ctx, in)
		})
}

// handleReinstate serves broker.APIReinstate; the approver's token comes in
// the broker.HeaderToken header.
func (s *Service) handleReinstate(req micro.Request) {
	serveAPI(s, req, broker.APIReinstate, events.StageReinstate, unknownAgent, s.reinstate)
}

// unknownAgent is who sent an API body too malformed to tell.
var unknownAgent = events.Actor{Kind: events.ActorAgent, ID: events.UnknownAgent}

// serveAPI runs one call of an API endpoint: refused with 503 while the
// revoker stops; the body decoded strictly into an In (a bad body is
// refused and audited at stage, as sent by actor); then do, under the API
// deadline, with the caller's token from broker.HeaderToken; its outcome is
// logged and answered.
func serveAPI[In any](s *Service, req micro.Request, subject, stage string, actor events.Actor,
	do func(ctx context.Context, token string, in In) (broker.ActionResult, error)) {
	if !s.enterAPI() {
		broker.Respond(req, nil, broker.Errorf(503, events.CodeUnavailable, "the revoker is stopping; try again"))
		return
	}
	defer s.apiWG.Done()
	ctx, cancel := context.WithTimeout(s.ctx, apiTimeout)
	defer cancel()
	var in In
	if err := broker.DecodeInput(req.Data(), &in); err != nil {
		var ae *broker.APIError
		if !errors.As(err, &ae) {
			ae = broker.Errorf(400, events.CodeMalformed, "%v", err)
		}
		broker.Respond(req, nil, s.refuse(ctx, stage, ae, events.Rejection{Actor: actor}))
		return
	}
	out, err := do(ctx, req.Headers().Get(broker.HeaderToken), in)
	s.logAPI(subject, err)
	broker.Respond(req, out, err)
}

func (s *Service) logAPI(subject string, err error) {
	var ae *broker.APIError
	switch {
	case err == nil:
	case errors.As(err, &ae):
		s.log.Info().Str("api", subject).Int("status", ae.Status).Str("code", ae.Code).Msg(ae.Message)
	default:
		s.log.Error().Err(err).Str("api", subject).Msg("request failed")
	}
}

// onExpiry handles one message of the grants bucket's stream: a TTL expiry
// marker revokes its grant (reason expired); everything else is ignored. An
// error naks the marker, which is redelivered until the revocation is done.
func (s *Service) onExpiry(ctx context.Context, _ []byte, d broker.Delivery) error {
	if d.Op != markerMaxAge {
		return nil
	}
	key, ok := strings.CutPrefix(d.Subject, grantsSubjectPrefix)
	if !ok {
		return nil
	}
	_, err := s.revoke(ctx, key, events.RevokedExpired, systemActor, "")
	if errors.Is(err, ErrBadKey) {
		s.log.Warn().Str("subject", d.Subject).Msg("ignoring an expiry marker for a key that is not a grant key")
		return nil
	}
	return err
}

// onGuardrail handles one event on guardrail.fired.>: invalid data is
// refused with a jit.rejected event and terminated; a valid event suspends
// its agent (see suspend).
func (s *Service) onGuardrail(ctx context.Context, e events.Event, d broker.Delivery) error {
	log := s.log.With().Str("event_id", e.ID()).Str("subject", d.Subject).Uint64("delivery", d.NumDelivered).Logger()
	g, err := broker.DataFor[events.GuardrailFired](e, events.TypeGuardrailFired, d.Subject)
	if err != nil {
		return s.pub.RejectInvalid(ctx, DurableGuardrail, events.StageGuardrail,
			events.Actor{Kind: events.ActorGuardrail, ID: e.Source()}, s.now(), d, err)
	}
	log = log.With().Str("agent", g.Agent).Str("rule", g.Rule).Logger()
	return s.suspend(ctx, e.ID(), g, log)
}

// onLease applies one leases bucket entry to the timers. It never talks to
// the broker: work is queued, so the watch keeps up. During the initial
// values (initial true) the agents with active leases are collected in
// agents, to be checked for a suspension once all are in.
func (s *Service) onLease(e jetstream.KeyValueEntry, initial bool, agents map[string]struct{}) {
	key := e.Key()
	agent, _, ok := broker.SplitKey(key)
	if e.Operation() != jetstream.KeyValuePut {
		s.sched.cancel(key)
		if ok {
			s.index.set(agent, key, false)
		}
		return
	}
	if !ok || !events.ValidID(agent) {
		s.log.Warn().Str("key", key).Msg("ignoring a lease key that is not a grant key")
		return
	}
	var l broker.Lease
	if err := json.Unmarshal(e.Value(), &l); err != nil {
		// Its grant still ends by the TTL marker (which records a new lease).
		s.log.Error().Err(err).Str("key", key).Msg("lease record does not decode")
		return
	}
	s.index.set(agent, key, l.State == broker.LeaseActive)
	switch l.State {
	case broker.LeaseActive:
		s.sched.schedule(l.Grant.ExpiresAt, s.revokeJob(key))
		if initial {
			agents[agent] = struct{}{}
		} else {
			s.sched.enqueue(s.checkLeaseJob(key, agent))
		}
	case broker.LeaseRevoking:
		// Decided but maybe not published: finish it (a no-op if the
		// revocation in flight finishes first).
		s.sched.cancel(key)
		s.sched.enqueue(s.revokeJob(key))
	case broker.LeaseRevoked:
		s.sched.cancel(key)
	default:
		s.log.Error().Str("key", key).Str("state", l.State).Msg("lease has an unknown state")
	}
}

// revokeJob revokes key as expired: at its expiry, or to finish a
// revocation already decided (whose reason then stands).
func (s *Service) revokeJob(key string) job {
	return job{key: key, run: func(ctx context.Context) error {
		_, err := s.revoke(ctx, key, events.RevokedExpired, systemActor, "")
		return err
	}}
}

// checkLeaseJob revokes a new grant at once if its agent is suspended: it
// closes the race of a grant created while a guardrail suspends the agent.
// With a suspension view it reads the bucket only for an agent the view
// holds: the view holds every suspension this revoker wrote from the moment
// it wrote it (suspend calls Hold before it lists the agent's leases), and a
// suspension another revoker wrote is that revoker's to enforce the same way.
func (s *Service) checkLeaseJob(key, agent string) job {
	return job{key: "check/" + key, run: func(ctx context.Context) error {
		if s.d.Suspensions != nil {
			if sp, err := s.d.Suspensions.Suspension(ctx, agent); err != nil || sp == nil {
				return err
			}
		}
		susp, _, suspended, err := s.suspension(ctx, agent)
		if err != nil || !suspended {
			return err
		}
		_, err = s.revoke(ctx, key, events.RevokedGuardrail, events.Actor{Kind: events.ActorGuardrail, ID: susp.Rule}, susp.Detail)
		return err
	}}
}

// checkAgentJob revokes every grant of agent if it is suspended (at start,
// for the grants found in the ledger).
func (s *Service) checkAgentJob(agent string) job {
	return job{key: "agent/" + agent, run: func(ctx context.Context) error {
		susp, _, suspended, err := s.suspension(ctx, agent)
		if err != nil || !suspended {
			return err
		}
		_, err = s.revokeAgent(ctx, agent, events.Actor{Kind: events.ActorGuardrail, ID: susp.Rule}, susp.Detail)
		return err
	}}
}

// runJob runs j once; a failure is logged and j retried after a backoff:
// a revocation is never given up.
func (s *Service) runJob(j job) {
	ctx, cancel := context.WithTimeout(s.ctx, jobTimeout)
	err := j.run(ctx)
	cancel()
	if err == nil {
		return
	}
	if errors.Is(err, ErrBadKey) {
		s.log.Error().Err(err).Str("job", j.key).Msg("dropping a job for a key that is not a grant key")
		return
	}
	j.attempt++
	delay := broker.Backoff(j.attempt)
	s.log.Error().Err(err).Str("job", j.key).Uint64("attempt", j.attempt).Dur("retry_in", delay).Msg("could not revoke; will retry")
	s.sched.schedule(s.now().Add(delay), j)
}
