package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
)

// ErrStarted is returned by Start on a Service that was started before.
var ErrStarted = service.ErrStarted

// apiTimeout bounds the handling of one API call.
const apiTimeout = 10 * time.Second

// Start finishes answers recorded before a restart, then starts the
// decision and time-out consumers and the jit-approval API, and returns once
// they run. ctx bounds the whole run: cancelling it fails the work in
// flight (which is then retried from the durable consumers).
//
// A Service starts once: Start again, or after Stop, returns ErrStarted.
func (s *Service) Start(ctx context.Context) error {
	if err := s.guard.Begin(); err != nil {
		return err
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	if err := s.start(); err != nil {
		s.Stop()
		return err
	}
	s.log.Info().Msg("approval service running")
	return nil
}

func (s *Service) start() error {
	var err error
	if s.pendingStream, err = s.d.JS.Stream(s.ctx, pendingStream); err != nil {
		return fmt.Errorf("open stream %s: %w", pendingStream, err)
	}
	s.notifier.Start(s.ctx)
	rctx, cancel := context.WithTimeout(s.ctx, apiTimeout)
	err = s.recoverAnswers(rctx)
	cancel()
	if err != nil {
		return fmt.Errorf("recover answers: %w", err)
	}
	if err = s.consume(DurableDecisions, "jit.decided.>", s.onDecision); err != nil {
		return err
	}
	timeouts, err := broker.ConsumeRaw(s.ctx, s.d.JS, broker.ConsumerConfig{
		Stream:         pendingStream,
		Durable:        DurableTimeouts,
		FilterSubjects: []string{pendingSubjectPrefix + ">"},
	}, s.onPendingChange, s.log)
	if err != nil {
		return err
	}
	s.consumers = append(s.consumers, timeouts)
	if err = s.startWithdrawals(); err != nil { // withdraw.go
		return err
	}
	if err = s.startSuspensions(); err != nil { // suspend.go
		return err
	}
	s.api, err = service.NewAPI(s.ctx, s.d, service.APIConfig{
		Name:        "jit-approval",
		Description: "JIT access: human approval of pending requests, and the approvers' gateway",
		Publisher:   s.pub,
		Timeout:     apiTimeout,
		Approvers:   s.approvers,
	})
	if err != nil {
		return err
	}
	// Every endpoint here takes an approver token: this service alone
	// sees tokens and their hashes. Operators' credentials reach these
	// endpoints, agents' do not.
	operators := []string{auth.KindOperator}
	return errors.Join(
		service.Serve(s.api, service.Endpoint[struct{}]{
			Name: "pending", Subject: broker.APIPending, Stage: events.StageApproval, Kinds: operators,
			Approver: true, EmptyBody: true, Describe: aboutRequest, Handle: s.handlePending,
		}),
		service.Serve(s.api, service.Endpoint[broker.ApproveInput]{
			Name: "approve", Subject: broker.APIApprove, Stage: events.StageApproval, Kinds: operators,
			Approver: true, Describe: aboutRequest, Handle: s.handleApprove,
		}),
		service.Serve(s.api, service.Endpoint[broker.ApproveInput]{
			Name: "deny", Subject: broker.APIDeny, Stage: events.StageApproval, Kinds: operators,
			Approver: true, Describe: aboutRequest, Handle: s.handleDeny,
		}),
		// The gateway: authenticate here, act where the work belongs.
		service.Serve(s.api, service.Endpoint[broker.ReinstateInput]{
			Name: "reinstate", Subject: broker.APIReinstate, Stage: events.StageReinstate, Kinds: operators,
			Approver: true, Roles: config.ReinstateRoles, Handle: forward[broker.ReinstateInput](s, broker.InternalReinstate),
		}),
		service.Serve(s.api, service.Endpoint[broker.RevokeInput]{
			Name: "revoke", Subject: broker.APIRevoke, Stage: events.StageRevoke, Kinds: operators,
			Approver: true, Roles: config.ReinstateRoles, Describe: s.aboutGrant, Handle: forward[broker.RevokeInput](s, broker.InternalRevoke),
		}),
		service.Serve(s.api, service.Endpoint[broker.ConfigApplyInput]{
			Name: "config-apply", Subject: broker.APIConfigApply, Stage: events.StageConfig, Kinds: operators,
			Approver: true, Roles: []string{config.RoleOrgAdmin, config.RoleSecurityAdmin}, MaxBody: broker.MaxConfigBody,
			Handle: forward[broker.ConfigApplyInput](s, broker.InternalConfigApply),
		}),
	)
}

// forward passes an authenticated approver's call on to the service that
// owns the action (the revoker, the policy service), naming the approver:
// the owner records its own refusals, so its answer comes back as is.
func forward[In any](s *Service, subject string) func(context.Context, service.Call, In) (any, error) {
	return func(ctx context.Context, c service.Call, in In) (any, error) {
		var out json.RawMessage
		err := broker.Call(ctx, s.d.NC, subject, "", broker.Authorized[In]{Input: in, By: c.Actor}, &out)
		if err != nil {
			return nil, err
		}
		return out, nil
	}
}

// enter admits a call of Enter unless Stop has begun; the caller calls
// s.inflight.Done when finished.
func (s *Service) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.inflight.Add(1)
	return true
}

