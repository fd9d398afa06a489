package broker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSetReplicasMovesASingleReplicaDeploymentToThree: a topology made with
// one replica on a three-node cluster (what a single-node deployment that
// grew into a cluster has) holds events and grants; SetReplicas moves
// every stream to three replicas, a later start without --replicas keeps
// them, and the node that alone held everything before can then be lost
// without losing an event or a grant.
func TestSetReplicasMovesASingleReplicaDeploymentToThree(t *testing.T) {
	c := natstest.RunCluster(t, 3)
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	require.NoError(t, broker.Ensure(ctx, js, broker.Options{Update: true}))
	replicas := func(stream string) int {
		st, err := js.Stream(ctx, stream)
		require.NoError(t, err)
		return st.CachedInfo().Config.Replicas
	}
	for _, s := range broker.Streams() {
		require.Equal(t, 1, replicas(s), "%s created with one replica", s)
	}
	holder := c.StreamLeader("$G", broker.AuditStream)
	require.GreaterOrEqual(t, holder, 0)

	const n = 100
	pub := broker.NewPublisher(js, "test")
	kv, err := broker.OpenBuckets(ctx, js)
	require.NoError(t, err)
	for i := range n {
		id := fmt.Sprintf("g%03d", i)
		// The stream was just made: its interest may not have reached
		// every route yet, so the first writes may be retried.
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			_, _, err := pub.Emit(ctx, "ev-"+id, events.TypeGuardrailFired, "a1", events.GuardrailFired{Agent: "a1", Rule: id, FiredAt: time.Now()})
			require.NoError(c, err)
		}, 10*time.Second, 50*time.Millisecond)
		_, err = kv.Grants.Create(ctx, broker.GrantKey("a1", id), []byte(`{"status":"active"}`), jetstream.KeyTTL(time.Hour))
		require.NoError(t, err)
		_, err = kv.Leases.Create(ctx, broker.GrantKey("a1", id), []byte(`{"state":"active"}`))
		require.NoError(t, err)
	}

	o := broker.DefaultOptions()
	o.Replicas = 3
	require.ErrorIs(t, broker.Ensure(ctx, js, o), broker.ErrTopologyDiffers, "a service's start reports the difference and changes nothing")
	require.Equal(t, 1, replicas(broker.AuditStream))

	changes, err := broker.SetReplicas(ctx, js, 3)
	require.NoError(t, err)
	require.Len(t, changes, len(broker.Streams()))
	for _, ch := range changes {
		require.Equal(t, 1, ch.From, ch.Stream)
		require.Equal(t, 3, ch.To, ch.Stream)
	}
	require.Equal(t, uint64(n), changes[0].Messages, "the audit stream's events all there")

	require.NoError(t, broker.Ensure(ctx, js, broker.Options{Update: true}), "a start without --replicas")
	for _, s := range broker.Streams() {
		require.Equal(t, 3, replicas(s), "%s kept at three replicas", s)
	}
	again, err := broker.SetReplicas(ctx, js, 3)
	require.NoError(t, err, "idempotent")
	require.Len(t, again, len(changes))

	// The node that held the only copy goes.
	c.Stop(holder)
	c.WaitMetaLeader(t)
	var st jetstream.Stream
	require.Eventually(t, func() bool {
		// One attempt may go to a node that is gone or to a stream with no
		// leader yet and never be answered: each has its own deadline.
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		defer acancel()
		st, err = js.Stream(actx, broker.AuditStream)
		if err != nil {
			t.Logf("audit stream: %v", err)
			return false
		}
		return st.CachedInfo().State.Msgs == n
	}, 30*time.Second, 50*time.Millisecond, "the audit stream answers with every event from the two nodes left")
	for i := range n {
		id := fmt.Sprintf("g%03d", i)
		m, err := st.GetMsg(ctx, uint64(i+1))
		require.NoError(t, err)
		require.Equal(t, "guardrail.fired.a1", m.Subject)
		require.Equal(t, "ev-"+id, m.Header.Get(jetstream.MsgIDHeader))
		for _, b := range []jetstream.KeyValue{kv.Grants, kv.Leases} {
			_, err := b.Get(ctx, broker.GrantKey("a1", id))
			require.NoError(t, err, "%s %s", b.Bucket(), id)
		}
	}
	_, _, err = pub.Emit(ctx, "ev-after", events.TypeGuardrailFired, "a1", events.GuardrailFired{Agent: "a1", Rule: "after", FiredAt: time.Now()})
	require.NoError(t, err, "two of three nodes accept writes")
}
