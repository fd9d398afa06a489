package approval

import (
	"context"
	"errors"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/rs/zerolog"
)

// DurableWithdrawals is the approval service's durable consumer on
// jit.withdrawn.>.
const DurableWithdrawals = "approval-withdrawals"

// withdrawWait bounds how long after a withdrawal the service keeps looking
// for the request's pending record: a pending decision may still be on its
// way from the policy service.
const withdrawWait = 30 * time.Second

// errNotYet asks the consume loop to redeliver later.
var errNotYet = errors.New("the withdrawn request is not decided yet; looking again later")

// startWithdrawals runs the consumer that denies withdrawn pending
// requests, until Stop.
func (s *Service) startWithdrawals() error {
	return s.consume(DurableWithdrawals, events.TypeWithdrawn+".>", s.onWithdrawn)
}

// consume runs h on the audit stream's events matching filter with the
// durable consumer durable until Stop, which stops it and waits for its
// handlers.
func (s *Service) consume(durable, filter string, h broker.Handler) error {
	c, err := broker.Consume(s.ctx, s.d.JS, broker.ConsumerConfig{
		Durable:        durable,
		FilterSubjects: []string{filter},
	}, h, s.pub.RejectMalformed(durable), s.log)
	if err != nil {
		return err
	}
	s.consumers = append(s.consumers, c)
	return nil
}

// onWithdrawn denies the withdrawn request if it is waiting for a human:
// the answer (mode withdrawn, id <request_id>/withdrawn) is recorded in the
// pending record by compare-and-set, like a human answer, so it races
// safely with approvers and the time-out. If the request is not pending and
// no grant was made from it, the pending decision may still be coming: the
// event is redelivered until withdrawWait after the withdrawal. A request
// that was answered, timed out or granted is left to the revoker.
func (s *Service) onWithdrawn(ctx context.Context, e events.Event, d broker.Delivery) error {
	w, err := broker.DataFor[events.Withdrawal](e, events.TypeWithdrawn, d.Subject)
	if err != nil {
		return s.pub.RejectInvalid(ctx, DurableWithdrawals, events.StageEvent,
			events.Actor{Kind: events.ActorSystem, ID: Name}, s.now(), d, err)
	}
	log := s.log.With().Str("agent", w.Agent).Str("request_id", w.RequestID).Uint64("delivery", d.NumDelivered).Logger()
	ctx = log.WithContext(ctx)
	key := broker.PendingKey(w.Agent, w.RequestID)
	entries, err := s.pendingEntries(ctx, key)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return s.notPending(ctx, w, key)
	}
	pe := entries[0]
	if pe.rec.Answer == nil {
		dec := s.denial(pe.rec.Decision, events.ModeWithdrawn, "withdrawn by "+w.Agent+" before an approver answered")
		dec.DecidedBy = w.WithdrawnBy
		if err := s.record(ctx, &pe, dec, events.DecisionEventID(w.RequestID, "withdrawn")); err != nil {
			return err // a conflict: someone answered first; the next delivery sees the answer
		}
	}
	if err := s.finish(ctx, pe); err != nil {
		return err
	}
	zerolog.Ctx(ctx).Info().Str("answer", pe.rec.AnswerID).Msg("withdrawn request settled")
	return nil
}

// notPending decides what a withdrawal of a request without a live pending
// record means: answered or timed out before (nothing to do), granted (the
// revoker ends the grant), or not decided yet (look again later).
func (s *Service) notPending(ctx context.Context, w events.Withdrawal, key string) error {
	switch h, err := s.everPending(ctx, key); {
	case err != nil:
		return err
	case h == pendingLive:
		// Stored after this delivery looked for live records: the next
		// delivery finds it and denies it.
		return errNotYet
	case h == pendingEnded:
		return nil // answered or timed out before the withdrawal
	}
	_, err := s.d.Buckets.Leases.Get(ctx, broker.GrantKey(w.Agent, events.GrantIDFor(w.RequestID)))
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, broker.ErrNotFound):
		return err
	}
	if s.now().Sub(w.WithdrawnAt) < withdrawWait {
		return errNotYet
	}
	return nil
}
