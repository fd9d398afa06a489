// Package approvaltest is the broker side of the approval service's tests,
// shared by the core's tests (package approval) and the console's
// (package web): a real embedded broker with the example configuration, a
// publisher standing in for the policy service, readers of the audit stream
// and the buckets, and callers of the approvers' NATS API. It never imports
// the approval package, so the core's own tests can use it; each test
// package starts the service itself with Deps.
package approvaltest

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
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

// Agents of the example configuration, and the waits of every assertion.
const (
	AgentIntel     = "market-intel"        // auto-approved data:write
	AgentOptimizer = "svc-price-optimizer" // integrations:write needs security-admin
	WaitFor        = 10 * time.Second
	Tick           = 20 * time.Millisecond
)

// Harness is a real broker with a configuration, and a publisher standing
// in for the policy service.
type Harness struct {
	T   *testing.T
	Env *natstest.Env
	// Config follows the whole configuration (the secrets bucket), as the
	// approval service does: it alone checks approvers' tokens.
	Config *config.Source
	Policy *broker.Publisher
	// View is the suspension view, as service.Prepare makes one.
	View *broker.SuspensionView
}

// ExampleConfig is examples/jit.yaml.
func ExampleConfig(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	require.True(t, ok)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "..", "examples", "jit.yaml"))
	require.NoError(t, err)
	return string(b)
}

// WithWindow returns the configuration yml with another approval window.
func WithWindow(t *testing.T, yml, window string) string {
	t.Helper()
	out := strings.Replace(yml, "approval_window: 15m", "approval_window: "+window, 1)
	require.NotEqual(t, yml, out, "the example configuration sets approval_window: 15m")
	return out
}

// New is a fresh broker with the example configuration.
func New(t *testing.T) *Harness {
	t.Helper()
	return On(t, natstest.Setup(t), ExampleConfig(t))
}

// On applies yml on env.
func On(t *testing.T, env *natstest.Env, yml string) *Harness {
	t.Helper()
	vctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	view, err := broker.WatchSuspensions(vctx, env.Buckets.Suspensions, natstest.Logger(t))
	require.NoError(t, err)
	env.ApplyConfig(t, yml)
	return &Harness{T: t, Env: env, Config: env.WatchSecrets(t), Policy: broker.NewPublisher(env.JS, "policy"), View: view}
}

// Deps are the approval service's dependencies on the harness.
func (h *Harness) Deps() service.Deps {
	return service.Deps{NC: h.Env.NC, JS: h.Env.JS, Buckets: h.Env.Buckets, Config: h.Config, Log: natstest.Logger(h.T), Suspensions: h.View}
}

// Ctx is a context that ends after WaitFor or with the test.
func Ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), WaitFor)
	t.Cleanup(cancel)
	return ctx
}

// Request is the request of agent for perm, as the requester publishes it.
func Request(agent, reqID, perm string, d time.Duration) events.Request {
	return events.Request{
		RequestID: reqID, Agent: agent, Permissions: []string{perm}, DurationMS: d.Milliseconds(),
		Reason: "reprice the catalogue", Context: map[string]string{"ticket": "OPS-1"},
		RequestedBy: events.Actor{Kind: events.ActorAgent, ID: agent}, RequestedAt: time.Now().UTC(),
	}
}

// Approved is the decision the policy service makes for an auto-approved
// request.
func Approved(agent, reqID string, d time.Duration) events.Decision {
	now := time.Now().UTC()
	return events.Decision{
		RequestID: reqID, Agent: agent, Outcome: events.OutcomeApproved, Mode: events.ModeAutoApprove,
		Rule: "market-intel-write", Reason: "auto-approved by rule market-intel-write",
		Permissions: []string{"data:write"}, DurationMS: d.Milliseconds(),
		Risk:      &events.Risk{Score: 40, Parts: []events.RiskPart{{Name: "sensitivity", Points: 30, Detail: "data:write"}}},
		DecidedBy: events.Actor{Kind: events.ActorRule, ID: "market-intel-write"}, DecidedAt: now,
		Request: Request(agent, reqID, "data:write", d),
	}
}

// PendingDecision needs one of the security-admin role.
func PendingDecision(reqID string, d time.Duration) events.Decision {
	return events.Decision{
		RequestID: reqID, Agent: AgentOptimizer, Outcome: events.OutcomePending, Mode: events.ModeRequireApproval,
		Rule: "optimizer-integrations", Reason: "rule optimizer-integrations needs an approver",
		Permissions: []string{"integrations:write"}, DurationMS: d.Milliseconds(),
		Risk:          &events.Risk{Score: 55},
		ApproverRoles: []string{config.RoleSecurityAdmin},
		DecidedBy:     events.Actor{Kind: events.ActorRule, ID: "optimizer-integrations"}, DecidedAt: time.Now().UTC(),
		Request: Request(AgentOptimizer, reqID, "integrations:write", d),
	}
}

