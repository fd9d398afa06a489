package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/agentjit/jit/pkg/service"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

func exampleYAML(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	return string(b)
}

func startPolicy(t *testing.T, env *natstest.Env, src *config.Source) *Service {
	t.Helper()
	s := New(service.Deps{
		NC: env.NC, JS: env.JS, Buckets: env.Buckets, Config: src,
		Log: natstest.Logger(t), Now: func() time.Time { return wed1000 },
	})
	require.NoError(t, s.Start(context.Background()))
	t.Cleanup(s.Stop)
	return s
}

// publishRequest puts a jit.requested event on the stream as the requester
// does.
func publishRequest(t *testing.T, env *natstest.Env, id, agent string, d time.Duration, perms ...string) events.Request {
	t.Helper()
	req := events.Request{
		RequestID: id, Agent: agent, Permissions: perms, DurationMS: d.Milliseconds(), Reason: "test",
		RequestedBy: events.Actor{Kind: events.ActorAgent, ID: agent}, RequestedAt: wed1000.Add(-time.Second),
	}
	_, _, err := broker.NewPublisher(env.JS, "requester").Emit(context.Background(), id, events.TypeRequested, agent, req, events.WithRequestID(id))
	require.NoError(t, err)
	return req
}

type decided struct {
	subject  string
	event    events.Event
	decision events.Decision
}

// decisions returns every jit.decided event on the stream, by event id;
// it fails the test if an id is stored twice.
func decisions(t *testing.T, env *natstest.Env) map[string]decided {
	t.Helper()
	out := map[string]decided{}
	for _, m := range env.AuditEvents(t, "jit.decided.>") {
		e, err := broker.FromMsg(m.Header, m.Data)
		require.NoError(t, err)
		d, err := events.DataAs[events.Decision](e)
		require.NoError(t, err)
		_, dup := out[e.ID()]
		require.False(t, dup, "decision %s stored twice", e.ID())
		out[e.ID()] = decided{subject: m.Subject, event: e, decision: d}
	}
	return out
}

func waitDecisions(t *testing.T, env *natstest.Env, n int) map[string]decided {
	t.Helper()
	require.Eventually(t, func() bool { return len(env.AuditEvents(t, "jit.decided.>")) >= n }, 10*time.Second, 20*time.Millisecond)
	got := decisions(t, env)
	require.Len(t, got, n)
	return got
}

func consumerInfo(t *testing.T, env *natstest.Env) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := env.JS.Consumer(ctx, broker.AuditStream, Durable)
	require.NoError(t, err)
	info, err := c.Info(ctx)
	require.NoError(t, err)
	return info
}

// requireDrained asserts the durable has handled everything, each message
// delivered exactly once in total.
func requireDrained(t *testing.T, env *natstest.Env, deliveries uint64) {
	t.Helper()
	require.Eventually(t, func() bool {
		i := consumerInfo(t, env)
		return i.NumPending == 0 && i.NumAckPending == 0
	}, 10*time.Second, 20*time.Millisecond)
	i := consumerInfo(t, env)
	require.Equal(t, deliveries, i.Delivered.Consumer, "each message delivered once")
	require.Zero(t, i.NumRedelivered)
}

