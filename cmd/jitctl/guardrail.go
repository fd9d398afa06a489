package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
)

// guardrail runs "guardrail fire": it publishes a guardrail.fired event, as
// a guardrail system would, and returns once the audit stream stored it.
func (a *app) guardrail(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("missing subcommand (fire)")
	}
	if args[0] != "fire" {
		return usagef("unknown subcommand %q (want fire)", args[0])
	}
	fs := a.flags()
	agent := fs.String("agent", "", "the agent that violated the guardrail")
	rule := fs.String("rule", "", "the guardrail rule that fired")
	detail := fs.String("detail", "", "what happened")
	source := fs.String("source", "", "the guardrail source reporting it (with --creds-dir: whose credential to use; default the only guardrail-*.creds there)")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if err := positionals(pos); err != nil {
		return err
	}
	if err := required("agent", *agent, "rule", *rule); err != nil {
		return err
	}
	data := events.GuardrailFired{Agent: *agent, Rule: *rule, Detail: *detail, FiredAt: time.Now().UTC()}
	if err := data.Validate(); err != nil {
		return usagef("%v", err)
	}
	e, err := events.New(events.NewID("grd"), events.TypeGuardrailFired, "jitctl", *agent, data)
	if err != nil {
		return err
	}

	src, err := a.guardrailSource(*source)
	if err != nil {
		return err
	}
	nc, js, err := a.connectAs(auth.Principal{Kind: auth.KindGuardrail, ID: src})
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	// A guardrail source's publish reaches the revoker's ingress, which
	// checks it and stores it on the audit stream, and answers as the
	// stream would.
	m, err := broker.ToMsg(events.Subject(events.TypeGuardrailFired, *agent), e)
	if err != nil {
		return err
	}
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		return fmt.Errorf("fire %s against %s: %w", *rule, *agent, err)
	}
	seq := ack.Sequence
	if a.json {
		return a.printJSON(struct {
			EventID string `json:"event_id"`
			Agent   string `json:"agent"`
			Rule    string `json:"rule"`
			Seq     uint64 `json:"seq"`
		}{e.ID(), *agent, *rule, seq})
	}
	a.printf("guardrail %s fired against %s (event %s)\n", *rule, *agent, e.ID())
	return nil
}

// guardrailSource is the source a guardrail fire acts as: the one named, or
// with --creds-dir and no --creds the only guardrail-*.creds there.
func (a *app) guardrailSource(named string) (string, error) {
	if named != "" || a.client.Creds != "" || a.credsDir == "" {
		if named == "" {
			named = "jitctl"
		}
		return named, nil
	}
	matches, err := filepath.Glob(filepath.Join(a.credsDir, "guardrail-*.creds"))
	if err != nil {
		return "", err
	}
	if len(matches) != 1 {
		return "", usagef("--source is needed: %d guardrail sources' credentials in %s", len(matches), a.credsDir)
	}
	name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(matches[0]), "guardrail-"), ".creds")
	return name, nil
}
