package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/services/policy"
	"github.com/nats-io/nats.go/jetstream"
)

// policyCmd is "jitctl policy explain …" and "jitctl policy test FILE".
func (a *app) policyCmd(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("missing subcommand: explain or test")
	}
	switch args[0] {
	case "explain":
		return a.policyExplain(ctx, args[1:])
	case "test":
		return a.policyTest(ctx, args[1:])
	}
	return usagef("unknown subcommand %q: explain or test", args[0])
}

// policyExplain is a dry run of one request through the policy's own
// evaluator: which rules matched or not and why, the risk score with its
// parts, and the decision. It creates no request. Against the running
// system (the default) it uses the active configuration, the agent's
// suspension and its history from the audit stream; with --config FILE it
// needs no server and assumes an empty history.
func (a *app) policyExplain(ctx context.Context, args []string) error {
	fs := a.flags()
	agent := fs.String("agent", "", "the agent")
	var perms, kv listFlag
	fs.Var(&perms, "perm", "a permission (repeatable)")
	dur := fs.Duration("duration", 0, "the requested duration, e.g. 30m")
	reason := fs.String("reason", "", "why the agent asks")
	fs.Var(&kv, "context", "task context KEY=VALUE (repeatable)")
	at := fs.String("at", "", "decide as of TIME (RFC 3339) instead of now")
	file := fs.String("config", "", "explain against this configuration file instead of the active one (no server needed)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos); err != nil {
		return err
	}
	if err := required("agent", *agent, "reason", *reason); err != nil {
		return err
	}
	if len(perms) == 0 {
		return usagef("--perm is required")
	}
	if *dur <= 0 {
		return usagef("--duration must be positive")
	}
	now := time.Now()
	if *at != "" {
		if now, err = time.Parse(time.RFC3339, *at); err != nil {
			return usagef("--at: %v", err)
		}
	}
	taskCtx := map[string]string{}
	for _, s := range kv {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return usagef("--context %q is not KEY=VALUE", s)
		}
		taskCtx[k] = v
	}
	if len(taskCtx) == 0 {
		taskCtx = nil
	}
	in := policy.Input{
		Request: events.Request{RequestID: "explain", Agent: *agent, Permissions: perms, DurationMS: dur.Milliseconds(),
			Reason: *reason, Context: taskCtx, RequestedBy: events.Actor{Kind: events.ActorAgent, ID: *agent}, RequestedAt: now},
		Now: now,
	}

	var cfg *config.Config
	if *file != "" {
		if cfg, err = config.LoadFile(*file); err != nil {
			return err
		}
	} else {
		nc, js, err := a.connect()
		if err != nil {
			return err
		}
		defer nc.Close()
		if cfg, _, err = activeConfig(ctx, js); err != nil {
			return err
		}
		if in.Suspended, err = suspended(ctx, js, *agent); err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		h := policy.NewHistory()
		if err := h.Replay(rctx, js, *agent, now); err != nil {
			return fmt.Errorf("read the agent's history: %w", err)
		}
		in.History = h.Counts(*agent, math.MaxUint64, now, cfg.RateLimit.Per.D())
	}
	x := policy.Explain(cfg, in)
	if a.json {
		return a.printJSON(x)
	}
	x.WriteText(a.stdout)
	return nil
}

// suspended reports whether the agent has a suspension record.
func suspended(ctx context.Context, js jetstream.JetStream, agent string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	kv, err := js.KeyValue(ctx, broker.BucketSuspensions)
	if err != nil {
		return false, err
	}
	if !events.ValidID(agent) {
		return false, nil
	}
	_, err = kv.Get(ctx, agent)
	switch err = broker.MapError(err); {
	case err == nil:
		return true, nil
	case errors.Is(err, broker.ErrNotFound):
		return false, nil
	}
	return false, err
}

// policyTest checks a table of expected decisions against a configuration
// (the file's own "config", or --config) and fails (exit 1) on any
// mismatch.
func (a *app) policyTest(_ context.Context, args []string) error {
	fs := a.flags()
	file := fs.String("config", "", "the configuration to test (default: the test file's config)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := positionals(pos, "FILE"); err != nil {
		return err
	}
	tf, err := policy.LoadTestFile(pos[0])
	if err != nil {
		return err
	}
	path := tf.Config
	if *file != "" {
		path = *file
	}
	if path == "" {
		return usagef("%s names no config; pass --config FILE", pos[0])
	}
	cfg, err := config.LoadFile(path)
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range tf.Run(cfg) {
		if !r.Passed() {
			failed++
		}
		if a.json {
			if err := a.printJSON(r); err != nil {
				return err
			}
			continue
		}
		if r.Passed() {
			a.printf("ok    %s\n", r.Name)
			continue
		}
		a.printf("FAIL  %s: %s\n      reason: %s\n", r.Name, strings.Join(r.Failures, "; "), r.Decision.Reason)
	}
	if !a.json {
		a.printf("%d passed, %d failed (%s against %s)\n", len(tf.Cases)-failed, failed, pos[0], path)
	}
	if failed > 0 {
		return errRefused
	}
	return nil
}
