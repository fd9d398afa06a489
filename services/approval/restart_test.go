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
		require.Equal(t, events.LeaseActive, l.State)
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
		require.Equal(t, events.LeaseActive, l.State)
		_, ok = h.grantKey(agentIntel, id)
		require.True(t, ok)
	}
	require.Len(t, h.audit("jit.granted.>"), n+1)
}

// Each case leaves the state a crash at one step of a grant leaves behind
// (jit.granted, then the lease, then the grant key), then delivers the
// decision to a fresh instance.
func TestGrantResumesAfterCrash(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	put := func(kv jetstream.KeyValue, key string, v any) {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		_, err = kv.Create(ctx, key, b)
		require.NoError(t, err)
	}
	grantOf := func(dec events.Decision) events.Grant {
		g := New(h.deps()).newGrant(dec, events.GrantIDFor(dec.RequestID))
		g.GrantedAt = g.GrantedAt.Add(-time.Second) // tell it from a grant made again
		return g
	}
	announce := func(g events.Grant) {
		_, _, err := broker.NewPublisher(h.env.JS, Name).Emit(ctx, events.GrantedEventID(g.GrantID), events.TypeGranted, g.Agent, g,
			events.WithRequestID(g.RequestID), events.WithGrantID(g.GrantID))
		require.NoError(t, err)
	}
	key := func(g events.Grant) string { return broker.GrantKey(g.Agent, g.GrantID) }

	// Crashed after jit.granted, before the lease.
	afterEvent := approved(agentIntel, events.NewID("req"), time.Minute)
	gEvent := grantOf(afterEvent)
	announce(gEvent)
	// Crashed after the lease, before the grant key.
	afterLease := approved(agentIntel, events.NewID("req"), time.Minute)
	gLease := grantOf(afterLease)
	announce(gLease)
	put(h.env.Buckets.Leases, key(gLease), events.Lease{Grant: gLease, State: events.LeaseActive})
	// The grant was revoked (say by jitapi.done) before the redelivery.
	revoked := approved(agentIntel, events.NewID("req"), time.Minute)
	gRevoked := grantOf(revoked)
	announce(gRevoked)
	put(h.env.Buckets.Leases, key(gRevoked), events.Lease{Grant: gRevoked, State: events.LeaseRevoked})

	for _, dec := range []events.Decision{afterEvent, afterLease, revoked} {
		h.emitPolicy(dec)
	}
	h.start()
	for _, c := range []struct {
		dec events.Decision
		g   events.Grant
	}{{afterEvent, gEvent}, {afterLease, gLease}} {
		g := h.waitGranted(c.dec.RequestID) // one jit.granted, and the key
		require.True(t, c.g.GrantedAt.Equal(g.GrantedAt))
		l, ok := h.lease(agentIntel, c.dec.RequestID)
		require.True(t, ok)
		require.Equal(t, events.LeaseActive, l.State)
		require.True(t, c.g.GrantedAt.Equal(l.Grant.GrantedAt), "the lease records the grant that was announced")
		kv, _ := h.grantKey(agentIntel, c.dec.RequestID)
		require.True(t, c.g.GrantedAt.Equal(kv.GrantedAt), "the key is the grant that was announced")
	}
	h.barrier()
	h.requireOneGranted(revoked.RequestID)
	_, ok := h.grantKey(agentIntel, revoked.RequestID)
	require.False(t, ok, "an ended grant is never created again")
}

// TestRedeliveryAfterCrash: a decision a dead instance was given and never
// acknowledged comes again at once when the next instance starts (not
// after the ack wait), and that instance asks the stream whether the dead
// one announced the grant: if so it records that grant's lease and key, if
// not it grants as usual. The announced grant's agent is suspended since:
// it must not also be told "denied" (the revoker ends the grant).
func TestRedeliveryAfterCrash(t *testing.T) {
	h := newHarness(t)
	ctx := ctxT(t)
	announced := approved(agentOptimizer, events.NewID("req"), time.Minute)
	silent := approved(agentIntel, events.NewID("req"), time.Minute)
	h.emitPolicy(announced)
	h.emitPolicy(silent)
	// The dead instance announced the first grant (after its decision).
	g := New(h.deps()).newGrant(announced, events.GrantIDFor(announced.RequestID))
	g.GrantedAt = g.GrantedAt.Add(-time.Second)
	_, _, err := broker.NewPublisher(h.env.JS, Name).Emit(ctx, events.GrantedEventID(g.GrantID), events.TypeGranted, g.Agent, g,
		events.WithRequestID(g.RequestID), events.WithGrantID(g.GrantID))
	require.NoError(t, err)

	// The dead instance: the service's durable, both decisions delivered,
	// neither acknowledged.
	cons, err := h.env.JS.CreateOrUpdateConsumer(ctx, broker.AuditStream, jetstream.ConsumerConfig{
		Durable: DurableDecisions, FilterSubjects: []string{"jit.decided.>"}, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 30 * time.Second, MaxAckPending: 10_000, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	require.NoError(t, err)
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	n := 0
	for range batch.Messages() {
		n++
	}
	require.Equal(t, 2, n)

	h.suspend(agentOptimizer)
	started := time.Now()
	h.start()
	// Within the consumers' ack wait (which the start sets, 5 s): only
	// reclaiming brings the decisions back this soon.
	got := h.waitGranted(announced.RequestID)
	require.Less(t, time.Since(started), broker.DefaultAckWait, "reclaimed at the start, not after the ack wait")
	require.True(t, g.GrantedAt.Equal(got.GrantedAt))
	l, ok := h.lease(agentOptimizer, announced.RequestID)
	require.True(t, ok)
	require.True(t, g.GrantedAt.Equal(l.Grant.GrantedAt), "the lease records the announced grant")
	h.waitGranted(silent.RequestID)
	h.requireOneGranted(announced.RequestID)
	require.Empty(t, h.decisionsBy(announced.RequestID, "suspended"), "one outcome: it was granted")
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
		Pending:  events.Pending{Decision: p, Deadline: time.Now().Add(time.Minute).UTC()},
		Answer:   &answer,
		AnswerID: events.DecisionEventID(reqID, "human"),
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
