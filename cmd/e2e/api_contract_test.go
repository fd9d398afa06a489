package e2e

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/cmd/internal/contract"
	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"
)

// apiCaller makes jitapi calls as any client would (a JSON body, the
// approver token in Jit-Token) and holds each request and reply to the
// contract.
type apiCaller struct {
	t  *testing.T
	nc *nats.Conn
	c  *contract.Contract
}

// as returns a caller on another connection (another principal).
func (a apiCaller) as(nc *nats.Conn) apiCaller { a.nc = nc; return a }

// call sends body (a Go value, marshalled as the SDK and jitctl do, or raw
// bytes) to subject and returns the status (200 for a reply that is not an
// error) and the reply. Both are validated: a well-formed request against
// its schema, the reply against the reply or error schema.
func (a apiCaller) call(subject, token string, body any, wellFormed bool) (int, map[string]any) {
	a.t.Helper()
	var data []byte
	switch b := body.(type) {
	case []byte:
		data = b
	default:
		var err error
		data, err = json.Marshal(b)
		require.NoError(a.t, err)
	}
	if wellFormed {
		require.NoError(a.t, a.c.ValidateRequest(subject, data), "request on %s: %s", subject, data)
	} else {
		require.Error(a.t, a.c.ValidateRequest(subject, data), "the schema refuses what the service refuses: %s", data)
	}
	m := nats.NewMsg(subject)
	m.Data = data
	if token != "" {
		m.Header.Set(broker.HeaderToken, token)
	}
	resp, err := a.nc.RequestMsg(m, 10*time.Second)
	require.NoError(a.t, err, subject)
	require.NoError(a.t, a.c.ValidateReply(subject, resp.Header, resp.Data), "reply to %s: %s", subject, resp.Data)
	var out map[string]any
	require.NoError(a.t, json.Unmarshal(resp.Data, &out))
	status := 200
	if code := resp.Header.Get(micro.ErrorCodeHeader); code != "" {
		status, err = strconv.Atoi(code)
		require.NoError(a.t, err)
		require.EqualValues(a.t, status, out["status"], "the header and the body agree")
	}
	return status, out
}

