package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

func requestArgs(extra ...string) []string {
	return append([]string{"request", "--agent", "market-intel", "--perm", "data:write", "--duration", "1m",
		"--reason", "refresh prices", "--context", "ticket=OPS-1"}, extra...)
}

func TestRequest(t *testing.T) {
	h := newHarness(t)
	expires := time.Now().Add(time.Minute).UTC().Truncate(time.Millisecond)
	h.fakeRequester(func(in broker.RequestInput, id string) {
		// Noise first: another request of the same agent, decided the
		// other way. The client must only look at its own request.
		other := events.NewID("req")
		switch in.Reason {
		case "refresh prices":
			h.decide(other, in.Agent, events.OutcomeDenied, events.ModeDefaultDeny, "policy")
			h.decide(id, in.Agent, events.OutcomeApproved, events.ModeAutoApprove, "policy")
			h.grant(id, in.Agent, expires)
		case "deny me":
			h.decide(other, in.Agent, events.OutcomeApproved, events.ModeAutoApprove, "policy")
			h.grant(other, in.Agent, expires)
			h.decide(id, in.Agent, events.OutcomeDenied, events.ModeDefaultDeny, "policy", func(d *events.Decision) {
				d.Rule, d.Reason = "", "no rule allows data:write"
			})
		}
	})

	t.Run("granted", func(t *testing.T) {
		r := h.run(requestArgs("--json")...)
		require.Equal(t, exitOK, r.code, r.stderr)
		c := h.nextCall(t)
		var in broker.RequestInput
		require.NoError(t, json.Unmarshal(c.body, &in))
		require.Equal(t, broker.RequestInput{Agent: "market-intel", Permissions: []string{"data:write"}, Duration: "1m",
			Reason: "refresh prices", Context: map[string]string{"ticket": "OPS-1"}}, in)

		lines := r.lines(t)
		require.Len(t, lines, 1)
		l := lines[0]
		require.Equal(t, "granted", l["outcome"])
		id, _ := l["request_id"].(string)
		require.True(t, strings.HasPrefix(id, "req_"), id)
		require.Equal(t, events.GrantIDFor(id), l["grant_id"])
		require.Equal(t, "market-intel", l["agent"])
		require.Equal(t, []any{"data:write"}, l["permissions"])
		at, err := time.Parse(time.RFC3339Nano, l["expires_at"].(string))
		require.NoError(t, err)
		require.True(t, expires.Equal(at))
	})

	t.Run("granted, human text", func(t *testing.T) {
		r := h.run(requestArgs("--request-id", "req_fixed")...)
		require.Equal(t, exitOK, r.code, r.stderr)
		require.Contains(t, r.stdout, "request req_fixed accepted")
		require.Contains(t, r.stdout, "granted grt_fixed: data:write until ")
	})

	t.Run("denied", func(t *testing.T) {
		r := h.run("request", "--json", "--agent", "market-intel", "--perm", "data:write", "--duration", "1m", "--reason", "deny me")
		require.Equal(t, exitRefused, r.code, r.stderr)
		lines := r.lines(t)
		require.Len(t, lines, 1)
		require.Equal(t, "denied", lines[0]["outcome"])
		require.Equal(t, events.ModeDefaultDeny, lines[0]["mode"])
		require.Equal(t, "", lines[0]["rule"])
		require.Equal(t, "no rule allows data:write", lines[0]["reason"])
		require.NotEmpty(t, lines[0]["request_id"])

		r = h.run("request", "--agent", "market-intel", "--perm", "data:write", "--duration", "1m", "--reason", "deny me")
		require.Equal(t, exitRefused, r.code)
		require.Contains(t, r.stdout, "denied: no rule allows data:write (default-deny)")
	})

	t.Run("API error", func(t *testing.T) {
		for _, tc := range []struct{ name, agent, duration, want string }{
			{"unknown agent", "nobody", "1m", `unknown agent "nobody" (404 unknown_agent)`},
			{"duration", "market-intel", "2h", "above market-intel's max_jit_duration of 60m (400 duration_exceeded)"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := h.run("request", "--agent", tc.agent, "--perm", "data:write", "--duration", tc.duration, "--reason", "x")
				require.Equal(t, exitError, r.code)
				require.Contains(t, r.stderr, tc.want)
				require.Empty(t, r.stdout)
			})
		}
	})

	t.Run("timeout", func(t *testing.T) {
		// "silent" makes the fake publish nothing after jit.requested.
		r := h.run("request", "--agent", "market-intel", "--perm", "data:write", "--duration", "1m", "--reason", "silent", "--timeout", "300ms")
		require.Equal(t, exitError, r.code)
		require.Contains(t, r.stderr, "within 300ms")
	})
}

