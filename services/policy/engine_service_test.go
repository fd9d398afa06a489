package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/stretchr/testify/require"
)

func configEvents(t *testing.T, env *natstest.Env) []events.ConfigApplied {
	t.Helper()
	var out []events.ConfigApplied
	for _, m := range env.AuditEvents(t, "jit.config.>") {
		e, err := broker.FromMsg(m.Header, m.Data)
		require.NoError(t, err)
		c, err := events.DataAs[events.ConfigApplied](e)
		require.NoError(t, err)
		out = append(out, c)
	}
	return out
}

func TestConfigApplyAPI(t *testing.T) {
	env := natstest.Setup(t)
	src := env.ApplyConfig(t, exampleYAML(t))
	startPolicy(t, env, src)
	ctx := context.Background()
	before := src.Current().Digest()
	// As the approval service calls once it has authenticated the approver
	// (its own tests check tokens): approver "" is an actor that is none.
	call := func(approver string, in ConfigApplyInput) (ConfigApplyResult, error) {
		var out ConfigApplyResult
		err := broker.Call(ctx, env.NC, broker.InternalConfigApply, "", broker.Authorized[ConfigApplyInput]{Input: in, By: approverActor(t, src, approver)}, &out)
		return out, err
	}
	apiErr := func(t *testing.T, err error, status int, code, contains string) {
		t.Helper()
		var ae *broker.APIError
		require.True(t, errors.As(err, &ae), "%v", err)
		require.Equal(t, status, ae.Status)
		require.Equal(t, code, ae.Code)
		require.Contains(t, ae.Message, contains)
	}

	// Refused: who may not, and a bad file.
	_, err := call("", ConfigApplyInput{Source: "x.yaml", YAML: exampleYAML(t)})
	apiErr(t, err, 403, events.CodeForbidden, "must name an approver holding one of the roles org-admin, security-admin")
	_, err = call("carol", ConfigApplyInput{Source: "x.yaml", YAML: exampleYAML(t)})
	apiErr(t, err, 403, events.CodeForbidden, "org-admin, security-admin")
	bad := strings.Replace(exampleYAML(t), "max_duration: 60m", "max_duration: 90m", 1)
	_, err = call("alice", ConfigApplyInput{Source: "team/jit.yaml", YAML: bad})
	apiErr(t, err, 400, events.CodeInvalidConfig, "team/jit.yaml:"+ruleLine(t, "market-intel-write")+`: rule "market-intel-write": max_duration 1h30m0s is above agent "market-intel"'s max_jit_duration 1h0m0s`)
	require.Equal(t, before, src.Current().Digest(), "a refused file leaves the active configuration")

	// Applied: a new version, then the same again.
	changed := strings.Replace(exampleYAML(t), "max_risk: 60", "max_risk: 50", 1)
	res, err := call("bob", ConfigApplyInput{Source: "team/jit.yaml", YAML: changed})
	require.NoError(t, err)
	require.Equal(t, "applied", res.Outcome)
	want, err := config.Parse("x", []byte(changed))
	require.NoError(t, err)
	require.Equal(t, want.Digest(), res.Digest)
	require.Eventually(t, func() bool { return src.Current().Digest() == want.Digest() }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, res.Revision, src.Revision())
	res2, err := call("alice", ConfigApplyInput{Source: "team/jit.yaml", YAML: changed})
	require.NoError(t, err)
	require.Equal(t, "unchanged", res2.Outcome)
	require.Equal(t, res.Revision, res2.Revision)

	var evs []events.ConfigApplied
	require.Eventually(t, func() bool { evs = configEvents(t, env); return len(evs) == 3 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, "refused", evs[0].Outcome)
	require.Equal(t, "team/jit.yaml", evs[0].Source)
	require.Contains(t, evs[0].Error, "max_duration 1h30m0s")
	require.Equal(t, events.Actor{Kind: events.ActorApprover, ID: "alice", Roles: []string{"security-admin"}}, evs[0].AppliedBy)
	require.Equal(t, "applied", evs[1].Outcome)
	require.Equal(t, res.Revision, evs[1].Revision)
	require.Equal(t, res.Digest, evs[1].Digest)
	require.Equal(t, "bob", evs[1].AppliedBy.ID)
	require.Equal(t, "unchanged", evs[2].Outcome)

	rejected := env.AuditEvents(t, "jit.rejected.>")
	require.Len(t, rejected, 2, "the two forbidden calls")
}

// TestRateLimitAndHistoryFromTheStream floods requests and fires a
// guardrail: the history window, fed by the audit stream, makes the rate
// limit deny the excess (never pending, so no approver is paged) and the
// example's repeat-offenders rule deny after three guardrail fires.
func TestRateLimitAndHistoryFromTheStream(t *testing.T) {
	env := natstest.Setup(t)
	src := env.ApplyConfig(t, "rate_limit: {requests: 3, per: 1m}\n"+exampleYAML(t))
	startPolicy(t, env, src)

	const n = 6
	for i := range n {
		publishRequest(t, env, fmt.Sprintf("req-flood-%d", i), "svc-price-optimizer", 10*time.Minute, "integrations:write")
	}
	got := waitDecisions(t, env, n)
	for i := range n {
		d := got[fmt.Sprintf("req-flood-%d/policy", i)].decision
		if i < 3 {
			require.Equal(t, events.OutcomePending, d.Outcome, "request %d: %s", i, d.Reason)
			continue
		}
		require.Equal(t, events.OutcomeDenied, d.Outcome, "request %d", i)
		require.Equal(t, events.ModeDeny, d.Mode)
		require.Equal(t, RateLimitRule, d.Rule)
		require.Empty(t, d.ApproverRoles, "nobody is paged")
		require.Nil(t, d.ApprovalDeadline)
		require.Equal(t, fmt.Sprintf("rate limit: agent svc-price-optimizer made %d requests in the 1m before this one; the limit is 3 per 1m, so it is denied without asking an approver", i), d.Reason)
	}

	// Three guardrail fires against market-intel: the next request is
	// denied by the condition agent.guardrail_fires_24h >= 3.
	pub := broker.NewPublisher(env.JS, "guardrails")
	for i := range 3 {
		_, _, err := pub.Emit(context.Background(), fmt.Sprintf("fire-%d", i), events.TypeGuardrailFired, "market-intel",
			events.GuardrailFired{Agent: "market-intel", Rule: "price-floor", FiredAt: time.Now().UTC()})
		require.NoError(t, err)
	}
	publishRequest(t, env, "req-offender", "market-intel", 10*time.Minute, "data:write")
	got = waitDecisions(t, env, n+1)
	d := got["req-offender/policy"].decision
	require.Equal(t, events.OutcomeDenied, d.Outcome, d.Reason)
	require.Equal(t, "repeat-offenders", d.Rule)

	// A restarted service rebuilds the same history from the stream.
	s := startPolicy(t, env, src)
	require.NoError(t, s.History().WaitFor(context.Background(), 1))
	require.Eventually(t, func() bool {
		return s.History().Counts("market-intel", 1<<62, time.Now().Add(time.Second), time.Minute).GuardrailFires == 3
	}, 5*time.Second, 10*time.Millisecond)
}

func TestHistoryCountsOnlyWhatCameBefore(t *testing.T) {
	h := NewHistory()
	at := time.Date(2025, 3, 5, 10, 0, 0, 0, time.UTC)
	h.Add(1, "jit.requested.a1", at.Add(-30*time.Hour), false)
	h.Add(2, "jit.requested.a1", at.Add(-30*time.Second), false)
	h.Add(3, "jit.decided.a1", at.Add(-29*time.Second), true)
	h.Add(4, "jit.decided.a1", at.Add(-28*time.Second), false) // approved
	h.Add(5, "jit.granted.a1", at.Add(-2*time.Hour), false)
	h.Add(6, "guardrail.fired.a1", at.Add(-23*time.Hour), false)
	h.Add(7, "jit.requested.a1", at, false)
	h.Add(8, "jit.requested.a1", at.Add(time.Second), false)

	require.Equal(t, Counts{Grants: 1, Denials: 1, GuardrailFires: 1, RequestsLastMinute: 1, RequestsInRateWindow: 1},
		h.Counts("a1", 7, at, 5*time.Minute), "before r3: r1 is out of the window, r4 comes after")
	require.Equal(t, Counts{Grants: 1, Denials: 1, GuardrailFires: 1, RequestsLastMinute: 2, RequestsInRateWindow: 2},
		h.Counts("a1", 8, at.Add(time.Second), 5*time.Minute))
	require.Equal(t, Counts{}, h.Counts("nobody", 8, at, time.Minute))

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	require.NoError(t, h.WaitFor(ctx, 8))
	require.Error(t, h.WaitFor(ctx, 9), "sequence 9 is not there yet")
}

// TestConfigChangeWhileRequestsFlow applies two configurations back and
// forth while requests stream in. Each configuration names its rules with
// its version, and every request asks for two permissions decided by two
// different rules: a request decided by a half-applied configuration would
// name rules of both versions.
func TestConfigChangeWhileRequestsFlow(t *testing.T) {
	version := func(v string) string {
		y := strings.Replace(exampleYAML(t), "max_risk: 60", "max_risk: 90", 1)
		for _, name := range []string{"repeat-offenders", "market-intel-write", "optimizer-write-low-risk", "optimizer-integrations"} {
			y = strings.ReplaceAll(y, "name: "+name, "name: "+v+"-"+name)
		}
		return y
	}
	env := natstest.Setup(t)
	src := env.ApplyConfig(t, version("v1"))
	startPolicy(t, env, src)
	cfgs := []*config.Config{}
	for _, v := range []string{"v1", "v2"} {
		c, err := config.Parse(v+".yaml", []byte(version(v)))
		require.NoError(t, err)
		cfgs = append(cfgs, c)
	}

	const n = 60
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 20 {
			_, _, err := config.Apply(context.Background(), env.Buckets.Config, cfgs[(i+1)%2])
			if err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := range n {
		publishRequest(t, env, fmt.Sprintf("req-flow-%02d", i), "svc-price-optimizer", 10*time.Minute, "data:write", "integrations:write")
	}
	wg.Wait()
	got := waitDecisions(t, env, n)
	seen := map[string]bool{}
	for id, d := range got {
		require.Equal(t, events.OutcomePending, d.decision.Outcome, "%s: %s", id, d.decision.Reason)
		v := d.decision.Rule[:2]
		seen[v] = true
		require.Equal(t, v+"-optimizer-write-low-risk,"+v+"-optimizer-integrations", d.decision.Rule, "%s decided by one configuration", id)
		require.Equal(t, []string{"security-admin"}, d.decision.ApproverRoles)
	}
	t.Logf("versions that decided: %v", seen)
}

// ruleLine is the line of rule name in examples/jit.yaml.
func ruleLine(t *testing.T, name string) string {
	t.Helper()
	c, err := config.Parse("jit.yaml", []byte(exampleYAML(t)))
	require.NoError(t, err)
	for _, r := range c.Rules {
		if r.Name == name {
			return fmt.Sprint(r.Line())
		}
	}
	t.Fatalf("no rule %s", name)
	return ""
}

// TestHistoryUsesTheBrokersClock: requests whose own time attribute says an
// hour ago still count in the last minute, so a publisher cannot backdate
// its way out of the rate limit; a decision counts as a denial only if it
// decodes as one.
func TestHistoryUsesTheBrokersClock(t *testing.T) {
	env := natstest.Setup(t)
	ctx := context.Background()
	pub := broker.NewPublisher(env.JS, "agent")
	hourAgo := time.Now().Add(-time.Hour).UTC()
	for i := range 3 {
		id := fmt.Sprintf("req-old-%d", i)
		_, _, err := pub.Emit(ctx, id, events.TypeRequested, "a1",
			events.Request{RequestID: id, Agent: "a1"}, events.WithTime(hourAgo))
		require.NoError(t, err)
	}
	_, _, err := pub.Emit(ctx, "dec-1", events.TypeDecided, "a1", events.Decision{RequestID: "req-old-0", Agent: "a1", Outcome: events.OutcomeDenied})
	require.NoError(t, err)
	_, _, err = pub.Emit(ctx, "dec-2", events.TypeDecided, "a1", map[string]any{"outcome": "denied", "bogus": true})
	require.NoError(t, err)

	h := NewHistory()
	require.NoError(t, h.Replay(ctx, env.JS, "a1", time.Now()))
	c := h.Counts("a1", 1<<62, time.Now(), time.Minute)
	require.Equal(t, 3, c.RequestsLastMinute, "counted when the broker stored them")
	require.Equal(t, 1, c.Denials, "the decision that does not decode is not a denial")
}

// approverActor is the actor the approval service names for the approver
// called name; "" is an agent.
func approverActor(t *testing.T, src *config.Source, name string) events.Actor {
	t.Helper()
	if name == "" {
		return events.Actor{Kind: events.ActorAgent, ID: "market-intel"}
	}
	a, ok := src.Current().Approver(name)
	require.True(t, ok, name)
	return events.Actor{Kind: events.ActorApprover, ID: a.Name, Roles: a.Roles}
}
