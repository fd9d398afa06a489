package approval

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

func TestHumanApprovalMakesAGrant(t *testing.T) {
	h := newHarness(t)
	h.start()
	reqID := events.NewID("req")
	dec := pendingDecision(reqID, 2*time.Minute)
	h.emitPolicy(dec)
	rec := h.waitPending(agentOptimizer, reqID)
	require.True(t, dec.DecidedAt.Add(15*time.Minute).Equal(rec.Deadline), "deadline = decided_at + approval_window")

	list := h.listPending("dev-alice")
	require.Len(t, list.Pending, 1)
	require.Equal(t, reqID, list.Pending[0].Decision.RequestID)
	require.True(t, rec.Deadline.Equal(list.Pending[0].Deadline))

	res, err := h.approve("dev-alice", reqID, "looks fine")
	require.NoError(t, err)
	require.Equal(t, broker.ActionResult{RequestID: reqID, Agent: agentOptimizer, Outcome: events.OutcomeApproved, Message: res.Message}, res)

	d := h.waitDecision(reqID, "human")
	require.Equal(t, events.OutcomeApproved, d.Outcome)
	require.Equal(t, events.ModeHuman, d.Mode)
	require.Equal(t, "optimizer-integrations", d.Rule)
	require.Equal(t, "approved by alice", d.Reason)
	require.Equal(t, "looks fine", d.Comment)
	require.Equal(t, events.Actor{Kind: events.ActorApprover, ID: "alice", Roles: []string{config.RoleSecurityAdmin}}, d.DecidedBy)
	require.Equal(t, dec.Permissions, d.Permissions)
	require.Equal(t, dec.DurationMS, d.DurationMS)
	require.Equal(t, dec.Risk, d.Risk)
	require.Equal(t, dec.Request.RequestID, d.Request.RequestID)

	g := h.waitGranted(reqID)
	require.Equal(t, events.ModeHuman, g.Mode)
	require.Equal(t, "alice", g.ApprovedBy.ID)
	require.True(t, d.DecidedAt.Add(2*time.Minute).Equal(g.ExpiresAt), "the grant runs from the approval")

	_, ok := h.pendingKey(agentOptimizer, reqID)
	require.False(t, ok, "the pending key is gone")
	require.Empty(t, h.listPending("dev-bob").Pending)
}

func TestAnswerRefusals(t *testing.T) {
	h := newHarness(t)
	h.start()
	reqID := events.NewID("req")
	h.emitPolicy(pendingDecision(reqID, time.Minute))
	h.waitPending(agentOptimizer, reqID)

	cases := []struct {
		name    string
		subject string
		token   string
		body    any
		status  int
		code    string
		rejCode string // the jit.rejected code, if not code
	}{
		{"approve without token", broker.APIApprove, "", broker.ApproveInput{RequestID: reqID}, 401, events.CodeUnauthenticated, ""},
		{"approve with wrong token", broker.APIApprove, "dev-mallory", broker.ApproveInput{RequestID: reqID}, 401, events.CodeUnauthenticated, ""},
		{"pending without token", broker.APIPending, "", struct{}{}, 401, events.CodeUnauthenticated, ""},
		{"pending with wrong token", broker.APIPending, "dev-alic", struct{}{}, 401, events.CodeUnauthenticated, ""},
		{"deny with wrong token", broker.APIDeny, "nope", broker.ApproveInput{RequestID: reqID, Comment: "no"}, 401, events.CodeUnauthenticated, ""},
		{"operator approves security-admin request", broker.APIApprove, "dev-carol", broker.ApproveInput{RequestID: reqID}, 403, events.CodeForbidden, ""},
		{"org-admin approves security-admin request", broker.APIApprove, "dev-bob", broker.ApproveInput{RequestID: reqID}, 403, events.CodeForbidden, ""},
		{"operator denies security-admin request", broker.APIDeny, "dev-carol", broker.ApproveInput{RequestID: reqID, Comment: "no"}, 403, events.CodeForbidden, ""},
		{"deny without comment", broker.APIDeny, "dev-alice", broker.ApproveInput{RequestID: reqID}, 400, events.CodeEmptyReason, ""},
		{"deny with blank comment", broker.APIDeny, "dev-alice", broker.ApproveInput{RequestID: reqID, Comment: "  "}, 400, events.CodeEmptyReason, ""},
		{"unknown field", broker.APIApprove, "dev-alice", map[string]string{"request_id": reqID, "approver": "alice"}, 400, events.CodeMalformed, ""},
		{"invalid request id", broker.APIApprove, "dev-alice", broker.ApproveInput{RequestID: "req.*"}, 400, events.CodeMalformed, ""},
		{"unknown request", broker.APIApprove, "dev-alice", broker.ApproveInput{RequestID: events.NewID("req")}, 404, events.CodeNotFound, events.CodeStale},
		{"pending with a body", broker.APIPending, "dev-alice", map[string]int{"limit": 3}, 400, events.CodeMalformed, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := h.call(tc.subject, tc.token, tc.body, &json.RawMessage{})
			r := h.requireRefused(err, tc.status, tc.code)
			want := tc.code
			if tc.rejCode != "" {
				want = tc.rejCode
			}
			require.Equal(t, want, r.Code)
			if tc.status == 403 {
				require.Equal(t, agentOptimizer, r.Agent)
				require.Equal(t, reqID, r.RequestID)
				require.Contains(t, r.Message, config.RoleSecurityAdmin, "names the role needed")
			}
		})
	}
	// None of them answered the request.
	_, ok := h.pendingKey(agentOptimizer, reqID)
	require.True(t, ok)
	require.Empty(t, h.decisionsBy(reqID, "human"))
}