func TestRequestPendingThenGranted(t *testing.T) {
	h := newHarness(t)
	deadline := time.Now().Add(15 * time.Minute).UTC().Truncate(time.Second)
	ids := make(chan string, 1)
	h.fakeRequester(func(in broker.RequestInput, id string) {
		h.decide(id, in.Agent, events.OutcomePending, events.ModeRequireApproval, "policy", func(d *events.Decision) {
			d.ApproverRoles = []string{"security-admin"}
			d.ApprovalDeadline = &deadline
		})
		ids <- id
	})

	for _, asJSON := range []bool{true, false} {
		name := "text"
		args := requestArgs()
		if asJSON {
			name, args = "json", requestArgs("--json")
		}
		t.Run(name, func(t *testing.T) {
			out, wait := h.start(args...)
			id := recv(t, ids)
			want := "waiting for approval by security-admin (deadline " + deadline.Format(time.RFC3339) + ")"
			if asJSON {
				want = `"event":"pending"`
			}
			require.Eventually(t, func() bool { return strings.Contains(out.String(), want) }, 10*time.Second, 10*time.Millisecond)
			// A repeated pending decision (a redelivery) is shown once.
			h.decide(id, "market-intel", events.OutcomePending, events.ModeRequireApproval, "policy-again")
			h.decide(id, "market-intel", events.OutcomeApproved, events.ModeHuman, "human", func(d *events.Decision) {
				d.DecidedBy = events.Actor{Kind: events.ActorApprover, ID: "alice", Roles: []string{"security-admin"}}
			})
			h.grant(id, "market-intel", time.Now().Add(time.Minute))
			r := wait()
			require.Equal(t, exitOK, r.code, r.stderr)
			if !asJSON {
				require.Equal(t, 1, strings.Count(r.stdout, "waiting for approval"))
				require.Contains(t, r.stdout, "approved by approver:alice")
				require.Contains(t, r.stdout, "granted "+events.GrantIDFor(id))
				return
			}
			lines := r.lines(t)
			require.Len(t, lines, 2)
			require.Equal(t, "pending", lines[0]["event"])
			require.Equal(t, id, lines[0]["request_id"])
			require.Equal(t, []any{"security-admin"}, lines[0]["approver_roles"])
			require.Equal(t, deadline.Format(time.RFC3339), lines[0]["deadline"])
			require.Equal(t, float64(42), lines[0]["risk_score"])
			require.Equal(t, "granted", lines[1]["outcome"])
			require.Equal(t, events.GrantIDFor(id), lines[1]["grant_id"])
		})
	}
}

