package policy

import (
	"context"
	"errors"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
)

// Start binds the durable consumer Durable on jit.requested.> and returns
// once it runs. It resumes where the last instance left off: every request
// is decided, once. Calling Start twice without Stop is an error.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.consumer != nil {
		return errors.New("policy already started")
	}
	c, err := broker.Consume(ctx, s.d.JS, broker.ConsumerConfig{
		Durable:        Durable,
		FilterSubjects: []string{events.TypeRequested + ".>"},
	}, s.handle, s.pub.RejectMalformed(Durable), s.log)
	if err != nil {
		return err
	}
	s.consumer = c
	s.log.Info().Str("durable", Durable).Msg("policy started")
	return nil
}

// Stop stops fetching requests and waits for those already fetched to be
// decided and acknowledged.
func (s *Service) Stop() {
	s.mu.Lock()
	c := s.consumer
	s.consumer = nil
	s.mu.Unlock()
	if c == nil {
		return
	}
	c.Stop()
	s.log.Info().Msg("policy stopped")
}
