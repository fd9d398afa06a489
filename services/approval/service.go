// Package approval is the approval service: it owns the humans of the JIT
// system and turns an approved decision into a grant.
//
// It consumes jit.decided events (durable "approval"): an approved decision
// becomes a lease, a grant key with a TTL and a jit.granted event; a pending
// decision waits in the pending bucket for an approver. Approvers list,
// approve and deny over the jitapi.pending, jitapi.approve and jitapi.deny
// endpoints; their answer is a jit.decided event that flows back through the
// same consumer. A request nobody answers times out when its pending key's
// TTL marker arrives (durable "approval-timeouts").
//
// This package is grant creation and human decisions. The approver console
// and the HTTP JSON API are package web (which asks this one through the
// exported methods of approvers.go), notifications are package notify.
package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/failpoint"
	"github.com/agentjit/jit/pkg/metrics"
	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/approval/notify"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Name is the service's name: the source of its events and the actor of its
// system decisions.
const Name = "approval"

// Durable consumer names (docs/architecture.md).
const (
	DurableDecisions = "approval"          // jit.decided.>
	DurableTimeouts  = "approval-timeouts" // the pending bucket's stream
)

// MaxCommentLength bounds an approver's comment.
const MaxCommentLength = 1024

// Service is the approval service. Build it with New, run it with Start,
// end it with Stop.
type Service struct {
	d   service.Deps
	now func() time.Time
	log zerolog.Logger
	pub *broker.Publisher

	pendingStream jetstream.Stream
	// finder answers "was this grant announced?" for redeliveries,
	// reading each agent's jit.granted events once (broker.EventFinder).
	finder broker.EventFinder

	ctx    context.Context
	cancel context.CancelFunc
	// consumers are the durable consumers Start began; Stop stops each
	// and waits for its handlers.
	consumers []*broker.Consumer
	api       *service.API
	// approvers checks approver tokens for the NATS API and the HTTP side
	// alike (one lockout).
	approvers *service.Approvers

	guard service.StartGuard
	// The gate of calls that come another way than the NATS API (Enter:
	// the console and the HTTP API; the NATS API has its own, in
	// service.API).
	mu       sync.Mutex
	stopping bool
	inflight sync.WaitGroup
	stopOnce sync.Once

	notifier *notify.Notifier
	// publicAddr is where the console is served (SetPublicAddr), for
	// notification links when the configuration names no console URL.
	publicAddr atomic.Pointer[string]
}

// Option configures a Service.
type Option func(*Service)

// New returns the approval service on d. It does nothing until Start.
func New(d service.Deps, opts ...Option) *Service {
	s := &Service{
		d:   d,
		now: d.Clock(),
		log: d.Log.With().Str("component", Name).Logger(),
		pub: broker.NewPublisher(d.JS, Name),
	}
	s.approvers = service.NewApprovers(d, s.pub, events.StageApproval)
	s.notifier = notify.New(notify.Options{Log: s.log, Publisher: s.pub, Now: s.now, Config: d.Config, ConsoleURL: s.consoleURL})
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *Service) system() events.Actor {
	return events.Actor{Kind: events.ActorSystem, ID: Name}
}

// decide handles one valid jit.decided event, delivered as d. It is
// idempotent: handling the same decision again (or another event with the
// same request) makes no second grant, pending record or event.
func (s *Service) decide(ctx context.Context, dec events.Decision, d broker.Delivery) error {
	switch dec.Outcome {
	case events.OutcomeApproved:
		return s.grant(ctx, dec, d)
	case events.OutcomePending:
		return s.hold(ctx, dec)
	default:
		return nil // denied: the request ends here
	}
}

// announceMargin is how much of a grant must be left for it to be
// announced: a decision handled later than that is denied as
// expired_before_grant, so that no jit.granted is stored at or after its
// own expires_at (the publish takes a round trip).
const announceMargin = 250 * time.Millisecond

