package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// The ack adapter's paths, against a real server: what a handler returns
// decides what the broker is told, and so what comes again.

// deliveries records what a handler was given, with when.
type deliveries struct {
	mu  sync.Mutex
	got []delivered
}

type delivered struct {
	broker.Delivery
	data string
	at   time.Time
}

func (r *deliveries) add(data []byte, d broker.Delivery) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, delivered{Delivery: d, data: string(data), at: time.Now()})
	return len(r.got)
}

func (r *deliveries) of(data string) []delivered {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []delivered
	for _, g := range r.got {
		if g.data == data {
			out = append(out, g)
		}
	}
	return out
}

func consumerInfo(t *testing.T, env *natstest.Env, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := env.JS.Consumer(t.Context(), broker.AuditStream, durable)
	require.NoError(t, err)
	ci, err := c.Info(t.Context())
	require.NoError(t, err)
	return ci
}

func publishRaw(t *testing.T, env *natstest.Env, subject, data string) uint64 {
	t.Helper()
	ack, err := env.JS.Publish(t.Context(), subject, []byte(data))
	require.NoError(t, err)
	return ack.Sequence
}

// A transient failure naks with the backoff of its delivery count: the
// message comes again, marked Again, no sooner than Backoff says, until
// the handler succeeds; then it is acknowledged and never comes again.
func TestConsumeNaksWithBackoffUntilSuccess(t *testing.T) {
	env := natstest.Setup(t)
	var rec deliveries
	const failures = 3
	c, err := broker.ConsumeRaw(t.Context(), env.JS, broker.ConsumerConfig{
		Durable: "naks", FilterSubjects: []string{"jit.test.>"},
	}, func(_ context.Context, data []byte, d broker.Delivery) error {
		if n := rec.add(data, d); n <= failures {
			return errors.New("broker unavailable")
		}
		return nil
	}, env.Log)
	require.NoError(t, err)
	t.Cleanup(c.Stop)

	seq := publishRaw(t, env, "jit.test.a", "m1")
	require.Eventually(t, func() bool {
		ci := consumerInfo(t, env, "naks")
		return len(rec.of("m1")) == failures+1 && ci.NumAckPending == 0 && ci.AckFloor.Stream == seq
	}, 10*time.Second, 5*time.Millisecond, "handled until it succeeded, then acknowledged")

	got := rec.of("m1")
	for i, g := range got {
		require.Equal(t, seq, g.StreamSeq)
		require.Equal(t, uint64(i+1), g.NumDelivered)
		require.Equal(t, i > 0, g.Again, "delivery %d", i+1)
		if i > 0 {
			// A nak with delay n is redelivered no sooner than n after it.
			wait := g.at.Sub(got[i-1].at)
			require.GreaterOrEqual(t, wait, broker.Backoff(uint64(i)), "delay before delivery %d", i+1)
		}
	}

	// A later message is handled once: the first is not redelivered.
	publishRaw(t, env, "jit.test.a", "m2")
	require.Eventually(t, func() bool { return len(rec.of("m2")) == 1 && consumerInfo(t, env, "naks").NumAckPending == 0 },
		10*time.Second, 5*time.Millisecond)
	require.Len(t, rec.of("m1"), failures+1, "an acknowledged message never comes again")
}

// A permanent error terminates the message with the error as reason: it is
// handled once, never redelivered, and counts as done for the consumer.
func TestConsumeTerminatesPermanentErrors(t *testing.T) {
	env := natstest.Setup(t)
	terms := make(chan *nats.Msg, 4)
	sub, err := env.NC.ChanSubscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED."+broker.AuditStream+".terms", terms)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	var rec deliveries
	c, err := broker.ConsumeRaw(t.Context(), env.JS, broker.ConsumerConfig{
		Durable: "terms", FilterSubjects: []string{"jit.test.>"},
	}, func(_ context.Context, data []byte, d broker.Delivery) error {
		rec.add(data, d)
		if string(data) == "bad" {
			return broker.Permanent(errors.New("not a valid event"))
		}
		return nil
	}, env.Log)
	require.NoError(t, err)
	t.Cleanup(c.Stop)

	bad := publishRaw(t, env, "jit.test.a", "bad")
	var adv struct {
		StreamSeq uint64 `json:"stream_seq"`
		Reason    string `json:"reason"`
	}
	select {
	case m := <-terms:
		require.NoError(t, json.Unmarshal(m.Data, &adv))
	case <-time.After(10 * time.Second):
		t.Fatal("the message was not terminated")
	}
	require.Equal(t, bad, adv.StreamSeq)
	require.Contains(t, adv.Reason, "not a valid event", "the reason says why")

	good := publishRaw(t, env, "jit.test.a", "good")
	require.Eventually(t, func() bool {
		ci := consumerInfo(t, env, "terms")
		return len(rec.of("good")) == 1 && ci.NumAckPending == 0 && ci.AckFloor.Stream == good
	}, 10*time.Second, 5*time.Millisecond)
	require.Len(t, rec.of("bad"), 1, "a terminated message never comes again")
	require.Equal(t, uint64(1), rec.of("bad")[0].NumDelivered)
}

// A message that is not a CloudEvent goes to onMalformed and is terminated;
// if onMalformed cannot record it (its audit event failed), the message
// comes again so that the refusal is not lost.
func TestConsumeMalformedIsRecordedThenTerminated(t *testing.T) {
	env := natstest.Setup(t)
	var (
		mu    sync.Mutex
		calls []uint64 // delivery counts onMalformed saw
	)
	c, err := broker.Consume(t.Context(), env.JS, broker.ConsumerConfig{
		Durable: "malformed", FilterSubjects: []string{"jit.test.>"},
	}, nil, func(_ context.Context, d broker.Delivery, _ error) error {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, d.NumDelivered)
		if len(calls) == 1 {
			return errors.New("audit stream unavailable")
		}
		return nil
	}, env.Log)
	require.NoError(t, err)
	t.Cleanup(c.Stop)

	seq := publishRaw(t, env, "jit.test.a", "not a cloudevent")
	require.Eventually(t, func() bool {
		ci := consumerInfo(t, env, "malformed")
		return ci.NumAckPending == 0 && ci.AckFloor.Stream == seq
	}, 10*time.Second, 5*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []uint64{1, 2}, calls, "redelivered once after the failed record, then terminated")
}

func TestBackoff(t *testing.T) {
	for n, want := range map[uint64]time.Duration{
		0: 100 * time.Millisecond, 1: 100 * time.Millisecond, 2: 200 * time.Millisecond,
		3: 400 * time.Millisecond, 7: 6400 * time.Millisecond, 8: 10 * time.Second, 1000: 10 * time.Second,
	} {
		require.Equal(t, want, broker.Backoff(n), "after delivery %d", n)
	}
}
