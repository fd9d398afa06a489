package auditor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/agentjit/jit/pkg/audit"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go/jetstream"
)

// resume finds where the chain goes on: after the last checkpoint signed by
// a trusted key (the newest checkpoint first, else a scan of all of them),
// or, when there is none, at the stream's first message with the zero
// chain. from says which, for the log.
func (a *Auditor) resume(ctx context.Context) (next uint64, head audit.Hash, from string, err error) {
	last, ok, err := broker.DirectGetLast(ctx, a.d.NC, broker.AuditStream, audit.CheckpointSubject)
	if err != nil {
		return 0, head, "", fmt.Errorf("auditor: read the last checkpoint: %w", err)
	}
	if ok {
		if c, cerr := a.trusted(last); cerr == nil {
			return c.LastSeq + 1, c.Chain, last.Header.Get(jetstream.MsgIDHeader), nil
		} else {
			a.log.Warn().Err(cerr).Uint64("seq", last.Seq).Msg("the last checkpoint is not one to resume from; looking for an earlier one")
		}
		var found *audit.Checked
		var foundID string
		untrusted := 0
		err := broker.ReadDirect(ctx, a.d.NC, broker.AuditStream, broker.DirectRead{Filter: audit.CheckpointSubject}, func(m broker.StoredMsg) error {
			c, cerr := a.trusted(m)
			if cerr != nil {
				untrusted++
				return nil
			}
			found, foundID = &c, m.Header.Get(jetstream.MsgIDHeader)
			return nil
		})
		if err != nil {
			return 0, head, "", fmt.Errorf("auditor: read the checkpoints: %w", err)
		}
		if found != nil {
			return found.LastSeq + 1, found.Chain, foundID, nil
		}
		a.log.Warn().Int("checkpoints", untrusted).Strs("trusted_keys", a.keys.IDs()).
			Msg("no checkpoint on the stream is signed by a trusted key: starting a new chain at the stream's first message (put the old public key beside the key file to continue its chain)")
	}
	st, err := a.d.JS.Stream(ctx, broker.AuditStream)
	if err != nil {
		return 0, head, "", fmt.Errorf("auditor: %w", err)
	}
	return max(st.CachedInfo().State.FirstSeq, 1), head, "the start of the stream", nil
}

// trusted decodes m as a checkpoint signed by a trusted key whose fields
// fit together.
func (a *Auditor) trusted(m broker.StoredMsg) (audit.Checked, error) {
	e, err := broker.FromMsg(m.Header, m.Data)
	if err != nil {
		return audit.Checked{}, err
	}
	c, err := events.DataAs[events.Checkpoint](e)
	if err != nil {
		return audit.Checked{}, err
	}
	if c.Stream != broker.AuditStream {
		return audit.Checked{}, fmt.Errorf("a checkpoint of stream %q", c.Stream)
	}
	if err := a.keys.Verify(c); err != nil {
		return audit.Checked{}, err
	}
	return audit.Check(c)
}

// bind returns the auditor's durable consumer, positioned at next, and the
// configuration it is made with. An existing one is kept when its next
// delivery is next; otherwise (it ran ahead of the last checkpoint before a
// crash, or it belongs to another chain) it is made again at next: the
// checkpoint, not the consumer, is the auditor's state. Messages are
// acknowledged with AckAll, only once a stored checkpoint covers them.
func (a *Auditor) bind(ctx context.Context, next uint64) (jetstream.Consumer, jetstream.ConsumerConfig, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:       a.o.Durable,
		Description:   "jit auditor: hash chain and signed checkpoints over the audit stream",
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       max(2*a.o.Interval, time.Minute),
		MaxAckPending: 4 * events.MaxCheckpointEvents,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   next,
	}
	cons, err := a.d.JS.Consumer(ctx, broker.AuditStream, a.o.Durable)
	switch {
	case err == nil:
		ci := cons.CachedInfo()
		if ci.Delivered.Stream+1 == next && ci.Config.AckPolicy == jetstream.AckAllPolicy {
			return cons, cfg, nil
		}
		a.log.Info().Uint64("delivered", ci.Delivered.Stream).Uint64("next", next).Msg("repositioning the consumer at the last checkpoint")
		if err := broker.MapError(a.d.JS.DeleteConsumer(ctx, broker.AuditStream, a.o.Durable)); err != nil && !errors.Is(err, broker.ErrNotFound) {
			return nil, cfg, fmt.Errorf("auditor: reset consumer: %w", err)
		}
	case !errors.Is(broker.MapError(err), broker.ErrNotFound):
		return nil, cfg, fmt.Errorf("auditor: consumer %s: %w", a.o.Durable, err)
	}
	cons, err = a.d.JS.CreateConsumer(ctx, broker.AuditStream, cfg)
	if err != nil {
		return nil, cfg, fmt.Errorf("auditor: create consumer %s: %w", a.o.Durable, err)
	}
	return cons, cfg, nil
}
