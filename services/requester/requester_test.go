package requester

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/agentjit/jit/pkg/service"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"
)

var fixedNow = time.Date(2025, 3, 5, 10, 0, 0, 0, time.UTC)

func exampleYAML(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	return string(b)
}

type harness struct {
	env  *natstest.Env
	deps service.Deps
	svc  *Service
}

func start(t *testing.T, env *natstest.Env, src *config.Source) *Service {
	t.Helper()
	s := New(service.Deps{
		NC: env.NC, JS: env.JS, Buckets: env.Buckets, Config: src,
		Log: natstest.Logger(t), Now: func() time.Time { return fixedNow },
	})
	require.NoError(t, s.Start(context.Background()))
	t.Cleanup(s.Stop)
	return s
}

func setup(t *testing.T) (*natstest.Env, *config.Source, *Service) {
	t.Helper()
	env := natstest.Setup(t)
	src := env.ApplyConfig(t, exampleYAML(t))
	return env, src, start(t, env, src)
}

// callRaw sends body to the request endpoint as is and returns the answer
// or the *broker.APIError.
func callRaw(t *testing.T, nc *nats.Conn, body []byte) (broker.RequestAccepted, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := nc.RequestWithContext(ctx, broker.APIRequest, body)
	require.NoError(t, err)
	if resp.Header.Get(micro.ErrorCodeHeader) != "" {
		var ae broker.APIError
		require.NoError(t, json.Unmarshal(resp.Data, &ae))
		return broker.RequestAccepted{}, &ae
	}
	var out broker.RequestAccepted
	require.NoError(t, json.Unmarshal(resp.Data, &out))
	return out, nil
}

func call(t *testing.T, nc *nats.Conn, in any) (broker.RequestAccepted, error) {
	t.Helper()
	b, err := json.Marshal(in)
	require.NoError(t, err)
	return callRaw(t, nc, b)
}

func decode[T any](t *testing.T, m jetstream.RawStreamMsg) (events.Event, T) {
	t.Helper()
	e, err := broker.FromMsg(m.Header, m.Data)
	require.NoError(t, err)
	v, err := events.DataAs[T](e)
	require.NoError(t, err)
	return e, v
}

func valid() broker.RequestInput {
	return broker.RequestInput{
		Agent:       "svc-price-optimizer",
		Permissions: []string{"data:write"},
		Duration:    "15m",
		Reason:      "reprice the spring catalogue",
		Context:     map[string]string{"ticket": "PRC-1"},
	}
}