// Emit publishes dec on jit.decided.<agent> with event id id.
func (h *Harness) Emit(id string, dec events.Decision) {
	h.T.Helper()
	_, _, err := h.Policy.Emit(Ctx(h.T), id, events.TypeDecided, dec.Agent, dec, events.WithRequestID(dec.RequestID))
	require.NoError(h.T, err)
}

// EmitPolicy publishes dec with the id the policy service gives it.
func (h *Harness) EmitPolicy(dec events.Decision) {
	h.T.Helper()
	h.Emit(events.DecisionEventID(dec.RequestID, "policy"), dec)
}

// Audit returns the events of the audit stream whose subject matches
// filter.
func (h *Harness) Audit(filter string) []events.Event {
	h.T.Helper()
	var out []events.Event
	for _, m := range h.Env.AuditEvents(h.T, filter) {
		e, err := broker.FromMsg(m.Header, m.Data)
		require.NoError(h.T, err)
		out = append(out, e)
	}
	return out
}

// AuditFor returns the events matching filter that carry request id reqID.
func (h *Harness) AuditFor(filter, reqID string) []events.Event {
	h.T.Helper()
	var out []events.Event
	for _, e := range h.Audit(filter) {
		if events.RequestID(e) == reqID {
			out = append(out, e)
		}
	}
	return out
}

// DataOf decodes e's data.
func DataOf[T any](t *testing.T, e events.Event) T {
	t.Helper()
	v, err := events.DataAs[T](e)
	require.NoError(t, err)
	return v
}

// DecisionsBy returns the jit.decided events of reqID made in the given way.
func (h *Harness) DecisionsBy(reqID, how string) []events.Decision {
	h.T.Helper()
	var out []events.Decision
	for _, e := range h.AuditFor("jit.decided.>", reqID) {
		if e.ID() == events.DecisionEventID(reqID, how) {
			out = append(out, DataOf[events.Decision](h.T, e))
		}
	}
	return out
}

// WaitDecision waits for the one jit.decided of reqID made in the given way.
func (h *Harness) WaitDecision(reqID, how string) events.Decision {
	h.T.Helper()
	require.Eventually(h.T, func() bool { return len(h.DecisionsBy(reqID, how)) > 0 }, WaitFor, Tick,
		"no jit.decided %s for %s", how, reqID)
	ds := h.DecisionsBy(reqID, how)
	require.Len(h.T, ds, 1)
	return ds[0]
}

// WaitGranted waits for the jit.granted event of reqID and then for its
// grant key (written after the event: announced before usable), and
// returns the grant.
func (h *Harness) WaitGranted(reqID string) events.Grant {
	h.T.Helper()
	require.Eventually(h.T, func() bool { return len(h.AuditFor("jit.granted.>", reqID)) > 0 }, WaitFor, Tick,
		"no jit.granted for %s", reqID)
	g := h.RequireOneGranted(reqID)
	require.Eventually(h.T, func() bool { _, ok := h.GrantKey(g.Agent, reqID); return ok }, WaitFor, Tick,
		"no grant key for %s", reqID)
	return g
}

// RequireOneGranted checks exactly one jit.granted for reqID, with its
// derived id and extensions.
func (h *Harness) RequireOneGranted(reqID string) events.Grant {
	h.T.Helper()
	evs := h.AuditFor("jit.granted.>", reqID)
	require.Len(h.T, evs, 1, "exactly one jit.granted for %s", reqID)
	grantID := events.GrantIDFor(reqID)
	require.Equal(h.T, events.GrantedEventID(grantID), evs[0].ID())
	require.Equal(h.T, grantID, events.GrantID(evs[0]))
	return DataOf[events.Grant](h.T, evs[0])
}

// GrantedCounts counts the jit.granted events per request id.
func (h *Harness) GrantedCounts() map[string]int {
	h.T.Helper()
	counts := map[string]int{}
	for _, e := range h.Audit("jit.granted.>") {
		counts[events.RequestID(e)]++
	}
	return counts
}

// WaitAllGranted waits until every request in ids has a jit.granted event.
// One agent's decisions are handled one at a time, in stream order, so the
// budget grows with their number: 300 ms each (a two-core machine at load
// 11 under -race took about 150 ms for a redelivered decision), and never
// less than WaitFor.
func (h *Harness) WaitAllGranted(ids []string) {
	h.T.Helper()
	budget := max(WaitFor, time.Duration(len(ids))*300*time.Millisecond)
	require.Eventually(h.T, func() bool {
		counts := h.GrantedCounts()
		for _, id := range ids {
			if counts[id] == 0 {
				return false
			}
		}
		return true
	}, budget, Tick, "not every request was granted")
}

// Barrier publishes an approved decision for a fresh request and waits for
// its grant: the decision consumer handles events in stream order, so
// everything published before it has been handled.
func (h *Harness) Barrier() {
	h.T.Helper()
	id := events.NewID("req")
	h.EmitPolicy(Approved(AgentIntel, id, time.Minute))
	h.WaitGranted(id)
}

