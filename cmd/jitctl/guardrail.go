package main

import (
	"context"
	"time"

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

	nc, js, err := a.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	seq, err := broker.NewPublisher(js, "jitctl").Publish(ctx, events.Subject(events.TypeGuardrailFired, *agent), e)
	if err != nil {
		return err
	}
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
