package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
)

// done ends a grant at once (revocation reason "completed").
func (a *app) done(ctx context.Context, args []string) error {
	fs := a.flags()
	agent := fs.String("agent", "", "the agent whose grant it is (with --creds-dir: whose credential to use; only the grant's own agent may end it)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos, "GRANT_ID"); err != nil {
		return err
	}
	if *agent == "" && a.client.Creds == "" && a.credsDir != "" {
		// Whose grant is it? Ask as the operator, who may read grants, then
		// end it with the agent's own credential.
		found, err := a.grantAgent(ctx, pos[0])
		if err != nil {
			return err
		}
		*agent = found
	}
	return a.actionAs(ctx, auth.Principal{Kind: auth.KindAgent, ID: *agent}, broker.APIDone, "", broker.DoneInput{GrantID: pos[0]})
}

// pending lists the requests waiting for a human.
func (a *app) pending(ctx context.Context, args []string) error {
	fs := a.flags()
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos); err != nil {
		return err
	}
	token, nc, err := a.approverConn()
	if err != nil {
		return err
	}
	defer nc.Close()
	var list broker.PendingList
	if err := a.call(ctx, nc, broker.APIPending, token, struct{}{}, &list); err != nil {
		return err
	}
	now := time.Now()
	if a.json {
		for _, p := range list.Pending {
			d := p.Decision
			line := struct {
				RequestID     string    `json:"request_id"`
				Agent         string    `json:"agent"`
				Permissions   []string  `json:"permissions"`
				Duration      string    `json:"duration"`
				Reason        string    `json:"reason"`
				Rule          string    `json:"rule,omitempty"`
				RiskScore     *int      `json:"risk_score,omitempty"`
				ApproverRoles []string  `json:"approver_roles"`
				Deadline      time.Time `json:"deadline"`
			}{RequestID: d.RequestID, Agent: d.Agent, Permissions: d.Permissions,
				Duration: events.MSDuration(d.DurationMS).String(), Reason: requestReason(p), Rule: d.Rule,
				ApproverRoles: d.ApproverRoles, Deadline: p.Deadline}
			if d.Risk != nil {
				line.RiskScore = &d.Risk.Score
			}
			if err := a.printJSON(line); err != nil {
				return err
			}
		}
		return nil
	}
	if len(list.Pending) == 0 {
		a.printf("no pending requests\n")
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REQUEST\tAGENT\tPERMISSIONS\tDURATION\tRISK\tROLES\tDEADLINE\tREASON")
	for _, p := range list.Pending {
		d := p.Decision
		risk := "-"
		if d.Risk != nil {
			risk = fmt.Sprint(d.Risk.Score)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s (%s)\t%s\n", d.RequestID, d.Agent,
			strings.Join(d.Permissions, ","), durationText(d.DurationMS), risk,
			strings.Join(d.ApproverRoles, ","), timeText(p.Deadline), leftText(p.Deadline, now), requestReason(p))
	}
	return tw.Flush()
}

// requestReason is the agent's reason for the request (the decision's own
// reason says why it is pending).
func requestReason(p broker.PendingItem) string {
	if r := p.Decision.Request.Reason; r != "" {
		return r
	}
	return p.Decision.Reason
}

func durationText(ms int64) string { return events.FormatDuration(events.MSDuration(ms)) }

// approve approves a pending request as the approver JIT_TOKEN names.
func (a *app) approve(ctx context.Context, args []string) error {
	return a.answer(ctx, args, broker.APIApprove, false)
}

// deny denies a pending request; a comment saying why is required.
func (a *app) deny(ctx context.Context, args []string) error {
	return a.answer(ctx, args, broker.APIDeny, true)
}

