package revoker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
	"github.com/nats-io/nats.go/jetstream"
)

// markerMaxAge is the Nats-Marker-Reason of a per-key TTL expiry.
const markerMaxAge = "MaxAge"

// grantsSubjectPrefix prefixes the grants bucket's stream subjects.
const grantsSubjectPrefix = "$KV." + broker.BucketGrants + "."

// handleDone serves broker.APIDone: the calling agent ends one of its own
// grants.
func (s *Service) handleDone(ctx context.Context, c service.Call, in broker.DoneInput) (any, error) {
	return s.done(ctx, c, in)
}

// handleReinstate serves broker.InternalReinstate: the approval service
// authenticated an approver holding one of config.ReinstateRoles, who lifts
// a suspension.
func (s *Service) handleReinstate(ctx context.Context, c service.Call, in broker.Authorized[broker.ReinstateInput]) (any, error) {
	by, err := s.authorized(ctx, events.StageReinstate, in.By, config.ReinstateRoles, events.Rejection{Agent: in.Input.Agent})
	if err != nil {
		return nil, err
	}
	return s.reinstate(ctx, by, in.Input)
}

// handleRevoke serves broker.InternalRevoke: an admin that the approval
// service authenticated ends a grant now.
func (s *Service) handleRevoke(ctx context.Context, c service.Call, in broker.Authorized[broker.RevokeInput]) (any, error) {
	rej := events.Rejection{GrantID: in.Input.GrantID}
	s.aboutGrant(ctx, &rej)
	by, err := s.authorized(ctx, events.StageRevoke, in.By, RevokeRoles, rej)
	if err != nil {
		return nil, err
	}
	return s.adminRevoke(ctx, by, in.Input)
}

// authorized checks the approver an internal call names: an approver with
// one of roles. Only the approval service may publish internal calls (the
// broker's permissions); this is the second lock of the same door.
func (s *Service) authorized(ctx context.Context, stage string, by events.Actor, roles []string, rej events.Rejection) (events.Actor, error) {
	if by.Kind != events.ActorApprover || !events.ValidID(by.ID) || !slices.ContainsFunc(by.Roles, func(r string) bool { return slices.Contains(roles, r) }) {
		if !events.ValidID(rej.Agent) {
			rej.Agent = ""
		}
		if !events.ValidID(rej.GrantID) {
			rej.GrantID = ""
		}
		rej.Actor = by
		msg := fmt.Sprintf("an internal call must name an approver holding one of the roles %s", strings.Join(roles, ", "))
		if by.Kind == events.ActorApprover && events.ValidID(by.ID) {
			msg = fmt.Sprintf("approver %s (roles: %s) may not do this: it needs one of the roles %s",
				by.ID, strings.Join(by.Roles, ", "), strings.Join(roles, ", "))
		}
		return events.Actor{}, s.refuse(ctx, stage, broker.Errorf(403, events.CodeForbidden, "%s", msg), rej)
	}
	return by, nil
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
			events.Actor{Kind: events.ActorGuardrail, ID: guardrailSource(e)}, s.now(), d, err)
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
	var l events.Lease
	if err := json.Unmarshal(e.Value(), &l); err != nil {
		// Set aside: its grant still ends by the TTL marker (which records
		// a new lease); the record is reported once.
		s.log.Error().Err(err).Str("key", key).Msg("lease record does not decode; set aside")
		rev := e.Revision()
		s.sched.enqueue(job{key: "record/" + key, run: func(ctx context.Context) error {
			return s.pub.RejectRecord(ctx, broker.BucketLeases, key, rev, err)
		}})
		return
	}
	s.index.set(agent, key, l.State == events.LeaseActive)
	switch l.State {
	case events.LeaseActive:
		s.sched.schedule(l.Grant.ExpiresAt, s.expireJob(key))
		if initial {
			agents[agent] = struct{}{}
		} else {
			s.sched.enqueue(s.checkLeaseJob(key, agent))
		}
	case events.LeaseRevoking:
		// Decided but maybe not published: finish it (a no-op if the
		// revocation in flight finishes first). Found at start, it was left
		// by a revoker that stopped: at once. Seen change while running, it
		// is most likely another replica's revocation in flight, which
		// ends in revoked within milliseconds: take it over only if it has
		// not after takeoverGrace, so that replicas do not race each
		// other's every step (the event's id keeps it one either way).
		s.sched.cancel(key)
		if initial {
			s.sched.enqueue(s.revokeJob(key))
		} else {
			s.sched.schedule(s.now().Add(takeoverGrace), s.revokeJob(key))
		}
	case events.LeaseRevoked:
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

// expireJob revokes key as expired at its expiry, the moment every
// replica's timer fires: a revocation another replica has just decided is
// left to it, and finished by this one only if it is still not revoked
// takeoverGrace after it was decided (revokeOrYield).
func (s *Service) expireJob(key string) job {
	return job{key: key, run: func(ctx context.Context) error {
		res, err := s.revokeOrYield(ctx, key, events.RevokedExpired, systemActor, "", true)
		if err == nil && !res.YieldUntil.IsZero() {
			s.sched.schedule(res.YieldUntil, s.revokeJob(key))
		}
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
	// A due revocation is asked again at least every retryMax: on a
	// cluster, writes to a stream whose leader died fail at once until a
	// new leader is elected (4-9 s), and a backoff grown to 10 s would
	// leave the grant's event that much later than the election.
	delay := min(broker.Backoff(j.attempt), retryMax)
	s.log.Error().Err(err).Str("job", j.key).Uint64("attempt", j.attempt).Dur("retry_in", delay).Msg("could not revoke; will retry")
	s.sched.schedule(s.now().Add(delay), j)
}

// guardrailSource names who reported a guardrail event: the source whose
// credential the ingress verified (events.ExtPrincipal), or, for an event
// stored without the ingress (a deployment without accounts), its source
// attribute.
func guardrailSource(e events.Event) string {
	if p, ok := e.Extensions()[events.ExtPrincipal].(string); ok {
		if id, found := strings.CutPrefix(p, "guardrail:"); found {
			return id
		}
	}
	return e.Source()
}
