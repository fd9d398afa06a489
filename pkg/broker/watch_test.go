package broker_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// watchedKV hands out real watches of a real bucket and keeps them, so that
// a test can end one from under its owner (Stop closes its updates, as a
// closed subscription does).
type watchedKV struct {
	jetstream.KeyValue
	mu      sync.Mutex
	watches []jetstream.KeyWatcher
}

func (k *watchedKV) keep(w jetstream.KeyWatcher, err error) (jetstream.KeyWatcher, error) {
	if err == nil {
		k.mu.Lock()
		k.watches = append(k.watches, w)
		k.mu.Unlock()
	}
	return w, err
}

func (k *watchedKV) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return k.keep(k.KeyValue.WatchAll(ctx, opts...))
}

func (k *watchedKV) WatchFiltered(ctx context.Context, keys []string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	return k.keep(k.KeyValue.WatchFiltered(ctx, keys, opts...))
}

// endWatch ends the latest watch from under its owner and returns how many
// watches were started so far.
func (k *watchedKV) endWatch(t *testing.T) int {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	require.NotEmpty(t, k.watches)
	require.NoError(t, k.watches[len(k.watches)-1].Stop())
	return len(k.watches)
}

func (k *watchedKV) started() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.watches)
}

// recorder is a WatchHandler's view: the keys present, and what happened.
type recorder struct {
	mu                 sync.Mutex
	keys               map[string]bool
	begun, ready, lost int
	initialSeenAtReady int
	entriesBeforeReady int
}

func (r *recorder) handler() broker.WatchHandler {
	return broker.WatchHandler{
		Begin: func() { r.mu.Lock(); r.begun++; r.keys = map[string]bool{}; r.entriesBeforeReady = 0; r.mu.Unlock() },
		Entry: func(e jetstream.KeyValueEntry, initial bool) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if initial {
				r.entriesBeforeReady++
			}
			if e.Operation() == jetstream.KeyValuePut {
				r.keys[e.Key()] = true
			} else {
				delete(r.keys, e.Key())
			}
		},
		Ready: func() { r.mu.Lock(); r.ready++; r.initialSeenAtReady = r.entriesBeforeReady; r.mu.Unlock() },
		Lost:  func() { r.mu.Lock(); r.lost++; r.mu.Unlock() },
	}
}

func (r *recorder) has(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.keys[key]
}

func (r *recorder) counts() (begun, ready, lost int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.begun, r.ready, r.lost
}

// A watch that ends from under WatchBucket is reported Lost, and the bucket
// is watched again from its current contents, changes made meanwhile
// included.
func TestWatchBucketWatchesAgainWhenTheWatchEnds(t *testing.T) {
	env := natstest.Setup(t)
	ctx := t.Context()
	_, err := env.Buckets.Suspensions.Put(ctx, "a0", []byte("{}"))
	require.NoError(t, err)

	kv := &watchedKV{KeyValue: env.Buckets.Suspensions}
	var r recorder
	w, err := broker.WatchBucket(ctx, kv, nil, r.handler(), env.Log)
	require.NoError(t, err)
	t.Cleanup(w.Stop)
	require.True(t, w.Live())
	require.True(t, r.has("a0"), "the contents before the start are delivered before WatchBucket returns")
	begun, ready, lost := r.counts()
	require.Equal(t, [3]int{1, 1, 0}, [3]int{begun, ready, lost})

	_, err = env.Buckets.Suspensions.Put(ctx, "a1", []byte("{}"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return r.has("a1") }, 5*time.Second, time.Millisecond, "a live change")

	require.Equal(t, 1, kv.endWatch(t))
	require.Eventually(t, func() bool { _, _, lost := r.counts(); return lost == 1 }, 5*time.Second, time.Millisecond, "the end is reported")
	// Changed while no watch runs.
	require.NoError(t, env.Buckets.Suspensions.Delete(ctx, "a0"))
	_, err = env.Buckets.Suspensions.Put(ctx, "a2", []byte("{}"))
	require.NoError(t, err)

	require.Eventually(t, func() bool { _, ready, _ := r.counts(); return ready == 2 && w.Live() }, 5*time.Second, time.Millisecond, "watched again")
	require.Equal(t, 2, kv.started())
	require.False(t, r.has("a0"), "a delete made while no watch ran")
	require.True(t, r.has("a1"))
	require.True(t, r.has("a2"), "a put made while no watch ran")
	r.mu.Lock()
	// a0's delete marker, a1 and a2.
	require.Equal(t, 3, r.initialSeenAtReady, "the new watch replays the current contents")
	r.mu.Unlock()

	w.Stop()
	require.False(t, w.Live())
	_, _, lost = r.counts()
	require.Equal(t, 1, lost, "a Stop is not a loss")
}

