package approval

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/agentjit/jit/pkg/service"
	"github.com/stretchr/testify/require"
)

const (
	agentIntel     = "market-intel"        // auto-approved data:write
	agentOptimizer = "svc-price-optimizer" // integrations:write needs security-admin
	waitFor        = 10 * time.Second
	tick           = 20 * time.Millisecond
)

// harness is a real broker with the example configuration, and a publisher
// standing in for the policy service.
type harness struct {
	t      *testing.T
	env    *natstest.Env
	cfg    *config.Source
	policy *broker.Publisher
	// view is the suspension view, as service.Prepare makes one.
	view *broker.SuspensionView
}

func exampleConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	return string(b)
}

// withWindow returns the example configuration with another approval window.
func withWindow(t *testing.T, yml, window string) string {
	t.Helper()
	out := strings.Replace(yml, "approval_window: 15m", "approval_window: "+window, 1)
	require.NotEqual(t, yml, out, "the example configuration sets approval_window: 15m")
	return out
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return harnessOn(t, natstest.Setup(t), exampleConfig(t))
}

func harnessOn(t *testing.T, env *natstest.Env, yml string) *harness {
	t.Helper()
	vctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	view, err := broker.WatchSuspensions(vctx, env.Buckets.Suspensions, natstest.Logger(t))
	require.NoError(t, err)
	env.ApplyConfig(t, yml)
	// The approval service follows the whole configuration: it alone
	// checks approvers' tokens.
	return &harness{t: t, env: env, cfg: env.WatchSecrets(t), policy: broker.NewPublisher(env.JS, "policy"), view: view}
}

func (h *harness) deps() service.Deps {
	return service.Deps{NC: h.env.NC, JS: h.env.JS, Buckets: h.env.Buckets, Config: h.cfg, Log: natstest.Logger(h.t), Suspensions: h.view}
}

