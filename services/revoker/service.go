// Package revoker owns the end of every grant and the suspension of agents.
// It revokes each grant exactly once (one jit.revoked on the audit stream),
// at its expires_at, when the agent reports it done, or when a guardrail
// fires against the agent, and it survives being killed at any point: the
// leases bucket is its ledger (docs/architecture.md, "Exactly one revocation
// per grant").
package revoker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/failpoint"
	"github.com/agentjit/jit/pkg/service"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Name is the service's name: the source of its events.
const Name = "revoker"

// Durable consumer names (docs/architecture.md).
const (
	DurableExpiry    = "revoker-expiry"
	DurableGuardrail = "revoker-guardrail"
)

const (
	// maxCAS bounds the compare-and-set retries of one KV write.
	maxCAS = 10
	// workers revoke due grants in parallel; the per-grant lock keeps each
	// grant's revocation serial.
	workers = 32
	// jobTimeout bounds one attempt of a timer or check job. Short, so
	// that an attempt sent to a stream whose leader just died (no answer
	// until a new one is elected, 4-9 s on a cluster) is asked again soon
	// after the election instead of waiting out a long deadline.
	jobTimeout = 3 * time.Second
	// retryMax is the longest wait before a failed job is tried again.
	retryMax = time.Second
	// leaseGrace is how long done looks for the lease of a grant it cannot
	// find before it answers 404.
	leaseGrace = time.Second
	// takeoverGrace is how long a revocation another replica decided may
	// stay unfinished before this one finishes it: the bound on a dead
	// replica's hand-over (docs/operations.md, "Replicas").
	takeoverGrace = time.Second
)

// Named errors.
var (
	// ErrBadKey means a key is not "<agent>.<grant_id>" with valid ids.
	ErrBadKey = errors.New("not a grant key")
	// ErrContended means a KV record kept changing under a compare-and-set
	// more than a bounded number of times; the caller retries later.
	ErrContended = errors.New("too many concurrent writers")
)

// systemActor is who revokes a grant at its expiry.
var systemActor = events.Actor{Kind: events.ActorSystem, ID: Name}

// Service is the revoker. Build it with New, run it with Start, end it with
// Stop.
type Service struct {
	d     service.Deps
	log   zerolog.Logger
	now   func() time.Time
	pub   *broker.Publisher
	locks keyLocks
	sched *scheduler
	index leaseIndex // active leases per agent, from the lease watch
	// failing are the revocations being retried (observe.go).
	failing   failingSet
	unobserve func()

	ctx    context.Context // cancelled by Stop, after in-flight work ended
	cancel context.CancelFunc
	quit   chan struct{} // closed when Stop begins

	guard     service.StartGuard
	mu        sync.Mutex // guards the running parts below
	leases    *broker.BucketWatch
	consumers []*broker.Consumer
	api       *service.API
	stopped   bool
}

// New returns a revoker that uses d's connection, buckets, configuration,
// logger and clock. It does nothing until Start.
func New(d service.Deps) *Service {
	now := d.Clock()
	return &Service{
		d:     d,
		log:   d.Log,
		now:   now,
		pub:   broker.NewPublisher(d.JS, Name),
		locks: keyLocks{m: make(map[string]*keyLock)},
		sched: newScheduler(now),
	}
}

// revokeResult tells a caller of revoke how the grant ended.
type revokeResult struct {
	// Lease is the lease as revoke left it (state revoked on success).
	Lease events.Lease
	// Already is true if the lease was revoked before this call: nothing was
	// done and nothing published.
	Already bool
	// Decided is true if this call chose the revocation's reason (it moved
	// the lease from active to revoking).
	Decided bool
	// YieldUntil, when set, means the call found the revocation decided by
	// another replica moments ago and left it to that replica to finish
	// (only revokeOrYield does): the caller finishes it then if it is
	// still not revoked.
	YieldUntil time.Time
}

// Revoke ends the grant with key "<agent>.<grant_id>" for reason, by by,
// with detail, unless it has ended already: then it does nothing and returns
// nil. The first reason recorded for a grant wins. On success the grant's
// one jit.revoked event is on the audit stream and its lease is revoked. An
// error means the revocation may be half done (lease revoking); calling
// Revoke again, or restarting the service, finishes it with the same event.
// A key that is not a grant key returns ErrBadKey.
func (s *Service) Revoke(ctx context.Context, key, reason string, by events.Actor, detail string) error {
	_, err := s.revoke(ctx, key, reason, by, detail)
	return err
}

// revoke is docs/architecture.md's "Exactly one revocation per grant",
// steps 1-5, under a per-grant lock.
func (s *Service) revoke(ctx context.Context, key, reason string, by events.Actor, detail string) (revokeResult, error) {
	return s.revokeOrYield(ctx, key, reason, by, detail, false)
}

