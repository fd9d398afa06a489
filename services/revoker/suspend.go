package revoker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/metrics"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// maxComment bounds a reinstatement's comment.
const maxComment = 1024

// suspend handles one guardrail.fired event with id eventID: it suspends the
// agent (keeping an existing suspension as it is), revokes every grant of
// the agent that has not ended, and publishes jit.suspended with an id
// derived from eventID. Running it twice for one event publishes one event.
func (s *Service) suspend(ctx context.Context, eventID string, g events.GuardrailFired, log zerolog.Logger) error {
	if cfg := s.config(); cfg == nil {
		log.Warn().Msg("no configuration yet; suspending the agent anyway")
	} else if _, known := cfg.Agent(g.Agent); !known {
		log.Warn().Msg("guardrail fired against an agent that is not in the configuration; suspending it anyway (fail safe)")
	}
	metrics.GuardrailHandled(g.Agent, g.FiredAt) // the start of its grants' revocation lag
	by := events.Actor{Kind: events.ActorGuardrail, ID: g.Rule}
	mine := events.Suspension{
		Agent:         g.Agent,
		Rule:          g.Rule,
		Detail:        g.Detail,
		GuardrailID:   eventID,
		SuspendedBy:   by,
		SuspendedAt:   s.now().UTC(),
		RevokedGrants: []string{},
	}
	// Suspend first, then list: a grant created after the list is revoked by
	// the lease watch, which sees the suspension.
	stored, err := s.putSuspension(ctx, mine, log)
	if err != nil {
		return err
	}
	if s.d.Suspensions != nil {
		// Before the index is read: every lease this revoker learns of from
		// now on is checked against the bucket (checkLeaseJob).
		s.d.Suspensions.Hold(g.Agent)
	}
	revoked, err := s.revokeAgent(ctx, g.Agent, by, g.Detail)
	if err != nil {
		return err
	}
	// The event describes this guardrail firing; if it created the stored
	// suspension (even on an earlier delivery), it carries that record.
	data := mine
	if stored.GuardrailID == eventID {
		data = stored
	}
	data.RevokedGrants = revoked
	if _, _, err := s.pub.Emit(ctx, events.SuspendedEventID(eventID), events.TypeSuspended, g.Agent, data,
		events.WithTime(data.SuspendedAt)); err != nil {
		return err
	}
	log.Info().Strs("revoked_grants", revoked).Msg("agent suspended")
	return nil
}

// putSuspension stores rec unless the agent is already suspended, and
// returns the suspension now stored.
func (s *Service) putSuspension(ctx context.Context, rec events.Suspension, log zerolog.Logger) (events.Suspension, error) {
	kv := s.d.Buckets.Suspensions
	// Create first: the common case (not suspended yet) is one round trip.
	for range maxCAS {
		_, err := kv.Create(ctx, rec.Agent, mustJSON(rec))
		if err == nil {
			return rec, nil
		}
		if !errors.Is(err, broker.ErrConflict) {
			return events.Suspension{}, fmt.Errorf("suspend %s: %w", rec.Agent, err)
		}
		var cur events.Suspension
		_, err = broker.GetJSON(ctx, kv, rec.Agent, &cur)
		switch {
		case err == nil:
			return cur, nil
		case errors.Is(err, broker.ErrNotFound):
			continue // reinstated meanwhile: suspend again
		}
		if _, gerr := kv.Get(ctx, rec.Agent); gerr == nil {
			// Present but undecodable: the agent is suspended all the
			// same; leave the record for an operator to inspect.
			log.Error().Err(err).Msg("stored suspension does not decode; keeping it")
			return rec, nil
		}
		return events.Suspension{}, fmt.Errorf("read suspension of %s: %w", rec.Agent, err)
	}
	return events.Suspension{}, fmt.Errorf("suspend %s: %w", rec.Agent, ErrContended)
}

// suspension returns the agent's suspension, or false if it is not
// suspended.
func (s *Service) suspension(ctx context.Context, agent string) (events.Suspension, uint64, bool, error) {
	var cur events.Suspension
	rev, err := broker.GetJSON(ctx, s.d.Buckets.Suspensions, agent, &cur)
	switch {
	case err == nil:
		return cur, rev, true, nil
	case errors.Is(err, broker.ErrNotFound):
		return events.Suspension{}, 0, false, nil
	}
	// A record that does not decode still means suspended.
	e, gerr := s.d.Buckets.Suspensions.Get(ctx, agent)
	if gerr != nil {
		return events.Suspension{}, 0, false, fmt.Errorf("read suspension of %s: %w", agent, err)
	}
	s.log.Error().Err(err).Str("agent", agent).Msg("stored suspension does not decode; treating the agent as suspended")
	return events.Suspension{Agent: agent, Rule: "unknown"}, e.Revision(), true, nil
}