// grant turns an approved decision into a grant, in the order that keeps
// both promises of docs/architecture.md ("Announced before usable"):
//
//  1. jit.granted on the audit stream: the grant exists for the audit
//     trail before anything can honour it;
//  2. the lease (active): the revoker now ends it, with one jit.revoked;
//  3. the grant key with its TTL: checkers honour it from here.
//
// Every request ends in one outcome its agent sees: a decision handled too
// late to announce (announceMargin before expires_at) is denied with mode
// expired_before_grant, and nothing else is written. The grant id is derived
// from the request id and expires_at from the decision, so a redelivery
// reaches the same grant. A redelivery that finds no lease asks the stream
// whether an earlier delivery announced the grant before it died (the only
// case in which the stream is read): if so it finishes steps 2-3 for the
// announced grant, whatever happened since.
func (s *Service) grant(ctx context.Context, dec events.Decision, d broker.Delivery) error {
	grantID := events.GrantIDFor(dec.RequestID)
	key := broker.GrantKey(dec.Agent, grantID)

	// Before anything but the normal path: was this grant announced by an
	// earlier delivery? A redelivery asks first; a first delivery asks only
	// before it would deny (a kill can lose a consumer's delivery state, so
	// a decision handled before may come again as new: it must not be
	// answered twice).
	checked := false
	resume := func() (bool, error) {
		checked = true
		return s.resume(ctx, key, dec, d)
	}
	if d.Again {
		if done, err := resume(); done || err != nil {
			return err
		}
	}

	// The check asks the suspension view (the bucket if there is none): a
	// suspension stored an instant ago that the view has not seen yet lets
	// this grant through, and the revoker that stored it revokes the grant
	// as soon as the lease appears (docs/architecture.md, "Where
	// suspensions are read"); checkers refuse a suspended agent meanwhile.
	susp, err := s.d.Suspension(ctx, dec.Agent)
	if err != nil {
		return err
	}
	if susp != nil {
		if !checked {
			if done, err := resume(); done || err != nil {
				return err
			}
		}
		return s.denySuspended(ctx, dec, susp)
	}
	g := s.newGrant(dec, grantID)
	if now := s.now(); g.ExpiresAt.Sub(now) < announceMargin {
		if !checked {
			if done, err := resume(); done || err != nil {
				return err
			}
		}
		return s.denyExpired(ctx, dec, g, now)
	}
	e, err := events.New(events.GrantedEventID(grantID), events.TypeGranted, s.pub.Source(), g.Agent, g,
		events.WithRequestID(g.RequestID), events.WithGrantID(grantID))
	if err != nil {
		return err
	}
	_, stored, err := s.pub.PublishChecked(ctx, events.Subject(events.TypeGranted, g.Agent), e, nil)
	if err != nil {
		return err
	}
	if stored != nil {
		// Announced before (another delivery, or the same decision under
		// another event id): the lease records the grant as announced.
		if g, err = events.DataAs[events.Grant](*stored); err != nil {
			return fmt.Errorf("announced grant %s does not decode: %w", grantID, err)
		}
	} else {
		metrics.GrantAnnounced(g.Mode, dec.Request.RequestedAt, g.GrantedAt)
	}
	failpoint.Hit(failpoint.ApprovalAfterGranted)
	return s.leaseAndKey(ctx, key, g)
}

// resume finishes a grant an earlier delivery of dec announced, if one
// did: done is true when it did (whatever state the grant is in now), and
// the decision needs nothing more. Its lease says so; without one, the
// stream's leader is asked whether jit.granted was stored after the
// decision (a kill between the announcement and the lease).
func (s *Service) resume(ctx context.Context, key string, dec events.Decision, d broker.Delivery) (done bool, err error) {
	var lease events.Lease
	switch _, err := broker.GetJSON(ctx, s.d.Buckets.Leases, key, &lease); {
	case err == nil:
		return true, s.grantKey(ctx, key, lease)
	case !errors.Is(err, broker.ErrNotFound):
		return false, fmt.Errorf("read lease %s: %w", key, err)
	}
	grantID := events.GrantIDFor(dec.RequestID)
	e, _, found, err := s.finder.Find(ctx, s.d.JS, events.Subject(events.TypeGranted, dec.Agent), d.StreamSeq, events.GrantedEventID(grantID))
	if err != nil || !found {
		return false, err
	}
	g, err := events.DataAs[events.Grant](e)
	if err != nil {
		return false, fmt.Errorf("announced grant %s does not decode: %w", grantID, err)
	}
	zerolog.Ctx(ctx).Info().Str("grant_id", grantID).Msg("grant announced by an earlier delivery; recording its lease")
	return true, s.leaseAndKey(ctx, key, g)
}

// leaseAndKey records the lease of announced grant g, then writes its key.
// A lease already there (another delivery, or a revocation that came
// first) is read and finished instead.
func (s *Service) leaseAndKey(ctx context.Context, key string, g events.Grant) error {
	lease := events.Lease{Grant: g, State: events.LeaseActive}
	b, err := json.Marshal(lease)
	if err != nil {
		return fmt.Errorf("encode lease %s: %w", key, err)
	}
	if _, err := s.d.Buckets.Leases.Create(ctx, key, b); err != nil {
		if !errors.Is(err, broker.ErrConflict) {
			return fmt.Errorf("create lease %s: %w", key, err)
		}
		if _, err := broker.GetJSON(ctx, s.d.Buckets.Leases, key, &lease); err != nil {
			return fmt.Errorf("read lease %s: %w", key, err)
		}
	}
	failpoint.Hit(failpoint.ApprovalAfterLease)
	return s.grantKey(ctx, key, lease)
}

