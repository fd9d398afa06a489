package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/checker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// configWait bounds the wait for an active configuration (a variable so
// tests can shorten it).
var configWait = 10 * time.Second

// check answers one permission check with the same checker agents embed:
// exit 0 allowed, 1 not allowed.
func (a *app) check(ctx context.Context, args []string) error {
	fs := a.flags()
	agent := fs.String("agent", "", "the agent")
	perm := fs.String("perm", "", "the permission, e.g. data:write")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos); err != nil {
		return err
	}
	if err := required("agent", *agent, "perm", *perm); err != nil {
		return err
	}
	nc, js, err := a.connectAs(auth.DefaultChecker)
	if err != nil {
		return err
	}
	defer nc.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	src, err := a.watchConfig(ctx, js)
	if err != nil {
		return err
	}
	chk := checker.New(js, src, checker.WithLogger(a.logger()))
	if err := chk.Start(ctx); err != nil {
		return err
	}
	defer chk.Stop()
	r := chk.Check(*agent, *perm)
	if a.json {
		out := struct {
			Agent      string     `json:"agent"`
			Permission string     `json:"permission"`
			Allowed    bool       `json:"allowed"`
			Reason     string     `json:"reason"`
			GrantID    string     `json:"grant_id"`
			ExpiresAt  *time.Time `json:"expires_at"`
			Base       bool       `json:"base"`
		}{Agent: *agent, Permission: *perm, Allowed: r.Allowed, Reason: r.Reason, GrantID: r.GrantID, Base: r.Base}
		if !r.ExpiresAt.IsZero() {
			out.ExpiresAt = &r.ExpiresAt
		}
		if err := a.printJSON(out); err != nil {
			return err
		}
	} else {
		verdict := "allowed"
		if !r.Allowed {
			verdict = "not allowed"
		}
		a.printf("%s %s %s: %s\n", *agent, verdict, *perm, r.Reason)
	}
	if !r.Allowed {
		return errRefused
	}
	return nil
}

// grants lists the active grants (status active, expires_at in the future),
// soonest expiry first.
func (a *app) grants(ctx context.Context, args []string) error {
	fs := a.flags()
	agent := fs.String("agent", "", "only this agent's grants")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos); err != nil {
		return err
	}
	nc, js, err := a.connect()
	if err != nil {
		return err
	}
	defer nc.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Listing needs no configuration: the checker reads the grants bucket.
	chk := checker.New(js, nil, checker.WithLogger(a.logger()))
	if err := chk.Start(ctx); err != nil {
		return err
	}
	defer chk.Stop()
	list := chk.Grants(*agent)
	now := time.Now()
	if a.json {
		for _, g := range list {
			line := struct {
				GrantID     string    `json:"grant_id"`
				RequestID   string    `json:"request_id"`
				Agent       string    `json:"agent"`
				Permissions []string  `json:"permissions"`
				GrantedAt   time.Time `json:"granted_at"`
				ExpiresAt   time.Time `json:"expires_at"`
				SecondsLeft int64     `json:"seconds_left"`
			}{g.GrantID, g.RequestID, g.Agent, g.Permissions, g.GrantedAt, g.ExpiresAt, int64(g.ExpiresAt.Sub(now) / time.Second)}
			if err := a.printJSON(line); err != nil {
				return err
			}
		}
		return nil
	}
	if len(list) == 0 {
		a.printf("no active grants\n")
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GRANT\tAGENT\tPERMISSIONS\tEXPIRES\tLEFT")
	for _, g := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", g.GrantID, g.Agent, strings.Join(g.Permissions, ","),
			timeText(g.ExpiresAt), leftText(g.ExpiresAt, now))
	}
	return tw.Flush()
}

// watchConfig follows the active configuration until ctx ends, without a
// consumer (the checker's and the operator's credentials may not make one).
func (a *app) watchConfig(ctx context.Context, js jetstream.JetStream) (*config.Source, error) {
	wctx, cancel := context.WithTimeout(ctx, configWait)
	defer cancel()
	// config.Follow keeps following until its context ends; it must outlive
	// this function, so the wait is bounded by a watchdog instead.
	type result struct {
		src *config.Source
		err error
	}
	done := make(chan result, 1)
	go func() {
		src, err := config.Follow(ctx, js, a.logger())
		done <- result{src, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("read the configuration (bucket %s; is the JIT system set up on this server?): %w", broker.BucketConfig, r.err)
		}
		return r.src, nil
	case <-wctx.Done():
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("no active configuration in bucket %s after %s (start jitd with --config)", broker.BucketConfig, configWait)
	}
}

// logger reports only warnings and errors, on stderr.
func (a *app) logger() zerolog.Logger {
	return zerolog.New(a.stderr).Level(zerolog.WarnLevel).With().Timestamp().Logger()
}
