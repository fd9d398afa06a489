package broker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// TestPublishSameIDAtOnceOnACluster: three replicas of a service, one per
// node, publish the same derived event ids at the same instant to a
// three-replica stream (every revoker replica revoking one expiring
// grant). Each publish succeeds, and each id is stored once: the stream's
// "duplicate message id is in process" is asked again, not returned.
func TestPublishSameIDAtOnceOnACluster(t *testing.T) {
	c := natstest.RunCluster(t, 3)
	ctx := t.Context()
	var pubs []*broker.Publisher
	var js jetstream.JetStream
	for i := range c.Servers {
		nc, err := nats.Connect(c.Servers[i].ClientURL())
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		js, err = jetstream.New(nc)
		require.NoError(t, err)
		pubs = append(pubs, broker.NewPublisher(js, "test"))
	}
	require.Eventually(t, func() bool {
		return broker.Ensure(ctx, js, broker.Options{Update: true, Replicas: 3}) == nil
	}, 20*time.Second, 100*time.Millisecond)

	const ids = 100
	var wg sync.WaitGroup
	errs := make(chan error, ids*len(pubs))
	for i := range ids {
		start := make(chan struct{})
		for _, p := range pubs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, _, err := p.Emit(ctx, fmt.Sprintf("g%d/revoked", i), events.TypeGuardrailFired, "a1", events.GuardrailFired{Agent: "a1", Rule: "r"})
				errs <- err
			}()
		}
		close(start)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	st, err := js.Stream(ctx, broker.AuditStream)
	require.NoError(t, err)
	require.Equal(t, uint64(ids), st.CachedInfo().State.Msgs)
}

// TestPublishOutlastsTheLossOfTheStreamLeader: the audit stream's leader
// is cut off from the others (as a killed node is: a plain shutdown hands
// its leaderships over first); a publish made at once gets no answer until JetStream elects
// another leader (4-9 s). Each attempt is bounded and asked again under
// the same id, so the event is stored soon after the election, once,
// instead of the whole deadline passing on the first, unanswered attempt.
func TestPublishOutlastsTheLossOfTheStreamLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-node cluster and an election, 5-10 s")
	}
	c := natstest.RunPartitionable(t, 3)
	ctx := t.Context()
	_, ajs := natstest.Connect(t, c.Servers[0])
	require.Eventually(t, func() bool {
		return broker.Ensure(ctx, ajs, broker.Options{Update: true, Replicas: 3}) == nil
	}, 20*time.Second, 100*time.Millisecond)
	natstest.WaitStreamCurrent(t, ajs, broker.AuditStream, 3)

	leader := c.StreamLeader("$G", broker.AuditStream)
	require.GreaterOrEqual(t, leader, 0)
	other := (leader + 1) % 3
	_, js := natstest.Connect(t, c.Servers[other])
	pub := broker.NewPublisher(js, "test")
	_, _, err := pub.Emit(ctx, "before/x", events.TypeGuardrailFired, "a1", events.GuardrailFired{Agent: "a1", Rule: "r"})
	require.NoError(t, err)

	c.Isolate(t, leader)
	pctx, cancel := context.WithTimeout(ctx, 25*time.Second)
	defer cancel()
	began := time.Now()
	_, _, err = pub.Emit(pctx, "after/x", events.TypeGuardrailFired, "a1", events.GuardrailFired{Agent: "a1", Rule: "r"})
	require.NoError(t, err, "stored once a leader is elected, within the deadline")
	t.Logf("stored %s after the leader's loss", time.Since(began).Round(time.Millisecond))

	st, err := js.Stream(ctx, broker.AuditStream)
	require.NoError(t, err)
	require.Equal(t, uint64(2), st.CachedInfo().State.Msgs, "each event once")
}