// revokeOrYield is revoke that, with yield set, does not finish a revocation
// another replica decided less than takeoverGrace ago: it returns with
// YieldUntil set. Every replica's timer fires at a grant's expiry; without
// this, the ones that lose the compare-and-set of step 2 would each publish
// the same event again (stored once, but each a round trip to the stream's
// leader) and race the winner's step 5, tripling the revocation's writes
// on a cluster just when the expiry lag counts. A revocation this replica
// decided itself and failed to finish is never yielded.
func (s *Service) revokeOrYield(ctx context.Context, key, reason string, by events.Actor, detail string, yield bool) (_ revokeResult, err error) {
	agent, grantID, ok := broker.SplitKey(key)
	if !ok || !events.ValidID(agent) || !events.ValidID(grantID) {
		return revokeResult{}, fmt.Errorf("%w: %q", ErrBadKey, key)
	}
	// A failure shows in jitctl status and jit_revocations_failing until an
	// attempt succeeds.
	defer s.failing.observe(key, agent, grantID, reason, s.now, &err)
	defer s.locks.lock(key)()
	for range maxCAS {
		// 1. Read the lease.
		var lease events.Lease
		rev, err := broker.GetJSON(ctx, s.d.Buckets.Leases, key, &lease)
		if errors.Is(err, broker.ErrNotFound) {
			// A grant whose ledger is gone (or never was): record the
			// revocation first, so it can happen only once, then finish.
			lease = orphanLease(agent, grantID, reason, by, detail, s.now())
			rev, err = s.d.Buckets.Leases.Create(ctx, key, mustJSON(lease))
			if errors.Is(err, broker.ErrConflict) {
				continue // the lease appeared meanwhile: revoke it normally
			}
			if err != nil {
				return revokeResult{}, fmt.Errorf("record revocation of %s without a lease: %w", key, err)
			}
			s.log.Warn().Str("key", key).Str("reason", reason).Msg("revoking a grant that has no lease record")
			return s.finish(ctx, key, lease, rev, true, false)
		}
		if err != nil {
			return revokeResult{}, fmt.Errorf("read lease %s: %w", key, err)
		}
		switch {
		case lease.State == events.LeaseRevoked:
			return revokeResult{Lease: lease, Already: true}, nil
		case lease.State == events.LeaseActive, lease.State == events.LeaseRevoking && lease.Revocation == nil:
			// 2. Decide the revocation by compare-and-set: the first reason
			// wins. A grant revoked for any reason but its expiry is also
			// made a tombstone (step 3) at the same time, one round trip
			// sooner: whichever revocation wins the lease, the grant ends,
			// and a tombstone changes nothing for a grant that expires.
			r := revocationOf(lease.Grant, reason, by, detail, s.now())
			lease.State, lease.Revocation = events.LeaseRevoking, &r
			var tomb chan error
			if reason != events.RevokedExpired {
				tomb = make(chan error, 1)
				go func(g events.Grant) { tomb <- s.tombstone(ctx, key, g) }(lease.Grant)
			}
			rev, err = s.d.Buckets.Leases.Update(ctx, key, mustJSON(lease), rev)
			var terr error
			if tomb != nil {
				terr = <-tomb
			}
			if errors.Is(err, broker.ErrConflict) {
				continue
			}
			if err != nil {
				return revokeResult{}, fmt.Errorf("mark lease %s revoking: %w", key, err)
			}
			if terr != nil {
				// Revoking is recorded: a retry or a restart finishes it.
				return revokeResult{}, terr
			}
			failpoint.Hit(failpoint.RevokerAfterRevoking)
			return s.finish(ctx, key, lease, rev, true, tomb != nil)
		case lease.State == events.LeaseRevoking:
			if yield && !s.failing.has(key) {
				// Bounded by this clock as well, should the decider's run ahead.
				now := s.now()
				until := lease.Revocation.RevokedAt.Add(takeoverGrace)
				if until.After(now.Add(takeoverGrace)) {
					until = now.Add(takeoverGrace)
				}
				if now.Before(until) {
					return revokeResult{Lease: lease, YieldUntil: until}, nil
				}
			}
			return s.finish(ctx, key, lease, rev, false, false)
		default:
			return revokeResult{}, fmt.Errorf("lease %s has unknown state %q", key, lease.State)
		}
	}
	return revokeResult{}, fmt.Errorf("revoke %s: %w", key, ErrContended)
}

