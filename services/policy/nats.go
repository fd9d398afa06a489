package policy

import (
	"context"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
)

// ErrStarted is returned by Start on a Service that was started before.
var ErrStarted = service.ErrStarted

// Start follows the audit stream into the history window, registers the
// jit-policy micro service (APIConfigApply) and binds the durable consumer
// Durable on jit.requested.>, and returns once all run. It resumes where
// the last instance left off: every request is decided, once. A Service
// starts once: Start again, or after Stop, returns ErrStarted (a stopped
// service is replaced, not restarted).
func (s *Service) Start(ctx context.Context) error {
	if err := s.guard.Begin(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if kv, err := s.d.JS.KeyValue(ctx, broker.BucketPolicyHistory); err != nil {
		// Works without, only slower to start: the whole window is read.
		s.log.Warn().Err(err).Msg("no history snapshots")
	} else {
		s.hist.UseSnapshots(broker.MapKV(kv))
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
		api.Close()
		s.hist.Stop()
		return err
	}
	s.consumer, s.api = c, api
	s.saving, s.saved = make(chan struct{}), make(chan struct{})
	go s.saveLoop(s.saving, s.saved)
	s.log.Info().Str("durable", Durable).Str("api", APIConfigApply).Msg("policy started")
	return nil
}

// startAPI registers the internal configuration endpoint.
func (s *Service) startAPI(ctx context.Context) (*service.API, error) {
	api, err := service.NewAPI(ctx, s.d, service.APIConfig{
		Name:        "jit-policy",
		Description: "JIT access: decides requests; validates and applies configuration changes",
		Publisher:   s.pub,
	})
	if err != nil {
		return nil, err
	}
	err = service.Serve(api, service.Endpoint[broker.Authorized[ConfigApplyInput]]{
		Name: "config-apply", Subject: broker.InternalConfigApply, Stage: events.StageConfig,
		MaxBody: broker.MaxConfigBody + 4<<10, Handle: s.handleConfigApply,
	})
	if err == nil {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = s.d.NC.FlushWithContext(fctx)
		cancel()
	}
	if err != nil {
		api.Close()
		return nil, err
	}
	return api, nil
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
		api.Close()
	}
	c.Stop()
	close(s.saving)
	<-s.saved
	s.hist.Stop()
	s.log.Info().Msg("policy stopped")
}

// saveLoop saves the history every SnapshotInterval (or less often when
// saving takes long), and once more when stop closes, then closes done.
func (s *Service) saveLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	save := func() time.Duration {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		began := time.Now()
		if err := s.hist.Save(ctx, s.now()); err != nil {
			s.log.Warn().Err(err).Msg("history snapshot not saved")
		}
		return time.Since(began)
	}
	wait := SnapshotInterval
	for {
		select {
		case <-time.After(wait):
			wait = max(SnapshotInterval, snapshotCost*save())
		case <-stop:
			save()
			return
		}
	}
}