func TestCheckAndGrants(t *testing.T) {
	h := newHarness(t)
	h.applyExampleConfig()
	soon := time.Now().Add(10 * time.Minute).UTC().Truncate(time.Millisecond)
	later := time.Now().Add(20 * time.Minute).UTC().Truncate(time.Millisecond)
	g1 := events.Grant{GrantID: "grt_one", RequestID: "req_one", Agent: "market-intel", Permissions: []string{"data:write"},
		Mode: events.ModeAutoApprove, GrantedAt: time.Now(), ExpiresAt: later, Status: events.GrantActive}
	g2 := events.Grant{GrantID: "grt_two", RequestID: "req_two", Agent: "svc-price-optimizer", Permissions: []string{"integrations:write"},
		Mode: events.ModeHuman, GrantedAt: time.Now(), ExpiresAt: soon, Status: events.GrantActive}
	expired := g1
	expired.GrantID, expired.ExpiresAt = "grt_old", time.Now().Add(-time.Minute)
	tomb := g2
	tomb.GrantID, tomb.Status = "grt_tomb", events.GrantRevoked
	for _, g := range []events.Grant{g1, g2, expired, tomb} {
		h.putGrant(g)
	}

	t.Run("check", func(t *testing.T) {
		for _, tc := range []struct {
			name, agent, perm string
			code              int
			grant             string
		}{
			{"granted", "market-intel", "data:write", exitOK, "grt_one"},
			{"base", "market-intel", "data:read", exitOK, ""},
			{"not granted", "market-intel", "integrations:write", exitRefused, ""},
			{"unknown agent", "nobody", "data:read", exitRefused, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := h.run("check", "--agent", tc.agent, "--perm", tc.perm, "--json")
				require.Equal(t, tc.code, r.code, r.stderr)
				lines := r.lines(t)
				require.Len(t, lines, 1)
				l := lines[0]
				for _, k := range []string{"agent", "permission", "allowed", "reason", "grant_id", "expires_at"} {
					require.Contains(t, l, k)
				}
				require.Equal(t, tc.agent, l["agent"])
				require.Equal(t, tc.perm, l["permission"])
				require.Equal(t, tc.code == exitOK, l["allowed"])
				require.Equal(t, tc.grant, l["grant_id"])
				if tc.grant != "" {
					require.Equal(t, later.Format(time.RFC3339Nano), l["expires_at"])
				} else {
					require.Nil(t, l["expires_at"])
				}
			})
		}
		r := h.run("check", "--agent", "market-intel", "--perm", "integrations:write")
		require.Equal(t, exitRefused, r.code)
		require.Contains(t, r.stdout, "market-intel not allowed integrations:write")
	})

	t.Run("check suspended", func(t *testing.T) {
		b, _ := json.Marshal(events.Suspension{Agent: "svc-price-optimizer", Rule: "price-floor"})
		_, err := h.env.Buckets.Suspensions.Put(h.ctx, "svc-price-optimizer", b)
		require.NoError(t, err)
		t.Cleanup(func() { _ = h.env.Buckets.Suspensions.Delete(h.ctx, "svc-price-optimizer") })
		r := h.run("check", "--agent", "svc-price-optimizer", "--perm", "data:read")
		require.Equal(t, exitRefused, r.code)
		require.Contains(t, r.stdout, "suspended by guardrail price-floor")
	})

	t.Run("grants", func(t *testing.T) {
		r := h.run("grants", "--json")
		require.Equal(t, exitOK, r.code, r.stderr)
		lines := r.lines(t)
		require.Len(t, lines, 2, "expired and revoked grants are not listed")
		require.Equal(t, "grt_two", lines[0]["grant_id"], "soonest expiry first")
		require.Equal(t, "grt_one", lines[1]["grant_id"])
		require.Equal(t, "market-intel", lines[1]["agent"])
		require.Equal(t, []any{"data:write"}, lines[1]["permissions"])
		require.Equal(t, later.Format(time.RFC3339Nano), lines[1]["expires_at"])

		r = h.run("grants", "--agent", "market-intel")
		require.Equal(t, exitOK, r.code, r.stderr)
		require.Contains(t, r.stdout, "grt_one")
		require.Contains(t, r.stdout, "data:write")
		require.Contains(t, r.stdout, "left")
		require.NotContains(t, r.stdout, "grt_two")

		r = h.run("grants", "--agent", "nobody")
		require.Equal(t, exitOK, r.code)
		require.Equal(t, "no active grants\n", r.stdout)
	})
}

func TestCheckWithoutConfigurationTimesOut(t *testing.T) {
	h := newHarness(t)
	defer func(d time.Duration) { configWait = d }(configWait)
	configWait = 200 * time.Millisecond
	r := h.run("check", "--agent", "market-intel", "--perm", "data:read")
	require.Equal(t, exitError, r.code)
	require.Contains(t, r.stderr, "no active configuration")
}

