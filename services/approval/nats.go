package approval

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/nats-io/nats.go/micro"
)

// apiTimeout bounds the handling of one API call.
const apiTimeout = 10 * time.Second

// Start finishes answers recorded before a restart, then starts the
// decision and time-out consumers and the jit-approval API, and returns once
// they run. ctx bounds the whole run: cancelling it fails the work in
// flight (which is then retried from the durable consumers).
func (s *Service) Start(ctx context.Context) error {
	s.ctx, s.cancel = context.WithCancel(ctx)
	if err := s.start(); err != nil {
		s.Stop()
		return err
	}
	if s.httpListen != "" {
		if err := s.serveHTTP(); err != nil {
			s.Stop()
			return err
		}
	}
	s.log.Info().Msg("approval service running")
	return nil
}

func (s *Service) start() error {
	var err error
	if s.pendingStream, err = s.d.JS.Stream(s.ctx, pendingStream); err != nil {
		return fmt.Errorf("open stream %s: %w", pendingStream, err)
	}
	s.startNotifier(s.ctx)
	rctx, cancel := context.WithTimeout(s.ctx, apiTimeout)
	err = s.recoverAnswers(rctx)
	cancel()
	if err != nil {
		return fmt.Errorf("recover answers: %w", err)
	}
	s.decisions, err = broker.Consume(s.ctx, s.d.JS, broker.ConsumerConfig{
		Durable:        DurableDecisions,
		FilterSubjects: []string{"jit.decided.>"},
	}, s.onDecision, s.pub.RejectMalformed(DurableDecisions), s.log)
	if err != nil {
		return err
	}
	s.timeouts, err = broker.ConsumeRaw(s.ctx, s.d.JS, broker.ConsumerConfig{
		Stream:         pendingStream,
		Durable:        DurableTimeouts,
		FilterSubjects: []string{pendingSubjectPrefix + ">"},
	}, s.onPendingChange, s.log)
	if err != nil {
		return err
	}
	if err = s.startWithdrawals(); err != nil { // withdraw.go
		return err
	}
	if err = s.startSuspensions(); err != nil { // suspend.go
		return err
	}
	s.api, err = micro.AddService(s.d.NC, micro.Config{
		Name:        "jit-approval",
		Version:     "0.1.0",
		Description: "JIT access: human approval of pending requests",
		QueueGroup:  "jit-approval",
	})
	if err != nil {
		return fmt.Errorf("add service jit-approval: %w", err)
	}
	for _, ep := range []struct {
		name, subject string
		fn            func(context.Context, micro.Request) (any, error)
	}{
		{"pending", broker.APIPending, s.handlePending},
		{"approve", broker.APIApprove, s.handleApprove},
		{"deny", broker.APIDeny, s.handleDeny},
	} {
		if err := s.api.AddEndpoint(ep.name, s.serve(ep.name, ep.fn), micro.WithEndpointSubject(ep.subject)); err != nil {
			return fmt.Errorf("add endpoint %s: %w", ep.subject, err)
		}
	}
	return nil
}

// serve adapts an endpoint function: it refuses calls once Stop has begun,
// bounds each call with apiTimeout and answers with broker.Respond.
func (s *Service) serve(name string, fn func(context.Context, micro.Request) (any, error)) micro.Handler {
	return micro.HandlerFunc(func(req micro.Request) {
		if !s.enter() {
			broker.Respond(req, nil, broker.Errorf(503, "unavailable", "the approval service is stopping; retry"))
			return
		}
		defer s.inflight.Done()
		ctx, cancel := context.WithTimeout(s.ctx, apiTimeout)
		defer cancel()
		l := s.log.With().Str("endpoint", name).Logger()
		ctx = l.WithContext(ctx)
		v, err := fn(ctx, req)
		var ae *broker.APIError
		if err != nil && !errors.As(err, &ae) {
			l.Error().Err(err).Msg("request failed")
		}
		broker.Respond(req, v, err)
	})
}

func (s *Service) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.inflight.Add(1)
	return true
}

// Stop stops the API and the consumers and waits for the work in flight. It
// is safe to call more than once.
func (s *Service) Stop() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.stopping = true
		s.mu.Unlock()
		if s.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := s.httpSrv.Shutdown(ctx); err != nil {
				s.log.Warn().Err(err).Msg("stop http")
			}
			cancel()
		}
		s.web.close()
		if s.api != nil {
			if err := s.api.Stop(); err != nil {
				s.log.Warn().Err(err).Msg("stop api")
			}
		}
		s.inflight.Wait()
		if s.decisions != nil {
			s.decisions.Stop()
		}
		if s.timeouts != nil {
			s.timeouts.Stop()
		}
		if s.cancel != nil {
			s.cancel()
		}
		s.hist.wait()
		s.notify.wg.Wait()
		s.log.Info().Msg("approval service stopped")
	})
}
