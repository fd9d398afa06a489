// Package sdk is the agent side of the JIT system: an agent asks for
// permissions with Client.Request, which blocks until the request is
// decided, and gets a Grant that tells its expiry, signals the moment it
// ends for any reason (Revoked), and can be ended early (Done).
//
// The client needs only a NATS connection with the agent's credential; it
// speaks the documented API (jitapi.request, jitapi.withdraw, jitapi.done,
// jitapi.events) and follows the agent's own events live (jitlive.jit.*.<agent>),
// catching up through jitapi.events whatever it missed, so it keeps working
// across NATS reconnects and the restart of any JIT service while it waits.
// An agent may create no consumer and read no other agent's events: the
// broker's permissions hold it to its own.
package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// Named errors; match them with errors.Is.
var (
	// ErrDenied: the request was decided and denied (*DeniedError says why).
	ErrDenied = errors.New("request denied")
	// ErrRefused: the requester refused the request's input, or the agent
	// is suspended (*RefusedError says why).
	ErrRefused = errors.New("request refused")
	// ErrSuspended: the agent is suspended; a *RefusedError also matches
	// ErrRefused.
	ErrSuspended = errors.New("agent suspended")
)

// DeniedError is a request that was decided and denied: by policy, by a
// human, by the approval window closing, or because it was withdrawn.
type DeniedError struct {
	RequestID string
	// Mode is how it was decided: deny, default-deny, policy, human,
	// timeout, suspended, withdrawn.
	Mode   string
	Rule   string
	Reason string
	// Decision is the whole jit.decided data.
	Decision events.Decision
}

func (e *DeniedError) Error() string {
	how := e.Mode
	if e.Rule != "" {
		how += ", rule " + e.Rule
	}
	return fmt.Sprintf("request %s denied (%s): %s", e.RequestID, how, e.Reason)
}

// Is makes errors.Is(err, ErrDenied) hold.
func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

// RefusedError is a request the requester refused before any decision:
// bad input (unknown agent, permission not eligible, duration too long,
// empty reason) or a suspended agent. Nothing was stored but a jit.rejected
// audit event.
type RefusedError struct {
	Status  int    // HTTP-like status: 400, 403, 404, 413
	Code    string // an events.Code… value, e.g. not_eligible, suspended
	Message string
}

func (e *RefusedError) Error() string { return "request refused: " + e.Message }

// Is makes errors.Is(err, ErrRefused) hold, and ErrSuspended for a
// suspended agent.
func (e *RefusedError) Is(target error) bool {
	return target == ErrRefused || (target == ErrSuspended && e.Code == events.CodeSuspended)
}

// Option configures a Client.
type Option func(*Client)

// WithLogger sets the client's logger (default: discard).
func WithLogger(log zerolog.Logger) Option { return func(c *Client) { c.log = log } }

// WithCallTimeout bounds each API call (default 5s); a call that times out
// is retried until the caller's context ends.
func WithCallTimeout(d time.Duration) Option { return func(c *Client) { c.callTimeout = d } }

// WithResync sets how often a waiting client asks for the agent's events
// besides following them live (default broker.DefaultResync): the longest
// an event lost on the way (a reconnect) arrives late.
func WithResync(d time.Duration) Option { return func(c *Client) { c.resync = d } }

// Client asks for elevation on behalf of one agent. It is safe for
// concurrent use.
type Client struct {
	nc          *nats.Conn
	agent       string
	log         zerolog.Logger
	callTimeout time.Duration
	resync      time.Duration

	mu      sync.Mutex
	held    map[string]*Grant // live grants, by id, whose end the client watches
	watcher context.CancelFunc
}

