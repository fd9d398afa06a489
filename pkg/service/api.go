package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/tracing"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
)

// DefaultAPITimeout bounds one API call's work.
const DefaultAPITimeout = 10 * time.Second

// Call is what an endpoint's handler learns of one call besides its body.
type Call struct {
	// Caller is who called, as the broker says (auth.CallerOf).
	Caller auth.Caller
	// Approver is the approver the call's token names, for endpoints that
	// need one (Endpoint.Approver); nil otherwise.
	Approver *config.Approver
	// Actor is the caller as events name it: the approver, the agent, or
	// the principal.
	Actor events.Actor
	// Headers are the request's headers.
	Headers micro.Headers
}

// Agent is the calling agent's id for a call from an agent principal, or
// named (a body field) for an internal call, which is trusted to say; it
// refuses (403) any other caller and an agent naming another agent.
func (c Call) Agent(named string) (string, error) {
	switch {
	case c.Caller.Internal:
		if !events.ValidID(named) {
			return "", broker.Errorf(404, events.CodeUnknownAgent, "unknown agent: the agent must be a configured service account id (1-64 letters, digits, '-' or '_')")
		}
		return named, nil
	case c.Caller.Principal.Kind != auth.KindAgent:
		return "", broker.Errorf(403, events.CodeForbidden, "%s is not an agent: only an agent's own credential may do this", c.Caller.Principal)
	case named != "" && named != c.Caller.Principal.ID:
		return "", broker.Errorf(403, events.CodeForbidden, "the credential is agent %s's; it may not act as agent %s", c.Caller.Principal.ID, truncate(named, 64))
	}
	return c.Caller.Principal.ID, nil
}

// Endpoint describes one request-reply API endpoint: who may call it and
// what it does. Every endpoint of every service is served through Serve, so
// that decoding, deadlines, identity, refusal and its audit event are the
// same everywhere.
type Endpoint[In any] struct {
	// Name is the micro endpoint's name; Subject its subject.
	Name, Subject string
	// Stage is the stage of the jit.rejected events its refusals publish.
	Stage string
	// Kinds are the client principal kinds that may call it; internal
	// calls (services, the administrator, servers without accounts) always
	// may. The broker's imports already hold each principal to its
	// endpoints: this is the second lock of the same door.
	Kinds []string
	// Approver, if set, requires an approver token (broker.HeaderToken)
	// naming an approver who holds one of Roles (any role if empty).
	Approver bool
	Roles    []string
	// EmptyBody accepts a call without a body (In's zero value).
	EmptyBody bool
	// MaxBody bounds the body (broker.MaxAPIBody if zero).
	MaxBody int
	// Concurrency, above 1, handles that many calls at once
	// (broker.Concurrent).
	Concurrency int
	// Describe, if set, tells what the jit.rejected event of a refusal made
	// before the handler runs (no identity, not allowed, a wrong token, a
	// body that does not decode) should say besides the error: for example
	// the agent and request id a lenient read of the body finds, so that
	// the refusal names what the call was about. By default it names the
	// caller.
	Describe func(c Call, data []byte) events.Rejection
	// Handle does the work. A *Refused error is answered and published as
	// jit.rejected; another *broker.APIError is answered as is (the handler
	// recorded it); any other error is answered 500 and logged.
	Handle func(ctx context.Context, c Call, in In) (any, error)
}

// Refused is a refusal a handler returns: the answer and what the
// jit.rejected event says besides (agent, request, grant).
type Refused struct {
	*broker.APIError
	Rejection events.Rejection
}

// Unwrap lets errors.As find the *broker.APIError.
func (r *Refused) Unwrap() error { return r.APIError }

// Refuse returns a *Refused for ae with the event details in r.
func Refuse(ae *broker.APIError, r events.Rejection) error {
	return &Refused{APIError: ae, Rejection: r}
}

// API serves a service's endpoints on its micro service and records their
// refusals. It holds the service's in-flight gate: Close refuses new calls
// with 503 and waits for the calls in flight.
type API struct {
	svc     micro.Service
	name    string // the service's ("requester"), for its spans
	d       Deps
	pub     *broker.Publisher
	log     zerolog.Logger
	now     func() time.Time
	timeout time.Duration
	appr    *Approvers

	mu       sync.Mutex
	ctx      context.Context
	closed   bool
	inflight sync.WaitGroup
}

