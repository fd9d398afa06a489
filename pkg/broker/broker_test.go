package broker_test

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

func TestPublishDedupesByEventID(t *testing.T) {
	env := natstest.Setup(t)
	ctx := context.Background()
	pub := broker.NewPublisher(env.JS, "test")
	data := events.GuardrailFired{Agent: "a1", Rule: "price-floor", FiredAt: time.Now()}
	_, s1, err := pub.Emit(ctx, "ev-1", events.TypeGuardrailFired, "a1", data)
	require.NoError(t, err)
	_, s2, err := pub.Emit(ctx, "ev-1", events.TypeGuardrailFired, "a1", data)
	require.NoError(t, err)
	require.Equal(t, s1, s2, "a republished event is stored once")
	msgs := env.AuditEvents(t, "guardrail.fired.>")
	require.Len(t, msgs, 1)
	require.Equal(t, "guardrail.fired.a1", msgs[0].Subject)
	e, err := broker.FromMsg(msgs[0].Header, msgs[0].Data)
	require.NoError(t, err)
	got, err := events.DataAs[events.GuardrailFired](e)
	require.NoError(t, err)
	require.Equal(t, "price-floor", got.Rule)
}

func TestPutKeepTTLKeepsExpiry(t *testing.T) {
	env := natstest.Setup(t)
	ctx := context.Background()
	w, err := env.Buckets.Grants.WatchAll(ctx, jetstream.UpdatesOnly())
	require.NoError(t, err)
	defer w.Stop()
	rev, err := env.Buckets.Grants.Create(ctx, "a1.g1", []byte(`{"status":"active"}`), jetstream.KeyTTL(time.Second))
	require.NoError(t, err)
	_, err = broker.PutKeepTTL(ctx, env.JS, broker.BucketGrants, "a1.g1", []byte(`{"status":"revoked"}`), rev+100, time.Second)
	require.ErrorIs(t, err, broker.ErrConflict)
	_, err = broker.PutKeepTTL(ctx, env.JS, broker.BucketGrants, "a1.g1", []byte(`{"status":"revoked"}`), rev, time.Second)
	require.NoError(t, err)
	// Wait for the purge the TTL causes. The watcher may miss the Create
	// (an updates-only consumer starts asynchronously), so only the purge
	// after the rewrite is asserted, not a count of operations.
	var ops []jetstream.KeyValueOp
	deadline := time.After(30 * time.Second)
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				continue
			}
			ops = append(ops, e.Operation())
			if e.Operation() == jetstream.KeyValuePurge {
				require.Greater(t, e.Revision(), rev, "the purge follows the rewrite")
				return
			}
		case <-deadline:
			t.Fatalf("the rewritten key did not expire by TTL; saw %v", ops)
		}
	}
}

func TestTTLFor(t *testing.T) {
	now := time.Unix(1000, 0)
	require.Equal(t, time.Second, broker.TTLFor(now.Add(10*time.Millisecond), now))
	require.Equal(t, 2*time.Second, broker.TTLFor(now.Add(1500*time.Millisecond), now))
	require.Equal(t, time.Second, broker.TTLFor(now.Add(-time.Hour), now))
	_ = json.Valid
}

func TestSuspensionFailsClosed(t *testing.T) {
	env := natstest.Setup(t)
	ctx := context.Background()
	s, err := broker.Suspension(ctx, env.Buckets.Suspensions, "a1")
	require.NoError(t, err)
	require.Nil(t, s, "not suspended")

	b, _ := json.Marshal(events.Suspension{Agent: "a1", Rule: "price-floor"})
	_, err = env.Buckets.Suspensions.Put(ctx, "a1", b)
	require.NoError(t, err)
	s, err = broker.Suspension(ctx, env.Buckets.Suspensions, "a1")
	require.NoError(t, err)
	require.Equal(t, "price-floor", s.Rule)

	_, err = env.Buckets.Suspensions.Put(ctx, "a2", []byte("garbage"))
	require.NoError(t, err)
	s, err = broker.Suspension(ctx, env.Buckets.Suspensions, "a2")
	require.NoError(t, err)
	require.NotNil(t, s, "an unreadable record still suspends")
	require.Equal(t, "a2", s.Agent)
}

// TestEnsureKeepsAuditRetention: a service restarting never undoes the
// retention an operator set on the audit stream; an explicit AuditMaxAge
// changes it, only for a caller that may update the topology.
func TestEnsureKeepsAuditRetention(t *testing.T) {
	env := natstest.Setup(t)
	ctx := t.Context()
	info := func() jetstream.StreamConfig {
		s, err := env.JS.Stream(ctx, broker.AuditStream)
		require.NoError(t, err)
		return s.CachedInfo().Config
	}
	require.Zero(t, info().MaxAge, "created without a limit")

	c := info()
	c.MaxAge, c.MaxBytes = 90*24*time.Hour, 1<<30
	_, err := env.JS.UpdateStream(ctx, c) // the operator: nats stream edit
	require.NoError(t, err)
	require.NoError(t, broker.Ensure(ctx, env.JS, broker.DefaultOptions()))
	require.Equal(t, 90*24*time.Hour, info().MaxAge, "kept across a service's start")
	require.Equal(t, int64(1<<30), info().MaxBytes)

	o := broker.DefaultOptions()
	o.AuditMaxAge = 30 * 24 * time.Hour
	require.ErrorIs(t, broker.Ensure(ctx, env.JS, o), broker.ErrTopologyDiffers, "a service may only create")
	require.Equal(t, 90*24*time.Hour, info().MaxAge, "unchanged")
	o.Update = true
	require.NoError(t, broker.Ensure(ctx, env.JS, o))
	require.Equal(t, 30*24*time.Hour, info().MaxAge, "set explicitly")
	require.Equal(t, int64(1<<30), info().MaxBytes)

	o.AuditMaxAge = time.Minute
	require.ErrorContains(t, broker.Ensure(ctx, env.JS, o), "shorter than the de-duplication window")
}

// TestEnsureReportsAndRepairsADifference: a bucket changed behind the
// system's back (here: made to republish the secrets) is reported by a
// service's Ensure, which may not update, and put back by jitd's.
func TestEnsureReportsAndRepairsADifference(t *testing.T) {
	env := natstest.Setup(t)
	ctx := t.Context()
	st, err := env.JS.Stream(ctx, "KV_"+broker.BucketSecrets)
	require.NoError(t, err)
	c := st.CachedInfo().Config
	c.RePublish = &jetstream.RePublish{Source: ">", Destination: "leak.>"}
	_, err = env.JS.UpdateStream(ctx, c)
	require.NoError(t, err)

	err = broker.Ensure(ctx, env.JS, broker.DefaultOptions())
	require.ErrorIs(t, err, broker.ErrTopologyDiffers)
	require.ErrorContains(t, err, "KV_"+broker.BucketSecrets+" (republish)")

	o := broker.DefaultOptions()
	o.Update = true
	require.NoError(t, broker.Ensure(ctx, env.JS, o))
	st, err = env.JS.Stream(ctx, "KV_"+broker.BucketSecrets)
	require.NoError(t, err)
	require.Nil(t, st.CachedInfo().Config.RePublish, "put back")
	require.NoError(t, broker.Ensure(ctx, env.JS, broker.DefaultOptions()), "nothing differs any more")
}