// grantKey writes the grant key of an active lease, once: never over a
// revoked grant's tombstone or its expiry marker, and not once it has
// expired (the revoker ends the lease).
func (s *Service) grantKey(ctx context.Context, key string, lease events.Lease) error {
	log := zerolog.Ctx(ctx)
	g := lease.Grant
	if lease.State != events.LeaseActive {
		log.Info().Str("grant_id", g.GrantID).Str("state", lease.State).Msg("grant already ended; nothing to do")
		return nil
	}
	now := s.now()
	if !now.Before(g.ExpiresAt) {
		// Normal for a decision delivered again after a restart: the key
		// (written then or not) is over, and the revoker ends the lease.
		log.Debug().Str("grant_id", g.GrantID).Time("expires_at", g.ExpiresAt).Msg("grant already expired; no key to write")
		return nil
	}
	b, err := json.Marshal(g)
	if err != nil {
		return fmt.Errorf("encode grant %s: %w", key, err)
	}
	if _, err := broker.PutKeepTTL(ctx, s.d.JS, broker.BucketGrants, key, b, 0, broker.TTLFor(g.ExpiresAt, now)); err != nil && !errors.Is(err, broker.ErrConflict) {
		return fmt.Errorf("create grant %s: %w", key, err)
	}
	log.Debug().Str("grant_id", g.GrantID).Time("expires_at", g.ExpiresAt).Msg("granted")
	return nil
}

// denyExpired answers a request whose approved decision is handled too
// late to announce its grant: the agent is told, with a denial, and
// nothing is granted.
func (s *Service) denyExpired(ctx context.Context, dec events.Decision, g events.Grant, now time.Time) error {
	reason := fmt.Sprintf("the approved grant would have ended at %s, before it could be announced (handled at %s); nothing was granted: ask again",
		g.ExpiresAt.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano))
	d := s.denial(dec, events.ModeExpiredBeforeGrant, reason)
	if err := s.publishDecision(ctx, events.DecisionEventID(dec.RequestID, events.ModeExpiredBeforeGrant), d); err != nil {
		return err
	}
	zerolog.Ctx(ctx).Warn().Str("grant_id", g.GrantID).Time("expires_at", g.ExpiresAt).Msg("approved decision handled after its grant would have expired; denied as expired_before_grant")
	return nil
}

func (s *Service) newGrant(dec events.Decision, grantID string) events.Grant {
	return events.Grant{
		GrantID:     grantID,
		RequestID:   dec.RequestID,
		Agent:       dec.Agent,
		Permissions: dec.Permissions,
		Reason:      dec.Request.Reason,
		Context:     dec.Request.Context,
		Rule:        dec.Rule,
		Mode:        dec.Mode,
		ApprovedBy:  dec.DecidedBy,
		GrantedAt:   s.now().UTC(),
		ExpiresAt:   dec.DecidedAt.Add(time.Duration(dec.DurationMS) * time.Millisecond).UTC(),
		Status:      events.GrantActive,
	}
}

// suspension returns the agent's suspension, or nil if it is not suspended.
func (s *Service) suspension(ctx context.Context, agent string) (*events.Suspension, error) {
	// A record that exists but does not decode still counts (fail closed).
	return broker.Suspension(ctx, s.d.Buckets.Suspensions, agent)
}

func suspendedReason(agent string, susp *events.Suspension) string {
	r := "agent " + agent + " is suspended"
	if susp.Rule != "" {
		r += " after guardrail " + susp.Rule + " fired"
	}
	if !susp.SuspendedAt.IsZero() {
		r += " at " + susp.SuspendedAt.UTC().Format(time.RFC3339)
	}
	return r + "; nothing is granted until an admin reinstates it"
}

// denial builds a denial of the request dec is about, carrying its request.
func (s *Service) denial(dec events.Decision, mode, reason string) events.Decision {
	return events.Decision{
		RequestID:     dec.RequestID,
		Agent:         dec.Agent,
		Outcome:       events.OutcomeDenied,
		Mode:          mode,
		Rule:          dec.Rule,
		Reason:        reason,
		Permissions:   dec.Permissions,
		DurationMS:    dec.DurationMS,
		Risk:          dec.Risk,
		ApproverRoles: dec.ApproverRoles,
		DecidedBy:     s.system(),
		DecidedAt:     s.now().UTC(),
		Request:       dec.Request,
	}
}

func (s *Service) denySuspended(ctx context.Context, dec events.Decision, susp *events.Suspension) error {
	d := s.denial(dec, events.ModeSuspended, suspendedReason(dec.Agent, susp))
	if err := s.publishDecision(ctx, events.DecisionEventID(dec.RequestID, "suspended"), d); err != nil {
		return err
	}
	zerolog.Ctx(ctx).Info().Msg("agent suspended; approved decision denied")
	return nil
}

