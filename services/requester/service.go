// Package requester is the agent-facing edge of the JIT system: it serves
// jitapi.request, checks each request against the agent's service account
// and publishes an accepted request as jit.requested.<agent>. Every refusal
// is answered with an error naming the limit that was hit and recorded as
// jit.rejected.
package requester

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
	"github.com/rs/zerolog"
)

// Limits on a request, checked at the edge.
const (
	// MaxReasonLen is the longest reason, in characters.
	MaxReasonLen = 1024
	// MinDuration is the shortest grant that may be requested.
	MinDuration = time.Second
	// MaxContextEntries bounds the context map.
	MaxContextEntries = 32
	// MaxContextKeyLen and MaxContextValueLen bound each context entry, in
	// characters.
	MaxContextKeyLen   = 64
	MaxContextValueLen = 512
)

// reservedIDPrefixes are prefixes of event ids the system derives without a
// '/' (rejections, configuration changes). A client-chosen request id with
// one of them could claim a future event's id and have that event dropped by
// the audit stream's de-duplication, so they are refused.
var reservedIDPrefixes = []string{"rej_", "cfg_"}

// Service is the requester. It is safe for concurrent use; replicas share
// the endpoints through the jit-requester queue group.
type Service struct {
	d   service.Deps
	pub *broker.Publisher
	now func() time.Time
	log zerolog.Logger

	guard  service.StartGuard
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
	api    *service.API
}

// New returns a requester that publishes with d.JS and checks requests
// against d.Config and d.Buckets.Suspensions. It does nothing until Start.
func New(d service.Deps) *Service {
	return &Service{
		d:   d,
		pub: broker.NewPublisher(d.JS, "requester"),
		now: d.Clock(),
		log: d.Log.With().Str("component", "requester").Logger(),
	}
}

// accepted is a request that passed every check.
type accepted struct {
	agent    *config.Agent
	duration time.Duration
}

// Request checks in on behalf of actor and, if it passes, publishes it as
// jit.requested. It returns the request id and the audit stream sequence of
// the event; a retry with the same request id is stored once and returns the
// original sequence. A refusal is an *broker.APIError (4xx) and is recorded
// as jit.rejected; a broker failure is returned as is (answered as 500).
func (s *Service) Request(ctx context.Context, actor events.Actor, in broker.RequestInput) (broker.RequestAccepted, error) {
	ok, err := s.check(ctx, actor, in)
	if err != nil {
		s.reject(ctx, actor, in, err)
		return broker.RequestAccepted{}, err
	}
	id := in.RequestID
	if id == "" {
		id = events.NewID("req")
	}
	data := events.Request{
		RequestID:   id,
		Agent:       actor.ID,
		Permissions: in.Permissions,
		DurationMS:  ok.duration.Milliseconds(),
		Reason:      in.Reason,
		Context:     in.Context,
		RequestedBy: actor,
		RequestedAt: s.now().UTC(),
	}
	_, seq, err := s.pub.EmitChecked(ctx, id, events.TypeRequested, actor.ID, data, sameRequest(data), events.WithRequestID(id))
	if errors.Is(err, broker.ErrForeignDuplicate) {
		// The id is another agent's request (another subject).
		err = requestIDTaken(id)
	}
	var ae *broker.APIError
	if errors.As(err, &ae) {
		s.reject(ctx, actor, in, err)
		return broker.RequestAccepted{}, err
	}
	if err != nil {
		return broker.RequestAccepted{}, fmt.Errorf("publish request %s: %w", id, err)
	}
	return broker.RequestAccepted{RequestID: id, Seq: seq}, nil
}

// sameRequest is the duplicate check of a request id: a retry of the same
// request (same agent, permissions, duration, reason and context) is stored
// once and answered with the original sequence; the same id with another
// agent or another body is a 409.
func sameRequest(want events.Request) func(events.Event) error {
	return func(stored events.Event) error {
		got, err := events.DataAs[events.Request](stored)
		if err != nil || got.Agent != want.Agent || !slices.Equal(got.Permissions, want.Permissions) ||
			got.DurationMS != want.DurationMS || got.Reason != want.Reason || !maps.Equal(got.Context, want.Context) {
			return requestIDTaken(want.RequestID)
		}
		return nil
	}
}

func requestIDTaken(id string) *broker.APIError {
	return broker.Errorf(409, events.CodeConflict,
		"request_id %s was already used for another request; a retry must repeat the same agent, permissions, duration, reason and context, and a new request needs a new id", id)
}

// check runs the checks of docs/architecture.md "Request" in order and
// returns the first failure as an *broker.APIError.
func (s *Service) check(ctx context.Context, actor events.Actor, in broker.RequestInput) (accepted, error) {
	if err := checkShape(in); err != nil {
		return accepted{}, err
	}
	agent, err := checkAgent(s.d.Config.Current(), actor)
	if err != nil {
		return accepted{}, err
	}
	if err := s.checkSuspended(ctx, agent.ID); err != nil {
		return accepted{}, err
	}
	dur, err := checkRequest(agent, in)
	if err != nil {
		return accepted{}, err
	}
	return accepted{agent: agent, duration: dur}, nil
}

// checkShape checks what the body must be regardless of the agent.
func checkShape(in broker.RequestInput) error {
	if in.RequestID == "" {
		return nil
	}
	if !events.ValidID(in.RequestID) {
		return broker.Errorf(400, events.CodeMalformed, "request_id %s must be 1-64 letters, digits, '-' or '_', starting with a letter or digit", quote(in.RequestID))
	}
	for _, p := range reservedIDPrefixes {
		if strings.HasPrefix(in.RequestID, p) {
			return broker.Errorf(400, events.CodeMalformed, "request_id %s uses the reserved prefix %q", quote(in.RequestID), p)
		}
	}
	return nil
}