// start runs a new instance of the service, stopped at cleanup.
func (h *harness) start() *Service {
	h.t.Helper()
	s := New(h.deps())
	require.NoError(h.t, s.Start(context.Background()))
	h.t.Cleanup(s.Stop)
	return s
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

func request(agent, reqID, perm string, d time.Duration) events.Request {
	return events.Request{
		RequestID: reqID, Agent: agent, Permissions: []string{perm}, DurationMS: d.Milliseconds(),
		Reason: "reprice the catalogue", Context: map[string]string{"ticket": "OPS-1"},
		RequestedBy: events.Actor{Kind: events.ActorAgent, ID: agent}, RequestedAt: time.Now().UTC(),
	}
}

// approved is the decision the policy service makes for an auto-approved
// request.
func approved(agent, reqID string, d time.Duration) events.Decision {
	now := time.Now().UTC()
	return events.Decision{
		RequestID: reqID, Agent: agent, Outcome: events.OutcomeApproved, Mode: events.ModeAutoApprove,
		Rule: "market-intel-write", Reason: "auto-approved by rule market-intel-write",
		Permissions: []string{"data:write"}, DurationMS: d.Milliseconds(),
		Risk:      &events.Risk{Score: 40, Parts: []events.RiskPart{{Name: "sensitivity", Points: 30, Detail: "data:write"}}},
		DecidedBy: events.Actor{Kind: events.ActorRule, ID: "market-intel-write"}, DecidedAt: now,
		Request: request(agent, reqID, "data:write", d),
	}
}

// pendingDecision needs one of the security-admin role.
func pendingDecision(reqID string, d time.Duration) events.Decision {
	return events.Decision{
		RequestID: reqID, Agent: agentOptimizer, Outcome: events.OutcomePending, Mode: events.ModeRequireApproval,
		Rule: "optimizer-integrations", Reason: "rule optimizer-integrations needs an approver",
		Permissions: []string{"integrations:write"}, DurationMS: d.Milliseconds(),
		Risk:          &events.Risk{Score: 55},
		ApproverRoles: []string{config.RoleSecurityAdmin},
		DecidedBy:     events.Actor{Kind: events.ActorRule, ID: "optimizer-integrations"}, DecidedAt: time.Now().UTC(),
		Request: request(agentOptimizer, reqID, "integrations:write", d),
	}
}

// emit publishes dec on jit.decided.<agent> with event id id.
func (h *harness) emit(id string, dec events.Decision) {
	h.t.Helper()
	_, _, err := h.policy.Emit(ctxT(h.t), id, events.TypeDecided, dec.Agent, dec, events.WithRequestID(dec.RequestID))
	require.NoError(h.t, err)
}

// emitPolicy publishes dec with the id the policy service gives it.
func (h *harness) emitPolicy(dec events.Decision) {
	h.t.Helper()
	h.emit(events.DecisionEventID(dec.RequestID, "policy"), dec)
}

func (h *harness) audit(filter string) []events.Event {
	h.t.Helper()
	var out []events.Event
	for _, m := range h.env.AuditEvents(h.t, filter) {
		e, err := broker.FromMsg(m.Header, m.Data)
		require.NoError(h.t, err)
		out = append(out, e)
	}
	return out
}

// auditFor returns the events matching filter that carry request id reqID.
func (h *harness) auditFor(filter, reqID string) []events.Event {
	h.t.Helper()
	var out []events.Event
	for _, e := range h.audit(filter) {
		if events.RequestID(e) == reqID {
			out = append(out, e)
		}
	}
	return out
}

func dataOf[T any](t *testing.T, e events.Event) T {
	t.Helper()
	v, err := events.DataAs[T](e)
	require.NoError(t, err)
	return v
}

// decisionsBy returns the jit.decided events of reqID made in the given way.
func (h *harness) decisionsBy(reqID, how string) []events.Decision {
	h.t.Helper()
	var out []events.Decision
	for _, e := range h.auditFor("jit.decided.>", reqID) {
		if e.ID() == events.DecisionEventID(reqID, how) {
			out = append(out, dataOf[events.Decision](h.t, e))
		}
	}
	return out
}

// waitDecision waits for the one jit.decided of reqID made in the given way.
func (h *harness) waitDecision(reqID, how string) events.Decision {
	h.t.Helper()
	require.Eventually(h.t, func() bool { return len(h.decisionsBy(reqID, how)) > 0 }, waitFor, tick,
		"no jit.decided %s for %s", how, reqID)
	ds := h.decisionsBy(reqID, how)
	require.Len(h.t, ds, 1)
	return ds[0]
}

// waitGranted waits for the jit.granted event of reqID and then for its
// grant key (written after the event: announced before usable), and
// returns the grant.
func (h *harness) waitGranted(reqID string) events.Grant {
	h.t.Helper()
	require.Eventually(h.t, func() bool { return len(h.auditFor("jit.granted.>", reqID)) > 0 }, waitFor, tick,
		"no jit.granted for %s", reqID)
	g := h.requireOneGranted(reqID)
	require.Eventually(h.t, func() bool { _, ok := h.grantKey(g.Agent, reqID); return ok }, waitFor, tick,
		"no grant key for %s", reqID)
	return g
}

// requireOneGranted checks exactly one jit.granted for reqID, with its
// derived id and extensions.
func (h *harness) requireOneGranted(reqID string) events.Grant {
	h.t.Helper()
	evs := h.auditFor("jit.granted.>", reqID)
	require.Len(h.t, evs, 1, "exactly one jit.granted for %s", reqID)
	grantID := events.GrantIDFor(reqID)
	require.Equal(h.t, events.GrantedEventID(grantID), evs[0].ID())
	require.Equal(h.t, grantID, events.GrantID(evs[0]))
	return dataOf[events.Grant](h.t, evs[0])
}

// grantedCounts counts the jit.granted events per request id.
func (h *harness) grantedCounts() map[string]int {
	h.t.Helper()
	counts := map[string]int{}
	for _, e := range h.audit("jit.granted.>") {
		counts[events.RequestID(e)]++
	}
	return counts
}

// waitAllGranted waits until every request in ids has a jit.granted event.
// One agent's decisions are handled one at a time, in stream order, so the
// budget grows with their number: 300 ms each (a two-core machine at load
// 11 under -race took about 150 ms for a redelivered decision), and never
// less than waitFor.
func (h *harness) waitAllGranted(ids []string) {
	h.t.Helper()
	budget := max(waitFor, time.Duration(len(ids))*300*time.Millisecond)
	require.Eventually(h.t, func() bool {
		counts := h.grantedCounts()
		for _, id := range ids {
			if counts[id] == 0 {
				return false
			}
		}
		return true
	}, budget, tick, "not every request was granted")
}

// barrier publishes an approved decision for a fresh request and waits for
// its grant: the decision consumer handles events in stream order, so
// everything published before it has been handled.
func (h *harness) barrier() {
	h.t.Helper()
	id := events.NewID("req")
	h.emitPolicy(approved(agentIntel, id, time.Minute))
	h.waitGranted(id)
}

func (h *harness) lease(agent, reqID string) (events.Lease, bool) {
	h.t.Helper()
	var l events.Lease
	_, err := broker.GetJSON(ctxT(h.t), h.env.Buckets.Leases, broker.GrantKey(agent, events.GrantIDFor(reqID)), &l)
	if errors.Is(err, broker.ErrNotFound) {
		return l, false
	}
	require.NoError(h.t, err)
	return l, true
}

func (h *harness) grantKey(agent, reqID string) (events.Grant, bool) {
	h.t.Helper()
	var g events.Grant
	_, err := broker.GetJSON(ctxT(h.t), h.env.Buckets.Grants, broker.GrantKey(agent, events.GrantIDFor(reqID)), &g)
	if errors.Is(err, broker.ErrNotFound) {
		return g, false
	}
	require.NoError(h.t, err)
	return g, true
}

func (h *harness) pendingKey(agent, reqID string) (pendingRecord, bool) {
	h.t.Helper()
	var r pendingRecord
	_, err := broker.GetJSON(ctxT(h.t), h.env.Buckets.Pending, broker.PendingKey(agent, reqID), &r)
	if errors.Is(err, broker.ErrNotFound) {
		return r, false
	}
	require.NoError(h.t, err)
	return r, true
}

func (h *harness) waitPending(agent, reqID string) pendingRecord {
	h.t.Helper()
	require.Eventually(h.t, func() bool { _, ok := h.pendingKey(agent, reqID); return ok }, waitFor, tick,
		"request %s never became pending", reqID)
	r, _ := h.pendingKey(agent, reqID)
	return r
}

func (h *harness) suspend(agent string) {
	h.t.Helper()
	b, err := json.Marshal(events.Suspension{Agent: agent, Rule: "price-floor", GuardrailID: "gr_1",
		SuspendedBy: events.Actor{Kind: events.ActorGuardrail, ID: "price-floor"}, SuspendedAt: time.Now().UTC()})
	require.NoError(h.t, err)
	_, err = h.env.Buckets.Suspensions.Put(ctxT(h.t), agent, b)
	require.NoError(h.t, err)
	// As the revoker does after its own write: the view answers it at once.
	h.view.Hold(agent)
}

// call calls an API endpoint with token; a refusal comes back as
// *broker.APIError.
func (h *harness) call(subject, token string, in, out any) error {
	h.t.Helper()
	return broker.Call(ctxT(h.t), h.env.NC, subject, token, in, out)
}

func (h *harness) approve(token, reqID, comment string) (broker.ActionResult, error) {
	var res broker.ActionResult
	err := h.call(broker.APIApprove, token, broker.ApproveInput{RequestID: reqID, Comment: comment}, &res)
	return res, err
}

func (h *harness) deny(token, reqID, comment string) (broker.ActionResult, error) {
	var res broker.ActionResult
	err := h.call(broker.APIDeny, token, broker.ApproveInput{RequestID: reqID, Comment: comment}, &res)
	return res, err
}

func (h *harness) listPending(token string) broker.PendingList {
	h.t.Helper()
	var out broker.PendingList
	require.NoError(h.t, h.call(broker.APIPending, token, struct{}{}, &out))
	return out
}

// requireRefused checks err is an API error with status and code, and that
// a jit.rejected event (stage approval) with the same message is on the
// audit stream.
func (h *harness) requireRefused(err error, status int, code string) events.Rejection {
	h.t.Helper()
	var ae *broker.APIError
	require.ErrorAs(h.t, err, &ae)
	require.Equal(h.t, status, ae.Status, ae.Message)
	require.Equal(h.t, code, ae.Code, ae.Message)
	var found []events.Rejection
	for _, e := range h.audit("jit.rejected.>") {
		r := dataOf[events.Rejection](h.t, e)
		if r.Message == ae.Message && r.Stage == events.StageApproval {
			found = append(found, r)
		}
	}
	require.NotEmpty(h.t, found, "a jit.rejected event for %q", ae.Message)
	return found[len(found)-1]
}