func TestDecidesRequests(t *testing.T) {
	env := natstest.Setup(t)
	src := env.ApplyConfig(t, exampleYAML(t))
	startPolicy(t, env, src)

	sus, _ := json.Marshal(events.Suspension{Agent: "market-intel", Rule: "price-floor", SuspendedAt: wed1000.Add(-time.Hour)})
	reqs := []struct {
		req                 events.Request
		outcome, mode, rule string
		roles               []string
	}{
		{req: publishRequest(t, env, "req-auto", "market-intel", 30*time.Minute, "data:write"),
			outcome: events.OutcomeApproved, mode: events.ModeAutoApprove, rule: "market-intel-write"},
		{req: publishRequest(t, env, "req-policy-ok", "svc-price-optimizer", 15*time.Minute, "data:write"),
			outcome: events.OutcomeApproved, mode: events.ModePolicy, rule: "optimizer-write-low-risk"},
		{req: publishRequest(t, env, "req-policy-no", "svc-price-optimizer", 25*time.Minute, "data:write"),
			outcome: events.OutcomeDenied, mode: events.ModePolicy, rule: "optimizer-write-low-risk"},
		{req: publishRequest(t, env, "req-pending", "svc-price-optimizer", 10*time.Minute, "integrations:write"),
			outcome: events.OutcomePending, mode: events.ModeRequireApproval, rule: "optimizer-integrations", roles: []string{"security-admin"}},
	}
	got := waitDecisions(t, env, len(reqs))
	for _, tc := range reqs {
		id := tc.req.RequestID + "/policy"
		d, ok := got[id]
		require.True(t, ok, "decision %s", id)
		require.Equal(t, "jit.decided."+tc.req.Agent, d.subject)
		require.Equal(t, events.TypeDecided, d.event.Type())
		require.Equal(t, "/jit/policy", d.event.Source())
		require.Equal(t, tc.req.RequestID, events.RequestID(d.event))
		require.Equal(t, wed1000, d.event.Time())
		require.Equal(t, Decide(src.Current(), tc.req, wed1000, false), d.decision, "the published decision is Decide's")
		require.Equal(t, tc.outcome, d.decision.Outcome, d.decision.Reason)
		require.Equal(t, tc.mode, d.decision.Mode)
		require.Equal(t, tc.rule, d.decision.Rule)
		require.Equal(t, tc.roles, d.decision.ApproverRoles)
		require.Equal(t, tc.req, d.decision.Request)
	}

	// A suspended agent is denied.
	_, err := env.Buckets.Suspensions.Put(context.Background(), "market-intel", sus)
	require.NoError(t, err)
	publishRequest(t, env, "req-suspended", "market-intel", 30*time.Minute, "data:write")
	got = waitDecisions(t, env, len(reqs)+1)
	d := got["req-suspended/policy"].decision
	require.Equal(t, events.OutcomeDenied, d.Outcome)
	require.Equal(t, events.ModeSuspended, d.Mode)

	// A configuration change applies to the next request without restart:
	// market-intel's rule becomes a deny.
	changed := strings.Replace(exampleYAML(t), "mode: auto-approve\n    max_duration: 60m", "mode: deny", 1)
	c, err := config.Parse("changed.yaml", []byte(changed))
	require.NoError(t, err)
	_, _, err = config.Apply(context.Background(), env.Buckets.Config, c)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return src.Current().Digest() == c.Digest() }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, env.Buckets.Suspensions.Delete(context.Background(), "market-intel"))
	publishRequest(t, env, "req-after-change", "market-intel", 30*time.Minute, "data:write")
	got = waitDecisions(t, env, len(reqs)+2)
	d = got["req-after-change/policy"].decision
	require.Equal(t, events.OutcomeDenied, d.Outcome)
	require.Equal(t, events.ModeDeny, d.Mode)

	requireDrained(t, env, uint64(len(reqs)+2))
	require.Empty(t, env.AuditEvents(t, "jit.rejected.>"))
}

func TestMalformedRequestsAreRejected(t *testing.T) {
	env := natstest.Setup(t)
	src := env.ApplyConfig(t, exampleYAML(t))
	startPolicy(t, env, src)
	ctx := context.Background()
	pub := broker.NewPublisher(env.JS, "requester")

	garbage, err := env.JS.Publish(ctx, "jit.requested.x", []byte("not a cloudevent"))
	require.NoError(t, err)
	wrongType, err := pub.Publish(ctx, "jit.requested.market-intel", mustEvent(t, "ev-wrong-type", events.TypeGranted, "market-intel", events.Grant{GrantID: "g"}))
	require.NoError(t, err)
	badData, err := pub.Publish(ctx, "jit.requested.market-intel", mustEvent(t, "ev-bad-data", events.TypeRequested, "market-intel", map[string]any{"request_id": "r", "agent": "market-intel", "admin": true}))
	require.NoError(t, err)
	wrongAgent, err := pub.Publish(ctx, "jit.requested.market-intel", mustEvent(t, "ev-wrong-agent", events.TypeRequested, "market-intel",
		events.Request{RequestID: "req-spoof", Agent: "svc-price-optimizer", Permissions: []string{"data:write"}, DurationMS: 60000}))
	require.NoError(t, err)
	good := publishRequest(t, env, "req-after-garbage", "market-intel", 30*time.Minute, "data:write")

	got := waitDecisions(t, env, 1)
	require.Equal(t, events.OutcomeApproved, got["req-after-garbage/policy"].decision.Outcome)
	require.Equal(t, good, got["req-after-garbage/policy"].decision.Request)

	rejected := map[string]events.Rejection{}
	for _, m := range env.AuditEvents(t, "jit.rejected.>") {
		e, err := broker.FromMsg(m.Header, m.Data)
		require.NoError(t, err)
		r, err := events.DataAs[events.Rejection](e)
		require.NoError(t, err)
		rejected[e.ID()] = r
	}
	require.Len(t, rejected, 4)
	for _, tc := range []struct {
		seq      uint64
		subject  string
		agent    string
		contains string
	}{
		{garbage.Sequence, "jit.requested.x", "x", "not a JSON object"},
		{wrongType, "jit.requested.market-intel", "market-intel", "a jit.granted event on jit.requested.market-intel; only jit.requested belongs there"},
		{badData, "jit.requested.market-intel", "market-intel", `unknown field "admin"`},
		{wrongAgent, "jit.requested.market-intel", "market-intel", "request for agent svc-price-optimizer arrived on jit.requested.market-intel"},
	} {
		id := events.RejectedEventID(Durable, tc.seq)
		r, ok := rejected[id]
		require.True(t, ok, "rejection %s", id)
		require.Equal(t, events.StageEvent, r.Stage)
		require.Equal(t, events.CodeMalformed, r.Code)
		require.Equal(t, tc.subject, r.Subject)
		require.Equal(t, tc.agent, r.Agent)
		require.Contains(t, r.Message, tc.contains)
		require.Equal(t, events.Actor{Kind: events.ActorSystem, ID: "policy"}, r.Actor)
	}
	// Terminated, not redelivered: nothing left for the durable.
	requireDrained(t, env, 5)
}