// TestAPIContract calls every jitapi endpoint for real — the successes and
// the refusals docs/agents.md lists — each with the credential of who would
// call it, and the guardrail ingress with a guardrail source's, and
// validates every request and reply against api/schemas; the statuses and
// codes asserted are the documented ones.
func TestAPIContract(t *testing.T) {
	app := startJitd(t, t.TempDir(), exampleConfig(t))
	url := app.NATSURL()
	// Each call goes out on the credential of who would make it.
	a := apiCaller{t: t, nc: agentConn(t, url, "market-intel"), c: loadContract(t)}
	optimizer := a.as(agentConn(t, url, "svc-price-optimizer"))
	ghost := a.as(agentConn(t, url, issueAgent(t, url, "ghost")))
	op := a.as(operatorConn(t, url))
	code := func(out map[string]any) string { s, _ := out["code"].(string); return s }

	// jitapi.request: accepted, with the stream sequence of jit.requested.
	in := broker.RequestInput{RequestID: "req_contract-1", Agent: "market-intel", Permissions: []string{"data:write"},
		Duration: "2m", Reason: "contract", Context: map[string]string{"ticket": "OPS-1"}}
	st, out := a.call(broker.APIRequest, "", in, true)
	require.Equal(t, 200, st, out)
	seq := uint64(out["seq"].(float64))
	require.Equal(t, "req_contract-1", out["request_id"])
	requested := audit(t, url, "jit.requested.market-intel")
	require.NotEmpty(t, requested)
	// A retry with the same request_id is stored once and answered with
	// the same sequence.
	st, out = a.call(broker.APIRequest, "", in, true)
	require.Equal(t, 200, st)
	require.EqualValues(t, seq, out["seq"])
	require.Len(t, audit(t, url, "jit.requested.market-intel"), len(requested))

	for _, tc := range []struct {
		name       string
		body       any
		wellFormed bool
		status     int
		code       string
	}{
		{"another agent", broker.RequestInput{Agent: "svc-price-optimizer", Permissions: []string{"data:write"}, Duration: "1m", Reason: "x"}, true, 403, events.CodeForbidden},
		{"not eligible", broker.RequestInput{Agent: "market-intel", Permissions: []string{"data:delete"}, Duration: "1m", Reason: "x"}, true, 403, events.CodeNotEligible},
		{"duration exceeded", broker.RequestInput{Agent: "market-intel", Permissions: []string{"data:write"}, Duration: "65m", Reason: "x"}, true, 403, events.CodeDurationExceeded},
		{"duration below 1s", broker.RequestInput{Agent: "market-intel", Permissions: []string{"data:write"}, Duration: "500ms", Reason: "x"}, true, 400, events.CodeInvalidDuration},
		{"duration as a number", []byte(`{"agent":"market-intel","permissions":["data:write"],"duration":60000,"reason":"x"}`), false, 400, events.CodeMalformed},
		{"blank reason", []byte(`{"agent":"market-intel","permissions":["data:write"],"duration":"1m","reason":" "}`), false, 400, events.CodeEmptyReason},
		{"no permissions", []byte(`{"agent":"market-intel","permissions":[],"duration":"1m","reason":"x"}`), false, 400, events.CodeMalformed},
		{"unknown field", []byte(`{"agent":"market-intel","permissions":["data:write"],"duration":"1m","reason":"x","ttl":5}`), false, 400, events.CodeMalformed},
		{"reserved request id", []byte(`{"request_id":"rej_x","agent":"market-intel","permissions":["data:write"],"duration":"1m","reason":"x"}`), true, 400, events.CodeMalformed},
		{"too large", []byte(`{"agent":"market-intel","permissions":["data:write"],"duration":"1m","reason":"` + strings.Repeat("x", 17<<10) + `"}`), false, 413, events.CodeTooLarge},
	} {
		st, out := a.call(broker.APIRequest, "", tc.body, tc.wellFormed)
		require.Equal(t, tc.status, st, "%s: %v", tc.name, out)
		require.Equal(t, tc.code, code(out), tc.name)
	}
	// An agent with a credential that the configuration does not know.
	st, out = ghost.call(broker.APIRequest, "", broker.RequestInput{Agent: "ghost", Permissions: []string{"data:write"}, Duration: "1m", Reason: "x"}, true)
	require.Equal(t, 404, st, out)
	require.Equal(t, events.CodeUnknownAgent, code(out))

	// jitapi.done: ends the grant; an ended grant is 409; an unknown one 404.
	grant := events.GrantIDFor("req_contract-1")
	waitFor(t, "granted", 10*time.Second, func() bool { return len(grantedOf(t, url, grant)) == 1 })

	// The agent's own reads: its grants, a check, its events; another
	// agent's are 403.
	st, out = a.call(broker.APIGrants, "", []byte(nil), true)
	require.Equal(t, 200, st, out)
	grants := out["grants"].([]any)
	require.Len(t, grants, 1)
	require.Equal(t, grant, grants[0].(map[string]any)["grant_id"])
	st, out = a.call(broker.APICheck, "", broker.CheckInput{Permission: "data:write"}, true)
	require.Equal(t, 200, st, out)
	require.Equal(t, true, out["allowed"])
	require.Equal(t, grant, out["grant_id"])
	st, out = a.call(broker.APICheck, "", broker.CheckInput{Permission: "data:read", Agent: "market-intel"}, true)
	require.Equal(t, 200, st, out)
	require.Equal(t, true, out["base"])
	st, out = a.call(broker.APICheck, "", broker.CheckInput{Permission: "data:delete"}, true)
	require.Equal(t, 200, st, out)
	require.Equal(t, false, out["allowed"])
	st, out = a.call(broker.APICheck, "", []byte(`{"permission":"Data Delete"}`), false)
	require.Equal(t, 400, st)
	require.Equal(t, events.CodeMalformed, code(out))
	st, out = a.call(broker.APIEvents, "", broker.EventsInput{FromSeq: seq, Max: 2}, true)
	require.Equal(t, 200, st, out)
	page := out["events"].([]any)
	require.Len(t, page, 2)
	first := page[0].(map[string]any)
	require.EqualValues(t, seq, first["seq"], "the page starts at from_seq: the request's jit.requested")
	require.Equal(t, "jit.requested.market-intel", first["subject"])
	for _, e := range page {
		body, err := json.Marshal(e.(map[string]any)["event"])
		require.NoError(t, err)
		require.NoError(t, a.c.ValidateEvent(nil, body), "an event of the page holds to the contract")
	}
	require.Greater(t, out["next_seq"].(float64), float64(seq))
	st, out = a.call(broker.APIEvents, "", []byte(`{"from":1}`), false)
	require.Equal(t, 400, st)
	require.Equal(t, events.CodeMalformed, code(out))
	for subject, body := range map[string]any{
		broker.APIGrants: broker.GrantsInput{Agent: "market-intel"},
		broker.APIEvents: broker.EventsInput{Agent: "market-intel"},
		broker.APICheck:  broker.CheckInput{Permission: "data:write", Agent: "market-intel"},
	} {
		st, out := optimizer.call(subject, "", body, true)
		require.Equal(t, 403, st, "%s for another agent: %v", subject, out)
		require.Equal(t, events.CodeForbidden, code(out))
	}
	st, out = a.call(broker.APIDone, "", broker.DoneInput{GrantID: grant}, true)
	require.Equal(t, 200, st, out)
	require.Equal(t, "revoked", out["outcome"])
	st, out = a.call(broker.APIDone, "", broker.DoneInput{GrantID: grant}, true)
	require.Equal(t, 409, st)
	require.Equal(t, events.CodeConflict, code(out))
	st, out = a.call(broker.APIDone, "", broker.DoneInput{GrantID: "grt_nothing"}, true)
	require.Equal(t, 404, st)
	require.Equal(t, events.CodeNotFound, code(out))

	// jitapi.withdraw: always answered withdrawn for a valid id.
	st, out = a.call(broker.APIWithdraw, "", broker.WithdrawInput{RequestID: "req_never", Agent: "market-intel"}, true)
	require.Equal(t, 200, st, out)
	st, out = a.call(broker.APIWithdraw, "", []byte(`{"request_id":"a b","agent":"market-intel"}`), false)
	require.Equal(t, 400, st)
	require.Equal(t, events.CodeMalformed, code(out))

	// A request that needs a human: pending, approve, deny.
	st, _ = optimizer.call(broker.APIRequest, "", broker.RequestInput{RequestID: "req_contract-2", Agent: "svc-price-optimizer",
		Permissions: []string{"integrations:write"}, Duration: "5m", Reason: "contract"}, true)
	require.Equal(t, 200, st)
	st, out = op.call(broker.APIPending, "", struct{}{}, true)
	require.Equal(t, 401, st)
	require.Equal(t, events.CodeUnauthenticated, code(out))
	waitFor(t, "pending", 10*time.Second, func() bool {
		st, out := op.call(broker.APIPending, "dev-alice", struct{}{}, true)
		return st == 200 && len(out["pending"].([]any)) == 1
	})
	st, out = op.call(broker.APIApprove, "dev-carol", broker.ApproveInput{RequestID: "req_contract-2"}, true)
	require.Equal(t, 403, st, "an operator may not approve for a security-admin")
	require.Equal(t, events.CodeForbidden, code(out))
	st, out = op.call(broker.APIDeny, "dev-alice", broker.ApproveInput{RequestID: "req_contract-2"}, false)
	require.Equal(t, 400, st, "a denial needs a comment")
	require.Equal(t, events.CodeEmptyReason, code(out))
	st, out = op.call(broker.APIApprove, "dev-alice", broker.ApproveInput{RequestID: "req_contract-2", Comment: "ok"}, true)
	require.Equal(t, 200, st, out)
	require.Equal(t, "approved", out["outcome"])
	st, out = op.call(broker.APIDeny, "dev-alice", broker.ApproveInput{RequestID: "req_contract-2", Comment: "late"}, true)
	require.Contains(t, []int{404, 409}, st, "answered already: %v", out)

	// jitapi.revoke (admin) and jitapi.reinstate.
	grant2 := events.GrantIDFor("req_contract-2")
	waitFor(t, "granted", 10*time.Second, func() bool { return len(grantedOf(t, url, grant2)) == 1 })
	st, out = op.call(broker.APIRevoke, "", broker.RevokeInput{GrantID: grant2}, true)
	require.Equal(t, 401, st)
	st, out = op.call(broker.APIRevoke, "dev-alice", broker.RevokeInput{GrantID: grant2, Comment: "contract"}, true)
	require.Equal(t, 200, st, out)
	st, out = op.call(broker.APIReinstate, "dev-bob", broker.ReinstateInput{Agent: "market-intel"}, true)
	require.Equal(t, 404, st, "not suspended: %v", out)
	require.Equal(t, events.CodeNotFound, code(out))
	st, out = op.call(broker.APIReinstate, "dev-carol", broker.ReinstateInput{Agent: "market-intel"}, true)
	require.Equal(t, 403, st)

	// jitapi.config.apply.
	yml, err := os.ReadFile(exampleConfig(t))
	require.NoError(t, err)
	st, out = op.call(contract.APIConfigApply, "dev-alice", map[string]string{"source": "jit.yaml", "yaml": string(yml)}, true)
	require.Equal(t, 200, st, out)
	require.Equal(t, "unchanged", out["outcome"])
	st, out = op.call(contract.APIConfigApply, "dev-alice", map[string]string{"source": "bad.yaml", "yaml": "agents: ["}, true)
	require.Equal(t, 400, st)
	require.Equal(t, events.CodeInvalidConfig, code(out))

	// The guardrail ingress: a guardrail source publishes guardrail.fired
	// in its own account and is answered as JetStream answers a publish;
	// the event, the stored one and the answers hold to the contract.
	guard := connectAs(t, url, auth.Principal{Kind: auth.KindGuardrail, ID: "pricing-guard"})
	fire := func(id, rule string) map[string]any {
		t.Helper()
		m := guardrailMsg(t, id, "svc-price-optimizer", rule, "1.0")
		require.NoError(t, a.c.ValidateEvent(m.Header, m.Data), "the event sent holds to the contract")
		resp, err := guard.RequestMsg(m, 10*time.Second)
		require.NoError(t, err)
		require.NoError(t, a.c.Validate(contract.GuardrailAck, resp.Data), "the answer: %s", resp.Data)
		var ack map[string]any
		require.NoError(t, json.Unmarshal(resp.Data, &ack))
		return ack
	}
	ack := fire("contract-fire", "price-floor")
	require.Equal(t, broker.AuditStream, ack["stream"])
	require.Equal(t, false, ack["duplicate"])
	require.Equal(t, true, fire("contract-fire", "price-floor")["duplicate"], "the same id is stored once")
	refused := fire("contract-bad-rule", "no-such-guardrail")["error"].(map[string]any)
	require.EqualValues(t, 400, refused["code"])
	stored := audit(t, url, "guardrail.fired.svc-price-optimizer")
	require.Len(t, stored, 1)
	require.Equal(t, "gr/pricing-guard/contract-fire", stored[0].ID())
	require.Equal(t, "guardrail:pricing-guard", stored[0].Extensions()[events.ExtPrincipal])
}
