package approval

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

func TestRestartGrantsBacklogOnce(t *testing.T) {
	h := newHarness(t)
	first := h.start()
	h.barrier()
	first.Stop()

	// Decided while nobody ran the service.
	var ids []string
	for range 5 {
		id := events.NewID("req")
		ids = append(ids, id)
		h.emitPolicy(approved(agentIntel, id, time.Minute))
	}
	h.start()
	h.waitAllGranted(ids)
	h.barrier()
	for _, id := range ids {
		h.requireOneGranted(id)
		l, ok := h.lease(agentIntel, id)
		require.True(t, ok)
		require.Equal(t, broker.LeaseActive, l.State)
	}
	require.Len(t, h.audit("jit.granted.>"), 5+2)
}

func TestStopMidFlowMakesNoDuplicates(t *testing.T) {
	h := newHarness(t)
	const n = 100
	var ids []string
	for range n {
		id := events.NewID("req")
		ids = append(ids, id)
		h.emitPolicy(approved(agentIntel, id, time.Minute))
	}
	// Kill the first instance while it works through the backlog: its
	// context ends, so handlers in flight fail at whatever step they are.
	ctx, cancel := context.WithCancel(context.Background())
	first := New(h.deps())
	require.NoError(t, first.Start(ctx))
	require.Eventually(t, func() bool { return len(h.audit("jit.granted.>")) >= 3 }, waitFor, time.Millisecond)
	cancel()
	first.Stop()
	t.Logf("granted before the kill: %d of %d", len(h.audit("jit.granted.>")), n)

	second := h.start()
	// A republish of half the decisions, as a confused upstream might do.
	for _, id := range ids[:n/2] {
		h.emit(events.NewID("evt"), approved(agentIntel, id, time.Minute))
	}
	h.waitAllGranted(ids)
	second.Stop()
	h.start()
	h.barrier()
	counts := h.grantedCounts()
	for _, id := range ids {
		require.Equal(t, 1, counts[id], "jit.granted events for %s", id)
		l, ok := h.lease(agentIntel, id)
		require.True(t, ok)
		require.Equal(t, broker.LeaseActive, l.State)
		_, ok = h.grantKey(agentIntel, id)
		require.True(t, ok)
	}
	require.Len(t, h.audit("jit.granted.>"), n+1)
}

// Each case leaves the state a crash at one step of a grant leaves behind,
// then redelivers the decision to a fresh instance.
func TestGrantResumesAfterCrash(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	put := func(kv jetstream.KeyValue, key string, v any, ttl time.Duration) {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		var opts []jetstream.KVCreateOpt
		if ttl > 0 {
			opts = append(opts, jetstream.KeyTTL(ttl))
		}
		_, err = kv.Create(ctx, key, b, opts...)
		require.NoError(t, err)
	}
	leaseFor := func(dec events.Decision, state string) broker.Lease {
		return broker.Lease{Grant: New(h.deps()).newGrant(dec, events.GrantIDFor(dec.RequestID)), State: state}
	}
	key := func(dec events.Decision) string {
		return broker.GrantKey(dec.Agent, events.GrantIDFor(dec.RequestID))
	}

	// Crashed after the lease, before the grant key.
	afterLease := approved(agentIntel, events.NewID("req"), time.Minute)
	put(h.env.Buckets.Leases, key(afterLease), leaseFor(afterLease, broker.LeaseActive), 0)
	// Crashed after the grant key, before jit.granted.
	afterKey := approved(agentIntel, events.NewID("req"), time.Minute)
	l := leaseFor(afterKey, broker.LeaseActive)
	put(h.env.Buckets.Leases, key(afterKey), l, 0)
	put(h.env.Buckets.Grants, key(afterKey), l.Grant, time.Minute)
	// The grant was revoked (say by jitapi.done) before the redelivery.
	revoked := approved(agentIntel, events.NewID("req"), time.Minute)
	put(h.env.Buckets.Leases, key(revoked), leaseFor(revoked, broker.LeaseRevoked), 0)

	for _, dec := range []events.Decision{afterLease, afterKey, revoked} {
		h.emitPolicy(dec)
	}
	h.start()
	g := h.waitGranted(afterLease.RequestID)
	require.True(t, afterLease.DecidedAt.Add(time.Minute).Equal(g.ExpiresAt))
	_, ok := h.grantKey(agentIntel, afterLease.RequestID)
	require.True(t, ok)

	g = h.waitGranted(afterKey.RequestID)
	require.True(t, l.Grant.GrantedAt.Equal(g.GrantedAt), "the grant the lease recorded is the one announced")

	h.barrier()
	require.Empty(t, h.auditFor("jit.granted.>", revoked.RequestID))
	_, ok = h.grantKey(agentIntel, revoked.RequestID)
	require.False(t, ok, "an ended grant is never created again")
}

// An answer recorded just before a crash is published by the next instance.
func TestRecordedAnswerIsPublishedAfterRestart(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	reqID := events.NewID("req")
	p := pendingDecision(reqID, time.Minute)
	answer := p
	answer.Outcome, answer.Mode, answer.Reason = events.OutcomeApproved, events.ModeHuman, "approved by alice"
	answer.DecidedBy = events.Actor{Kind: events.ActorApprover, ID: "alice", Roles: []string{"security-admin"}}
	answer.DecidedAt = time.Now().UTC()
	answer.ApprovalDeadline = nil
	rec := pendingRecord{
		Pending:  broker.Pending{Decision: p, Deadline: time.Now().Add(time.Minute).UTC()},
		Answer:   &answer,
		AnswerID: broker.DecisionEventID(reqID, "human"),
	}
	b, err := json.Marshal(rec)
	require.NoError(t, err)
	_, err = h.env.Buckets.Pending.Create(ctx, broker.PendingKey(agentOptimizer, reqID), b)
	require.NoError(t, err)

	h.start()
	d := h.waitDecision(reqID, "human")
	require.Equal(t, events.OutcomeApproved, d.Outcome)
	h.waitGranted(reqID)
	_, ok := h.pendingKey(agentOptimizer, reqID)
	require.False(t, ok, "the answered key is deleted")
}

// The broker restarts on the same store with decisions not yet handled and
// a request waiting for a human: after it, each is handled once.
func TestBrokerRestart(t *testing.T) {
	dir := t.TempDir()
	env := natstest.SetupAt(t, dir)
	h := harnessOn(t, env, exampleConfig(t))
	svc := h.start()
	pendingID := events.NewID("req")
	h.emitPolicy(pendingDecision(pendingID, time.Minute))
	h.waitPending(agentOptimizer, pendingID)
	svc.Stop()
	var ids []string
	for range 3 {
		id := events.NewID("req")
		ids = append(ids, id)
		h.emitPolicy(approved(agentIntel, id, time.Minute))
	}
	env.NC.Close()
	env.Server.Shutdown()
	env.Server.WaitForShutdown()

	h = harnessOn(t, natstest.SetupAt(t, dir), exampleConfig(t))
	h.start()
	for _, id := range ids {
		h.waitGranted(id)
	}
	require.Len(t, h.listPending("dev-alice").Pending, 1)
	_, err := h.approve("dev-alice", pendingID, "")
	require.NoError(t, err)
	h.waitGranted(pendingID)
	h.barrier()
	for _, id := range append(ids, pendingID) {
		h.requireOneGranted(id)
	}
}