// New returns a client for agent over nc. The connection is the caller's:
// dial it with the agent's credential and with reconnects that never give
// up (nats.MaxReconnects(-1)) so that waiting survives a broker restart.
func New(nc *nats.Conn, agent string, opts ...Option) (*Client, error) {
	if !events.ValidID(agent) {
		return nil, fmt.Errorf("agent %q is not a valid id (1-64 letters, digits, '-' or '_')", agent)
	}
	c := &Client{nc: nc, agent: agent, log: zerolog.Nop(), callTimeout: 5 * time.Second, held: map[string]*Grant{}}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Agent is the agent this client asks for.
func (c *Client) Agent() string { return c.agent }

// Request asks for perms for duration d, with a reason and task context
// for approvers and the audit trail, and blocks until the request is
// decided: it returns the Grant, a *DeniedError (ErrDenied) with the
// decision's reason, a *RefusedError (ErrRefused, ErrSuspended) when the
// input was refused, or ctx's error.
//
// The request has a client-chosen id, so a call retried after a broker or
// requester failure is stored once. Waiting follows the agent's events
// from the request's sequence (broker.AgentFeed), which survives reconnects
// and service restarts. When ctx ends before the outcome, the request is
// withdrawn (jitapi.withdraw, audited as jit.withdrawn): a pending request
// is denied and a grant already made from it is revoked.
func (c *Client) Request(ctx context.Context, perms []string, d time.Duration, reason string, taskContext map[string]string) (*Grant, error) {
	in := broker.RequestInput{
		RequestID:   events.NewID("req"),
		Agent:       c.agent,
		Permissions: perms,
		Duration:    d.String(),
		Reason:      reason,
		Context:     taskContext,
	}
	// Follow before asking: nothing stored after the request is missed.
	feed, err := broker.FollowAgent(ctx, c.nc, c.agent, 0, c.resync, broker.EventsCaller(c.nc, c.callTimeout))
	if err != nil {
		return nil, err
	}
	defer feed.Stop()
	var acc broker.RequestAccepted
	if err := c.call(ctx, broker.APIRequest, in, &acc); err != nil {
		var ae *broker.APIError
		if errors.As(err, &ae) && ae.Status < 500 {
			return nil, &RefusedError{Status: ae.Status, Code: ae.Code, Message: ae.Message}
		}
		if ctx.Err() != nil {
			c.withdraw(in.RequestID) // it may have been stored
		}
		return nil, err
	}
	feed.SetFrom(acc.Seq)
	g, err := c.await(ctx, feed, acc.RequestID)
	if err != nil && ctx.Err() != nil {
		c.withdraw(acc.RequestID)
		return nil, ctx.Err()
	}
	return g, err
}

// Call makes one call of the agent API (jitapi.*) as this client's agent,
// with the same retries as Request: for the reads an agent may make of its
// own state (broker.APIGrants, broker.APICheck, broker.APIEvents).
func (c *Client) Call(ctx context.Context, subject string, in, out any) error {
	return c.call(ctx, subject, in, out)
}

// call sends in to subject, retrying while no service answers or the
// service asks for a retry (503), until ctx ends. A 4xx answer is
// returned at once as *broker.APIError.
func (c *Client) call(ctx context.Context, subject string, in, out any) error {
	for attempt := uint64(1); ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, c.callTimeout)
		err := broker.Call(cctx, c.nc, subject, "", in, out)
		cancel()
		var ae *broker.APIError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ae) && ae.Status < 500:
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		}
		delay := broker.Backoff(attempt)
		c.log.Warn().Err(err).Str("subject", subject).Dur("retry_in", delay).Msg("call failed; retrying")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// withdraw tells the system this client no longer waits for requestID. It
// runs on its own short deadline: the caller's context is already over.
func (c *Client) withdraw(requestID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*c.callTimeout)
	defer cancel()
	var out broker.ActionResult
	err := c.call(ctx, broker.APIWithdraw, broker.WithdrawInput{RequestID: requestID, Agent: c.agent}, &out)
	if err != nil {
		c.log.Error().Err(err).Str("request_id", requestID).Msg("could not withdraw the request")
		return
	}
	c.log.Info().Str("request_id", requestID).Msg("request withdrawn")
}

// grantKeyWait bounds how long Request waits, after jit.granted, for the
// grant's key (written right after it).
const grantKeyWait = 2 * time.Second

// jsPrefixes are where an agent reads its own grant keys: its account's
// import, or the server's own API on a server without accounts.
var jsPrefixes = []string{auth.JSPrefix, "$JS.API"}

// await reads the agent's events until the request is granted or denied.
func (c *Client) await(ctx context.Context, feed *broker.AgentFeed, requestID string) (*Grant, error) {
	for {
		fe, err := feed.Next(ctx)
		if err != nil {
			return nil, fmt.Errorf("follow request %s: %w", requestID, err)
		}
		e := fe.Event
		if events.RequestID(e) != requestID {
			continue
		}
		switch e.Type() {
		case events.TypeDecided:
			var d events.Decision
			if err := json.Unmarshal(e.Data(), &d); err != nil {
				continue
			}
			switch d.Outcome {
			case events.OutcomeDenied:
				return nil, &DeniedError{RequestID: requestID, Mode: d.Mode, Rule: d.Rule, Reason: d.Reason, Decision: d}
			case events.OutcomePending:
				c.log.Info().Str("request_id", requestID).Strs("approver_roles", d.ApproverRoles).Msg("waiting for a human approver")
			}
		case events.TypeGranted:
			var g events.Grant
			if err := json.Unmarshal(e.Data(), &g); err != nil {
				continue
			}
			// Announced before usable: return once checkers can see it.
			wctx, cancel := context.WithTimeout(ctx, grantKeyWait)
			if err := broker.AwaitGrantKey(wctx, c.nc, jsPrefixes, c.agent, g.GrantID); err != nil {
				c.log.Warn().Err(err).Str("grant_id", g.GrantID).Msg("granted, but its key is not readable yet")
			}
			cancel()
			return c.hold(g, fe.Seq), nil
		}
	}
}

// Grant is a live grant held by the agent. Its methods are safe for
// concurrent use.
type Grant struct {
	info    events.Grant
	seq     uint64 // of its jit.granted
	c       *Client
	revoked chan struct{}
	timer   *time.Timer

	mu     sync.Mutex
	reason string
}

// ID is the grant id (grt_…).
func (g *Grant) ID() string { return g.info.GrantID }

// RequestID is the id of the request it was granted for.
func (g *Grant) RequestID() string { return g.info.RequestID }