func (s *Service) publishDecision(ctx context.Context, id string, d events.Decision) error {
	_, _, err := s.pub.Emit(ctx, id, events.TypeDecided, d.Agent, d, events.WithRequestID(d.RequestID))
	return err
}

// hold stores a pending decision until a human answers or its deadline
// passes. The key is written only if it never existed, so a redelivered
// pending decision cannot bring back a request that was already answered or
// timed out.
func (s *Service) hold(ctx context.Context, dec events.Decision) error {
	cfg := s.d.Config.Current()
	deadline := dec.DecidedAt.Add(cfg.ApprovalWindow.D())
	if dec.ApprovalDeadline != nil {
		deadline = *dec.ApprovalDeadline
	}
	ar := ruleOf(cfg, dec.Rule)
	if ar.window > 0 && !dec.DecidedAt.IsZero() {
		// The rule's own window, if shorter, wins: never wait longer than
		// either the policy or the rule says.
		if w := dec.DecidedAt.Add(ar.window); w.Before(deadline) {
			deadline = w
		}
	}
	key := broker.PendingKey(dec.Agent, dec.RequestID)
	now := s.now()
	if !now.Before(deadline) {
		h, err := s.everPending(ctx, key)
		if err != nil || h != neverPending {
			return err // stored once: its answer or its time-out marker ends it
		}
		return s.timeOut(ctx, dec.Agent, dec.RequestID, &dec)
	}
	rec := pendingRecord{Pending: events.Pending{Decision: dec, Deadline: deadline.UTC()}, Required: ar.required}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode pending %s: %w", key, err)
	}
	_, err = broker.PutKeepTTL(ctx, s.d.JS, broker.BucketPending, key, b, 0, broker.TTLFor(deadline, now))
	switch {
	case err == nil:
		zerolog.Ctx(ctx).Info().Time("deadline", deadline).Int("approvals", ar.required).Msg("waiting for an approver")
		s.notifyPending(rec, ar.notify)
		return nil
	case errors.Is(err, broker.ErrConflict):
		return nil // stored before (and maybe answered or timed out since)
	default:
		return fmt.Errorf("store pending %s: %w", key, err)
	}
}

// timeOut publishes the time-out denial of a request. dec, if known, is the
// pending decision, whose request the denial carries.
func (s *Service) timeOut(ctx context.Context, agent, requestID string, dec *events.Decision) error {
	base := events.Decision{RequestID: requestID, Agent: agent}
	if dec != nil {
		base = *dec
	}
	d := s.denial(base, events.ModeTimeout, "approval timed out")
	if err := s.publishDecision(ctx, events.DecisionEventID(requestID, "timeout"), d); err != nil {
		return err
	}
	zerolog.Ctx(ctx).Info().Str("agent", agent).Str("request_id", requestID).Msg("approval timed out")
	return nil
}

// listPending returns the requests waiting for a human whose deadline is
// still ahead, soonest deadline first. Every approver sees every request.
func (s *Service) listPending(ctx context.Context) (broker.PendingList, error) {
	entries, err := s.pendingEntries(ctx, ">")
	if err != nil {
		return broker.PendingList{}, err
	}
	now := s.now()
	out := broker.PendingList{Pending: []broker.PendingItem{}}
	for _, e := range entries {
		// Key presence is not enough: TTLs run in whole seconds and expired
		// keys stay readable briefly after a restart.
		if e.rec.Answer != nil || !now.Before(e.rec.Deadline) {
			continue
		}
		out.Pending = append(out.Pending, broker.PendingItem{Decision: e.rec.Decision, Deadline: e.rec.Deadline})
	}
	slices.SortFunc(out.Pending, func(a, b broker.PendingItem) int { return a.Deadline.Compare(b.Deadline) })
	return out, nil
}

// answer records an approver's answer to a pending request and publishes it
// as jit.decided. outcome is events.OutcomeApproved or OutcomeDenied. The
// returned *broker.APIError values are also put on the audit stream as
// jit.rejected.
func (s *Service) answer(ctx context.Context, approver *config.Approver, in broker.ApproveInput, outcome string) (broker.ActionResult, error) {
	a, err := s.Answer(ctx, approver, in, outcome)
	return a.ActionResult, err
}

// Answered is what an answer did: the result the APIs return and, for the
// console's message, what it approves.
type Answered struct {
	broker.ActionResult
	// Permissions and DurationMS are what the request's grant gets (a final
	// approval), what this approver approved (a vote that waits for more),
	// or what was denied.
	Permissions []string
	DurationMS  int64
	// Votes and Required count the approvals so far and needed.
	Votes, Required int
}

