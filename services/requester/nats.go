package requester

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/nats-io/nats.go/micro"
)

// handlerTimeout bounds the work of one API call.
const handlerTimeout = 10 * time.Second

// requestConcurrency is how many requests are checked and published at once
// (each waits on a KV read and a publish acknowledgement).
const requestConcurrency = 64

// Start registers the jit-requester micro service with its endpoint on
// broker.APIRequest and returns once it answers. Calling Start twice without
// Stop is an error.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.svc != nil {
		return errors.New("requester already started")
	}
	sctx, cancel := context.WithCancel(ctx)
	svc, err := micro.AddService(s.d.NC, micro.Config{
		Name:        "jit-requester",
		Version:     "0.1.0",
		Description: "JIT access: validates agents' requests and publishes jit.requested",
		QueueGroup:  "jit-requester",
	})
	if err != nil {
		cancel()
		return fmt.Errorf("add micro service: %w", err)
	}
	if err := svc.AddEndpoint("request", broker.Concurrent(s.d.NC, requestConcurrency, micro.HandlerFunc(s.handleRequest)), micro.WithEndpointSubject(broker.APIRequest)); err != nil {
		_ = svc.Stop()
		cancel()
		return fmt.Errorf("add endpoint %s: %w", broker.APIRequest, err)
	}
	if err := svc.AddEndpoint("withdraw", micro.HandlerFunc(s.handleWithdraw), micro.WithEndpointSubject(broker.APIWithdraw)); err != nil {
		_ = svc.Stop()
		cancel()
		return fmt.Errorf("add endpoint %s: %w", broker.APIWithdraw, err)
	}
	// Make sure the server has the subscription before callers are told
	// the service runs.
	fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
	defer fcancel()
	if err := s.d.NC.FlushWithContext(fctx); err != nil {
		_ = svc.Stop()
		cancel()
		return fmt.Errorf("flush: %w", err)
	}
	s.ctx, s.cancel, s.svc, s.stopping = sctx, cancel, svc, false
	s.log.Info().Str("subject", broker.APIRequest).Msg("requester started")
	return nil
}

// Stop stops answering and waits for the requests in flight. A request that
// reaches this instance while it stops is answered 503 so that the client
// retries (with the same request_id, stored once).
func (s *Service) Stop() {
	s.mu.Lock()
	svc := s.svc
	s.stopping = true
	s.mu.Unlock()
	if svc == nil {
		return
	}
	if err := svc.Stop(); err != nil {
		s.log.Warn().Err(err).Msg("stop micro service")
	}
	s.inflight.Wait()
	s.mu.Lock()
	s.cancel()
	s.svc = nil
	s.mu.Unlock()
	s.log.Info().Msg("requester stopped")
}

// begin registers a call in flight; ok is false once Stop has begun.
func (s *Service) begin() (ctx context.Context, done func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping || s.svc == nil {
		return nil, nil, false
	}
	s.inflight.Add(1)
	ctx, cancel := context.WithTimeout(s.ctx, handlerTimeout)
	return ctx, func() { cancel(); s.inflight.Done() }, true
}