// finish runs steps 3-5 for a lease in state revoking at revision rev;
// tombstoned says step 3 is done already.
func (s *Service) finish(ctx context.Context, key string, lease events.Lease, rev uint64, decided, tombstoned bool) (revokeResult, error) {
	r := *lease.Revocation
	// 3. Unless it expired, make the grant key a tombstone so checkers drop it
	// at once and it cannot be created again.
	if r.Reason != events.RevokedExpired && !tombstoned {
		if err := s.tombstone(ctx, key, lease.Grant); err != nil {
			return revokeResult{}, err
		}
	}
	// 4. Publish: same id and data on every attempt, so the stream keeps one.
	_, _, err := s.pub.Emit(ctx, events.RevokedEventID(r.GrantID), events.TypeRevoked, r.Agent, r,
		events.WithRequestID(r.RequestID), events.WithGrantID(r.GrantID), events.WithTime(r.RevokedAt))
	if err != nil {
		return revokeResult{}, err
	}
	failpoint.Hit(failpoint.RevokerAfterEvent)
	// 5. Record that the event is out.
	lease.State = events.LeaseRevoked
	for range maxCAS {
		_, err = s.d.Buckets.Leases.Update(ctx, key, mustJSON(lease), rev)
		if err == nil {
			s.log.Debug().Str("key", key).Str("reason", r.Reason).Str("revoked_by", r.RevokedBy.String()).Msg("grant revoked")
			return revokeResult{Lease: lease, Decided: decided}, nil
		}
		if !errors.Is(err, broker.ErrConflict) {
			return revokeResult{}, fmt.Errorf("mark lease %s revoked: %w", key, err)
		}
		// Another replica moved it: done if it is revoked, else try again.
		var cur events.Lease
		if rev, err = broker.GetJSON(ctx, s.d.Buckets.Leases, key, &cur); err != nil {
			return revokeResult{}, fmt.Errorf("read lease %s: %w", key, err)
		}
		if cur.State == events.LeaseRevoked {
			return revokeResult{Lease: cur, Decided: decided}, nil
		}
	}
	return revokeResult{}, fmt.Errorf("mark lease %s revoked: %w", key, ErrContended)
}

// tombstone rewrites the grant key with status revoked, keeping a TTL that
// ends at expires_at. If the key does not exist yet and the grant has not
// expired (the approval service writes the lease before the grant key), it
// creates the tombstone, so that the grant cannot appear active afterwards.
func (s *Service) tombstone(ctx context.Context, key string, leased events.Grant) error {
	kv := s.d.Buckets.Grants
	for range maxCAS {
		now := s.now()
		e, err := kv.Get(ctx, key)
		if errors.Is(err, broker.ErrNotFound) {
			if !now.Before(leased.ExpiresAt) {
				return nil // gone and over: nothing left to hide
			}
			g := leased
			g.Status = events.GrantRevoked
			_, err = kv.Create(ctx, key, mustJSON(g), jetstream.KeyTTL(broker.TTLFor(g.ExpiresAt, now)))
			if errors.Is(err, broker.ErrConflict) {
				continue
			}
			if err != nil {
				return fmt.Errorf("create tombstone %s: %w", key, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("read grant %s: %w", key, err)
		}
		var g events.Grant
		if err := json.Unmarshal(e.Value(), &g); err != nil {
			s.log.Error().Err(err).Str("key", key).Msg("grant value does not decode; replacing it with the leased grant, revoked")
			g = leased
		}
		if g.Status == events.GrantRevoked {
			return nil
		}
		g.Status = events.GrantRevoked
		_, err = broker.PutKeepTTL(ctx, s.d.JS, broker.BucketGrants, key, mustJSON(g), e.Revision(), broker.TTLFor(g.ExpiresAt, now))
		if errors.Is(err, broker.ErrConflict) {
			continue
		}
		return err
	}
	return fmt.Errorf("tombstone %s: %w", key, ErrContended)
}

// revocationOf is the data of a grant's jit.revoked event.
func revocationOf(g events.Grant, reason string, by events.Actor, detail string, now time.Time) events.Revocation {
	perms := slices.Clone(g.Permissions)
	if perms == nil {
		perms = []string{}
	}
	return events.Revocation{
		GrantID:     g.GrantID,
		RequestID:   g.RequestID,
		Agent:       g.Agent,
		Permissions: perms,
		Reason:      reason,
		Detail:      detail,
		RevokedBy:   by,
		RevokedAt:   now.UTC(),
		GrantedAt:   g.GrantedAt,
		ExpiresAt:   g.ExpiresAt,
	}
}

// orphanLease is the ledger record written for a grant that has none: all
// that is known is what its key says.
func orphanLease(agent, grantID, reason string, by events.Actor, detail string, now time.Time) events.Lease {
	g := events.Grant{GrantID: grantID, Agent: agent, Permissions: []string{}, Status: events.GrantRevoked}
	r := revocationOf(g, reason, by, detail, now)
	return events.Lease{Grant: g, State: events.LeaseRevoking, Revocation: &r}
}

// mustJSON encodes the service's own record types, which always encode.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode %T: %v", v, err))
	}
	return b
}

// keyLocks is a mutex per key, held only while in use.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

