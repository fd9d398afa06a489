package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// benchConfig builds a configuration with n rules over n/10 agents (at
// least 1), each eligible for ten permissions; a third of the rules carry a
// CEL condition, and a wildcard deny with a condition sits in front of all.
func benchConfig(b *testing.B, n int) string {
	var y strings.Builder
	agents := max(n/10, 1)
	y.WriteString("agents:\n")
	for a := range agents {
		fmt.Fprintf(&y, "  - id: agent-%d\n    eligible: [", a)
		for p := range 10 {
			if p > 0 {
				y.WriteString(", ")
			}
			fmt.Fprintf(&y, "area%d:act%d", p, p)
		}
		y.WriteString("]\n    max_jit_duration: 60m\n    labels: {tier: prod}\n")
	}
	y.WriteString("rules:\n  - name: frozen\n    permissions: [\"*\"]\n    mode: deny\n    condition: time.holiday || agent.guardrail_fires_24h > 2\n")
	for i := 1; i < n; i++ {
		a, p := i%agents, (i/agents)%10
		fmt.Fprintf(&y, "  - name: rule-%d\n    agents: [agent-%d]\n    permissions: [area%d:act%d]\n", i, a, p, p)
		switch i % 3 {
		case 0:
			y.WriteString("    mode: auto-approve\n    condition: request.duration <= duration(\"30m\") && risk.score < 80\n")
		case 1:
			y.WriteString("    mode: policy\n    policy: {max_risk: 90, max_duration: 45m}\n")
		default:
			y.WriteString("    mode: require-approval\n    approver_roles: [security-admin]\n")
		}
	}
	y.WriteString(approversYAML)
	return y.String()
}

func benchDecide(b *testing.B, n int) {
	cfg := parse(b, "bench.yaml", benchConfig(b, n))
	if len(cfg.Rules) != n {
		b.Fatalf("%d rules, want %d", len(cfg.Rules), n)
	}
	// area3:act3 of agent-0 is decided by an auto-approve rule with a
	// condition (rule-3 of 10, rule-300 of 1,000), after the wildcard deny's
	// condition is evaluated and found false: two CEL evaluations, the path
	// of a rule that decides.
	req := request("agent-0", 20*time.Minute, "area3:act3")
	in := Input{Request: req, Now: wed1000, History: Counts{Grants: 1, RequestsLastMinute: 1}}
	want := "rule-3"
	if n >= 100 {
		want = "rule-300"
	}
	if d := Evaluate(cfg, in); d.Outcome != "approved" || d.Rule != want {
		b.Fatalf("decided %s by %q (%s), want approved by %s", d.Outcome, d.Rule, d.Reason, want)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		Evaluate(cfg, in)
	}
}

// BenchmarkDecide10 and BenchmarkDecide1000 measure one decision (risk
// score, rule index lookup, CEL conditions, reason) with 10 and 1,000 rules.
func BenchmarkDecide10(b *testing.B)   { benchDecide(b, 10) }
func BenchmarkDecide1000(b *testing.B) { benchDecide(b, 1000) }

// BenchmarkHistoryReplay measures what a restarted policy service waits
// for before its first decision: replaying the window of the audit stream
// (a requested, decided and granted event per request), per event.
func BenchmarkHistoryReplay(b *testing.B) {
	env := natstest.Setup(b)
	ctx := context.Background()
	const n = 30_000
	var futs []jetstream.PubAckFuture
	for i := range n / 3 {
		agent := fmt.Sprintf("a%02d", i%32)
		id := fmt.Sprintf("req-%06d", i)
		for _, ev := range []struct {
			typ  string
			data any
		}{
			{events.TypeRequested, events.Request{RequestID: id, Agent: agent, Permissions: []string{"data:write"}, DurationMS: 2000, Reason: "bench"}},
			{events.TypeDecided, events.Decision{RequestID: id, Agent: agent, Outcome: events.OutcomeApproved, Mode: events.ModeAutoApprove, Permissions: []string{"data:write"}, DurationMS: 2000}},
			{events.TypeGranted, events.Grant{GrantID: "g" + id, RequestID: id, Agent: agent, Permissions: []string{"data:write"}}},
		} {
			e, err := events.New(id+"/"+ev.typ, ev.typ, "bench", agent, ev.data)
			require.NoError(b, err)
			m, err := broker.ToMsg(events.Subject(ev.typ, agent), e)
			require.NoError(b, err)
			f, err := env.JS.PublishMsgAsync(m)
			require.NoError(b, err)
			futs = append(futs, f)
		}
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
	st, err := env.JS.Stream(ctx, broker.AuditStream)
	require.NoError(b, err)
	last := st.CachedInfo().State.LastSeq
	b.ResetTimer()
	for range b.N {
		h := NewHistory()
		require.NoError(b, h.Follow(ctx, env.JS, time.Now(), zerolog.Nop()))
		require.NoError(b, h.WaitFor(ctx, last))
		h.Stop()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/event")
}

// BenchmarkHistoryReadDirect: the same window read with batched direct
// gets instead of an ordered consumer (for comparison).
func BenchmarkHistoryReadDirect(b *testing.B) {
	env := natstest.Setup(b)
	ctx := context.Background()
	const n = 30_000
	var futs []jetstream.PubAckFuture
	for i := range n / 3 {
		agent := fmt.Sprintf("a%02d", i%32)
		id := fmt.Sprintf("req-%06d", i)
		for _, typ := range []string{events.TypeRequested, events.TypeDecided, events.TypeGranted} {
			e, err := events.New(id+"/"+typ, typ, "bench", agent, events.Decision{RequestID: id, Agent: agent, Outcome: events.OutcomeApproved})
			require.NoError(b, err)
			m, err := broker.ToMsg(events.Subject(typ, agent), e)
			require.NoError(b, err)
			f, err := env.JS.PublishMsgAsync(m)
			require.NoError(b, err)
			futs = append(futs, f)
		}
	}
	for _, f := range futs {
		<-f.Ok()
	}
	b.ResetTimer()
	for range b.N {
		h := NewHistory()
		err := broker.ReadDirect(ctx, env.NC, broker.AuditStream, broker.DirectRead{Filter: "jit.>", Batch: 4096, Since: time.Now().Add(-time.Hour)}, func(m broker.StoredMsg) error {
			h.take(m.Seq, m.Subject, m.Time, m.Header, m.Data)
			return nil
		})
		require.NoError(b, err)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/event")
}