// APIConfig configures NewAPI.
type APIConfig struct {
	// Name is the micro service's name ("jit-requester"); its queue group
	// is the same, so replicas share the calls.
	Name, Description string
	// Publisher records refusals.
	Publisher *broker.Publisher
	// Timeout bounds each call (DefaultAPITimeout if zero).
	Timeout time.Duration
	// Approvers checks the approver tokens of endpoints that take one
	// (Endpoint.Approver); nil makes one of the API's own. A service that
	// also takes tokens another way (the approval service's HTTP side)
	// passes the one it uses there, so both share a lockout.
	Approvers *Approvers
}

// NewAPI starts the micro service of a service on d.NC. ctx bounds every
// call's work (with the timeout).
func NewAPI(ctx context.Context, d Deps, c APIConfig) (*API, error) {
	svc, err := micro.AddService(d.NC, micro.Config{
		Name: c.Name, Version: Version, Description: c.Description, QueueGroup: c.Name,
		StatsHandler: statsHandler(serviceName(c.Name), &d),
	})
	if err != nil {
		return nil, fmt.Errorf("api service %s: %w", c.Name, err)
	}
	if err := addStatusEndpoint(svc, serviceName(c.Name), d); err != nil {
		return nil, err
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultAPITimeout
	}
	if c.Approvers == nil {
		c.Approvers = NewApprovers(d, c.Publisher, "")
	}
	return &API{
		svc: svc, name: serviceName(c.Name), d: d, pub: c.Publisher, now: d.Clock(), timeout: c.Timeout, ctx: ctx,
		log:  d.Log,
		appr: c.Approvers,
	}, nil
}

// Version is the version the services announce on the services API.
const Version = "0.2.0"

// Serve adds ep to a's micro service. An endpoint agents may call is also
// served on broker.AgentSubject("*", ep.Subject), where each agent
// account's import delivers that agent's calls; the caller of those is
// the agent the subject names (auth.AgentCaller).
func Serve[In any](a *API, ep Endpoint[In]) error {
	add := func(name, subject string, h micro.Handler) error {
		if ep.Concurrency > 1 {
			h = broker.Concurrent(a.d.NC, ep.Concurrency, h)
		}
		if err := a.svc.AddEndpoint(name, h, micro.WithEndpointSubject(subject)); err != nil {
			return fmt.Errorf("endpoint %s: %w", subject, err)
		}
		return nil
	}
	if err := add(ep.Name, ep.Subject, micro.HandlerFunc(func(req micro.Request) { serve(a, ep, req, "") })); err != nil {
		return err
	}
	if slices.Contains(ep.Kinds, auth.KindAgent) {
		err := add(ep.Name+"-agent", broker.AgentSubject("*", ep.Subject), micro.HandlerFunc(func(req micro.Request) {
			agent, ok := broker.AgentOfAPISubject(req.Subject(), ep.Subject)
			if !ok {
				agent = events.UnknownAgent
			}
			serve(a, ep, req, agent)
		}))
		if err != nil {
			return err
		}
	}
	a.flush(ep.Subject)
	return nil
}

// flush waits until the server has the endpoint's subscription, so that a
// call made on another connection once the service has started is
// answered rather than refused with "no responders". A connection that is
// reconnecting sends the subscription when it is back; that is logged, not
// fatal.
func (a *API) flush(subject string) {
	if err := a.d.NC.FlushTimeout(flushTimeout); err != nil {
		a.log.Warn().Err(err).Str("api", subject).Msg("endpoint registered while the connection is not ready; it answers once reconnected")
	}
}

// flushTimeout bounds flush.
const flushTimeout = 5 * time.Second

// ServeRaw adds an endpoint whose handler reads the request and answers it
// itself (for replies that are not the API's JSON, such as the JetStream
// acknowledgement the guardrail ingress sends). It still runs behind a's
// gate and under its deadline.
func ServeRaw(a *API, name, subject string, h func(ctx context.Context, req micro.Request)) error {
	err := a.svc.AddEndpoint(name, micro.HandlerFunc(func(req micro.Request) {
		if !a.enter() {
			_ = req.Error("503", "the service is stopping; retry", nil)
			return
		}
		defer a.inflight.Done()
		ctx, cancel := context.WithTimeout(a.ctx, a.timeout)
		defer cancel()
		h(ctx, req)
	}), micro.WithEndpointSubject(subject))
	if err != nil {
		return fmt.Errorf("endpoint %s: %w", subject, err)
	}
	a.flush(subject)
	return nil
}

