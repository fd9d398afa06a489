package broker_test

import (
	"context"
	"errors"
	"testing"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// The buckets OpenBuckets returns answer with the broker's errors, keep the
// library's error underneath and its message.
func TestBucketsMapErrors(t *testing.T) {
	env := natstest.Setup(t)
	ctx := context.Background()
	kv := env.Buckets.Leases

	_, err := kv.Get(ctx, "a1.missing")
	require.ErrorIs(t, err, broker.ErrNotFound)
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound)
	require.Equal(t, jetstream.ErrKeyNotFound.Error(), err.Error())

	rev, err := kv.Create(ctx, "a1.g1", []byte("1"))
	require.NoError(t, err)
	_, err = kv.Create(ctx, "a1.g1", []byte("2"))
	require.ErrorIs(t, err, broker.ErrConflict, "a second Create")
	require.ErrorIs(t, err, jetstream.ErrKeyExists)

	_, err = kv.Update(ctx, "a1.g1", []byte("3"), rev+7)
	require.ErrorIs(t, err, broker.ErrConflict, "an Update with a stale revision")
	err = kv.Delete(ctx, "a1.g1", jetstream.LastRevision(rev+7))
	require.ErrorIs(t, err, broker.ErrConflict, "a Delete with a stale revision")

	_, err = broker.PutKeepTTL(ctx, env.JS, broker.BucketLeases, "a1.g1", []byte("4"), 0, 0)
	require.ErrorIs(t, err, broker.ErrConflict, "an expected-last-sequence publish over a stored key")

	require.NoError(t, broker.MapError(nil))
	other := errors.New("broker unavailable")
	require.Same(t, other, broker.MapError(other), "an error the broker does not classify passes unchanged")
	require.False(t, errors.Is(broker.MapError(other), broker.ErrNotFound))
	require.Equal(t, kv, broker.MapKV(kv), "wrapping twice does nothing more")
}