// revokeAgent revokes every grant of agent that has not ended, with reason
// guardrail, and returns the ids of the grants this call ended (sorted).
func (s *Service) revokeAgent(ctx context.Context, agent string, by events.Actor, detail string) ([]string, error) {
	keys, ok := s.index.keys(agent)
	if !ok {
		var err error
		if keys, err = s.leaseKeys(ctx, agent+".*"); err != nil {
			return nil, err
		}
	}
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		errs    []error
		revoked = []string{}
		sem     = make(chan struct{}, workers)
	)
	for _, key := range keys {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res, err := s.revoke(ctx, key, events.RevokedGuardrail, by, detail)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, ErrBadKey):
				s.log.Warn().Str("key", key).Msg("ignoring a lease key that is not a grant key")
			case err != nil:
				errs = append(errs, err)
			case !res.Already && res.Lease.Revocation != nil && res.Lease.Revocation.Reason == events.RevokedGuardrail:
				_, id, _ := broker.SplitKey(key)
				revoked = append(revoked, id)
			}
		}()
	}
	wg.Wait()
	slices.Sort(revoked)
	return revoked, errors.Join(errs...)
}

// leaseKeys lists the leases bucket's keys matching filter, sorted, without
// duplicates.
func (s *Service) leaseKeys(ctx context.Context, filter string) ([]string, error) {
	kl, err := s.d.Buckets.Leases.ListKeysFiltered(ctx, filter)
	if errors.Is(err, broker.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list leases %s: %w", filter, err)
	}
	var keys []string
	for k := range kl.Keys() {
		keys = append(keys, k)
	}
	// The lister ends early, silently, when ctx does: never act on half a list.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list leases %s: %w", filter, err)
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// reinstate lifts agent's suspension for by, an approver the approval
// service authenticated.
// Refusals are *broker.APIError values (404, 400, 409) and each is
// also a jit.rejected event. The jit.reinstated event is published before the
// suspension is deleted, with an id derived from the suspension's revision,
// so a retried call publishes it once.
func (s *Service) reinstate(ctx context.Context, by events.Actor, in broker.ReinstateInput) (broker.ActionResult, error) {
	rej := events.Rejection{Agent: in.Agent, Actor: by}
	if !events.ValidID(in.Agent) {
		return broker.ActionResult{}, s.refuse(ctx, events.StageReinstate, broker.Errorf(400, events.CodeMalformed,
			"agent %q is not a valid id (1-64 letters, digits, '-' or '_')", in.Agent), rej)
	}
	if len(in.Comment) > maxComment {
		return broker.ActionResult{}, s.refuse(ctx, events.StageReinstate, broker.Errorf(400, events.CodeMalformed,
			"comment is %d bytes; the limit is %d", len(in.Comment), maxComment), rej)
	}
	susp, rev, suspended, err := s.suspension(ctx, in.Agent)
	if err != nil {
		return broker.ActionResult{}, err
	}
	if !suspended {
		return broker.ActionResult{}, s.refuse(ctx, events.StageReinstate, broker.Errorf(404, events.CodeNotFound,
			"agent %s is not suspended", in.Agent), rej)
	}
	data := events.Reinstatement{
		Agent:        in.Agent,
		Comment:      in.Comment,
		ReinstatedBy: by,
		ReinstatedAt: s.now().UTC(),
		Suspension:   susp,
	}
	if _, _, err := s.pub.Emit(ctx, reinstatedEventID(in.Agent, rev), events.TypeReinstated, in.Agent, data); err != nil {
		return broker.ActionResult{}, err
	}
	if err := s.d.Buckets.Suspensions.Delete(ctx, in.Agent, jetstream.LastRevision(rev)); err != nil {
		if errors.Is(err, broker.ErrConflict) {
			return broker.ActionResult{}, s.refuse(ctx, events.StageReinstate, broker.Errorf(409, events.CodeConflict,
				"the suspension of %s changed while reinstating it; look again", in.Agent), rej)
		}
		return broker.ActionResult{}, fmt.Errorf("delete suspension of %s: %w", in.Agent, err)
	}
	s.log.Info().Str("agent", in.Agent).Str("by", by.String()).Msg("agent reinstated")
	return broker.ActionResult{Agent: in.Agent, Outcome: "reinstated"}, nil
}

// reinstatedEventID is the id of the jit.reinstated event that lifts the
// suspension stored at revision rev.
func reinstatedEventID(agent string, rev uint64) string {
	return agent + "/reinstated/" + strconv.FormatUint(rev, 10)
}

func rolesText(roles []string) string {
	if len(roles) == 0 {
		return "none"
	}
	return strings.Join(roles, ", ")
}

func (s *Service) config() *config.Config {
	if s.d.Config == nil {
		return nil
	}
	return s.d.Config.Current()
}