// Close stops answering (calls that still arrive are answered 503) and
// waits for the calls in flight. It is safe to call more than once.
func (a *API) Close() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.closed = true
	a.mu.Unlock()
	if err := a.svc.Stop(); err != nil {
		a.log.Warn().Err(err).Msg("stop api")
	}
	a.inflight.Wait()
}

func (a *API) enter() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false
	}
	a.inflight.Add(1)
	return true
}

// serve is the one path of every call: gate → deadline → identity →
// who may call → lockout → approver → body → handler → answer, with every
// refusal answered and published once.
func serve[In any](a *API, ep Endpoint[In], req micro.Request, agent string) {
	if !a.enter() {
		broker.Respond(req, nil, broker.Errorf(503, events.CodeUnavailable, "the service is stopping; retry"))
		return
	}
	defer a.inflight.Done()
	ctx, cancel := context.WithTimeout(a.ctx, a.timeout)
	defer cancel()
	log := a.log.With().Str("api", ep.Subject).Logger()
	ctx = log.WithContext(ctx)

	start := time.Now()
	ctx, end := traceCall(ctx, a, ep.Subject, req.Data())
	out, err := call(ctx, a, ep, req, agent)
	end(err)
	observeCall(ep.Subject, start, err)
	var rf *Refused
	var ae *broker.APIError
	switch {
	case err == nil:
	case errors.As(err, &rf):
		a.record(ctx, ep.Stage, rf)
		log.Info().Int("status", rf.Status).Str("code", rf.Code).Msg(rf.Message)
	case errors.As(err, &ae):
		log.Info().Int("status", ae.Status).Str("code", ae.Code).Msg(ae.Message)
	default:
		log.Error().Err(err).Msg("request failed")
	}
	broker.Respond(req, out, err)
}

// traceCall starts the span of a call (tracing.StartCall), in the trace of
// the request its body names by "request_id", read only when tracing is
// on: the events the call writes then join the request's trace.
func traceCall(ctx context.Context, a *API, subject string, body []byte) (context.Context, func(error)) {
	if !tracing.Enabled() {
		return ctx, func(error) {}
	}
	var v struct {
		RequestID string `json:"request_id"`
	}
	_ = json.Unmarshal(body, &v)
	return tracing.StartCall(ctx, a.name, subject, v.RequestID)
}

func call[In any](ctx context.Context, a *API, ep Endpoint[In], req micro.Request, agent string) (any, error) {
	about := func(c Call) events.Rejection {
		r := events.Rejection{Actor: c.Actor}
		if ep.Describe != nil {
			r = ep.Describe(c, req.Data())
			if r.Actor.Kind == "" {
				r.Actor = c.Actor
			}
		}
		if r.Stage == "" {
			// Also for refusals recorded before the answer (a lockout).
			r.Stage = ep.Stage
		}
		return r
	}
	var caller auth.Caller
	var err error
	if agent != "" {
		// Arrived on the agent's own subject (Serve).
		caller, err = auth.AgentCaller(agent, req.Headers())
	} else {
		caller, err = auth.CallerOf(req.Headers())
	}
	if err != nil {
		return nil, Refuse(broker.Errorf(401, events.CodeUnauthenticated, "%v", err), about(Call{}))
	}
	c := Call{Caller: caller, Headers: req.Headers(), Actor: ActorOf(caller)}
	if !caller.Internal && !slices.Contains(ep.Kinds, caller.Principal.Kind) {
		return nil, Refuse(broker.Errorf(403, events.CodeForbidden, "%s may not call %s", caller.Principal, ep.Subject), about(c))
	}
	if ep.Approver {
		anon := c
		if c.Caller.Internal {
			anon.Actor = events.Actor{Kind: events.ActorApprover, ID: events.UnknownAgent}
		}
		appr, err := a.approver(ctx, c, req.Headers().Get(broker.HeaderToken), ep.Roles, about(anon))
		if err != nil {
			return nil, err
		}
		c.Approver = appr
		c.Actor = ApproverActor(appr)
	}
	var in In
	if !ep.EmptyBody || len(bytes.TrimSpace(req.Data())) > 0 {
		max := ep.MaxBody
		if max <= 0 {
			max = broker.MaxAPIBody
		}
		if err := broker.DecodeInputLimit(req.Data(), &in, max); err != nil {
			var ae *broker.APIError
			if !errors.As(err, &ae) {
				ae = broker.Errorf(400, events.CodeMalformed, "malformed request body: %v", err)
			}
			return nil, Refuse(ae, about(c))
		}
	}
	return ep.Handle(ctx, c, in)
}