func TestApproveTwice(t *testing.T) {
	h := newHarness(t)
	h.start()
	reqID := events.NewID("req")
	h.emitPolicy(pendingDecision(reqID, time.Minute))
	h.waitPending(agentOptimizer, reqID)

	_, err := h.approve("dev-alice", reqID, "")
	require.NoError(t, err)
	_, err = h.approve("dev-alice", reqID, "")
	r := h.requireRefused(err, 409, events.CodeStale)
	require.Contains(t, r.Message, "already decided")
	_, err = h.deny("dev-alice", reqID, "changed my mind")
	h.requireRefused(err, 409, events.CodeStale)

	h.waitGranted(reqID)
	h.barrier()
	require.Len(t, h.decisionsBy(reqID, "human"), 1)
	h.requireOneGranted(reqID)
}

func TestConcurrentAnswersHaveOneWinner(t *testing.T) {
	h := newHarness(t)
	h.start()
	reqID := events.NewID("req")
	h.emitPolicy(pendingDecision(reqID, time.Minute))
	h.waitPending(agentOptimizer, reqID)

	// Each answer on its own connection, so they race at the broker.
	const n = 6
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := nats.Connect(h.env.Server.ClientURL())
			if err != nil {
				errs[i] = err
				return
			}
			defer nc.Close()
			subject, in := broker.APIApprove, broker.ApproveInput{RequestID: reqID}
			if i%2 == 1 {
				subject, in.Comment = broker.APIDeny, "too risky"
			}
			errs[i] = broker.Call(ctxT(t), nc, subject, "dev-alice", in, &broker.ActionResult{})
		}()
	}
	wg.Wait()
	// The same approver repeating the winning answer is told it succeeded
	// (an idempotent retry); every other answer is refused.
	winners := map[string]int{}
	for i, err := range errs {
		if err == nil {
			winners[[]string{events.OutcomeApproved, events.OutcomeDenied}[i%2]]++
			continue
		}
		var ae *broker.APIError
		require.ErrorAs(t, err, &ae)
		require.Contains(t, []int{404, 409}, ae.Status, ae.Message)
	}
	require.Len(t, winners, 1, "one outcome wins: %v", winners)
	require.Eventually(t, func() bool { return len(h.decisionsBy(reqID, "human")) == 1 }, waitFor, tick)
	h.barrier()
	ds := h.decisionsBy(reqID, "human")
	require.Len(t, ds, 1)
	require.Contains(t, winners, ds[0].Outcome)
}