func TestRefusals(t *testing.T) {
	env, _, _ := setup(t)
	ctx := context.Background()

	bigContext := map[string]string{}
	for i := range 33 {
		bigContext["k"+strconv.Itoa(i)] = "v"
	}
	with := func(f func(*broker.RequestInput)) []byte {
		in := valid()
		f(&in)
		b, err := json.Marshal(in)
		require.NoError(t, err)
		return b
	}
	suspend := func(t *testing.T) {
		sus := events.Suspension{Agent: "market-intel", Rule: "price-floor", SuspendedAt: time.Date(2025, 3, 4, 9, 30, 0, 0, time.UTC)}
		b, _ := json.Marshal(sus)
		_, err := env.Buckets.Suspensions.Put(ctx, "market-intel", b)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, env.Buckets.Suspensions.Delete(ctx, "market-intel")) })
	}

	oversized := []byte(`{"agent":"market-intel","reason":"` + strings.Repeat("x", 17<<10) + `"}`)
	cases := []struct {
		name    string
		body    []byte
		setup   func(t *testing.T)
		status  int
		code    string
		message string // exact, or a prefix when it ends in "…"
		agent   string // expected agent on the rejection
		reqID   string // expected requestid on the rejection
	}{
		{
			name:   "unknown agent",
			body:   with(func(in *broker.RequestInput) { in.Agent = "ghost" }),
			status: 404, code: events.CodeUnknownAgent, message: "unknown agent ghost", agent: "ghost",
		},
		{
			name:   "agent not a valid id",
			body:   with(func(in *broker.RequestInput) { in.Agent = "a.b.>" }),
			status: 404, code: events.CodeUnknownAgent, message: "unknown agent: …",
		},
		{
			name:   "suspended",
			body:   with(func(in *broker.RequestInput) { in.Agent = "market-intel"; in.RequestID = "req-sus-1" }),
			setup:  suspend,
			status: 403, code: events.CodeSuspended,
			message: "agent market-intel is suspended since 2025-03-04T09:30:00Z by guardrail price-floor; an org-admin or security-admin must reinstate it",
			agent:   "market-intel", reqID: "req-sus-1",
		},
		{
			name:   "empty reason",
			body:   with(func(in *broker.RequestInput) { in.Reason = "  \n\t" }),
			status: 400, code: events.CodeEmptyReason, message: "reason is empty: say why svc-price-optimizer needs the permissions", agent: "svc-price-optimizer",
		},
		{
			name:   "reason too long",
			body:   with(func(in *broker.RequestInput) { in.Reason = strings.Repeat("é", 1025) }),
			status: 400, code: events.CodeReasonTooLong, message: "reason is 1025 characters; the limit is 1024", agent: "svc-price-optimizer",
		},
		{
			name:   "no permissions",
			body:   with(func(in *broker.RequestInput) { in.Permissions = nil }),
			status: 400, code: events.CodeMalformed, message: "permissions is empty: name at least one of data:write, integrations:write", agent: "svc-price-optimizer",
		},
		{
			name:   "ineligible permission",
			body:   with(func(in *broker.RequestInput) { in.Permissions = []string{"data:write", "data:delete"} }),
			status: 403, code: events.CodeNotEligible,
			message: `agent svc-price-optimizer is not eligible for "data:delete" (eligible: data:write, integrations:write)`, agent: "svc-price-optimizer",
		},
		{
			name:   "duplicate permission",
			body:   with(func(in *broker.RequestInput) { in.Permissions = []string{"data:write", "data:write"} }),
			status: 400, code: events.CodeMalformed, message: `permission "data:write" is requested twice`, agent: "svc-price-optimizer",
		},
		{
			name:   "duration too long",
			body:   with(func(in *broker.RequestInput) { in.Duration = "45m" }),
			status: 403, code: events.CodeDurationExceeded, message: "45m exceeds the maxJitDuration of svc-price-optimizer (30m)", agent: "svc-price-optimizer",
		},
		{
			name:   "bad duration",
			body:   with(func(in *broker.RequestInput) { in.Duration = "half an hour" }),
			status: 400, code: events.CodeInvalidDuration, message: `duration "half an hour" is not a duration such as "30m" or "1h"`, agent: "svc-price-optimizer",
		},
		{
			name:   "duration below one second",
			body:   with(func(in *broker.RequestInput) { in.Duration = "500ms" }),
			status: 400, code: events.CodeInvalidDuration, message: "duration 500ms is below the minimum of 1s", agent: "svc-price-optimizer",
		},
		{
			name:   "too many context entries",
			body:   with(func(in *broker.RequestInput) { in.Context = bigContext }),
			status: 400, code: events.CodeMalformed, message: "context has 33 entries; the limit is 32", agent: "svc-price-optimizer",
		},
		{
			name:   "context value too long",
			body:   with(func(in *broker.RequestInput) { in.Context = map[string]string{"note": strings.Repeat("x", 513)} }),
			status: 400, code: events.CodeMalformed, message: `context value of "note" is 513 characters; the limit is 512`, agent: "svc-price-optimizer",
		},
		{
			name:   "context key too long",
			body:   with(func(in *broker.RequestInput) { in.Context = map[string]string{strings.Repeat("k", 65): "v"} }),
			status: 400, code: events.CodeMalformed, message: "context key …", agent: "svc-price-optimizer",
		},
		{
			name:   "oversized body",
			body:   oversized,
			status: 413, code: events.CodeTooLarge, message: "request body is " + strconv.Itoa(len(oversized)) + " bytes; the limit is 16384",
		},
		{
			name:   "malformed JSON",
			body:   []byte(`{"agent": "market-intel", `),
			status: 400, code: events.CodeMalformed, message: "malformed request body: …",
		},
		{
			name:   "unknown field",
			body:   []byte(`{"agent":"market-intel","permissions":["data:write"],"duration":"5m","reason":"x","role":"admin","request_id":"req-uf-1"}`),
			status: 400, code: events.CodeMalformed, message: `malformed request body: json: unknown field "role"`,
			agent: "market-intel", reqID: "req-uf-1",
		},
		{
			name:   "bad request_id",
			body:   with(func(in *broker.RequestInput) { in.RequestID = "../etc" }),
			status: 400, code: events.CodeMalformed, message: `request_id "../etc" must be 1-64 letters, digits, '-' or '_', starting with a letter or digit`, agent: "svc-price-optimizer",
		},
		{
			name:   "reserved request_id",
			body:   with(func(in *broker.RequestInput) { in.RequestID = "rej_policy_7" }),
			status: 400, code: events.CodeMalformed, message: `request_id "rej_policy_7" uses the reserved prefix "rej_"`, agent: "svc-price-optimizer",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			before := len(env.AuditEvents(t, "jit.rejected.>"))
			_, err := callRaw(t, env.NC, tc.body)
			var ae *broker.APIError
			require.ErrorAs(t, err, &ae)
			require.Equal(t, tc.status, ae.Status)
			require.Equal(t, tc.code, ae.Code)
			if prefix, ok := strings.CutSuffix(tc.message, "…"); ok {
				require.True(t, strings.HasPrefix(ae.Message, prefix), "message %q", ae.Message)
			} else {
				require.Equal(t, tc.message, ae.Message)
			}

			rej := env.AuditEvents(t, "jit.rejected.>")
			require.Len(t, rej, before+1, "exactly one jit.rejected per refusal")
			m := rej[len(rej)-1]
			wantAgent := tc.agent
			if wantAgent == "" {
				wantAgent = events.UnknownAgent
			}
			require.Equal(t, "jit.rejected."+wantAgent, m.Subject)
			e, r := decode[events.Rejection](t, m)
			require.Equal(t, events.StageRequest, r.Stage)
			require.Equal(t, tc.code, r.Code)
			require.Equal(t, ae.Message, r.Message)
			require.Equal(t, tc.agent, r.Agent)
			require.Equal(t, events.ActorAgent, r.Actor.Kind)
			require.Equal(t, wantAgent, r.Actor.ID)
			require.Equal(t, tc.reqID, events.RequestID(e))
			require.Equal(t, fixedNow, r.RejectedAt)
		})
	}
	require.Empty(t, env.AuditEvents(t, "jit.requested.>"), "no refused request is published")
}