func TestApproverCommands(t *testing.T) {
	h := newHarness(t)
	h.vars["JIT_TOKEN"] = "dev-alice"
	deadline := time.Now().Add(10 * time.Minute).UTC().Truncate(time.Second)
	auth := func(c call) error {
		if c.token != "dev-alice" {
			return broker.Errorf(401, events.CodeUnauthenticated, "the token matches no approver")
		}
		return nil
	}
	h.serve(broker.APIPending, func(c call) (any, error) {
		if err := auth(c); err != nil {
			return nil, err
		}
		d := events.Decision{RequestID: "req_p", Agent: "svc-price-optimizer", Outcome: events.OutcomePending,
			Mode: events.ModeRequireApproval, Rule: "optimizer-integrations", Reason: "needs security-admin",
			Permissions: []string{"integrations:write"}, DurationMS: 600000, Risk: &events.Risk{Score: 55},
			ApproverRoles: []string{"security-admin"}, ApprovalDeadline: &deadline,
			Request: events.Request{Reason: "sync partner feed"}}
		return broker.PendingList{Pending: []broker.PendingItem{{Decision: d, Deadline: deadline}}}, nil
	})
	answer := func(outcome string) func(c call) (any, error) {
		return func(c call) (any, error) {
			if err := auth(c); err != nil {
				return nil, err
			}
			var in broker.ApproveInput
			if err := broker.DecodeInput(c.body, &in); err != nil {
				return nil, err
			}
			if in.RequestID != "req_p" {
				return nil, broker.Errorf(404, events.CodeNotFound, "no pending request %s", in.RequestID)
			}
			return broker.ActionResult{RequestID: in.RequestID, Agent: "svc-price-optimizer", Outcome: outcome, Message: in.Comment}, nil
		}
	}
	h.serve(broker.APIApprove, answer("approved"))
	h.serve(broker.APIDeny, answer("denied"))
	h.serve(broker.APIReinstate, func(c call) (any, error) {
		if err := auth(c); err != nil {
			return nil, err
		}
		var in broker.ReinstateInput
		if err := broker.DecodeInput(c.body, &in); err != nil {
			return nil, err
		}
		return broker.ActionResult{Agent: in.Agent, Outcome: "reinstated", Message: in.Comment}, nil
	})
	h.serve(broker.APIDone, func(c call) (any, error) {
		var in broker.DoneInput
		if err := broker.DecodeInput(c.body, &in); err != nil {
			return nil, err
		}
		if in.GrantID != "grt_x" {
			return nil, broker.Errorf(404, events.CodeNotFound, "no active grant %s", in.GrantID)
		}
		return broker.ActionResult{GrantID: in.GrantID, Outcome: "revoked", Message: "completed"}, nil
	})

	t.Run("pending", func(t *testing.T) {
		r := h.run("pending", "--json")
		require.Equal(t, exitOK, r.code, r.stderr)
		require.Equal(t, "dev-alice", h.nextCall(t).token)
		lines := r.lines(t)
		require.Len(t, lines, 1)
		l := lines[0]
		require.Equal(t, "req_p", l["request_id"])
		require.Equal(t, "svc-price-optimizer", l["agent"])
		require.Equal(t, []any{"integrations:write"}, l["permissions"])
		require.Equal(t, "10m0s", l["duration"])
		require.Equal(t, "sync partner feed", l["reason"])
		require.Equal(t, float64(55), l["risk_score"])
		require.Equal(t, []any{"security-admin"}, l["approver_roles"])
		require.Equal(t, deadline.Format(time.RFC3339), l["deadline"])

		r = h.run("pending")
		require.Equal(t, exitOK, r.code, r.stderr)
		h.nextCall(t)
		for _, s := range []string{"req_p", "svc-price-optimizer", "integrations:write", "10m", "55", "security-admin", "sync partner feed", deadline.Format(time.RFC3339)} {
			require.Contains(t, r.stdout, s)
		}
	})

	t.Run("approve with flag after the id", func(t *testing.T) {
		r := h.run("approve", "req_p", "--comment", "ok for the feed", "--json")
		require.Equal(t, exitOK, r.code, r.stderr)
		c := h.nextCall(t)
		require.Equal(t, broker.APIApprove, c.subject)
		require.Equal(t, "dev-alice", c.token)
		require.JSONEq(t, `{"request_id":"req_p","comment":"ok for the feed"}`, string(c.body))
		require.Equal(t, "approved", r.lines(t)[0]["outcome"])
		require.Equal(t, "req_p", r.lines(t)[0]["request_id"])
	})

	t.Run("approve with flag before the id", func(t *testing.T) {
		r := h.run("approve", "--comment", "fine", "req_p")
		require.Equal(t, exitOK, r.code, r.stderr)
		require.JSONEq(t, `{"request_id":"req_p","comment":"fine"}`, string(h.nextCall(t).body))
		require.Equal(t, "approved request req_p agent svc-price-optimizer: fine\n", r.stdout)
	})

	t.Run("deny", func(t *testing.T) {
		r := h.run("deny", "req_p", "--comment", "not now")
		require.Equal(t, exitOK, r.code, r.stderr)
		c := h.nextCall(t)
		require.Equal(t, broker.APIDeny, c.subject)
		require.JSONEq(t, `{"request_id":"req_p","comment":"not now"}`, string(c.body))
		require.Contains(t, r.stdout, "denied request req_p")
	})

	t.Run("API errors", func(t *testing.T) {
		r := h.run("approve", "req_missing")
		require.Equal(t, exitError, r.code)
		h.nextCall(t)
		require.Contains(t, r.stderr, "no pending request req_missing (404 not_found)")

		h.vars["JIT_TOKEN"] = "dev-mallory"
		defer func() { h.vars["JIT_TOKEN"] = "dev-alice" }()
		r = h.run("pending")
		require.Equal(t, exitError, r.code)
		h.nextCall(t)
		require.Contains(t, r.stderr, "(401 unauthenticated)")
	})

	t.Run("no token", func(t *testing.T) {
		delete(h.vars, "JIT_TOKEN")
		defer func() { h.vars["JIT_TOKEN"] = "dev-alice" }()
		for _, args := range [][]string{{"pending"}, {"approve", "req_p"}, {"deny", "req_p", "--comment", "x"}, {"reinstate", "--agent", "a"}} {
			r := h.run(args...)
			require.Equal(t, exitError, r.code, args)
			require.Contains(t, r.stderr, "JIT_TOKEN is not set")
		}
	})

	t.Run("reinstate", func(t *testing.T) {
		r := h.run("reinstate", "--agent", "svc-price-optimizer", "--comment", "false alarm", "--json")
		require.Equal(t, exitOK, r.code, r.stderr)
		c := h.nextCall(t)
		require.Equal(t, "dev-alice", c.token)
		require.JSONEq(t, `{"agent":"svc-price-optimizer","comment":"false alarm"}`, string(c.body))
		require.Equal(t, "reinstated", r.lines(t)[0]["outcome"])
	})

	t.Run("done", func(t *testing.T) {
		r := h.run("done", "grt_x", "--json")
		require.Equal(t, exitOK, r.code, r.stderr)
		c := h.nextCall(t)
		require.JSONEq(t, `{"grant_id":"grt_x"}`, string(c.body))
		require.Empty(t, c.token, "done sends no approver token")
		l := r.lines(t)[0]
		require.Equal(t, "grt_x", l["grant_id"])
		require.Equal(t, "revoked", l["outcome"])

		r = h.run("done", "grt_nope")
		require.Equal(t, exitError, r.code)
		h.nextCall(t)
		require.Contains(t, r.stderr, "no active grant grt_nope")
	})
}

