package revoker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
)

// DurableWithdrawals is the revoker's durable consumer on jit.withdrawn.>.
const DurableWithdrawals = "revoker-withdrawals"

// withdrawWait bounds how long after a withdrawal the revoker waits for a
// grant that an approval already under way may still make.
const withdrawWait = 30 * time.Second

// errGrantNotYet asks the consume loop to redeliver later.
var errGrantNotYet = errors.New("no grant from the withdrawn request yet; looking again later")

// startWithdrawals runs the consumer that revokes grants made from
// withdrawn requests; Stop stops it with the other consumers.
func (s *Service) startWithdrawals() error {
	c, err := broker.Consume(s.ctx, s.d.JS, broker.ConsumerConfig{
		Durable:        DurableWithdrawals,
		FilterSubjects: []string{events.TypeWithdrawn + ".>"},
	}, s.onWithdrawn, s.pub.RejectMalformed(DurableWithdrawals), s.log)
	if err != nil {
		return err
	}
	s.addConsumer(c)
	return nil
}

// onWithdrawn revokes (reason withdrawn) the grant made from a withdrawn
// request, so that no grant outlives its withdrawal. The grant id derives
// from the request id. If there is no lease yet, an approval may still be
// turning into a grant: the event is redelivered until withdrawWait after
// the withdrawal, then acknowledged. A grant that already ended keeps its
// one revocation.
func (s *Service) onWithdrawn(ctx context.Context, e events.Event, d broker.Delivery) error {
	w, err := broker.DataFor[events.Withdrawal](e, events.TypeWithdrawn, d.Subject)
	if err != nil {
		return s.pub.RejectInvalid(ctx, DurableWithdrawals, events.StageEvent, systemActor, s.now(), d, err)
	}
	key := broker.GrantKey(w.Agent, events.GrantIDFor(w.RequestID))
	_, err = s.d.Buckets.Leases.Get(ctx, key)
	switch {
	case errors.Is(err, broker.ErrNotFound):
		if s.now().Sub(w.WithdrawnAt) < withdrawWait {
			return errGrantNotYet
		}
		return nil
	case err != nil:
		return fmt.Errorf("read lease %s: %w", key, err)
	}
	by := events.Actor{Kind: events.ActorAgent, ID: w.Agent}
	res, err := s.revoke(ctx, key, events.RevokedWithdrawn, by, "request "+w.RequestID+" withdrawn")
	if err != nil {
		return err
	}
	if res.Decided {
		s.log.Info().Str("key", key).Str("request_id", w.RequestID).Msg("revoked the grant of a withdrawn request")
	}
	return nil
}