// While its watch is down, the suspension view answers from the bucket
// (fail closed): a suspension stored meanwhile refuses at once.
func TestSuspensionViewFailsClosedWhileItsWatchIsDown(t *testing.T) {
	env := natstest.Setup(t)
	ctx := t.Context()
	kv := &watchedKV{KeyValue: env.Buckets.Suspensions}
	v, err := broker.WatchSuspensions(ctx, kv, env.Log)
	require.NoError(t, err)
	require.True(t, v.Live())

	kv.endWatch(t)
	require.Eventually(t, func() bool { return !v.Live() }, 5*time.Second, time.Millisecond)
	rec, err := json.Marshal(events.Suspension{Agent: "a1", Rule: "price-floor"})
	require.NoError(t, err)
	_, err = env.Buckets.Suspensions.Put(ctx, "a1", rec)
	require.NoError(t, err)
	s, err := v.Suspension(ctx, "a1")
	require.NoError(t, err)
	require.NotNil(t, s, "read from the bucket while the watch is down")

	require.Eventually(t, func() bool { return v.Live() }, 5*time.Second, time.Millisecond, "the view watches again")
	s, err = v.Suspension(ctx, "a1")
	require.NoError(t, err)
	require.NotNil(t, s)
	require.Equal(t, "price-floor", s.Rule)
}

// A watch whose consumer is gone without a word (its server died, or it
// was deleted: a push subscription is told nothing) stops delivering. The
// client library notices only after two missed 5 s heartbeats, 10-20 s;
// WatchBucket sees the bucket move on without it within stallCheck and
// watches again. Here the consumer is deleted, which is what the death of
// the server that hosts it looks like to the watcher, without the election.
func TestWatchBucketWatchesAgainWhenItsConsumerVanishes(t *testing.T) {
	env := natstest.Setup(t)
	ctx := t.Context()
	var r recorder
	w, err := broker.WatchBucket(ctx, env.Buckets.Suspensions, nil, r.handler(), env.Log)
	require.NoError(t, err)
	t.Cleanup(w.Stop)

	st, err := env.JS.Stream(ctx, "KV_"+broker.BucketSuspensions)
	require.NoError(t, err)
	names := st.ConsumerNames(ctx)
	var consumers []string
	for n := range names.Name() {
		consumers = append(consumers, n)
	}
	require.NoError(t, names.Err())
	require.Len(t, consumers, 1, "the watch's ordered consumer")
	require.NoError(t, st.DeleteConsumer(ctx, consumers[0]))

	put := time.Now()
	_, err = env.Buckets.Suspensions.Put(ctx, "after", []byte("{}"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return r.has("after") }, 30*time.Second, time.Millisecond)
	took := time.Since(put)
	t.Logf("delivered %s after the put", took)
	require.Less(t, took, 5*time.Second, "not the client library's 10-20 s")
	_, ready, lost := r.counts()
	require.Equal(t, 2, ready, "watched again")
	require.Equal(t, 1, lost, "reported lost while it was not current")
}

// An idle watch is not mistaken for a stalled one when the bucket's last
// messages are gone without a marker (aged out): the head read before the
// watch started covers them, so nothing is owed.
func TestWatchBucketIdleOverAnAgedOutTailIsNotStalled(t *testing.T) {
	env := natstest.Setup(t)
	ctx := t.Context()
	kv, err := env.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "aging", TTL: time.Second})
	require.NoError(t, err)
	for _, k := range []string{"a", "b"} {
		_, err = kv.Put(ctx, k, []byte("{}"))
		require.NoError(t, err)
	}
	st, err := env.JS.Stream(ctx, "KV_aging")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs == 0 && info.State.LastSeq == 2
	}, 10*time.Second, 20*time.Millisecond, "both aged out, no marker")

	var r recorder
	w, err := broker.WatchBucket(ctx, kv, nil, r.handler(), env.Log)
	require.NoError(t, err)
	t.Cleanup(w.Stop)
	require.Never(t, func() bool { _, ready, lost := r.counts(); return ready != 1 || lost != 0 }, 3500*time.Millisecond, 50*time.Millisecond,
		"watched again though nothing was missed")
}
