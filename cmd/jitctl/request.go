package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
)

// request asks for elevation, then follows the request's decision and grant
// on the audit stream: exit 0 granted, 1 denied, 2 error or --timeout.
func (a *app) request(ctx context.Context, args []string) error {
	fs := a.flags()
	agent := fs.String("agent", "", "the agent (service account) asking")
	var perms, kvs listFlag
	fs.Var(&perms, "perm", "a permission to grant, e.g. data:write (repeatable)")
	duration := fs.String("duration", "", "how long the grant should last, e.g. 30m")
	reason := fs.String("reason", "", "why the agent needs it")
	fs.Var(&kvs, "context", "context for approvers and the audit trail, K=V (repeatable)")
	requestID := fs.String("request-id", "", "optional request id: a retry with the same id is stored once")
	timeout := fs.Duration("timeout", 0, "give up waiting for the outcome after this long (0: wait until decided)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos); err != nil {
		return err
	}
	if err := required("agent", *agent, "duration", *duration, "reason", *reason); err != nil {
		return err
	}
	if len(perms) == 0 {
		return usagef("--perm is required")
	}
	if *timeout < 0 {
		return usagef("--timeout must not be negative")
	}
	var reqCtx map[string]string
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return usagef("--context %q is not K=V", kv)
		}
		if reqCtx == nil {
			reqCtx = map[string]string{}
		}
		reqCtx[k] = v
	}

	nc, _, err := a.connectAs(auth.Principal{Kind: auth.KindAgent, ID: *agent})
	if err != nil {
		return err
	}
	defer nc.Close()

	in := broker.RequestInput{
		RequestID: *requestID, Agent: *agent, Permissions: perms,
		Duration: *duration, Reason: *reason, Context: reqCtx,
	}
	// Follow the agent's events before asking, so that the outcome is
	// never missed.
	feed, err := broker.FollowAgent(ctx, nc, *agent, 0, 0, broker.EventsCaller(nc, callTimeout))
	if err != nil {
		return err
	}
	defer feed.Stop()
	var acc broker.RequestAccepted
	if err := a.call(ctx, nc, broker.APIRequest, "", in, &acc); err != nil {
		return err
	}
	feed.SetFrom(acc.Seq)
	if !a.json {
		a.printf("request %s accepted; waiting for the decision\n", acc.RequestID)
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	err = a.await(ctx, nc, feed, acc)
	if errors.Is(err, context.DeadlineExceeded) && *timeout > 0 {
		return fmt.Errorf("no outcome for request %s within %s; it may still be decided (see jitctl audit)", acc.RequestID, *timeout)
	}
	return err
}

// await reads the agent's events from the request's stream sequence on
// (broker.AgentFeed: live, caught up after a reconnect) until the request is
// granted or denied. Told "granted", it waits (briefly) for the grant's key
// too, which follows the announcement: exit 0 means checkers can honour it.
func (a *app) await(ctx context.Context, nc *nats.Conn, feed *broker.AgentFeed, acc broker.RequestAccepted) error {
	pendingShown := false
	for {
		fe, err := feed.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("follow request %s: %w", acc.RequestID, err)
		}
		e := fe.Event
		if requestIDOf(e) != acc.RequestID {
			continue
		}
		switch e.Type() {
		case events.TypeDecided:
			d, err := lenient[events.Decision](e)
			if err != nil {
				return fmt.Errorf("decision %s: %w", e.ID(), err)
			}
			switch d.Outcome {
			case events.OutcomePending:
				if !pendingShown {
					pendingShown = true
					a.showPending(acc.RequestID, d)
				}
			case events.OutcomeDenied:
				a.showDenied(acc.RequestID, d)
				return errRefused
			case events.OutcomeApproved:
				if pendingShown && !a.json {
					a.printf("approved by %s; waiting for the grant\n", d.DecidedBy)
				}
			}
		case events.TypeGranted:
			g, err := lenient[events.Grant](e)
			if err != nil {
				return fmt.Errorf("grant %s: %w", e.ID(), err)
			}
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if err := broker.AwaitGrantKey(wctx, nc, []string{auth.JSPrefix, "$JS.API"}, g.Agent, g.GrantID); err != nil {
				fmt.Fprintf(a.stderr, "jitctl request: granted, but its key is not readable yet: %v\n", err)
			}
			cancel()
			a.showGranted(acc.RequestID, g)
			return nil
		}
	}
}

