package revoker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
	"github.com/nats-io/nats.go/jetstream"
)

// apiTimeout bounds one API call's work.
const apiTimeout = 10 * time.Second

// ErrStarted is returned by Start on a Service that was started before: a
// stopped revoker is replaced by a new one (New), not restarted.
var ErrStarted = service.ErrStarted

// Start runs the revoker: the lease watch (timers, restored from the ledger
// first), the revoker-expiry and revoker-guardrail durable consumers, and the
// jitapi.done and jitapi.reinstate endpoints. It returns once they run. The
// work outlives ctx's cancellation until Stop, so that Stop can let work in
// flight finish.
func (s *Service) Start(ctx context.Context) error {
	if err := s.guard.Begin(); err != nil {
		return err
	}
	s.mu.Lock()
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.quit = make(chan struct{})
	s.mu.Unlock()

	s.sched.start(workers, s.runJob)
	err := s.startParts(ctx)
	if err != nil {
		s.Stop()
		return err
	}
	s.mu.Lock()
	s.unobserve = s.provideMetrics()
	s.mu.Unlock()
	s.log.Info().Msg("revoker running")
	return nil
}

func (s *Service) startParts(ctx context.Context) error {
	leases, err := s.watchLeases()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.leases = leases
	s.mu.Unlock()

	expiry, err := broker.ConsumeRaw(s.ctx, s.d.JS, broker.ConsumerConfig{
		Stream:         "KV_" + broker.BucketGrants,
		Durable:        DurableExpiry,
		FilterSubjects: []string{grantsSubjectPrefix + ">"},
	}, s.onExpiry, s.log)
	if err != nil {
		return err
	}
	s.addConsumer(expiry)

	guard, err := broker.Consume(s.ctx, s.d.JS, broker.ConsumerConfig{
		Durable:        DurableGuardrail,
		FilterSubjects: []string{events.TypeGuardrailFired + ".>"},
		// Revoking all of an agent's grants may take a while: the
		// consume loop holds the event meanwhile, and the default ack
		// wait brings it back soon if this replica dies.
		HandlerTimeout: 30 * time.Second,
	}, s.onGuardrail, s.pub.RejectMalformed(DurableGuardrail), s.log)
	if err != nil {
		return err
	}
	s.addConsumer(guard)
	if err := s.startWithdrawals(); err != nil { // withdraw.go
		return err
	}

	api, err := service.NewAPI(s.ctx, s.d, service.APIConfig{
		Name:        "jit-" + Name,
		Description: "ends JIT grants and lifts suspensions",
		Publisher:   s.pub,
		Timeout:     apiTimeout,
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.api = api
	s.mu.Unlock()
	return errors.Join(
		service.Serve(api, service.Endpoint[broker.DoneInput]{
			Name: "done", Subject: broker.APIDone, Stage: events.StageCompletion, Kinds: []string{auth.KindAgent}, Handle: s.handleDone,
		}),
		service.Serve(api, service.Endpoint[broker.Authorized[broker.ReinstateInput]]{
			Name: "reinstate", Subject: broker.InternalReinstate, Stage: events.StageReinstate, Handle: s.handleReinstate,
		}),
		service.Serve(api, service.Endpoint[broker.Authorized[broker.RevokeInput]]{
			Name: "revoke", Subject: broker.InternalRevoke, Stage: events.StageRevoke, Handle: s.handleRevoke,
		}),
		service.ServeRaw(api, "guardrail-ingress", auth.IngressGuardrail+".*", s.handleIngress),
	)
}

func (s *Service) addConsumer(c *broker.Consumer) {
	s.mu.Lock()
	s.consumers = append(s.consumers, c)
	s.mu.Unlock()
}

// Stop stops taking work (API, consumers, lease watch), waits for the
// revocations in flight, and drops queued timers: the next revoker rebuilds
// them from the leases bucket. It is safe to call more than once.
func (s *Service) Stop() {
	s.mu.Lock()
	if s.stopped || s.ctx == nil {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	close(s.quit)
	api, consumers, leases := s.api, s.consumers, s.leases
	if s.unobserve != nil {
		s.unobserve()
	}
	s.mu.Unlock()

	if api != nil {
		api.Close()
	}
	for _, c := range consumers {
		c.Stop()
	}
	if leases != nil {
		leases.Stop()
	}
	s.sched.stop()
	s.cancel()
	s.log.Info().Msg("revoker stopped")
}

// watchLeases follows the leases bucket (broker.WatchBucket) and feeds its
// entries to onLease until Stop. It returns once the ledger is restored:
// every watch first replays the bucket (the timers are set again, and the
// agents with active leases checked for a suspension), then live changes.
// If the watch ends, it watches again: the replayed entries only re-set
// the same timers.
func (s *Service) watchLeases() (*broker.BucketWatch, error) {
	var (
		agents map[string]struct{}
		n      int
	)
	w, err := broker.WatchBucket(s.ctx, s.d.Buckets.Leases, nil, broker.WatchHandler{
		Begin: func() {
			s.index.reset()
			agents, n = make(map[string]struct{}), 0
		},
		Entry: func(e jetstream.KeyValueEntry, initial bool) {
			if initial {
				n++
			}
			s.onLease(e, initial, agents)
		},
		Ready: func() {
			s.index.markReady()
			for a := range agents {
				s.sched.enqueue(s.checkAgentJob(a))
			}
			agents = nil
			s.log.Info().Int("leases", n).Int("timers", s.sched.pending()).Msg("restored the leases")
		},
		Lost: func() { s.log.Error().Msg("lease watch ended; watching again") },
	}, s.log)
	if err != nil {
		return nil, fmt.Errorf("watch leases: %w", err)
	}
	return w, nil
}