func TestGuardrailFire(t *testing.T) {
	h := newHarness(t)
	r := h.run("guardrail", "fire", "--agent", "svc-price-optimizer", "--rule", "price-floor", "--detail", "price 0.01 < floor 1.00", "--json")
	require.Equal(t, exitOK, r.code, r.stderr)

	msgs := h.env.AuditEvents(t, "guardrail.fired.>")
	require.Len(t, msgs, 1)
	require.Equal(t, "guardrail.fired.svc-price-optimizer", msgs[0].Subject)
	e, err := broker.FromMsg(msgs[0].Header, msgs[0].Data)
	require.NoError(t, err)
	require.Equal(t, events.TypeGuardrailFired, e.Type())
	require.Equal(t, "/jit/jitctl", e.Source())
	require.Equal(t, "svc-price-optimizer", e.Subject())
	require.True(t, strings.HasPrefix(e.ID(), "grd_"), e.ID())
	require.Equal(t, e.ID(), msgs[0].Header.Get("Nats-Msg-Id"))
	g, err := events.DataAs[events.GuardrailFired](e)
	require.NoError(t, err)
	require.NoError(t, g.Validate())
	require.Equal(t, "svc-price-optimizer", g.Agent)
	require.Equal(t, "price-floor", g.Rule)
	require.Equal(t, "price 0.01 < floor 1.00", g.Detail)
	require.WithinDuration(t, time.Now(), g.FiredAt, time.Minute)

	l := r.lines(t)[0]
	require.Equal(t, e.ID(), l["event_id"])
	require.Equal(t, float64(msgs[0].Sequence), l["seq"])

	for _, args := range [][]string{
		{"guardrail", "fire", "--agent", "bad agent!", "--rule", "x"},
		{"guardrail", "fire", "--agent", "a", "--rule", "   "},
		{"guardrail", "fire", "--agent", "a"},
		{"guardrail", "fire", "--agent", "a", "--rule", "x", "--detail", strings.Repeat("d", 5000)},
		{"guardrail", "--agent", "a", "--rule", "x"},
		{"guardrail"},
	} {
		r := h.run(args...)
		require.Equal(t, exitError, r.code, args)
		require.NotEmpty(t, r.stderr)
	}
	require.Len(t, h.env.AuditEvents(t, "guardrail.fired.>"), 1, "invalid input publishes nothing")
}