// checkAgent returns the configured agent the actor names.
func checkAgent(cfg *config.Config, actor events.Actor) (*config.Agent, error) {
	if cfg == nil {
		return nil, errors.New("no active configuration")
	}
	if actor.Kind != events.ActorAgent || !events.ValidID(actor.ID) {
		return nil, broker.Errorf(404, events.CodeUnknownAgent, "unknown agent: the agent must be a configured service account id (1-64 letters, digits, '-' or '_')")
	}
	a, ok := cfg.Agent(actor.ID)
	if !ok {
		return nil, broker.Errorf(404, events.CodeUnknownAgent, "unknown agent %s", actor.ID)
	}
	return a, nil
}

// checkSuspended refuses a suspended agent. A suspension record that cannot
// be read refuses the request too (fail closed), as an internal error.
func (s *Service) checkSuspended(ctx context.Context, agent string) error {
	sus, err := s.d.Suspension(ctx, agent)
	if err != nil || sus == nil {
		return err
	}
	if sus.Rule == "" {
		return broker.Errorf(403, events.CodeSuspended,
			"agent %s is suspended; an org-admin or security-admin must reinstate it", agent)
	}
	return broker.Errorf(403, events.CodeSuspended,
		"agent %s is suspended since %s by guardrail %s; an org-admin or security-admin must reinstate it",
		agent, sus.SuspendedAt.UTC().Format(time.RFC3339), sus.Rule)
}

// checkRequest checks the reason, permissions, duration and context of a
// request by a known agent and returns the parsed duration.
func checkRequest(agent *config.Agent, in broker.RequestInput) (time.Duration, error) {
	if strings.TrimSpace(in.Reason) == "" {
		return 0, broker.Errorf(400, events.CodeEmptyReason, "reason is empty: say why %s needs the permissions", agent.ID)
	}
	if n := utf8.RuneCountInString(in.Reason); n > MaxReasonLen {
		return 0, broker.Errorf(400, events.CodeReasonTooLong, "reason is %d characters; the limit is %d", n, MaxReasonLen)
	}
	if len(in.Permissions) == 0 {
		return 0, broker.Errorf(400, events.CodeMalformed, "permissions is empty: name at least one of %s", eligibleList(agent))
	}
	seen := make(map[string]bool, len(in.Permissions))
	for _, p := range in.Permissions {
		if seen[p] {
			return 0, broker.Errorf(400, events.CodeMalformed, "permission %s is requested twice", quote(p))
		}
		seen[p] = true
		if !agent.IsEligible(p) {
			return 0, broker.Errorf(403, events.CodeNotEligible, "agent %s is not eligible for %s (eligible: %s)", agent.ID, quote(p), eligibleList(agent))
		}
	}
	dur, err := time.ParseDuration(in.Duration)
	if err != nil {
		return 0, broker.Errorf(400, events.CodeInvalidDuration, "duration %s is not a duration such as \"30m\" or \"1h\"", quote(in.Duration))
	}
	if dur < MinDuration {
		return 0, broker.Errorf(400, events.CodeInvalidDuration, "duration %s is below the minimum of %s", events.FormatDuration(dur), events.FormatDuration(MinDuration))
	}
	if max := agent.MaxJitDuration.D(); dur > max {
		return 0, broker.Errorf(403, events.CodeDurationExceeded, "%s exceeds the maxJitDuration of %s (%s)", events.FormatDuration(dur), agent.ID, events.FormatDuration(max))
	}
	if n := len(in.Context); n > MaxContextEntries {
		return 0, broker.Errorf(400, events.CodeMalformed, "context has %d entries; the limit is %d", n, MaxContextEntries)
	}
	for k, v := range in.Context {
		if n := utf8.RuneCountInString(k); n > MaxContextKeyLen {
			return 0, broker.Errorf(400, events.CodeMalformed, "context key %s is %d characters; the limit is %d", quote(k), n, MaxContextKeyLen)
		}
		if n := utf8.RuneCountInString(v); n > MaxContextValueLen {
			return 0, broker.Errorf(400, events.CodeMalformed, "context value of %s is %d characters; the limit is %d", quote(k), n, MaxContextValueLen)
		}
	}
	return dur, nil
}

// reject records a refusal as jit.rejected. Internal errors are not
// refusals of the input and are only logged by the caller.
func (s *Service) reject(ctx context.Context, actor events.Actor, in broker.RequestInput, err error) {
	var ae *broker.APIError
	if !errors.As(err, &ae) || ae.Status >= 500 {
		return
	}
	r := events.Rejection{
		Stage:      events.StageRequest,
		Code:       ae.Code,
		Message:    ae.Message,
		Actor:      actor,
		RejectedAt: s.now().UTC(),
	}
	if events.ValidID(actor.ID) {
		r.Agent = actor.ID
	}
	if in.RequestID != "" && checkShape(in) == nil {
		r.RequestID = in.RequestID
	}
	if perr := s.pub.Reject(ctx, events.NewID("rej"), r); perr != nil {
		s.log.Error().Err(perr).Str("code", ae.Code).Msg("could not record jit.rejected")
	}
}

func eligibleList(a *config.Agent) string {
	if len(a.Eligible) == 0 {
		return "none"
	}
	return strings.Join(a.Eligible, ", ")
}

// quote quotes untrusted input for a message, cut to a readable length.
func quote(s string) string {
	const max = 80
	if utf8.RuneCountInString(s) > max {
		r := []rune(s)
		return fmt.Sprintf("%q…", string(r[:max]))
	}
	return fmt.Sprintf("%q", s)
}
