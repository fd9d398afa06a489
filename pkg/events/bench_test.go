package events_test

import (
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
)

// benchDecision is a jit.decided event as the policy service publishes it.
func benchDecision(b *testing.B) events.Event {
	b.Helper()
	now := time.Now().UTC()
	req := events.Request{RequestID: "req_01HZX3", Agent: "svc-price-optimizer", Permissions: []string{"data:write"},
		DurationMS: 1800000, Reason: "clean up orphaned SKUs", Context: map[string]string{"task": "T-1182", "ticket": "OPS-77"},
		RequestedBy: events.Actor{Kind: events.ActorAgent, ID: "svc-price-optimizer"}, RequestedAt: now}
	d := events.Decision{RequestID: req.RequestID, Agent: req.Agent, Outcome: events.OutcomeApproved, Mode: "auto-approve",
		Rule: "price-optimizer-write", Reason: "rule price-optimizer-write approves data:write for up to 30m",
		Permissions: req.Permissions, DurationMS: req.DurationMS,
		Risk: &events.Risk{Score: 23, Parts: []events.RiskPart{
			{Name: "sensitivity", Points: 15, Detail: "data:write is sensitivity 3 of 5"},
			{Name: "duration", Points: 8, Detail: "30m is 100% of the agent's maximum"},
		}},
		DecidedBy: events.Actor{Kind: events.ActorSystem, ID: "policy"}, DecidedAt: now, Request: req}
	e, err := events.New(req.RequestID+"/policy", events.TypeDecided, "policy", req.Agent, d, events.WithRequestID(req.RequestID))
	if err != nil {
		b.Fatal(err)
	}
	return e
}

func BenchmarkEncode(b *testing.B) {
	e := benchDecision(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.Encode(e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeData is what a consumer does with each message: decode and
// validate the envelope, then its data.
func BenchmarkDecodeData(b *testing.B) {
	body, err := events.Encode(benchDecision(b))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		e, err := events.Decode(body)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := events.DataAs[events.Decision](e); err != nil {
			b.Fatal(err)
		}
	}
}