func mustEvent(t *testing.T, id, typ, agent string, data any) events.Event {
	t.Helper()
	e, err := events.New(id, typ, "requester", agent, data)
	require.NoError(t, err)
	return e
}

func TestKillAndRestart(t *testing.T) {
	env := natstest.Setup(t)
	src := env.ApplyConfig(t, exampleYAML(t))

	// The durable exists, then the service goes away with work arriving.
	first := startPolicy(t, env, src)
	first.Stop()
	const n = 5
	var ids []string
	for i := range n {
		id := fmt.Sprintf("req-while-down-%d", i)
		ids = append(ids, id)
		publishRequest(t, env, id, "market-intel", 10*time.Minute, "data:write")
	}
	require.Empty(t, env.AuditEvents(t, "jit.decided.>"), "nothing is decided while the service is down")

	second := startPolicy(t, env, src)
	got := waitDecisions(t, env, n)
	for _, id := range ids {
		require.Equal(t, events.OutcomeApproved, got[id+"/policy"].decision.Outcome)
	}
	requireDrained(t, env, n)

	// Restart again: nothing is decided twice. A probe request proves the
	// new instance runs; the durable delivered exactly one more message.
	second.Stop()
	startPolicy(t, env, src)
	publishRequest(t, env, "req-probe", "svc-price-optimizer", 10*time.Minute, "integrations:write")
	got = waitDecisions(t, env, n+1)
	require.Equal(t, events.OutcomePending, got["req-probe/policy"].decision.Outcome)
	requireDrained(t, env, n+1)
}

// TestStopMidStream stops the service while it works through a backlog:
// Stop returns only when every request it fetched is decided and acked, so
// nothing is left half-done, and a new instance finishes the rest, each
// request delivered once.
func TestStopMidStream(t *testing.T) {
	env := natstest.Setup(t)
	src := env.ApplyConfig(t, exampleYAML(t))
	const n = 40
	for i := range n {
		publishRequest(t, env, fmt.Sprintf("req-burst-%02d", i), "market-intel", 10*time.Minute, "data:write")
	}
	first := startPolicy(t, env, src)
	require.Eventually(t, func() bool { return len(env.AuditEvents(t, "jit.decided.>")) > 0 }, 10*time.Second, 5*time.Millisecond)
	first.Stop()

	// Every request is decided and acknowledged, or not yet handled:
	// still pending, or sent by the server after the fetching stopped
	// (unacknowledged; the next instance takes it back at once). A
	// request decided but not acknowledged would be counted twice.
	info := consumerInfo(t, env)
	require.Equal(t, uint64(n), uint64(len(decisions(t, env)))+info.NumPending+uint64(info.NumAckPending),
		"every request is decided once, or waits: %+v", info)

	startPolicy(t, env, src)
	got := waitDecisions(t, env, n)
	for i := range n {
		require.Contains(t, got, fmt.Sprintf("req-burst-%02d/policy", i))
	}
	requireDrained(t, env, n)
}

func TestBrokerRestart(t *testing.T) {
	dir := t.TempDir()
	env := natstest.SetupAt(t, dir)
	src := env.ApplyConfig(t, exampleYAML(t))
	s := startPolicy(t, env, src)
	publishRequest(t, env, "req-before", "market-intel", 10*time.Minute, "data:write")
	waitDecisions(t, env, 1)
	s.Stop()
	env.Server.Shutdown()
	env.Server.WaitForShutdown()

	env2 := natstest.SetupAt(t, dir)
	src2 := env2.ApplyConfig(t, exampleYAML(t))
	publishRequest(t, env2, "req-after", "market-intel", 10*time.Minute, "data:write")
	startPolicy(t, env2, src2)
	got := waitDecisions(t, env2, 2)
	require.Contains(t, got, "req-before/policy")
	require.Contains(t, got, "req-after/policy")
	requireDrained(t, env2, 2)
}
