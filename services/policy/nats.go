package policy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go/micro"
)

// Start follows the audit stream into the history window, registers the
// jit-policy micro service (APIConfigApply) and binds the durable consumer
// Durable on jit.requested.>, and returns once all run. It resumes where
// the last instance left off: every request is decided, once. Calling Start
// twice without Stop is an error.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.consumer != nil {
		return errors.New("policy already started")
	}
	if err := s.hist.Follow(ctx, s.d.JS, s.now(), s.log); err != nil {
		return err
	}
	api, err := s.startAPI(ctx)
	if err != nil {
		s.hist.Stop()
		return err
	}
	c, err := broker.Consume(ctx, s.d.JS, broker.ConsumerConfig{
		Durable:        Durable,
		FilterSubjects: []string{events.TypeRequested + ".>"},
	}, s.handle, s.pub.RejectMalformed(Durable), s.log)
	if err != nil {
		_ = api.Stop()
		s.hist.Stop()
		return err
	}
	s.consumer, s.api = c, api
	s.log.Info().Str("durable", Durable).Str("api", APIConfigApply).Msg("policy started")
	return nil
}

// startAPI registers the configuration endpoint.
func (s *Service) startAPI(ctx context.Context) (micro.Service, error) {
	svc, err := micro.AddService(s.d.NC, micro.Config{
		Name:        "jit-policy",
		Version:     "0.1.0",
		Description: "JIT access: decides requests; validates and applies configuration changes",
		QueueGroup:  "jit-policy",
	})
	if err != nil {
		return nil, fmt.Errorf("add micro service: %w", err)
	}
	h := func(req micro.Request) {
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		out, err := s.applyConfig(hctx, req.Headers().Get(broker.HeaderToken), req.Data())
		broker.Respond(req, out, err)
	}
	if err := svc.AddEndpoint("config-apply", micro.HandlerFunc(h), micro.WithEndpointSubject(APIConfigApply)); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("add endpoint %s: %w", APIConfigApply, err)
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.d.NC.FlushWithContext(fctx); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("flush: %w", err)
	}
	return svc, nil
}

// Stop stops answering configuration calls and fetching requests, waits for
// those already fetched to be decided and acknowledged, and stops the
// history.
func (s *Service) Stop() {
	s.mu.Lock()
	c, api := s.consumer, s.api
	s.consumer, s.api = nil, nil
	s.mu.Unlock()
	if c == nil {
		return
	}
	if api != nil {
		if err := api.Stop(); err != nil {
			s.log.Warn().Err(err).Msg("stop micro service")
		}
	}
	c.Stop()
	s.hist.Stop()
	s.log.Info().Msg("policy stopped")
}