// Stop stops the API and the consumers and waits for the work in flight:
// the NATS API's calls, the calls Enter admitted, every consumer's
// handlers and the notifications. It is safe to call more than once.
// Whatever serves the console (package web) closes first.
func (s *Service) Stop() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.stopping = true
		s.mu.Unlock()
		if s.api != nil {
			s.api.Close()
		}
		s.inflight.Wait()
		// Every consumer, each waiting for its handlers in flight, before
		// the context that bounds their work ends.
		for _, c := range s.consumers {
			c.Stop()
		}
		if s.cancel != nil {
			s.cancel()
		}
		s.notifier.Wait()
		s.log.Info().Msg("approval service stopped")
	})
}

// aboutRequest names, for a refusal before the body is decoded, the request
// the body is about (a lenient read of its request_id).
func aboutRequest(_ service.Call, body []byte) events.Rejection {
	var in struct {
		RequestID string `json:"request_id"`
	}
	if len(body) > broker.MaxAPIBody || json.Unmarshal(body, &in) != nil || !events.ValidID(in.RequestID) {
		return events.Rejection{}
	}
	return events.Rejection{RequestID: in.RequestID}
}

// aboutGrant names, for a refusal of a revoke, the grant and (from its
// lease) the agent and request it is about.
func (s *Service) aboutGrant(_ service.Call, body []byte) events.Rejection {
	var in struct {
		GrantID string `json:"grant_id"`
	}
	if len(body) > broker.MaxAPIBody || json.Unmarshal(body, &in) != nil || !events.ValidID(in.GrantID) {
		return events.Rejection{}
	}
	r := events.Rejection{GrantID: in.GrantID}
	ctx, cancel := context.WithTimeout(s.ctx, apiTimeout)
	defer cancel()
	if l, ok := s.leaseOf(ctx, in.GrantID); ok {
		r.Agent, r.RequestID = l.Grant.Agent, l.Grant.RequestID
	}
	return r
}

// leaseOf reads the lease of grantID (key <agent>.<grant_id>) by a direct
// get of its last value.
func (s *Service) leaseOf(ctx context.Context, grantID string) (events.Lease, bool) {
	subj := "$JS.API.DIRECT.GET.KV_" + broker.BucketLeases + ".$KV." + broker.BucketLeases + ".*." + grantID
	m, err := s.d.NC.RequestWithContext(ctx, subj, nil)
	if err != nil || m.Header.Get("Status") != "" {
		return events.Lease{}, false
	}
	var l events.Lease
	if json.Unmarshal(m.Data, &l) != nil {
		return events.Lease{}, false
	}
	return l, true
}
