package broker_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConsumeParallelKeepsOrderPerSubject: with several workers, every
// message is handled and acknowledged once, messages of one subject (one
// agent) in stream order, and handlers of different subjects overlap.
func TestConsumeParallelKeepsOrderPerSubject(t *testing.T) {
	env := natstest.Setup(t)
	ctx := context.Background()
	pub := broker.NewPublisher(env.JS, "test")
	const agents, per = 8, 25
	for i := range per {
		for a := range agents {
			agent := fmt.Sprintf("a%d", a)
			data := events.GuardrailFired{Agent: agent, Rule: "r", Detail: fmt.Sprint(i), FiredAt: time.Now()}
			_, _, err := pub.Emit(ctx, fmt.Sprintf("ev-%d-%d", a, i), events.TypeGuardrailFired, agent, data)
			require.NoError(t, err)
		}
	}
	var (
		mu              sync.Mutex
		seen            = map[string][]uint64{}
		running, maxRun atomic.Int32
	)
	c, err := broker.Consume(ctx, env.JS, broker.ConsumerConfig{
		Durable: "parallel", FilterSubjects: []string{"guardrail.fired.>"}, Workers: 4,
	}, func(_ context.Context, e events.Event, d broker.Delivery) error {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := maxRun.Load()
			if n <= m || maxRun.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(time.Millisecond) // stands in for a broker round trip
		mu.Lock()
		seen[d.Subject] = append(seen[d.Subject], d.StreamSeq)
		mu.Unlock()
		return nil
	}, nil, env.Log)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, s := range seen {
			n += len(s)
		}
		return n == agents*per
	}, 10*time.Second, 10*time.Millisecond)
	c.Stop()
	for subj, seqs := range seen {
		require.Len(t, seqs, per, subj)
		require.IsIncreasing(t, seqs, "messages of %s handled in stream order", subj)
	}
	require.Greater(t, maxRun.Load(), int32(1), "handlers of different subjects run at once")
	info, err := env.JS.Consumer(ctx, broker.AuditStream, "parallel")
	require.NoError(t, err)
	ci, err := info.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, ci.NumAckPending, "every message acknowledged")
	require.Zero(t, ci.NumPending)
}

// TestConcurrentOverlapsRequests: a handler that waits does not hold up the
// next request.
func TestConcurrentOverlapsRequests(t *testing.T) {
	env := natstest.Setup(t)
	release := make(chan struct{})
	var started atomic.Int32
	svc, err := micro.AddService(env.NC, micro.Config{Name: "slow", Version: "0.0.1"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })
	require.NoError(t, svc.AddEndpoint("slow", broker.Concurrent(env.NC, 4, micro.HandlerFunc(func(r micro.Request) {
		started.Add(1)
		<-release
		_ = r.Respond([]byte("ok"))
	})), micro.WithEndpointSubject("test.slow")))
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			resp, err := env.NC.Request("test.slow", nil, 10*time.Second)
			if assert.NoError(t, err) {
				assert.Equal(t, "ok", string(resp.Data))
			}
		})
	}
	require.Eventually(t, func() bool { return started.Load() == 3 }, 5*time.Second, 5*time.Millisecond)
	close(release)
	wg.Wait()
}

// TestConcurrentErrorAnswers: error answers sent from the handler's
// goroutine reach the caller intact and do not race with micro's own
// bookkeeping of the request (run with -race).
func TestConcurrentErrorAnswers(t *testing.T) {
	env := natstest.Setup(t)
	svc, err := micro.AddService(env.NC, micro.Config{Name: "erring", Version: "0.0.1"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })
	require.NoError(t, svc.AddEndpoint("erring", broker.Concurrent(env.NC, 8, micro.HandlerFunc(func(r micro.Request) {
		var in broker.DoneInput
		broker.Respond(r, nil, broker.DecodeInput(r.Data(), &in))
	})), micro.WithEndpointSubject("test.erring")))
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			err := broker.Call(t.Context(), env.NC, "test.erring", "", map[string]int{"unknown": i}, nil)
			var ae *broker.APIError
			if assert.ErrorAs(t, err, &ae) {
				assert.Equal(t, 400, ae.Status)
				assert.Equal(t, events.CodeMalformed, ae.Code)
				assert.Contains(t, ae.Message, `unknown field "unknown"`)
			}
		})
	}
	wg.Wait()
}
