package requester

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
)

// handlerTimeout bounds the work of one API call.
const handlerTimeout = 10 * time.Second

// requestConcurrency is how many requests are checked and published at once
// (each waits on a KV read and a publish acknowledgement).
const requestConcurrency = 64

// ErrStarted is returned by Start on a Service that was started before.
var ErrStarted = service.ErrStarted

// Start registers the jit-requester micro service with its endpoints
// (jitapi.request, jitapi.withdraw, jitapi.events, jitapi.grants) and
// returns once they answer. A Service starts once: Start again, or after
// Stop, returns ErrStarted (a stopped service is replaced, not restarted).
func (s *Service) Start(ctx context.Context) error {
	if err := s.guard.Begin(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	api, err := service.NewAPI(sctx, s.d, service.APIConfig{
		Name:        "jit-requester",
		Description: "JIT access: validates agents' requests and publishes jit.requested",
		Publisher:   s.pub,
		Timeout:     handlerTimeout,
	})
	if err != nil {
		cancel()
		return err
	}
	agents := []string{auth.KindAgent}
	err = errors.Join(
		service.Serve(api, service.Endpoint[broker.RequestInput]{
			Name: "request", Subject: broker.APIRequest, Stage: events.StageRequest, Kinds: agents,
			Concurrency: requestConcurrency, Describe: describeRequest, Handle: s.handleRequest,
		}),
		service.Serve(api, service.Endpoint[broker.WithdrawInput]{
			Name: "withdraw", Subject: broker.APIWithdraw, Stage: events.StageRequest, Kinds: agents, Handle: s.handleWithdraw,
		}),
		service.Serve(api, service.Endpoint[broker.EventsInput]{
			Name: "events", Subject: broker.APIEvents, Stage: events.StageRequest, Kinds: agents, EmptyBody: true, Handle: s.handleEvents,
		}),
		service.Serve(api, service.Endpoint[broker.CheckInput]{
			Name: "check", Subject: broker.APICheck, Stage: events.StageRequest, Kinds: agents, Handle: s.handleCheck,
		}),
		service.Serve(api, service.Endpoint[broker.GrantsInput]{
			Name: "grants", Subject: broker.APIGrants, Stage: events.StageRequest, Kinds: agents, EmptyBody: true, Handle: s.handleGrants,
		}),
	)
	if err == nil {
		// Make sure the server has the subscriptions before callers are
		// told the service runs.
		fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
		err = s.d.NC.FlushWithContext(fctx)
		fcancel()
	}
	if err != nil {
		api.Close()
		cancel()
		return fmt.Errorf("requester: %w", err)
	}
	s.ctx, s.cancel, s.api = sctx, cancel, api
	s.log.Info().Str("subject", broker.APIRequest).Msg("requester started")
	return nil
}

// Stop stops answering and waits for the requests in flight. A request that
// reaches this instance while it stops is answered 503 so that the client
// retries (with the same request_id, stored once).
func (s *Service) Stop() {
	s.mu.Lock()
	api := s.api
	s.api = nil
	s.mu.Unlock()
	if api == nil {
		return
	}
	api.Close()
	s.cancel()
	s.log.Info().Msg("requester stopped")
}
