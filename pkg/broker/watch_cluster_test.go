package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// A watch whose consumer lives on a server that is cut off (as a killed
// node is, to the others) goes on delivering soon after the bucket can be
// written again: within a few seconds of the first change it missed, not
// after the client library's 10-20 s, without waiting on the dead
// consumer's deletion, and without waiting 5 s for a new consumer placed on
// the cut server again (the client waits that long for answers nobody
// sends).
func TestWatchBucketOutlivesTheServerOfItsConsumer(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-node cluster, a partition and a leader election (about 15 s)")
	}
	c, _, js := natstest.PartitionableTopology(t)
	ctx := t.Context()
	natstest.WaitStreamCurrent(t, js, "KV_"+broker.BucketLeases, 3)
	conn := func(i int) (jetstream.JetStream, jetstream.KeyValue) {
		_, js := natstest.Connect(t, c.Servers[i])
		kv, err := js.KeyValue(ctx, broker.BucketLeases)
		require.NoError(t, err)
		return js, kv
	}
	// A watch from one server whose consumer another server hosts.
	var (
		r      *recorder
		w      *broker.BucketWatch
		host   = -1
		client int
	)
	for attempt := range 12 { // each consumer's server is drawn at random
		client = attempt % 3
		cjs, ckv := conn(client)
		r = &recorder{}
		var err error
		w, err = broker.WatchBucket(ctx, ckv, nil, r.handler(), natstest.Logger(t))
		require.NoError(t, err)
		st, err := cjs.Stream(ctx, "KV_"+broker.BucketLeases)
		require.NoError(t, err)
		for ci := range st.ListConsumers(ctx).Info() {
			for i, srv := range c.Servers {
				if ci.Cluster != nil && ci.Cluster.Leader == srv.Name() && i != client {
					host = i
				}
			}
		}
		if host >= 0 {
			break
		}
		w.Stop()
	}
	require.GreaterOrEqual(t, host, 0, "no watch's consumer on another server")
	t.Cleanup(w.Stop)
	_, kv := conn(3 - host - client)
	_, err := kv.Put(ctx, "before", []byte("{}"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return r.has("before") }, 5*time.Second, time.Millisecond)

	c.Isolate(t, host)
	// Once the majority has elected the bucket's leader, write.
	var put time.Time
	require.Eventually(t, func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := kv.Put(pctx, "after", []byte("{}"))
		put = time.Now()
		return err == nil
	}, 30*time.Second, 50*time.Millisecond, "the majority takes writes again")
	require.Eventually(t, func() bool { return r.has("after") }, 30*time.Second, time.Millisecond)
	took := time.Since(put)
	t.Logf("delivered %s after the first write the old consumer missed", took.Round(time.Millisecond))
	// Noticed within 2-3 s and watched again at once; each new watch whose
	// consumer is drawn onto the cut server again (a third of them: it is
	// not counted offline) costs rewatchCreate more. The client library
	// alone would take 10-20 s.
	require.Less(t, took, 9*time.Second)
}