// Lease reads the lease of reqID's grant.
func (h *Harness) Lease(agent, reqID string) (events.Lease, bool) {
	h.T.Helper()
	var l events.Lease
	return l, h.get(h.Env.Buckets.Leases, broker.GrantKey(agent, events.GrantIDFor(reqID)), &l)
}

// GrantKey reads the grant key of reqID's grant.
func (h *Harness) GrantKey(agent, reqID string) (events.Grant, bool) {
	h.T.Helper()
	var g events.Grant
	return g, h.get(h.Env.Buckets.Grants, broker.GrantKey(agent, events.GrantIDFor(reqID)), &g)
}

// PendingKey reads reqID's pending record into v (the approval service's
// own record type, or events.Pending for its common part).
func (h *Harness) PendingKey(agent, reqID string, v any) bool {
	h.T.Helper()
	return h.get(h.Env.Buckets.Pending, broker.PendingKey(agent, reqID), v)
}

// WaitPending waits until reqID is pending.
func (h *Harness) WaitPending(agent, reqID string) {
	h.T.Helper()
	require.Eventually(h.T, func() bool { return h.PendingKey(agent, reqID, &events.Pending{}) }, WaitFor, Tick,
		"request %s never became pending", reqID)
}

func (h *Harness) get(kv jetstream.KeyValue, key string, v any) bool {
	h.T.Helper()
	_, err := broker.GetJSON(Ctx(h.T), kv, key, v)
	if errors.Is(err, broker.ErrNotFound) {
		return false
	}
	require.NoError(h.T, err)
	return true
}

// Suspend stores a suspension of agent, as the revoker does after a
// guardrail fired.
func (h *Harness) Suspend(agent string) {
	h.T.Helper()
	b, err := json.Marshal(events.Suspension{Agent: agent, Rule: "price-floor", GuardrailID: "gr_1",
		SuspendedBy: events.Actor{Kind: events.ActorGuardrail, ID: "price-floor"}, SuspendedAt: time.Now().UTC()})
	require.NoError(h.T, err)
	_, err = h.Env.Buckets.Suspensions.Put(Ctx(h.T), agent, b)
	require.NoError(h.T, err)
	// As the revoker does after its own write: the view answers it at once.
	h.View.Hold(agent)
}

// Call calls an API endpoint with token; a refusal comes back as
// *broker.APIError.
func (h *Harness) Call(subject, token string, in, out any) error {
	h.T.Helper()
	return broker.Call(Ctx(h.T), h.Env.NC, subject, token, in, out)
}

// Approve answers reqID with an approval over the NATS API.
func (h *Harness) Approve(token, reqID, comment string) (broker.ActionResult, error) {
	var res broker.ActionResult
	err := h.Call(broker.APIApprove, token, broker.ApproveInput{RequestID: reqID, Comment: comment}, &res)
	return res, err
}

// Deny answers reqID with a denial over the NATS API.
func (h *Harness) Deny(token, reqID, comment string) (broker.ActionResult, error) {
	var res broker.ActionResult
	err := h.Call(broker.APIDeny, token, broker.ApproveInput{RequestID: reqID, Comment: comment}, &res)
	return res, err
}

// ListPending lists the pending requests over the NATS API.
func (h *Harness) ListPending(token string) broker.PendingList {
	h.T.Helper()
	var out broker.PendingList
	require.NoError(h.T, h.Call(broker.APIPending, token, struct{}{}, &out))
	return out
}

// RequireRefused checks err is an API error with status and code, and that
// a jit.rejected event (stage approval) with the same message is on the
// audit stream.
func (h *Harness) RequireRefused(err error, status int, code string) events.Rejection {
	h.T.Helper()
	var ae *broker.APIError
	require.ErrorAs(h.T, err, &ae)
	require.Equal(h.T, status, ae.Status, ae.Message)
	require.Equal(h.T, code, ae.Code, ae.Message)
	var found []events.Rejection
	for _, e := range h.Audit("jit.rejected.>") {
		r := DataOf[events.Rejection](h.T, e)
		if r.Message == ae.Message && r.Stage == events.StageApproval {
			found = append(found, r)
		}
	}
	require.NotEmpty(h.T, found, "a jit.rejected event for %q", ae.Message)
	return found[len(found)-1]
}

// RequireLastRejectionAbout checks that the newest jit.rejected event names
// request requestID (in its data and its requestid extension) and grant
// grantID ("" for none); what says which call it was.
func (h *Harness) RequireLastRejectionAbout(what, requestID, grantID string) {
	h.T.Helper()
	all := h.Audit("jit.rejected.>")
	require.NotEmpty(h.T, all)
	e := all[len(all)-1]
	r := DataOf[events.Rejection](h.T, e)
	require.Equal(h.T, requestID, r.RequestID, what)
	require.Equal(h.T, requestID, events.RequestID(e), "%s: requestid extension", what)
	require.Equal(h.T, grantID, r.GrantID, what)
}
