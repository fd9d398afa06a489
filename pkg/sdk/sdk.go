// Package sdk is the agent side of the JIT system: an agent asks for
// permissions with Client.Request, which blocks until the request is
// decided, and gets a Grant that tells its expiry, signals the moment it
// ends for any reason (Revoked), and can be ended early (Done).
//
// The client needs only a NATS connection; it speaks the documented API
// (jitapi.request, jitapi.withdraw, jitapi.done) and reads outcomes from the
// audit stream and the grants bucket, so it keeps working across NATS
// reconnects and the restart of any JIT service while it waits.
package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// Client asks for elevation on behalf of one agent. It is safe for
// concurrent use.
type Client struct {
	nc          *nats.Conn
	js          jetstream.JetStream
	agent       string
	log         zerolog.Logger
	callTimeout time.Duration
}

// New returns a client for agent over nc. The connection is the caller's:
// dial it with reconnects that never give up (nats.MaxReconnects(-1)) so
// that waiting survives a broker restart.
func New(nc *nats.Conn, agent string, opts ...Option) (*Client, error) {
	if !events.ValidID(agent) {
		return nil, fmt.Errorf("agent %q is not a valid id (1-64 letters, digits, '-' or '_')", agent)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	c := &Client{nc: nc, js: js, agent: agent, log: zerolog.Nop(), callTimeout: 5 * time.Second}
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
// requester failure is stored once. Waiting follows the audit stream from
// the request's sequence with an ordered consumer, which survives
// reconnects and service restarts. When ctx ends before the outcome, the
// request is withdrawn (jitapi.withdraw, audited as jit.withdrawn): a
// pending request is denied and a grant already made from it is revoked.
func (c *Client) Request(ctx context.Context, perms []string, d time.Duration, reason string, taskContext map[string]string) (*Grant, error) {
	in := broker.RequestInput{
		RequestID:   events.NewID("req"),
		Agent:       c.agent,
		Permissions: perms,
		Duration:    d.String(),
		Reason:      reason,
		Context:     taskContext,
	}
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
	g, err := c.await(ctx, acc)
	if err != nil && ctx.Err() != nil {
		c.withdraw(acc.RequestID)
		return nil, ctx.Err()
	}
	return g, err
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

// await follows the agent's decisions and grants from the request's stream
// sequence until the request is granted or denied. The ordered consumer
// recreates itself after a reconnect; if it fails for good it is created
// again from the last sequence seen.
func (c *Client) await(ctx context.Context, acc broker.RequestAccepted) (*Grant, error) {
	next := acc.Seq
	for attempt := uint64(1); ; attempt++ {
		g, last, err := c.follow(ctx, acc.RequestID, next)
		if err == nil || ctx.Err() != nil {
			return g, err
		}
		var de *DeniedError
		if errors.As(err, &de) {
			return nil, err
		}
		if last > 0 {
			next = last + 1
		}
		delay := broker.Backoff(attempt)
		c.log.Warn().Err(err).Dur("retry_in", delay).Msg("following the request failed; following again")
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
}

func (c *Client) follow(ctx context.Context, requestID string, from uint64) (*Grant, uint64, error) {
	it, stop, err := broker.Follow(ctx, c.js,
		[]string{events.Subject(events.TypeDecided, c.agent), events.Subject(events.TypeGranted, c.agent)}, from)
	if err != nil {
		return nil, 0, fmt.Errorf("follow request %s: %w", requestID, err)
	}
	defer stop()
	var last uint64
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil, last, ctx.Err()
			}
			return nil, last, fmt.Errorf("follow request %s: %w", requestID, err)
		}
		if md, err := m.Metadata(); err == nil {
			last = md.Sequence.Stream
		}
		e, err := broker.FromMsg(m.Headers(), m.Data())
		if err != nil || events.RequestID(e) != requestID {
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
				return nil, last, &DeniedError{RequestID: requestID, Mode: d.Mode, Rule: d.Rule, Reason: d.Reason, Decision: d}
			case events.OutcomePending:
				c.log.Info().Str("request_id", requestID).Strs("approver_roles", d.ApproverRoles).Msg("waiting for a human approver")
			}
		case events.TypeGranted:
			var g events.Grant
			if err := json.Unmarshal(e.Data(), &g); err != nil {
				continue
			}
			return c.watch(g), last, nil
		}
	}
}