// Answer is answer, saying what the answer did (the console words its
// message from it). It runs the steps of an answer in order, each of which
// may end it: validate the input, find the pending request, authorize the
// approver for it, vote (an approval that waits for more approvers ends
// there), settle (record the decision, then publish it). A refusal is an
// *broker.APIError, already recorded as jit.rejected.
func (s *Service) Answer(ctx context.Context, approver *config.Approver, in broker.ApproveInput, outcome string) (Answered, error) {
	a := &answering{approver: approver, actor: service.ApproverActor(approver), in: in, outcome: outcome, verb: "approve"}
	if outcome == events.OutcomeDenied {
		a.verb = "deny"
	}
	a.rej = events.Rejection{Actor: a.actor}
	if err := s.validateAnswer(ctx, a); err != nil {
		return Answered{}, err
	}
	if err := s.findPending(ctx, a); err != nil {
		return Answered{}, err
	}
	if out, done, err := s.authorizeAnswer(ctx, a); done || err != nil {
		return out, err
	}
	if out, done, err := s.vote(ctx, a); done || err != nil {
		return out, err
	}
	return s.settle(ctx, a)
}

// answering is one answer in progress, as its steps fill it in.
type answering struct {
	approver *config.Approver
	actor    events.Actor
	in       broker.ApproveInput
	outcome  string
	verb     string // "approve" or "deny", for messages
	comment  string
	// rej names the request (and agent) in refusals as soon as known.
	rej events.Rejection

	e        pendingEntry    // the pending record, from findPending
	p        events.Decision // its pending decision
	result   broker.ActionResult
	required int // approvals needed

	// perms and ms are what this approver approves (narrowed or not).
	perms []string
	ms    int64
}

// validateAnswer checks the input alone: a valid request id, a bounded
// comment, a comment on a denial, no narrowing on a denial.
func (s *Service) validateAnswer(ctx context.Context, a *answering) error {
	in := a.in
	if !events.ValidID(in.RequestID) {
		return s.refuse(ctx, broker.Errorf(400, events.CodeMalformed,
			"request_id %q is not a valid request id (1-64 letters, digits, '-' or '_')", truncate(in.RequestID, 80)), a.rej)
	}
	a.rej.RequestID = in.RequestID
	if len(in.Comment) > MaxCommentLength {
		return s.refuse(ctx, broker.Errorf(400, events.CodeMalformed,
			"comment is %d bytes; the limit is %d", len(in.Comment), MaxCommentLength), a.rej)
	}
	a.comment = strings.TrimSpace(in.Comment)
	if a.outcome == events.OutcomeDenied && a.comment == "" {
		return s.refuse(ctx, broker.Errorf(400, events.CodeEmptyReason,
			"a denial needs a comment saying why"), a.rej)
	}
	if a.outcome == events.OutcomeDenied && (len(in.Permissions) > 0 || in.Duration != "") {
		return s.refuse(ctx, broker.Errorf(400, events.CodeMalformed,
			"permissions and duration narrow an approval; a denial takes neither"), a.rej)
	}
	return nil
}

// findPending reads the pending record of the request. A request that is
// not pending is refused as gone, and only to an approver who could have
// answered one: someone holding no role that any rule asks for learns
// nothing about it.
func (s *Service) findPending(ctx context.Context, a *answering) error {
	entries, err := s.pendingEntries(ctx, "*."+a.in.RequestID)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		if !s.mayAnswerAny(a.approver) {
			return s.refuse(ctx, broker.Errorf(403, events.CodeForbidden,
				"%s holds %s, and no rule asks an approver with any of these roles", a.approver.Name, RolesList(a.approver.Roles)), a.rej)
		}
		return s.refuse(ctx, s.gone(ctx, a.in.RequestID), withCode(a.rej, events.CodeStale))
	}
	a.e = entries[0]
	a.p = a.e.rec.Decision
	a.rej.Agent = a.p.Agent
	a.result = broker.ActionResult{RequestID: a.p.RequestID, Agent: a.p.Agent, Outcome: a.outcome}
	return nil
}