func TestAccepted(t *testing.T) {
	env, _, _ := setup(t)

	in := valid()
	out, err := call(t, env.NC, in)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(out.RequestID, "req_"), out.RequestID)
	require.True(t, events.ValidID(out.RequestID))

	msgs := env.AuditEvents(t, "jit.requested.>")
	require.Len(t, msgs, 1)
	require.Equal(t, "jit.requested.svc-price-optimizer", msgs[0].Subject)
	require.Equal(t, msgs[0].Sequence, out.Seq, "the reply carries the stream sequence")
	e, r := decode[events.Request](t, msgs[0])
	require.Equal(t, out.RequestID, e.ID())
	require.Equal(t, events.TypeRequested, e.Type())
	require.Equal(t, "/jit/requester", e.Source())
	require.Equal(t, "svc-price-optimizer", e.Subject())
	require.Equal(t, out.RequestID, events.RequestID(e))
	require.Equal(t, events.Request{
		RequestID:   out.RequestID,
		Agent:       "svc-price-optimizer",
		Permissions: []string{"data:write"},
		DurationMS:  (15 * time.Minute).Milliseconds(),
		Reason:      "reprice the spring catalogue",
		Context:     map[string]string{"ticket": "PRC-1"},
		RequestedBy: events.Actor{Kind: events.ActorAgent, ID: "svc-price-optimizer"},
		RequestedAt: fixedNow,
	}, r)
	require.Empty(t, env.AuditEvents(t, "jit.rejected.>"))
}

func TestSameRequestIDStoredOnce(t *testing.T) {
	env, _, _ := setup(t)

	in := valid()
	in.RequestID = "req-retry-1"
	first, err := call(t, env.NC, in)
	require.NoError(t, err)
	require.Equal(t, "req-retry-1", first.RequestID)
	second, err := call(t, env.NC, in)
	require.NoError(t, err)
	require.Equal(t, first, second, "a retry gets the original sequence")

	// A different request in between does not disturb the de-duplication.
	other, err := call(t, env.NC, valid())
	require.NoError(t, err)
	require.Greater(t, other.Seq, first.Seq)
	third, err := call(t, env.NC, in)
	require.NoError(t, err)
	require.Equal(t, first, third)

	var ids []string
	for _, m := range env.AuditEvents(t, "jit.requested.>") {
		ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
	}
	require.Equal(t, []string{"req-retry-1", other.RequestID}, ids)
}

func TestRestart(t *testing.T) {
	env, src, s1 := setup(t)

	in := valid()
	in.RequestID = "req-restart-1"
	first, err := call(t, env.NC, in)
	require.NoError(t, err)

	s1.Stop()
	s1.Stop() // idempotent
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = env.NC.RequestWithContext(ctx, broker.APIRequest, []byte(`{}`))
	require.ErrorIs(t, err, nats.ErrNoResponders, "a stopped requester answers nothing")

	start(t, env, src)
	// The client's retry reaches the new instance and is stored once.
	again, err := call(t, env.NC, in)
	require.NoError(t, err)
	require.Equal(t, first, again)
	// And new requests work.
	next, err := call(t, env.NC, valid())
	require.NoError(t, err)
	require.Greater(t, next.Seq, first.Seq)
	require.Len(t, env.AuditEvents(t, "jit.requested.>"), 2)
}

func TestRestartBroker(t *testing.T) {
	dir := t.TempDir()
	env := natstest.SetupAt(t, dir)
	src := env.ApplyConfig(t, exampleYAML(t))
	s := start(t, env, src)
	first, err := call(t, env.NC, valid())
	require.NoError(t, err)
	s.Stop()
	env.Server.Shutdown()
	env.Server.WaitForShutdown()

	env2 := natstest.SetupAt(t, dir)
	src2 := env2.ApplyConfig(t, exampleYAML(t))
	start(t, env2, src2)
	next, err := call(t, env2.NC, valid())
	require.NoError(t, err)
	require.Greater(t, next.Seq, first.Seq, "the audit stream survived the restart")
	require.Len(t, env2.AuditEvents(t, "jit.requested.>"), 2)
}