func TestAudit(t *testing.T) {
	h := newHarness(t)

	t.Run("empty stream prints nothing", func(t *testing.T) {
		r := h.run("audit")
		require.Equal(t, exitOK, r.code, r.stderr)
		require.Empty(t, r.stdout)
	})

	expires := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	h.decide("req_a", "market-intel", events.OutcomeApproved, events.ModeAutoApprove, "policy")
	g := h.grant("req_a", "market-intel", expires)
	_, _, err := h.pub.Emit(h.ctx, events.RevokedEventID(g.GrantID), events.TypeRevoked, "market-intel",
		events.Revocation{GrantID: g.GrantID, RequestID: "req_a", Agent: "market-intel", Permissions: g.Permissions,
			Reason: events.RevokedCompleted, RevokedBy: events.Actor{Kind: events.ActorAgent, ID: "market-intel"},
			RevokedAt: time.Now(), GrantedAt: g.GrantedAt, ExpiresAt: g.ExpiresAt},
		events.WithRequestID("req_a"), events.WithGrantID(g.GrantID))
	require.NoError(t, err)
	h.decide("req_b", "svc-price-optimizer", events.OutcomeDenied, events.ModePolicy, "policy", func(d *events.Decision) {
		d.Rule, d.Reason = "optimizer-write-low-risk", "risk 70 is above 60"
	})
	stored := h.env.AuditEvents(t, ">")
	require.Len(t, stored, 4)

	t.Run("json", func(t *testing.T) {
		r := h.run("audit", "--json")
		require.Equal(t, exitOK, r.code, r.stderr)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		require.Len(t, lines, 4)
		for i, l := range lines {
			e, err := events.Decode([]byte(l))
			require.NoError(t, err, l)
			want, err := broker.FromMsg(stored[i].Header, stored[i].Data)
			require.NoError(t, err)
			require.Equal(t, want.ID(), e.ID())
			require.Equal(t, want.Type(), e.Type())
			require.JSONEq(t, string(want.Data()), string(e.Data()))
		}
	})

	t.Run("human", func(t *testing.T) {
		r := h.run("audit")
		require.Equal(t, exitOK, r.code, r.stderr)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		require.Len(t, lines, 4)
		for i, want := range []struct{ typ, agent, summary string }{
			{"jit.decided", "market-intel", "req_a approved (auto-approve, rule market-intel-write, risk 42): rule auto-approve"},
			{"jit.granted", "market-intel", g.GrantID + " data:write until 2030-01-02T03:04:05Z"},
			{"jit.revoked", "market-intel", g.GrantID + " data:write: completed by agent:market-intel"},
			{"jit.decided", "svc-price-optimizer", "req_b denied (policy, rule optimizer-write-low-risk, risk 42): risk 70 is above 60"},
		} {
			f := strings.Fields(lines[i])
			_, err := time.Parse(time.RFC3339, f[0])
			require.NoError(t, err, lines[i])
			require.Equal(t, want.typ, f[1], lines[i])
			require.Equal(t, want.agent, f[2], lines[i])
			require.True(t, strings.HasSuffix(lines[i], "  "+want.summary), "%q does not end with %q", lines[i], want.summary)
		}
	})

	t.Run("agent filter", func(t *testing.T) {
		r := h.run("audit", "--agent", "svc-price-optimizer", "--json")
		require.Equal(t, exitOK, r.code, r.stderr)
		require.Len(t, r.lines(t), 1)
	})

	t.Run("since", func(t *testing.T) {
		r := h.run("audit", "--since", "1h", "--json")
		require.Equal(t, exitOK, r.code, r.stderr)
		require.Len(t, r.lines(t), 4)

		// From the stored time of the third event on: the last two.
		r = h.run("audit", "--json", "--since", stored[2].Time.UTC().Format(time.RFC3339Nano))
		require.Equal(t, exitOK, r.code, r.stderr)
		lines := r.lines(t)
		require.Len(t, lines, 2)
		require.Equal(t, events.TypeRevoked, lines[0]["type"])

		// Nothing is newer than a nanosecond ago... once the clock moved on.
		require.Eventually(t, func() bool { return time.Since(stored[3].Time) > time.Millisecond }, time.Second, time.Millisecond)
		r = h.run("audit", "--since", "1ns")
		require.Equal(t, exitOK, r.code, r.stderr)
		require.Empty(t, r.stdout)

		r = h.run("audit", "--since", "yesterday")
		require.Equal(t, exitError, r.code)
		require.Contains(t, r.stderr, "neither a duration")
	})
}