// authorizeAnswer checks that this approver may answer this request now:
// the rule's role first (so that an approver outside it learns nothing of
// the request's state), then that it is not answered yet (the same
// approver's retry of its own answer finishes it instead: done), the
// deadline, that the approver is neither the agent nor any agent, and the
// rule's separation of duties. It sets the approvals required.
func (s *Service) authorizeAnswer(ctx context.Context, a *answering) (Answered, bool, error) {
	p, approver := a.p, a.approver
	if len(p.ApproverRoles) == 0 || !approver.HasRole(p.ApproverRoles...) {
		return Answered{}, true, s.refuse(ctx, broker.Errorf(403, events.CodeForbidden,
			"to %s request %s an approver needs %s; %s holds %s",
			a.verb, p.RequestID, rolesNeeded(p.ApproverRoles), approver.Name, RolesList(approver.Roles)), a.rej)
	}
	if prior := a.e.rec.Answer; prior != nil {
		// Already answered; the answer may not be published yet (a failed
		// publish or a crash). The same approver's retry finishes it.
		if prior.Mode == events.ModeHuman && prior.DecidedBy.ID == approver.Name && prior.Outcome == a.outcome {
			if err := s.finish(ctx, a.e); err != nil {
				return Answered{}, true, err
			}
			return Answered{ActionResult: a.result, Permissions: prior.Permissions, DurationMS: prior.DurationMS}, true, nil
		}
		return Answered{}, true, s.refuse(ctx, broker.Errorf(409, events.CodeConflict,
			"request %s was already decided (%s by %s); nothing changed", p.RequestID, prior.Outcome, prior.DecidedBy.ID), a.rej)
	}
	if now := s.now(); !now.Before(a.e.rec.Deadline) {
		return Answered{}, true, s.refuse(ctx, broker.Errorf(409, events.CodeStale,
			"approval window closed at %s: the request timed out unanswered", a.e.rec.Deadline.UTC().Format(time.RFC3339)), a.rej)
	}
	cfg := s.d.Config.Current()
	if approver.Name == p.Agent {
		return Answered{}, true, s.refuse(ctx, broker.Errorf(403, events.CodeForbidden,
			"%s may not answer its own request", approver.Name), a.rej)
	}
	if _, isAgent := cfg.Agent(approver.Name); isAgent {
		return Answered{}, true, s.refuse(ctx, broker.Errorf(403, events.CodeForbidden,
			"%s is an agent's identity; an agent can never approve", approver.Name), a.rej)
	}
	ar := ruleOf(cfg, p.Rule)
	if ar.separateOwner {
		if ag, ok := cfg.Agent(p.Agent); ok && approver.Owns(ag.Owner) {
			return Answered{}, true, s.refuse(ctx, broker.Errorf(403, events.CodeForbidden,
				"rule %s separates duties: %s owns agent %s (owner %s) and may not answer its requests; another approver must",
				p.Rule, approver.Name, p.Agent, ag.Owner), a.rej)
		}
	}
	a.required = max(a.e.rec.Required, ar.required)
	return Answered{}, false, nil
}

// vote handles an approval before it can settle the request: the
// narrowing it asks for, a retry of a vote already recorded (its event
// again: done), an agent suspended meanwhile (the request is denied:
// done), and a vote that leaves the request waiting for more approvers
// (recorded and announced: done). A denial passes through.
func (s *Service) vote(ctx context.Context, a *answering) (Answered, bool, error) {
	if a.outcome != events.OutcomeApproved {
		return Answered{}, false, nil
	}
	p, e := a.p, &a.e
	var ae *broker.APIError
	if a.perms, a.ms, ae = narrow(p, a.in); ae != nil {
		return Answered{}, true, s.refuse(ctx, ae, a.rej)
	}
	if v, ok := e.rec.votedBy(a.approver.Name); ok {
		// A retry of a recorded vote: publish its event again (same id).
		if err := s.publishVote(ctx, p, v, len(e.rec.Votes), a.required); err != nil {
			return Answered{}, true, err
		}
		a.result.Outcome = events.OutcomePending
		a.result.Message = fmt.Sprintf("%s already approved; %d of %d approvals, waiting for %d more distinct approvers",
			a.approver.Name, len(e.rec.Votes), a.required, a.required-len(e.rec.Votes))
		return Answered{ActionResult: a.result, Permissions: v.Permissions, DurationMS: v.DurationMS,
			Votes: len(e.rec.Votes), Required: a.required}, true, nil
	}
	susp, err := s.suspension(ctx, p.Agent)
	if err != nil {
		return Answered{}, true, err
	}
	if susp != nil {
		reason := suspendedReason(p.Agent, susp)
		d := s.denial(p, events.ModeSuspended, reason)
		if err := s.record(ctx, e, d, events.DecisionEventID(p.RequestID, "suspended")); err != nil {
			return Answered{}, true, s.lostRace(ctx, a, err)
		}
		if err := s.finish(ctx, *e); err != nil {
			return Answered{}, true, err
		}
		return Answered{}, true, s.refuse(ctx, broker.Errorf(409, events.CodeSuspended,
			"cannot approve request %s: %s; the request is denied", p.RequestID, reason), a.rej)
	}
	v := vote{Approver: a.actor, Comment: a.comment, Permissions: a.perms, DurationMS: a.ms, At: s.now().UTC()}
	if len(e.rec.Votes)+1 < a.required {
		if err := s.recordVote(ctx, e, v); err != nil {
			return Answered{}, true, s.lostRace(ctx, a, err)
		}
		if err := s.publishVote(ctx, p, v, len(e.rec.Votes), a.required); err != nil {
			return Answered{}, true, err
		}
		a.result.Outcome = events.OutcomePending
		a.result.Message = fmt.Sprintf("approval %d of %d recorded; waiting for %d more distinct approvers",
			len(e.rec.Votes), a.required, a.required-len(e.rec.Votes))
		zerolog.Ctx(ctx).Info().Str("request_id", p.RequestID).Int("votes", len(e.rec.Votes)).Int("required", a.required).Msg("approval recorded")
		return Answered{ActionResult: a.result, Permissions: v.Permissions, DurationMS: v.DurationMS,
			Votes: len(e.rec.Votes), Required: a.required}, true, nil
	}
	e.rec.Votes = append(e.rec.Votes, v)
	return Answered{}, false, nil
}

