package broker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

func TestUnavailable(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("create lease: %w", jetstream.ErrNoStreamResponse), true},
		{fmt.Errorf("publish: %w", nats.ErrNoResponders), true},
		{fmt.Errorf("publish: %w", nats.ErrTimeout), true},
		{fmt.Errorf("handler: %w", context.DeadlineExceeded), true},
		{&jetstream.APIError{Code: 503, Description: "JetStream system temporarily unavailable"}, true},
		{fmt.Errorf("create lease: %w", jetstream.ErrKeyExists), false},
		{&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}, false},
		{errors.New("bad data"), false},
		{nil, false},
	} {
		assert.Equal(t, c.want, broker.Unavailable(c.err), "%v", c.err)
	}
}

// A message whose handler fails because JetStream is unavailable (a stream
// without a leader, during an election of 4-9 s) comes again at least every
// second, not after the usual backoff, which is 3.2 s by the sixth failure.
func TestUnavailableFailuresComeAgainWithinASecond(t *testing.T) {
	env := natstest.Setup(t)
	pub := broker.NewPublisher(env.JS, "test")
	var (
		mu    sync.Mutex
		times []time.Time
	)
	const failures = 7
	c, err := broker.Consume(t.Context(), env.JS, broker.ConsumerConfig{Durable: "test-unavailable", FilterSubjects: []string{"guardrail.fired.>"}},
		func(context.Context, events.Event, broker.Delivery) error {
			mu.Lock()
			defer mu.Unlock()
			times = append(times, time.Now())
			if len(times) <= failures {
				return fmt.Errorf("write lease: %w", jetstream.ErrNoStreamResponse)
			}
			return nil
		}, nil, env.Log)
	require.NoError(t, err)
	t.Cleanup(c.Stop)
	emit(t, pub, "ev-1")
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(times) == failures+1 }, 30*time.Second, 10*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for i := 5; i < len(times); i++ {
		assert.Less(t, times[i].Sub(times[i-1]), 2*time.Second, "delivery %d came %s after the one before", i+1, times[i].Sub(times[i-1]))
	}
}