func TestHashToken(t *testing.T) {
	h := newHarness(t)
	r := h.run("hash-token", "dev-alice")
	require.Equal(t, exitOK, r.code, r.stderr)
	// The digest examples/jit.yaml stores for alice.
	require.Equal(t, "b5402af3712c50a173de2faf5a994576c14970651e00e3e99ef81a5ec7d76a6e\n", r.stdout)
	require.Equal(t, config.HashToken("dev-alice")+"\n", r.stdout)

	r = h.run("hash-token", "--json", "dev-bob")
	require.Equal(t, exitOK, r.code)
	require.Equal(t, config.HashToken("dev-bob"), r.lines(t)[0]["token_sha256"])

	r = h.run("hash-token", "--", "-dash")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, config.HashToken("-dash")+"\n", r.stdout)
}

func TestUsageAndBadInput(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no args", nil, exitError, "commands:"},
		{"unknown command", []string{"frobnicate"}, exitError, `unknown command "frobnicate"`},
		{"unknown flag", []string{"request", "--nope"}, exitError, "flag provided but not defined: -nope"},
		{"bad duration flag", []string{"request", "--agent", "a", "--perm", "p", "--duration", "1m", "--reason", "r", "--timeout", "soon"}, exitError, "invalid value"},
		{"request missing perm", []string{"request", "--agent", "a", "--duration", "1m", "--reason", "r"}, exitError, "--perm is required"},
		{"request missing reason", []string{"request", "--agent", "a", "--perm", "p", "--duration", "1m"}, exitError, "--reason is required"},
		{"request bad context", []string{"request", "--agent", "a", "--perm", "p", "--duration", "1m", "--reason", "r", "--context", "novalue"}, exitError, "not K=V"},
		{"request stray argument", []string{"request", "extra", "--agent", "a"}, exitError, `unexpected argument "extra"`},
		{"check missing perm", []string{"check", "--agent", "a"}, exitError, "--perm is required"},
		{"approve without id", []string{"approve"}, exitError, "missing REQUEST_ID"},
		{"approve two ids", []string{"approve", "a", "b"}, exitError, `unexpected argument "b"`},
		{"deny without comment", []string{"deny", "req_1"}, exitError, "--comment is required"},
		{"deny blank comment", []string{"deny", "req_1", "--comment", " "}, exitError, "--comment is required"},
		{"done without id", []string{"done"}, exitError, "missing GRANT_ID"},
		{"reinstate without agent", []string{"reinstate"}, exitError, "--agent is required"},
		{"audit bad agent", []string{"audit", "--agent", "a.b"}, exitError, "not a valid agent id"},
		{"hash-token without token", []string{"hash-token"}, exitError, "missing TOKEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.run(tc.args...)
			require.Equal(t, tc.code, r.code, r.stderr)
			require.Contains(t, r.stderr, tc.stderr)
		})
	}

	t.Run("help", func(t *testing.T) {
		r := h.run("help")
		require.Equal(t, exitOK, r.code)
		for _, c := range commands {
			require.Contains(t, r.stdout, "  "+c.name+" ")
		}
		r = h.run("request", "-h")
		require.Equal(t, exitOK, r.code)
		require.Contains(t, r.stderr, "usage: jitctl request")
	})

	t.Run("connection failure", func(t *testing.T) {
		h.vars["NATS_URL"] = "nats://127.0.0.1:1"
		defer func() { h.vars["NATS_URL"] = h.env.Server.ClientURL() }()
		for _, args := range [][]string{
			requestArgs(),
			{"check", "--agent", "a", "--perm", "p"},
			{"grants"},
			{"audit"},
			{"done", "grt_x"},
			{"guardrail", "fire", "--agent", "a", "--rule", "r"},
		} {
			r := h.run(args...)
			require.Equal(t, exitError, r.code, args)
			require.Contains(t, r.stderr, "connect to NATS at nats://127.0.0.1:1")
		}
	})

	t.Run("no service answers", func(t *testing.T) {
		r := h.run(requestArgs()...)
		require.Equal(t, exitError, r.code)
		require.Contains(t, r.stderr, "no service answers jitapi.request")
	})
}

