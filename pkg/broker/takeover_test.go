package broker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// deadInstanceBound is how soon a message an instance was given before it
// died must reach a live one: the default ack wait (5 s) and slack for a
// loaded machine. It took the 30 s ack wait before: a node killed in a
// cluster left the work it held (a grant announced but not leased, a
// decision not yet granted) that long.
const deadInstanceBound = 12 * time.Second

// A message one instance of a service was handling when it died (its
// connection gone, no ack, no nak) is handled by another instance that was
// running all along soon after, not after a long ack wait; it is marked
// Again. Nobody resets the consumer here (the live instance pulls, so a
// start's reclaim does not apply): only the ack wait brings it back.
func TestMessageOfADeadInstanceIsTakenOverSoon(t *testing.T) {
	env := natstest.Setup(t)
	pub := broker.NewPublisher(env.JS, "test")
	const durable = "test-takeover"
	cfg := broker.ConsumerConfig{Durable: durable, FilterSubjects: []string{"guardrail.fired.>"}}

	// The instance that dies: it takes the event and never finishes.
	deadNC, deadJS := natstest.Connect(t, env.Server)
	taken := make(chan struct{}, 1)
	release := make(chan struct{})
	dead, err := broker.Consume(t.Context(), deadJS, cfg, func(ctx context.Context, _ events.Event, _ broker.Delivery) error {
		select {
		case taken <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return ctx.Err()
	}, nil, env.Log)
	require.NoError(t, err)
	t.Cleanup(func() { close(release); dead.Stop() })
	emit(t, pub, "ev-1")
	select {
	case <-taken:
	case <-time.After(10 * time.Second):
		t.Fatal("the first instance never got the event")
	}

	// The instance that lives, pulling before the other dies.
	var h handled
	live, err := broker.Consume(t.Context(), env.JS, cfg, h.handler(), nil, env.Log)
	require.NoError(t, err)
	t.Cleanup(live.Stop)
	require.Never(t, func() bool { return h.count() > 0 }, 200*time.Millisecond, 10*time.Millisecond,
		"held by a live instance: not handed to another")

	killed := time.Now()
	deadNC.Close() // as SIGKILL leaves it: no ack, no nak, no drain
	require.Eventually(t, func() bool { return h.count() == 1 }, deadInstanceBound, 10*time.Millisecond,
		"the dead instance's event handled by the live one within %s", deadInstanceBound)
	t.Logf("taken over %s after the kill", time.Since(killed).Round(time.Millisecond))
	ds := h.deliveries("ev-1")
	require.Len(t, ds, 1)
	require.True(t, ds[0].Again, "delivered before: maybe handled in part")
}

// A live instance keeps every message it holds, however long its handler
// runs and however long a message waits behind a slow one for its worker
// (same subject, one worker): nothing is delivered twice while the instance
// lives, though each takes several ack waits.
func TestHeldMessagesAreNotRedeliveredWhileTheInstanceLives(t *testing.T) {
	env := natstest.Setup(t)
	pub := broker.NewPublisher(env.JS, "test")
	const durable = "test-held"
	const ackWait = time.Second
	release := make(chan struct{})
	var (
		mu   sync.Mutex
		seen = map[string][]uint64{}
	)
	first := make(chan struct{})
	var once sync.Once
	c, err := broker.Consume(t.Context(), env.JS, broker.ConsumerConfig{
		Durable: durable, FilterSubjects: []string{"guardrail.fired.>"}, AckWait: ackWait, Workers: 1,
		HandlerTimeout: time.Minute,
	}, func(ctx context.Context, e events.Event, d broker.Delivery) error {
		mu.Lock()
		seen[e.ID()] = append(seen[e.ID()], d.NumDelivered)
		mu.Unlock()
		once.Do(func() {
			close(first)
			<-release // the slow one: the others wait behind it
		})
		return nil
	}, nil, env.Log)
	require.NoError(t, err)
	t.Cleanup(c.Stop)
	var unblock sync.Once
	t.Cleanup(func() { unblock.Do(func() { close(release) }) }) // before Stop, which waits for the handler
	emit(t, pub, "ev-1", "ev-2", "ev-3")
	<-first
	// Several ack waits pass while the first is handled and the other two
	// wait in the worker's queue.
	info := func() *jetstream.ConsumerInfo {
		ci, err := durableInfo(t, env.JS, durable)
		require.NoError(t, err)
		return ci
	}
	deadline := time.Now().Add(4 * ackWait)
	for time.Now().Before(deadline) {
		require.Zero(t, info().NumRedelivered, "nothing redelivered while held")
		time.Sleep(100 * time.Millisecond) // sampling the broker's state, not synchronising
	}
	unblock.Do(func() { close(release) })
	require.Eventually(t, func() bool {
		ci := info()
		return ci.NumAckPending == 0 && ci.NumPending == 0
	}, 10*time.Second, 10*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for _, id := range []string{"ev-1", "ev-2", "ev-3"} {
		require.Equal(t, []uint64{1}, seen[id], "%s handled once, on its first delivery", id)
	}
}