// requestIDOf is the event's requestid extension, or failing that the
// request_id in its data.
func requestIDOf(e events.Event) string {
	if id := events.RequestID(e); id != "" {
		return id
	}
	var v struct {
		RequestID string `json:"request_id"`
	}
	_ = json.Unmarshal(e.Data(), &v)
	return v.RequestID
}

// lenient decodes event data for display, tolerating fields this client
// does not know (a newer service may add some).
func lenient[T any](e events.Event) (T, error) {
	var v T
	if err := json.Unmarshal(e.Data(), &v); err != nil {
		return v, fmt.Errorf("%s data: %w", e.Type(), err)
	}
	return v, nil
}

type pendingLine struct {
	Event         string     `json:"event"`
	RequestID     string     `json:"request_id"`
	Agent         string     `json:"agent"`
	Permissions   []string   `json:"permissions"`
	Rule          string     `json:"rule,omitempty"`
	Reason        string     `json:"reason"`
	ApproverRoles []string   `json:"approver_roles"`
	Deadline      *time.Time `json:"deadline,omitempty"`
	RiskScore     *int       `json:"risk_score,omitempty"`
}

func (a *app) showPending(id string, d events.Decision) {
	if a.json {
		l := pendingLine{Event: "pending", RequestID: id, Agent: d.Agent, Permissions: d.Permissions,
			Rule: d.Rule, Reason: d.Reason, ApproverRoles: d.ApproverRoles, Deadline: d.ApprovalDeadline}
		if d.Risk != nil {
			l.RiskScore = &d.Risk.Score
		}
		_ = a.printJSON(l)
		return
	}
	deadline := "none"
	if d.ApprovalDeadline != nil {
		deadline = timeText(*d.ApprovalDeadline)
	}
	roles := strings.Join(d.ApproverRoles, " or ")
	if roles == "" {
		roles = "an approver"
	}
	a.printf("waiting for approval by %s (deadline %s)\n", roles, deadline)
}

type deniedLine struct {
	Outcome   string `json:"outcome"`
	RequestID string `json:"request_id"`
	Agent     string `json:"agent"`
	Mode      string `json:"mode"`
	Rule      string `json:"rule"`
	Reason    string `json:"reason"`
}

func (a *app) showDenied(id string, d events.Decision) {
	if a.json {
		_ = a.printJSON(deniedLine{Outcome: "denied", RequestID: id, Agent: d.Agent, Mode: d.Mode, Rule: d.Rule, Reason: d.Reason})
		return
	}
	how := d.Mode
	if d.Rule != "" {
		how += ", rule " + d.Rule
	}
	a.printf("denied: %s (%s)\n", d.Reason, how)
}

type grantedLine struct {
	Outcome     string    `json:"outcome"`
	RequestID   string    `json:"request_id"`
	GrantID     string    `json:"grant_id"`
	Agent       string    `json:"agent"`
	Permissions []string  `json:"permissions"`
	ExpiresAt   time.Time `json:"expires_at"`
}

func (a *app) showGranted(id string, g events.Grant) {
	if a.json {
		_ = a.printJSON(grantedLine{Outcome: "granted", RequestID: id, GrantID: g.GrantID, Agent: g.Agent,
			Permissions: g.Permissions, ExpiresAt: g.ExpiresAt})
		return
	}
	a.printf("granted %s: %s until %s (%s)\n", g.GrantID, strings.Join(g.Permissions, ", "),
		timeText(g.ExpiresAt), leftText(g.ExpiresAt, time.Now()))
}
