package broker_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// countingKV counts the reads that reach the real bucket.
type countingKV struct {
	jetstream.KeyValue
	gets atomic.Int64
}

func (c *countingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	c.gets.Add(1)
	return c.KeyValue.Get(ctx, key)
}

func TestSuspensionView(t *testing.T) {
	env := natstest.Setup(t)
	ctx := t.Context()
	suspend := func(agent string, body []byte) {
		t.Helper()
		_, err := env.Buckets.Suspensions.Put(ctx, agent, body)
		require.NoError(t, err)
	}
	rec, err := json.Marshal(events.Suspension{Agent: "a0", Rule: "price-floor"})
	require.NoError(t, err)
	suspend("a0", rec)

	kv := &countingKV{KeyValue: env.Buckets.Suspensions}
	vctx, stop := context.WithCancel(ctx)
	defer stop()
	v, err := broker.WatchSuspensions(vctx, kv, zerolog.Nop())
	require.NoError(t, err)
	require.True(t, v.Live())

	s, err := v.Suspension(ctx, "a0")
	require.NoError(t, err)
	require.Equal(t, "price-floor", s.Rule, "a suspension stored before the view started")

	gets := kv.gets.Load()
	s, err = v.Suspension(ctx, "a1")
	require.NoError(t, err)
	require.Nil(t, s)
	require.Equal(t, gets, kv.gets.Load(), "not suspended is answered from memory")

	suspend("a1", rec)
	require.Eventually(t, func() bool {
		s, err := v.Suspension(ctx, "a1")
		return err == nil && s != nil
	}, 5*time.Second, time.Millisecond, "a new suspension reaches the view")

	// A reinstatement is seen at once: a held record is confirmed in the
	// bucket before it refuses anything.
	require.NoError(t, env.Buckets.Suspensions.Delete(ctx, "a1"))
	s, err = v.Suspension(ctx, "a1")
	require.NoError(t, err)
	require.Nil(t, s)

	suspend("a2", []byte("garbage"))
	require.Eventually(t, func() bool {
		s, err := v.Suspension(ctx, "a2")
		return err == nil && s != nil && s.Agent == "a2"
	}, 5*time.Second, time.Millisecond, "an unreadable record suspends")

	// A writer that holds its own write sees it at once.
	v.Hold("a4")
	s, err = v.Suspension(ctx, "a4")
	require.NoError(t, err)
	require.Nil(t, s, "held but not in the bucket: not suspended")
	suspend("a4", rec)
	s, err = v.Suspension(ctx, "a4")
	require.NoError(t, err)
	require.NotNil(t, s, "no wait for the watch")

	// A view that no longer follows the bucket reads it for every answer.
	stop()
	require.Eventually(t, func() bool { return !v.Live() }, 5*time.Second, time.Millisecond)
	suspend("a3", rec)
	s, err = v.Suspension(ctx, "a3")
	require.NoError(t, err)
	require.NotNil(t, s, "read from the bucket, not from a stale view")
}