// settle decides the request: the decision (a denial, or the approval of
// what every approver approved) is recorded in the pending record by
// compare-and-set (exactly one answer wins), then the last vote and the
// decision are published and the record deleted. A crash between the
// record and the publication is finished at the next start
// (recoverAnswers).
func (s *Service) settle(ctx context.Context, a *answering) (Answered, error) {
	p, e := a.p, &a.e
	d := events.Decision{
		RequestID:     p.RequestID,
		Agent:         p.Agent,
		Outcome:       a.outcome,
		Mode:          events.ModeHuman,
		Rule:          p.Rule,
		Permissions:   p.Permissions,
		DurationMS:    p.DurationMS,
		Risk:          p.Risk,
		ApproverRoles: p.ApproverRoles,
		Comment:       a.comment,
		DecidedBy:     a.actor,
		DecidedAt:     s.now().UTC(),
		Request:       p.Request,
	}
	if a.outcome == events.OutcomeDenied {
		d.Reason = "denied by " + a.approver.Name + ": " + a.comment
	} else {
		d.Permissions, d.DurationMS = combine(e.rec.Votes)
		d.Reason = "approved by " + approverNames(e.rec.Votes)
		if n := narrowedText(p, d.Permissions, d.DurationMS); n != "" {
			d.Reason += "; " + n
		}
		if len(d.Permissions) == 0 {
			// Each approver narrowed to a different permission: nothing was
			// approved by all of them.
			d.Outcome = events.OutcomeDenied
			d.Permissions, d.DurationMS = p.Permissions, p.DurationMS
			d.Reason = "the approvers (" + approverNames(e.rec.Votes) + ") approved no permission in common"
			a.result.Outcome = events.OutcomeDenied
		}
	}
	if err := s.record(ctx, e, d, events.DecisionEventID(p.RequestID, "human")); err != nil {
		return Answered{}, s.lostRace(ctx, a, err)
	}
	failpoint.Hit(failpoint.ApprovalAfterAnswer)
	if a.outcome == events.OutcomeApproved {
		if err := s.publishVote(ctx, p, e.rec.Votes[len(e.rec.Votes)-1], len(e.rec.Votes), a.required); err != nil {
			return Answered{}, err
		}
	}
	if err := s.finish(ctx, *e); err != nil {
		return Answered{}, err
	}
	if d.Outcome == events.OutcomeApproved {
		a.result.Message = fmt.Sprintf("%s for %s, as grant %s", strings.Join(d.Permissions, ", "),
			events.FormatDuration(events.MSDuration(d.DurationMS)), events.GrantIDFor(p.RequestID))
	}
	zerolog.Ctx(ctx).Info().Str("request_id", p.RequestID).Str("outcome", d.Outcome).Msg("answered")
	return Answered{ActionResult: a.result, Permissions: d.Permissions, DurationMS: d.DurationMS,
		Votes: len(e.rec.Votes), Required: a.required}, nil
}

// lostRace turns a failed write of the pending record into the answer: a
// lost compare-and-set means another answer (or the time-out) came first.
func (s *Service) lostRace(ctx context.Context, a *answering, err error) error {
	if errors.Is(err, broker.ErrConflict) {
		return s.conflict(ctx, a.p.RequestID, a.rej)
	}
	return err
}

// recordVote adds v to the pending record by compare-and-set on the
// revision read, keeping the key's TTL so the request still times out at
// its deadline. A lost race returns a conflict (broker.ErrConflict).
func (s *Service) recordVote(ctx context.Context, e *pendingEntry, v vote) error {
	rec := e.rec
	rec.Votes = append(slices.Clone(rec.Votes), v)
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode pending %s: %w", e.key, err)
	}
	now := s.now()
	rev, err := broker.PutKeepTTL(ctx, s.d.JS, broker.BucketPending, e.key, b, e.rev, broker.TTLFor(rec.Deadline, now))
	if err != nil {
		return fmt.Errorf("record approval in %s: %w", e.key, err)
	}
	e.rec, e.rev = rec, rev
	return nil
}

