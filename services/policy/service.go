// Package policy is the JIT system's decision: it reads every jit.requested
// event from its durable consumer, decides it with the active configuration
// (Decide) and publishes one jit.decided event per request.
package policy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
	"github.com/rs/zerolog"
)

// Durable is the name of the policy service's durable consumer on the audit
// stream.
const Durable = "policy"

// DecisionHow is the "how" of the policy's decision event ids:
// events.DecisionEventID(requestID, DecisionHow) = "<request_id>/policy".
const DecisionHow = "policy"

// Service is the policy service.
type Service struct {
	d   service.Deps
	pub *broker.Publisher
	now func() time.Time
	log zerolog.Logger

	hist *History

	guard    service.StartGuard
	mu       sync.Mutex
	consumer *broker.Consumer
	api      *service.API
	// saving closes to stop the snapshot loop, which then closes saved.
	saving, saved chan struct{}
}

// New returns a policy service that consumes and publishes with d.JS,
// decides with d.Config and reads suspensions from d.Buckets.Suspensions.
// It does nothing until Start.
func New(d service.Deps) *Service {
	return &Service{
		d:    d,
		pub:  broker.NewPublisher(d.JS, "policy"),
		hist: NewHistory(),
		now:  d.Clock(),
		log:  d.Log.With().Str("component", "policy").Logger(),
	}
}

// History returns the service's window on agents' recent history.
func (s *Service) History() *History { return s.hist }

// decide decides one request, read at stream sequence seq and stored by the
// broker at time at, and publishes the decision with the derived id "<request_id>/policy",
// so that a redelivered request is stored once (within the audit stream's
// duplicate window). It first waits until the history window has seen every
// event before seq, so that the agent's history (and the rate limit) counts
// exactly the events before this request. The configuration is read once:
// a change applied meanwhile decides the next request, never half of this
// one. An error is transient: the caller naks and the request is decided
// again.
func (s *Service) decide(ctx context.Context, req events.Request, seq uint64, at time.Time, log zerolog.Logger) error {
	cfg := s.d.Config.Current()
	if cfg == nil {
		return errors.New("no active configuration")
	}
	suspended, err := s.suspended(ctx, req.Agent, log)
	if err != nil {
		return err
	}
	if err := s.hist.WaitFor(ctx, seq); err != nil {
		return err
	}
	now := s.now()
	in := Input{Request: req, Now: now, Suspended: suspended,
		History: s.hist.Counts(req.Agent, seq, at, cfg.RateLimit.Per.D())}
	dec := Evaluate(cfg, in)
	id := events.DecisionEventID(req.RequestID, DecisionHow)
	_, decSeq, err := s.pub.Emit(ctx, id, events.TypeDecided, req.Agent, dec,
		events.WithRequestID(req.RequestID), events.WithTime(now.UTC()))
	if err != nil {
		return fmt.Errorf("publish decision %s: %w", id, err)
	}
	// Approvals are routine and on the audit stream; denials and requests
	// that page a human are worth an operator's eye.
	l := log.Debug()
	if dec.Outcome != events.OutcomeApproved {
		l = log.Info()
	}
	if dec.Risk != nil {
		l = l.Int("risk", dec.Risk.Score)
	}
	l.Str("outcome", dec.Outcome).Str("mode", dec.Mode).Str("rule", dec.Rule).Uint64("decision_seq", decSeq).Msg(dec.Reason)
	return nil
}

// suspended reads the agent's suspension. A record that exists but cannot
// be decoded counts as a suspension: fail closed.
func (s *Service) suspended(ctx context.Context, agent string, log zerolog.Logger) (bool, error) {
	sus, err := s.d.Suspension(ctx, agent)
	if err != nil {
		return false, err
	}
	if sus != nil && sus.Rule == "" && sus.SuspendedAt.IsZero() {
		log.Warn().Msg("unreadable suspension record; treating the agent as suspended")
	}
	return sus != nil, nil
}