// Grant is a live grant held by the agent. Its methods are safe for
// concurrent use.
type Grant struct {
	info    events.Grant
	c       *Client
	revoked chan struct{}
	cancel  context.CancelFunc

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
// a guardrail, an admin, a withdrawal, or its key vanishing from the grants
// bucket. It is also closed (reason "revoked") if the client's connection
// is closed, since revocations can no longer be seen. An agent selects on it and stops the work the grant allowed.
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
// is no such grant. The caller must make sure the grant is this agent's.
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
	defer g.mu.Unlock()
	if g.reason != "" {
		return
	}
	g.reason = reason
	close(g.revoked)
	g.cancel()
}

// watch follows the grant's key in the grants bucket and closes Revoked
// when it is tombstoned, deleted, purged or expires.
func (c *Client) watch(info events.Grant) *Grant {
	ctx, cancel := context.WithCancel(context.Background())
	g := &Grant{info: info, c: c, revoked: make(chan struct{}), cancel: cancel}
	timer := time.AfterFunc(time.Until(info.ExpiresAt), func() { g.end(events.RevokedExpired) })
	go func() {
		defer timer.Stop()
		key := broker.GrantKey(info.Agent, info.GrantID)
		var w jetstream.KeyWatcher
		for attempt := uint64(1); ctx.Err() == nil; attempt++ {
			kv, err := c.js.KeyValue(ctx, broker.BucketGrants)
			if err == nil {
				w, err = kv.Watch(ctx, key)
			}
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return // ended meanwhile (Done, expiry)
			}
			if c.nc.IsClosed() {
				// The agent closed its connection: it can no longer see a
				// revocation, so the grant no longer counts for it.
				g.end("revoked")
				return
			}
			c.log.Warn().Err(err).Str("grant_id", info.GrantID).Msg("watch grant; retrying")
			select {
			case <-ctx.Done():
				return
			case <-time.After(broker.Backoff(attempt)):
			}
		}
		if w == nil {
			return
		}
		defer func() { _ = w.Stop() }()
		seen := false
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				switch {
				case !ok:
					// The watch ended for good: fail safe, the agent stops.
					g.end("revoked")
					return
				case e == nil:
					if !seen {
						g.end(c.endReason(ctx, key))
						return
					}
				default:
					seen = true
					if e.Operation() != jetstream.KeyValuePut || !activeValue(e.Value()) {
						g.end(c.endReason(ctx, key))
						return
					}
				}
			}
		}
	}()
	return g
}

func activeValue(b []byte) bool {
	var v struct {
		Status string `json:"status"`
	}
	if json.Unmarshal(b, &v) != nil {
		return false
	}
	return v.Status == "" || v.Status == events.GrantActive
}

// endReason reads why a grant ended from its lease, the revoker's ledger,
// waiting (at most a second) for the reason to be recorded.
func (c *Client) endReason(ctx context.Context, key string) string {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	kv, err := c.js.KeyValue(rctx, broker.BucketLeases)
	if err != nil {
		return "revoked"
	}
	// The revoker records the reason in the lease at the same time as it
	// tombstones the grant key, so the key may end a moment before the
	// reason is there: watch the lease until it is.
	w, err := kv.Watch(rctx, key)
	if err != nil {
		return "revoked"
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-rctx.Done():
			return "revoked"
		case e, ok := <-w.Updates():
			if !ok {
				return "revoked"
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var l broker.Lease
			if json.Unmarshal(e.Value(), &l) == nil && l.Revocation != nil {
				return strings.TrimSpace(l.Revocation.Reason)
			}
		}
	}
}