// TestRequestSurvivesBrokerRestart restarts the broker on the same store and
// port while jitctl waits for an approval: its ordered consumer recreates
// itself and still sees the grant.
func TestRequestSurvivesBrokerRestart(t *testing.T) {
	addr, dir := freeAddr(t), t.TempDir()
	h := newHarnessAt(t, addr, dir)
	ids := make(chan string, 1)
	h.fakeRequester(func(in broker.RequestInput, id string) {
		h.decide(id, in.Agent, events.OutcomePending, events.ModeRequireApproval, "policy")
		ids <- id
	})
	out, wait := h.start(requestArgs("--json", "--timeout", "20s")...)
	id := recv(t, ids)
	require.Eventually(t, func() bool { return strings.Contains(out.String(), `"event":"pending"`) }, 10*time.Second, 10*time.Millisecond)

	h.env.Server.Shutdown()
	h.env.Server.WaitForShutdown()
	h.env.Server = startServer(t, addr, dir)

	// Publish the approval and the grant once the stream is back; retries
	// carry the same event ids, so each is stored once.
	g := events.Grant{GrantID: events.GrantIDFor(id), RequestID: id, Agent: "market-intel", Permissions: []string{"data:write"},
		Mode: events.ModeHuman, GrantedAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute), Status: events.GrantActive}
	d := events.Decision{RequestID: id, Agent: "market-intel", Outcome: events.OutcomeApproved, Mode: events.ModeHuman,
		Reason: "ok", Permissions: g.Permissions, DecidedBy: events.Actor{Kind: events.ActorApprover, ID: "alice"}, DecidedAt: time.Now()}
	require.Eventually(t, func() bool {
		_, _, err := h.pub.Emit(h.ctx, events.DecisionEventID(id, "human"), events.TypeDecided, "market-intel", d, events.WithRequestID(id))
		if err != nil {
			return false
		}
		_, _, err = h.pub.Emit(h.ctx, events.GrantedEventID(g.GrantID), events.TypeGranted, "market-intel", g, events.WithRequestID(id))
		return err == nil
	}, 10*time.Second, 50*time.Millisecond)

	r := wait()
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := r.lines(t)
	require.Len(t, lines, 2)
	require.Equal(t, "pending", lines[0]["event"])
	require.Equal(t, "granted", lines[1]["outcome"])
	require.Equal(t, g.GrantID, lines[1]["grant_id"])
}