// approver authenticates the approver token of a call (Approvers): the
// lockout counts wrong tokens per NATS user; an internal call is not
// counted.
func (a *API) approver(ctx context.Context, c Call, token string, roles []string, anonymous events.Rejection) (*config.Approver, error) {
	p := Presented{Token: token, Caller: c.Caller.Principal.String(),
		Missing: fmt.Sprintf("no approver token: pass it in the %s header (jitctl: JIT_TOKEN)", broker.HeaderToken)}
	if !c.Caller.Internal {
		p.Key = "user:" + c.Caller.User
	}
	return a.appr.Authenticate(ctx, p, roles, anonymous)
}

// record publishes a refusal as jit.rejected at stage (the endpoint's if
// empty).
func (a *API) record(ctx context.Context, stage string, rf *Refused) {
	RecordRefusal(ctx, a.pub, a.now(), stage, rf.APIError, rf.Rejection)
}

// RecordRefusal is the one way a refusal becomes a jit.rejected event: r
// with, where r leaves them empty, stage, ae's code, the time now and (for
// an unnamed caller) the system actor "unidentified", and always ae's
// message. Serve calls it for every *Refused; code that refuses outside a
// NATS call (the approval service's HTTP side, a consumer) calls it too. A
// failure to publish is logged, not returned: the caller still gets its
// answer.
func RecordRefusal(ctx context.Context, pub *broker.Publisher, now time.Time, stage string, ae *broker.APIError, r events.Rejection) {
	if r.Stage == "" {
		r.Stage = stage
	}
	if r.Code == "" {
		r.Code = ae.Code
	}
	r.Message = ae.Message
	if r.RejectedAt.IsZero() {
		r.RejectedAt = now.UTC()
	}
	if r.Actor.Kind == "" {
		r.Actor = events.Actor{Kind: events.ActorSystem, ID: "unidentified"}
	}
	if r.Agent == "" && r.Actor.Kind == events.ActorAgent && events.ValidID(r.Actor.ID) {
		r.Agent = r.Actor.ID
	}
	if err := pub.Reject(ctx, events.NewID("rej"), r); err != nil {
		zerolog.Ctx(ctx).Error().Err(err).Str("stage", r.Stage).Str("code", r.Code).Msg("could not publish jit.rejected")
	}
}

// Record publishes a refusal that a handler decided outside an endpoint
// call (for example a consumer's), at stage.
func (a *API) Record(ctx context.Context, stage string, err error) {
	var rf *Refused
	if errors.As(err, &rf) {
		a.record(ctx, stage, rf)
	}
}

// ActorOf names a caller as events do: an agent or guardrail source by its
// id, another client principal by its kind, an internal caller as the
// system.
func ActorOf(c auth.Caller) events.Actor {
	switch {
	case c.Internal:
		return events.Actor{Kind: events.ActorSystem, ID: "internal"}
	case c.Principal.Kind == auth.KindAgent:
		return events.Actor{Kind: events.ActorAgent, ID: c.Principal.ID}
	case c.Principal.Kind == auth.KindGuardrail:
		return events.Actor{Kind: events.ActorGuardrail, ID: c.Principal.ID}
	}
	return events.Actor{Kind: c.Principal.Kind, ID: c.Principal.ID}
}

// ApproverActor names an approver as events do.
func ApproverActor(a *config.Approver) events.Actor {
	return events.Actor{Kind: events.ActorApprover, ID: a.Name, Roles: slices.Clone(a.Roles)}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func withActor(r events.Rejection, a events.Actor) events.Rejection {
	r.Actor = a
	return r
}