func (a *app) answer(ctx context.Context, args []string, subject string, needComment bool) error {
	fs := a.flags()
	comment := fs.String("comment", "", "a comment for the audit trail")
	var perms listFlag
	var duration *string
	if !needComment { // approve: an approver may approve less than asked
		fs.Var(&perms, "perm", "approve only this requested permission (repeatable; default all)")
		duration = fs.String("duration", "", "approve a shorter duration than requested, e.g. 10m")
	}
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos, "REQUEST_ID"); err != nil {
		return err
	}
	in := broker.ApproveInput{RequestID: pos[0], Comment: *comment, Permissions: perms}
	if duration != nil {
		in.Duration = *duration
	}
	if needComment {
		if err := required("comment", *comment); err != nil {
			return err
		}
	}
	token, err := a.token()
	if err != nil {
		return err
	}
	return a.action(ctx, subject, token, in)
}

// reinstate lifts an agent's suspension.
func (a *app) reinstate(ctx context.Context, args []string) error {
	fs := a.flags()
	agent := fs.String("agent", "", "the suspended agent")
	comment := fs.String("comment", "", "a comment for the audit trail")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos); err != nil {
		return err
	}
	if err := required("agent", *agent); err != nil {
		return err
	}
	token, err := a.token()
	if err != nil {
		return err
	}
	return a.action(ctx, broker.APIReinstate, token, broker.ReinstateInput{Agent: *agent, Comment: *comment})
}

// action calls an endpoint that answers with an ActionResult and prints it.
func (a *app) action(ctx context.Context, subject, token string, in any) error {
	return a.actionAs(ctx, auth.DefaultOperator, subject, token, in)
}

// actionAs makes one action call as principal p (see connectAs) and prints
// its result.
func (a *app) actionAs(ctx context.Context, p auth.Principal, subject, token string, in any) error {
	nc, _, err := a.connectAs(p)
	if err != nil {
		return err
	}
	defer nc.Close()
	var res broker.ActionResult
	if err := a.call(ctx, nc, subject, token, in, &res); err != nil {
		return err
	}
	a.showAction(res)
	return nil
}

func (a *app) showAction(r broker.ActionResult) {
	if a.json {
		_ = a.printJSON(r)
		return
	}
	var b strings.Builder
	b.WriteString(r.Outcome)
	for _, s := range []struct{ k, v string }{{"request", r.RequestID}, {"grant", r.GrantID}, {"agent", r.Agent}} {
		if s.v != "" {
			fmt.Fprintf(&b, " %s %s", s.k, s.v)
		}
	}
	if r.Message != "" {
		b.WriteString(": " + r.Message)
	}
	a.printf("%s\n", b.String())
}

// hashToken prints the hex SHA-256 of a token, as token_sha256 expects.
func (a *app) hashToken(_ context.Context, args []string) error {
	fs := a.flags()
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos, "TOKEN"); err != nil {
		return err
	}
	sum := config.HashToken(pos[0])
	if a.json {
		return a.printJSON(map[string]string{"token_sha256": sum})
	}
	a.printf("%s\n", sum)
	return nil
}

// grantAgent finds the agent of a grant from its key (<agent>.<grant_id>)
// in the grants bucket, read as the operator.
func (a *app) grantAgent(ctx context.Context, grantID string) (string, error) {
	if !events.ValidID(grantID) {
		return "", usagef("GRANT_ID %q is not a valid id", grantID)
	}
	nc, js, err := a.connectAs(auth.DefaultOperator)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	subj := broker.APIPrefixOf(js) + ".DIRECT.GET.KV_" + broker.BucketGrants + ".$KV." + broker.BucketGrants + ".*." + grantID
	m, err := nc.RequestWithContext(ctx, subj, nil)
	if err != nil {
		return "", fmt.Errorf("look up grant %s: %w", grantID, err)
	}
	if m.Header.Get("Status") != "" {
		return "", fmt.Errorf("no grant %s (pass --agent to ask as its agent)", grantID)
	}
	key := strings.TrimPrefix(m.Header.Get("Nats-Subject"), "$KV."+broker.BucketGrants+".")
	agent, _, ok := broker.SplitKey(key)
	if !ok {
		return "", fmt.Errorf("grant %s is stored under an unexpected key %q", grantID, key)
	}
	return agent, nil
}
