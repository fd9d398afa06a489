package config_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// lastWatchKV hands out real watches of a real bucket and keeps the last,
// so that a test can end it from under its owner.
type lastWatchKV struct {
	jetstream.KeyValue
	mu    sync.Mutex
	last  jetstream.KeyWatcher
	count int
}

func (k *lastWatchKV) WatchFiltered(ctx context.Context, keys []string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	w, err := k.KeyValue.WatchFiltered(ctx, keys, opts...)
	if err == nil {
		k.mu.Lock()
		k.last, k.count = w, k.count+1
		k.mu.Unlock()
	}
	return w, err
}

func (k *lastWatchKV) watches() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.count
}

// A configuration watch that ends is started again: a change applied
// afterwards still reaches the service, and the last good configuration
// stays active meanwhile.
func TestWatchFollowsAgainAfterItsWatchEnds(t *testing.T) {
	env := natstest.Setup(t)
	ctx := t.Context()
	c, err := config.LoadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	_, _, err = config.Apply(ctx, env.Buckets.Config, c)
	require.NoError(t, err)

	kv := &lastWatchKV{KeyValue: env.Buckets.Config}
	src, err := config.Watch(ctx, kv, env.Log)
	require.NoError(t, err)
	require.Equal(t, c.Digest(), src.Current().Digest())

	kv.mu.Lock()
	require.NoError(t, kv.last.Stop())
	kv.mu.Unlock()
	require.Equal(t, c.Digest(), src.Current().Digest(), "the last good configuration stays")
	require.Eventually(t, func() bool { return kv.watches() == 2 }, 5*time.Second, time.Millisecond, "watched again")

	c2, err := config.Parse("v2.yaml", []byte(strings.Replace(string(mustRead(t)), "max_jit_duration: 30m", "max_jit_duration: 20m", 1)))
	require.NoError(t, err)
	_, changed, err := config.Apply(ctx, env.Buckets.Config, c2)
	require.NoError(t, err)
	require.True(t, changed)
	require.Eventually(t, func() bool { return src.Current().Digest() == c2.Digest() }, 5*time.Second, time.Millisecond)
}
