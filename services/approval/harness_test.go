package approval

import (
	"context"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/approval/approvaltest"
	"github.com/stretchr/testify/require"
)

const (
	agentIntel     = approvaltest.AgentIntel
	agentOptimizer = approvaltest.AgentOptimizer
	waitFor        = approvaltest.WaitFor
	tick           = approvaltest.Tick
)

// harness is the shared broker harness (approvaltest) under the names
// these tests use, plus what needs the package's own types.
type harness struct {
	*approvaltest.Harness
	t      *testing.T
	env    *natstest.Env
	cfg    *config.Source
	policy *broker.Publisher
	view   *broker.SuspensionView
}

func exampleConfig(t *testing.T) string { return approvaltest.ExampleConfig(t) }

// withWindow returns the example configuration with another approval window.
func withWindow(t *testing.T, yml, window string) string {
	return approvaltest.WithWindow(t, yml, window)
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return harnessOn(t, natstest.Setup(t), exampleConfig(t))
}

func harnessOn(t *testing.T, env *natstest.Env, yml string) *harness {
	t.Helper()
	x := approvaltest.On(t, env, yml)
	return &harness{Harness: x, t: t, env: x.Env, cfg: x.Config, policy: x.Policy, view: x.View}
}

func (h *harness) deps() service.Deps { return h.Deps() }

// start runs a new instance of the service, stopped at cleanup.
func (h *harness) start() *Service {
	h.t.Helper()
	s := New(h.deps())
	require.NoError(h.t, s.Start(context.Background()))
	h.t.Cleanup(s.Stop)
	return s
}

func ctxT(t *testing.T) context.Context { return approvaltest.Ctx(t) }

func request(agent, reqID, perm string, d time.Duration) events.Request {
	return approvaltest.Request(agent, reqID, perm, d)
}

func approved(agent, reqID string, d time.Duration) events.Decision {
	return approvaltest.Approved(agent, reqID, d)
}

func pendingDecision(reqID string, d time.Duration) events.Decision {
	return approvaltest.PendingDecision(reqID, d)
}

func dataOf[T any](t *testing.T, e events.Event) T { return approvaltest.DataOf[T](t, e) }

func (h *harness) emit(id string, dec events.Decision) { h.t.Helper(); h.Emit(id, dec) }
func (h *harness) emitPolicy(dec events.Decision)      { h.t.Helper(); h.EmitPolicy(dec) }
func (h *harness) audit(filter string) []events.Event  { h.t.Helper(); return h.Audit(filter) }
func (h *harness) auditFor(filter, reqID string) []events.Event {
	h.t.Helper()
	return h.AuditFor(filter, reqID)
}
func (h *harness) decisionsBy(reqID, how string) []events.Decision {
	h.t.Helper()
	return h.DecisionsBy(reqID, how)
}
func (h *harness) waitDecision(reqID, how string) events.Decision {
	h.t.Helper()
	return h.WaitDecision(reqID, how)
}
func (h *harness) waitGranted(reqID string) events.Grant { h.t.Helper(); return h.WaitGranted(reqID) }
func (h *harness) requireOneGranted(reqID string) events.Grant {
	h.t.Helper()
	return h.RequireOneGranted(reqID)
}
func (h *harness) grantedCounts() map[string]int { h.t.Helper(); return h.GrantedCounts() }
func (h *harness) waitAllGranted(ids []string)   { h.t.Helper(); h.WaitAllGranted(ids) }
func (h *harness) barrier()                      { h.t.Helper(); h.Barrier() }
func (h *harness) lease(agent, reqID string) (events.Lease, bool) {
	h.t.Helper()
	return h.Lease(agent, reqID)
}
func (h *harness) grantKey(agent, reqID string) (events.Grant, bool) {
	h.t.Helper()
	return h.GrantKey(agent, reqID)
}
func (h *harness) suspend(agent string) { h.t.Helper(); h.Suspend(agent) }
func (h *harness) call(subject, token string, in, out any) error {
	h.t.Helper()
	return h.Call(subject, token, in, out)
}
func (h *harness) approve(token, reqID, comment string) (broker.ActionResult, error) {
	return h.Approve(token, reqID, comment)
}
func (h *harness) deny(token, reqID, comment string) (broker.ActionResult, error) {
	return h.Deny(token, reqID, comment)
}
func (h *harness) listPending(token string) broker.PendingList {
	h.t.Helper()
	return h.ListPending(token)
}
func (h *harness) requireRefused(err error, status int, code string) events.Rejection {
	h.t.Helper()
	return h.RequireRefused(err, status, code)
}

// pendingKey reads the pending record of reqID, votes and answer included.
func (h *harness) pendingKey(agent, reqID string) (pendingRecord, bool) {
	h.t.Helper()
	var r pendingRecord
	ok := h.PendingKey(agent, reqID, &r)
	return r, ok
}

func (h *harness) waitPending(agent, reqID string) pendingRecord {
	h.t.Helper()
	h.WaitPending(agent, reqID)
	r, _ := h.pendingKey(agent, reqID)
	return r
}