// Permissions are the permissions it grants.
func (g *Grant) Permissions() []string { return append([]string(nil), g.info.Permissions...) }

// ExpiresAt is the instant it stops counting, whatever else happens.
func (g *Grant) ExpiresAt() time.Time { return g.info.ExpiresAt }

// Info is the grant as the system published it (jit.granted).
func (g *Grant) Info() events.Grant { return g.info }

// Revoked returns a channel that is closed the moment the grant ends for
// any reason: expiry (closed at expires_at by the local clock), completion,
// a guardrail, an admin or a withdrawal (its jit.revoked). It is also
// closed (reason "revoked") if the client's connection is closed or its
// credential no longer reads the agent's events, since revocations can no
// longer be seen. An agent selects on it and stops the work the grant
// allowed.
func (g *Grant) Revoked() <-chan struct{} { return g.revoked }

// Reason says why the grant ended (expired, completed, guardrail, admin,
// withdrawn, or "revoked" when the reason could not be read); "" while it
// is live.
func (g *Grant) Reason() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.reason
}

// Done ends the grant now because the agent's task is finished (reason
// completed), and returns once the revoker has ended it. A grant that had
// already ended returns nil. Calls are retried while the revoker is
// unreachable, until ctx ends.
func (g *Grant) Done(ctx context.Context) error {
	if err := g.c.Done(ctx, g.info.GrantID); err != nil {
		return err
	}
	g.end(events.RevokedCompleted)
	return nil
}

// Done ends the grant grantID now (reason completed), for an agent that no
// longer holds its *Grant (e.g. after a restart). It returns nil if the
// grant had already ended, and an *broker.APIError with status 404 if there
// is no such grant (403 if it is another agent's).
func (c *Client) Done(ctx context.Context, grantID string) error {
	var out broker.ActionResult
	err := c.call(ctx, broker.APIDone, broker.DoneInput{GrantID: grantID}, &out)
	var ae *broker.APIError
	if errors.As(err, &ae) && ae.Status == 409 {
		err = nil // it ended already (expired, a guardrail, …)
	}
	if err != nil {
		return fmt.Errorf("done %s: %w", grantID, err)
	}
	return nil
}

func (g *Grant) end(reason string) {
	g.mu.Lock()
	if g.reason != "" {
		g.mu.Unlock()
		return
	}
	g.reason = reason
	close(g.revoked)
	timer := g.timer
	g.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
	g.c.release(g)
}

// hold starts watching a grant's end: a timer at its expiry, and the
// client's one follower of the agent's events for its jit.revoked.
func (c *Client) hold(info events.Grant, seq uint64) *Grant {
	g := &Grant{info: info, seq: seq, c: c, revoked: make(chan struct{})}
	g.mu.Lock()
	g.timer = time.AfterFunc(time.Until(info.ExpiresAt), func() { g.end(events.RevokedExpired) })
	g.mu.Unlock()
	c.mu.Lock()
	c.held[info.GrantID] = g
	start := c.watcher == nil
	var ctx context.Context
	if start {
		ctx, c.watcher = context.WithCancel(context.Background())
	}
	c.mu.Unlock()
	if start {
		go c.watchRevocations(ctx, seq)
	}
	return g
}

// release stops watching g, and the follower when no grant is held.
func (c *Client) release(g *Grant) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held[g.info.GrantID] == g {
		delete(c.held, g.info.GrantID)
	}
	if len(c.held) == 0 && c.watcher != nil {
		c.watcher()
		c.watcher = nil
	}
}

// watchRevocations follows the agent's events from seq and ends each held
// grant at its jit.revoked. If following fails for good (the connection
// closed, the credential revoked), every held grant ends: the agent can no
// longer see a revocation, so its grants no longer count for it.
func (c *Client) watchRevocations(ctx context.Context, from uint64) {
	endAll := func() {
		c.mu.Lock()
		gs := make([]*Grant, 0, len(c.held))
		for _, g := range c.held {
			gs = append(gs, g)
		}
		c.mu.Unlock()
		for _, g := range gs {
			g.end("revoked")
		}
	}
	feed, err := broker.FollowAgent(ctx, c.nc, c.agent, from, c.resync, broker.EventsCaller(c.nc, c.callTimeout))
	if err != nil {
		if ctx.Err() == nil {
			c.log.Error().Err(err).Msg("cannot follow revocations; ending the grants held")
			endAll()
		}
		return
	}
	defer feed.Stop()
	for {
		fe, err := feed.Next(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil || c.nc.IsClosed() {
			c.log.Error().Err(err).Msg("cannot follow revocations; ending the grants held")
			endAll()
			return
		}
		if fe.Event.Type() != events.TypeRevoked {
			continue
		}
		var r events.Revocation
		if json.Unmarshal(fe.Event.Data(), &r) != nil {
			continue
		}
		c.mu.Lock()
		g := c.held[r.GrantID]
		c.mu.Unlock()
		if g != nil {
			reason := strings.TrimSpace(r.Reason)
			if reason == "" {
				reason = "revoked"
			}
			g.end(reason)
		}
	}
}