// lock locks key and returns its unlock.
func (l *keyLocks) lock(key string) func() {
	l.mu.Lock()
	k, ok := l.m[key]
	if !ok {
		k = &keyLock{}
		l.m[key] = k
	}
	k.refs++
	l.mu.Unlock()
	k.mu.Lock()
	return func() {
		k.mu.Unlock()
		l.mu.Lock()
		if k.refs--; k.refs == 0 {
			delete(l.m, key)
		}
		l.mu.Unlock()
	}
}

// done ends the grant grantID because its agent finished with it (reason
// completed). Refusals are *broker.APIError values (400, 404, 409), each
// also a jit.rejected event.
func (s *Service) done(ctx context.Context, c service.Call, in broker.DoneInput) (broker.ActionResult, error) {
	rej := events.Rejection{GrantID: in.GrantID, Actor: events.Actor{Kind: events.ActorAgent, ID: events.UnknownAgent}}
	if !c.Caller.Internal {
		rej.Actor = c.Actor
	}
	if !events.ValidID(in.GrantID) {
		rej.GrantID = ""
		return broker.ActionResult{}, s.refuse(ctx, events.StageCompletion, broker.Errorf(400, events.CodeMalformed,
			"grant_id %q is not a valid id (1-64 letters, digits, '-' or '_')", in.GrantID), rej)
	}
	keys, err := s.leaseKeys(ctx, "*."+in.GrantID)
	// A grant is announced before its lease is written (architecture.md,
	// "Announced before usable"): an agent that ends it the moment it is
	// granted can arrive first, the more so on a cluster, where each write
	// waits for a quorum. Look again for a moment before answering 404.
	for deadline := time.Now().Add(leaseGrace); err == nil && len(keys) == 0 && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return broker.ActionResult{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		keys, err = s.leaseKeys(ctx, "*."+in.GrantID)
	}
	if err != nil {
		return broker.ActionResult{}, err
	}
	if len(keys) == 0 {
		return broker.ActionResult{}, s.refuse(ctx, events.StageCompletion, broker.Errorf(404, events.CodeNotFound,
			"no grant %s", in.GrantID), rej)
	}
	if len(keys) > 1 {
		s.log.Warn().Strs("keys", keys).Msg("one grant id has several leases; ending the first")
	}
	key := keys[0]
	agent, _, _ := broker.SplitKey(key)
	if !c.Caller.Internal && !c.Caller.Is(auth.KindAgent, agent) {
		// Only the grant's own agent ends it as completed; an admin revokes
		// it (jitapi.revoke).
		return broker.ActionResult{}, s.refuse(ctx, events.StageCompletion, broker.Errorf(403, events.CodeForbidden,
			"grant %s is not %s's: an agent may end only its own grants", in.GrantID, c.Caller.Principal), rej)
	}
	rej.Agent = agent
	rej.Actor = events.Actor{Kind: events.ActorAgent, ID: agent}
	var lease events.Lease
	if _, err := broker.GetJSON(ctx, s.d.Buckets.Leases, key, &lease); err != nil {
		if errors.Is(err, broker.ErrNotFound) {
			return broker.ActionResult{}, s.refuse(ctx, events.StageCompletion, broker.Errorf(404, events.CodeNotFound,
				"no grant %s", in.GrantID), rej)
		}
		return broker.ActionResult{}, fmt.Errorf("read lease %s: %w", key, err)
	}
	rej.RequestID = lease.Grant.RequestID
	if lease.State != events.LeaseActive {
		return broker.ActionResult{}, s.refuse(ctx, events.StageCompletion, alreadyEnded(in.GrantID, lease), rej)
	}
	res, err := s.revoke(ctx, key, events.RevokedCompleted, rej.Actor, "")
	if err != nil {
		return broker.ActionResult{}, err
	}
	if !res.Decided {
		// Something else (expiry, a guardrail) ended it first.
		return broker.ActionResult{}, s.refuse(ctx, events.StageCompletion, alreadyEnded(in.GrantID, res.Lease), rej)
	}
	return broker.ActionResult{GrantID: in.GrantID, RequestID: lease.Grant.RequestID, Agent: agent, Outcome: "revoked"}, nil
}

func alreadyEnded(grantID string, l events.Lease) *broker.APIError {
	reason := l.State
	if l.Revocation != nil {
		reason = l.Revocation.Reason
	}
	return broker.Errorf(409, events.CodeConflict, "grant %s already ended (%s)", grantID, reason)
}

// refuse records an API refusal at stage (service.RecordRefusal) and
// returns e, the answer.
func (s *Service) refuse(ctx context.Context, stage string, e *broker.APIError, r events.Rejection) error {
	service.RecordRefusal(s.log.WithContext(ctx), s.pub, s.now(), stage, e, r)
	return e
}