// publishVote publishes the jit.approved event of one vote; its id is
// derived from the request and the approver, so publishing it again stores
// it once.
func (s *Service) publishVote(ctx context.Context, p events.Decision, v vote, n, required int) error {
	a := events.Approval{
		RequestID: p.RequestID, Agent: p.Agent, Rule: p.Rule, Approver: v.Approver, Comment: v.Comment,
		Permissions: v.Permissions, DurationMS: v.DurationMS, Approvals: n, Required: required, ApprovedAt: v.At,
	}
	_, _, err := s.pub.Emit(ctx, ApprovedEventID(p.RequestID, v.Approver.ID), events.TypeApproved, p.Agent, a,
		events.WithRequestID(p.RequestID))
	return err
}

// gone explains why no request requestID waits: the pending bucket's
// history says whether it timed out or was decided.
func (s *Service) gone(ctx context.Context, requestID string) *broker.APIError {
	m, err := s.pendingStream.GetLastMsgForSubject(ctx, pendingSubjectPrefix+"*."+requestID)
	if err == nil && m != nil {
		if m.Header.Get(jetstream.MarkerReasonHeader) == "MaxAge" {
			return broker.Errorf(409, events.CodeStale,
				"request %s timed out unanswered at %s; it was denied and can no longer be answered", requestID, m.Time.UTC().Format(time.RFC3339))
		}
		return broker.Errorf(409, events.CodeStale,
			"request %s was already decided; nothing changed", requestID)
	}
	return broker.Errorf(404, events.CodeNotFound,
		"no request %s is waiting for approval: it was decided, timed out, or never needed approval", requestID)
}

func (s *Service) conflict(ctx context.Context, requestID string, rej events.Rejection) error {
	return s.refuse(ctx, broker.Errorf(409, events.CodeConflict,
		"request %s was answered by someone else or timed out a moment ago", requestID), rej)
}

// record writes the answer d into the pending record by compare-and-set on
// the revision read. The write has no TTL: an answered request cannot time
// out. A lost race returns a conflict (broker.ErrConflict).
func (s *Service) record(ctx context.Context, e *pendingEntry, d events.Decision, id string) error {
	rec := e.rec
	rec.Answer, rec.AnswerID = &d, id
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode pending %s: %w", e.key, err)
	}
	rev, err := s.d.Buckets.Pending.Update(ctx, e.key, b, e.rev)
	if err != nil {
		return fmt.Errorf("record answer in %s: %w", e.key, err)
	}
	e.rec, e.rev = rec, rev
	return nil
}

// finish publishes an answered record's decision and deletes its key. Both
// steps are safe to repeat.
func (s *Service) finish(ctx context.Context, e pendingEntry) error {
	if err := s.publishDecision(ctx, e.rec.AnswerID, *e.rec.Answer); err != nil {
		return err
	}
	err := s.d.Buckets.Pending.Delete(ctx, e.key, jetstream.LastRevision(e.rev))
	if err != nil && !errors.Is(err, broker.ErrConflict) && !errors.Is(err, broker.ErrNotFound) {
		return fmt.Errorf("delete answered %s: %w", e.key, err)
	}
	return nil
}

// recoverAnswers finishes answers that were recorded but maybe not published
// (the service stopped between the two).
func (s *Service) recoverAnswers(ctx context.Context) error {
	entries, err := s.pendingEntries(ctx, ">")
	if err != nil {
		return err
	}
	for _, e := range entries {
		for i, v := range e.rec.Votes {
			// Votes whose event a crash may have kept from the stream; a
			// recent duplicate is dropped by the stream's de-duplication.
			if err := s.publishVote(ctx, e.rec.Decision, v, i+1, max(e.rec.Required, len(e.rec.Votes))); err != nil {
				return fmt.Errorf("publish approval of %s: %w", e.key, err)
			}
		}
		if e.rec.Answer == nil || e.rec.AnswerID == "" {
			continue
		}
		if err := s.finish(ctx, e); err != nil {
			return fmt.Errorf("finish answer of %s: %w", e.key, err)
		}
		s.log.Info().Str("key", e.key).Str("event_id", e.rec.AnswerID).Msg("published an answer recorded before a restart")
	}
	return nil
}

// refuse records an API refusal at stage approval
// (service.RecordRefusal) and returns ae, the answer.
func (s *Service) refuse(ctx context.Context, ae *broker.APIError, r events.Rejection) error {
	service.RecordRefusal(ctx, s.pub, s.now(), events.StageApproval, ae, r)
	return ae
}

func withCode(r events.Rejection, code string) events.Rejection {
	r.Code = code
	return r
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// mayAnswerAny reports whether the approver holds a role that some
// require-approval rule of the active configuration asks for.
func (s *Service) mayAnswerAny(approver *config.Approver) bool {
	cfg := s.d.Config.Current()
	if cfg == nil {
		return false
	}
	for i := range cfg.Rules {
		if r := &cfg.Rules[i]; r.Mode == config.ModeRequireApproval && approver.HasRole(r.ApproverRoles...) {
			return true
		}
	}
	return false
}