func TestDenyWithComment(t *testing.T) {
	h := newHarness(t)
	h.start()
	reqID := events.NewID("req")
	dec := pendingDecision(reqID, time.Minute)
	h.emitPolicy(dec)
	h.waitPending(agentOptimizer, reqID)

	res, err := h.deny("dev-alice", reqID, "no integration changes this week")
	require.NoError(t, err)
	require.Equal(t, events.OutcomeDenied, res.Outcome)
	d := h.waitDecision(reqID, "human")
	require.Equal(t, events.OutcomeDenied, d.Outcome)
	require.Equal(t, events.ModeHuman, d.Mode)
	require.Equal(t, "denied by alice: no integration changes this week", d.Reason)
	require.Equal(t, "no integration changes this week", d.Comment)

	// A redelivered pending decision cannot bring the request back.
	h.emit(events.NewID("evt"), dec)
	h.barrier()
	_, ok := h.pendingKey(agentOptimizer, reqID)
	require.False(t, ok, "the answered request stays answered")
	require.Empty(t, h.listPending("dev-alice").Pending)
	_, ok = h.lease(agentOptimizer, reqID)
	require.False(t, ok, "no lease for a denied request")
	_, ok = h.grantKey(agentOptimizer, reqID)
	require.False(t, ok, "no grant for a denied request")
	require.Empty(t, h.auditFor("jit.granted.>", reqID))
}

func TestApproveForSuspendedAgentDenies(t *testing.T) {
	h := newHarness(t)
	h.start()
	reqID := events.NewID("req")
	h.emitPolicy(pendingDecision(reqID, time.Minute))
	h.waitPending(agentOptimizer, reqID)
	h.suspend(agentOptimizer)

	_, err := h.approve("dev-alice", reqID, "")
	h.requireRefused(err, 409, events.CodeSuspended)
	d := h.waitDecision(reqID, "suspended")
	require.Equal(t, events.OutcomeDenied, d.Outcome)
	require.Equal(t, events.ModeSuspended, d.Mode)
	_, ok := h.pendingKey(agentOptimizer, reqID)
	require.False(t, ok, "the pending key is gone")
	h.barrier()
	require.Empty(t, h.decisionsBy(reqID, "human"))
	_, ok = h.grantKey(agentOptimizer, reqID)
	require.False(t, ok)
}

func TestPendingListFollowsTheClock(t *testing.T) {
	h := newHarness(t)
	h.start()
	ctx := ctxT(t)
	now := time.Now().UTC()

	late, soon := events.NewID("req"), events.NewID("req")
	dl := pendingDecision(late, time.Minute)
	lateDeadline := now.Add(10 * time.Minute)
	dl.ApprovalDeadline = &lateDeadline
	ds := pendingDecision(soon, time.Minute)
	soonDeadline := now.Add(5 * time.Minute)
	ds.ApprovalDeadline = &soonDeadline
	h.emitPolicy(dl)
	h.emitPolicy(ds)
	h.waitPending(agentOptimizer, late)
	h.waitPending(agentOptimizer, soon)

	// A record whose deadline passed but whose key has not expired yet (TTLs
	// run in whole seconds; after a restart expired keys linger).
	stale := events.NewID("req")
	sd := pendingDecision(stale, time.Minute)
	b, err := json.Marshal(pendingRecord{Pending: events.Pending{Decision: sd, Deadline: now.Add(-time.Second)}})
	require.NoError(t, err)
	_, err = h.env.Buckets.Pending.Create(ctx, broker.PendingKey(agentOptimizer, stale), b, jetstream.KeyTTL(time.Hour))
	require.NoError(t, err)

	list := h.listPending("dev-carol") // every approver sees every request
	require.Len(t, list.Pending, 2)
	require.Equal(t, soon, list.Pending[0].Decision.RequestID, "soonest deadline first")
	require.Equal(t, late, list.Pending[1].Decision.RequestID)
	require.True(t, soonDeadline.Equal(list.Pending[0].Deadline))

	_, err = h.approve("dev-alice", stale, "")
	r := h.requireRefused(err, 409, events.CodeStale)
	require.Contains(t, r.Message, "approval window closed at")
	require.Empty(t, h.decisionsBy(stale, "human"))
}

func TestEmptyPendingList(t *testing.T) {
	h := newHarness(t)
	h.start()
	var out broker.PendingList
	// An empty body is accepted as well as {}.
	m := nats.NewMsg(broker.APIPending)
	m.Header.Set(broker.HeaderToken, "dev-bob")
	resp, err := h.env.NC.RequestMsg(m, waitFor)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(resp.Data, &out))
	require.NotNil(t, out.Pending)
	require.Empty(t, out.Pending)
}
