package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
)

// Client-side outcomes of a request.
const (
	outGranted  = "granted"
	outDenied   = "denied"
	outRejected = "rejected" // refused with a 4xx, or a jit.rejected naming it
)

// callTimeout bounds one API call of an agent; a call that times out is
// sent again with the same request id.
const callTimeout = 2 * time.Second

// request is one request as its agent saw it.
type request struct {
	id, agent string
	duration  time.Duration
	firstSent time.Time
	accepted  time.Time // zero: never accepted
	attempts  int
	// The outcome the agent saw on its feed (or the refusal it was
	// answered), and when; "" if it saw none.
	outcome   string
	reason    string
	grantID   string
	expiresAt time.Time
	outcomeAt time.Time
	// acceptedOn is the node the agent's connection was on when the
	// request was accepted; gaveUp and gaveUpOn when, and on which node,
	// the agent stopped waiting for its outcome (zero if it saw one): what
	// tells a request the system answered late from one whose answer did
	// not reach its agent (see logUnanswered).
	acceptedOn string
	gaveUp     time.Time
	gaveUpOn   string
}

// agent is one agent of the round: its own connection with its own
// credential, its own feed of events, one request at a time.
type agent struct {
	id    string
	idx   int
	nc    *nats.Conn
	p     params
	onErr func(error)

	mu   sync.Mutex
	reqs []*request
	byID map[string]*request
}

func agentID(i int) string { return fmt.Sprintf("chaos-%03d", i) }

// connectAgent dials url as agent id with its credential from credsDir,
// with reconnects that never give up.
func connectAgent(url, credsDir, id string) (*nats.Conn, error) {
	p := auth.Principal{Kind: auth.KindAgent, ID: id}
	opts, err := auth.ClientOptions{Creds: filepath.Join(credsDir, p.CredsFile())}.NATSOptions()
	if err != nil {
		return nil, err
	}
	opts = append(opts, nats.Name("jitchaos "+p.String()), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect as %s: %w", p, err)
	}
	return nc, nil
}

// requests returns a copy of the agent's requests.
func (a *agent) requests() []request {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]request, 0, len(a.reqs))
	for _, r := range a.reqs {
		out = append(out, *r)
	}
	return out
}

// run sends requests one after another until stop is closed, and follows
// each to its outcome. The request in hand when stop closes is still sent
// until accepted and waited for; ctx ends everything.
func (a *agent) run(ctx context.Context, stop <-chan struct{}) {
	feed, err := broker.FollowAgent(ctx, a.nc, a.id, 0, 0, broker.EventsCaller(a.nc, callTimeout))
	if err != nil {
		a.onErr(err)
		return
	}
	defer func() { feed.Stop() }()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		d := a.p.grantDurations[(n+a.idx)%len(a.p.grantDurations)]
		r := &request{id: fmt.Sprintf("req_%s-%06d", a.id, n), agent: a.id, duration: d}
		a.mu.Lock()
		a.reqs = append(a.reqs, r)
		a.byID[r.id] = r
		a.mu.Unlock()
		seq, ok := a.send(ctx, r)
		if !ok {
			// Refused (or ctx ended): a refusal is an outcome; pause so
			// that a configuration that refuses everything does not spin.
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		// The feed starts at the first request's event: the agent has no
		// earlier history worth reading.
		feed.SetFrom(seq)
		if err := a.await(ctx, feed, r); err != nil && ctx.Err() == nil {
			// The feed failed for good: follow again from this request.
			feed.Stop()
			if feed, err = broker.FollowAgent(ctx, a.nc, a.id, seq, 0, broker.EventsCaller(a.nc, callTimeout)); err != nil {
				a.onErr(err)
				return
			}
		}
	}
}

// send sends r until it is accepted (true, with the sequence of its
// jit.requested), refused (a 4xx answer: false), or ctx ends. Any other
// error or a timeout sends it again with the same id.
func (a *agent) send(ctx context.Context, r *request) (uint64, bool) {
	in := broker.RequestInput{RequestID: r.id, Agent: a.id, Permissions: []string{chaosPerm},
		Duration: r.duration.String(), Reason: "chaos round"}
	for attempt := 1; ; attempt++ {
		now := time.Now()
		a.mu.Lock()
		if r.firstSent.IsZero() {
			r.firstSent = now
		}
		r.attempts = attempt
		a.mu.Unlock()
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		var acc broker.RequestAccepted
		err := broker.Call(cctx, a.nc, broker.APIRequest, "", in, &acc)
		cancel()
		var ae *broker.APIError
		switch {
		case err == nil:
			a.mu.Lock()
			r.accepted, r.acceptedOn = time.Now(), a.nc.ConnectedServerName()
			a.mu.Unlock()
			return acc.Seq, true
		case errors.As(err, &ae) && ae.Status < 500:
			a.mu.Lock()
			r.outcome, r.reason, r.outcomeAt = outRejected, ae.Code+": "+ae.Message, time.Now()
			a.mu.Unlock()
			return 0, false
		case ctx.Err() != nil:
			return 0, false
		}
		select {
		case <-ctx.Done():
			return 0, false
		case <-time.After(min(50*time.Millisecond<<min(attempt-1, 4), 500*time.Millisecond)):
		}
	}
}

// await reads the agent's feed until r has an outcome or the outcome
// timeout passes. Outcomes of earlier requests that arrive meanwhile are
// recorded too.
func (a *agent) await(ctx context.Context, feed *broker.AgentFeed, r *request) error {
	wctx, cancel := context.WithTimeout(ctx, a.p.outcomeTimeout)
	defer cancel()
	for {
		a.mu.Lock()
		done := r.outcome != ""
		a.mu.Unlock()
		if done {
			return nil
		}
		fe, err := feed.Next(wctx)
		if err != nil {
			if wctx.Err() != nil {
				// Given up on; counted as unanswered by the client.
				a.mu.Lock()
				r.gaveUp, r.gaveUpOn = time.Now(), a.nc.ConnectedServerName()
				a.mu.Unlock()
				return nil
			}
			return err
		}
		a.observe(fe.Event)
	}
}

// observe records an outcome on the agent's feed.
func (a *agent) observe(e events.Event) {
	var d struct {
		RequestID string    `json:"request_id"`
		GrantID   string    `json:"grant_id"`
		Outcome   string    `json:"outcome"`
		Reason    string    `json:"reason"`
		Code      string    `json:"code"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if json.Unmarshal(e.Data(), &d) != nil {
		return
	}
	id := events.RequestID(e)
	if id == "" {
		id = d.RequestID
	}
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.byID[id]
	if r == nil || r.outcome != "" {
		return
	}
	switch e.Type() {
	case events.TypeGranted:
		r.outcome, r.grantID, r.expiresAt = outGranted, d.GrantID, d.ExpiresAt
	case events.TypeDecided:
		if d.Outcome != events.OutcomeDenied {
			return
		}
		r.outcome, r.reason = outDenied, d.Reason
	case events.TypeRejected:
		r.outcome, r.reason = outRejected, d.Code
	default:
		return
	}
	r.outcomeAt = now
}
