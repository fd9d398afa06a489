package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentjit/jit/pkg/metrics"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// durablePoll is how often a kept durable consumer's state is read: its ack
// floor (where a re-created consumer starts) and whether it still exists
// (when no pull request of ours was there to be told it was deleted). It is
// an atomic so that tests can shorten it (export_test.go).
var durablePoll atomic.Int64

func init() { durablePoll.Store(int64(5 * time.Second)) }

// Durable is a durable consumer kept consumed for as long as a service
// runs, with one policy when it is lost, the same for every durable of
// every service (docs/operations.md, "When a consumer or a watch ends"):
//
//   - The loss is noticed: a pull request of ours told the consumer was
//     deleted (jetstream.ErrConsumerDeleted), the consume ended on its own
//     (the connection closed), or, after a missed heartbeat, no answer to a
//     pull, or every durablePoll, the consumer's info answers "not found".
//   - If the consumer still exists it is consumed again as it is.
//   - If it is gone it is created again with the same configuration, except
//     that it starts at the stream sequence after the last ack floor this
//     process read from it (at its creation, then every durablePoll):
//     nothing unacknowledged at the deletion is skipped, whichever
//     instance held it, and what comes again is what was acknowledged
//     after that floor (normally the last durablePoll's, plus what was in
//     flight; more behind a message that kept failing, as a reclaim at
//     start would deliver again). Every handler is idempotent for exactly
//     this; the messages up to the stream's last sequence at that moment
//     are marked Again. A replica that finds the consumer already created
//     again by another instance consumes that one.
//   - Every attempt, the first too, waits Backoff (100 ms, doubling to 10 s
//     after each failure) and they go on until Stop: a consumer is never
//     given up.
//
// Each re-creation is logged and counted in jit_consumer_recreated_total.
// Messages fetched before the loss are still handled; their
// acknowledgements reach the new consumer under the same name, which
// applies those of messages it has delivered too (they were handled) and
// ignores the rest.
type Durable struct {
	js     jetstream.JetStream
	stream string
	cfg    jetstream.ConsumerConfig
	h      jetstream.MessageHandler
	log    zerolog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	poke   chan struct{} // look at the consumer now (buffered, 1)
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once

	floor   atomic.Uint64 // the ack floor last read (stream sequence)
	again   atomic.Uint64 // messages up to this stream sequence may have been handled
	deleted atomic.Bool   // a pull was told the consumer was deleted
	gen     atomic.Uint64 // the consume the error handler may report for
}

// KeepConsuming consumes cons, a durable consumer of a stream made with
// cfg, with h until Stop, and keeps it consumed as Durable says. It returns
// once the first consume runs, or its error (nothing keeps running then).
// ctx bounds the broker calls of re-creations; Stop ends it.
func KeepConsuming(ctx context.Context, js jetstream.JetStream, cons jetstream.Consumer, cfg jetstream.ConsumerConfig, h jetstream.MessageHandler, log zerolog.Logger) (*Durable, error) {
	return keepConsuming(ctx, js, cons, cfg, h, 0, log)
}

// keepConsuming is KeepConsuming with messages up to stream sequence again
// already marked as possibly handled (reclaim).
func keepConsuming(ctx context.Context, js jetstream.JetStream, cons jetstream.Consumer, cfg jetstream.ConsumerConfig, h jetstream.MessageHandler, again uint64, log zerolog.Logger) (*Durable, error) {
	info := cons.CachedInfo()
	if info == nil {
		return nil, fmt.Errorf("consumer %s: no info", cfg.Durable)
	}
	d := &Durable{js: js, stream: info.Stream, cfg: cfg, h: h, log: log.With().Str("consumer", cfg.Durable).Logger(),
		poke: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	d.floor.Store(info.AckFloor.Stream)
	d.again.Store(again)
	d.ctx, d.cancel = context.WithCancel(ctx)
	cc, err := d.consume(cons)
	if err != nil {
		d.cancel()
		return nil, fmt.Errorf("consume %s: %w", cfg.Durable, err)
	}
	go d.run(cc)
	return d, nil
}

// Again reports whether the message at stream sequence seq may have been
// handled before by this or another instance, although its delivery count
// says it is new: it was delivered before a reclaim or before its consumer
// was created again.
func (d *Durable) Again(seq uint64) bool { return seq <= d.again.Load() }

// Stop stops fetching, lets the messages already fetched reach the handler
// (Drain), and returns once the handler is no longer called for them. It is
// safe to call more than once.
func (d *Durable) Stop() {
	d.once.Do(func() { close(d.stop) })
	d.cancel() // a re-creation in flight gives up at once
	<-d.done
}

func (d *Durable) consume(cons jetstream.Consumer) (jetstream.ConsumeContext, error) {
	gen := d.gen.Add(1)
	return cons.Consume(d.h, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if d.gen.Load() != gen {
			return // a consume that was replaced
		}
		switch {
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound):
			d.deleted.Store(true)
			d.check()
		case errors.Is(err, jetstream.ErrNoHeartbeat), errors.Is(err, nats.ErrNoResponders):
			// A pull nobody answers: a consumer deleted while no pull
			// request of ours waited, or a leader being elected. Look.
			d.check()
		case errors.Is(err, jetstream.ErrConnectionClosed):
			// The consume ends; run sees it.
		default:
			d.log.Warn().Err(err).Msg("consume")
		}
	}), jetstream.PullExpiry(pullExpiry))
}

// check asks run to look at the consumer.
func (d *Durable) check() {
	select {
	case d.poke <- struct{}{}:
	default:
	}
}

// run supervises the consume cc, and those that replace it, until Stop.
func (d *Durable) run(cc jetstream.ConsumeContext) {
	defer close(d.done)
	t := time.NewTicker(time.Duration(durablePoll.Load()))
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			cc.Drain()
			<-cc.Closed()
			return
		case <-cc.Closed():
			// Ended without Stop: the consumer was deleted, or the
			// connection closed.
		case <-d.poke:
			if !d.gone() {
				continue
			}
		case <-t.C:
			if !d.gone() {
				continue
			}
		}
		cc.Stop()
		<-cc.Closed()
		if cc = d.resume(); cc == nil {
			return // stopped
		}
	}
}

// gone reads the consumer's state, keeping its ack floor, and reports
// whether the broker says it does not exist. Any other failure (a leader
// being elected, the connection down) is not a loss: the next look decides.
func (d *Durable) gone() bool {
	ctx, cancel := context.WithTimeout(d.ctx, 5*time.Second)
	defer cancel()
	cons, err := d.js.Consumer(ctx, d.stream, d.cfg.Durable)
	if err == nil {
		d.floor.Store(cons.CachedInfo().AckFloor.Stream)
		return false
	}
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		d.deleted.Store(true)
		return true
	}
	return false
}

// resume binds the consumer again, creating it if it is gone, and consumes
// it, waiting Backoff before each attempt until one runs. It returns nil if
// Stop came first.
//
// The first attempt waits too: a pull request is told of a deletion before
// the server has removed the consumer's files, and a consumer of the same
// name made in that moment has its new files removed with the old ones
// (nats-server 2.15, standalone): it would run, but not survive a restart of
// the server, nor let an update of its configuration be stored.
func (d *Durable) resume() jetstream.ConsumeContext {
	for attempt := uint64(1); ; attempt++ {
		select {
		case <-d.stop:
			return nil
		case <-time.After(Backoff(attempt)):
		}
		cc, err := d.rebind()
		if err == nil {
			return cc
		}
		d.log.Error().Err(err).Dur("retry_in", Backoff(attempt+1)).Msg("durable consumer lost; could not consume it again yet")
	}
}

func (d *Durable) rebind() (jetstream.ConsumeContext, error) {
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	defer cancel()
	cons, err := d.js.Consumer(ctx, d.stream, d.cfg.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		d.deleted.Store(true)
		cons = nil
	case err != nil:
		return nil, fmt.Errorf("consumer %s on %s: %w", d.cfg.Durable, d.stream, err)
	}
	deleted := d.deleted.Load()
	var last uint64
	if deleted {
		// Everything the lost consumer delivered is stored by now: those
		// messages may come again, as new.
		st, err := d.js.Stream(ctx, d.stream)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", d.stream, err)
		}
		last = st.CachedInfo().State.LastSeq
	}
	created := false
	if cons == nil {
		cfg := d.cfg
		from := d.floor.Load() + 1
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, from, nil
		cons, err = d.js.CreateConsumer(ctx, d.stream, cfg)
		switch {
		case errors.Is(err, jetstream.ErrConsumerExists):
			// Another instance made it first (from its own floor): take
			// that one.
			cons, err = d.js.Consumer(ctx, d.stream, d.cfg.Durable)
		case err == nil:
			created = true
			metrics.ConsumerRecreated.WithLabelValues(d.cfg.Durable).Inc()
			d.log.Warn().Str("stream", d.stream).Uint64("from_seq", from).Uint64("again_through", last).
				Msg("durable consumer was deleted from under the service: created it again after its last ack floor")
		}
		if err != nil {
			return nil, fmt.Errorf("create consumer %s on %s: %w", d.cfg.Durable, d.stream, err)
		}
	}
	switch {
	case deleted && !created:
		d.log.Warn().Str("stream", d.stream).Uint64("again_through", last).
			Msg("durable consumer was deleted and is there again (another instance made it): consuming it")
	case !deleted:
		d.log.Warn().Str("stream", d.stream).Msg("consume of the durable consumer ended: consuming it again")
	}
	if last > d.again.Load() {
		d.again.Store(last)
	}
	d.deleted.Store(false)
	cc, err := d.consume(cons)
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", d.cfg.Durable, err)
	}
	if ci := cons.CachedInfo(); ci != nil {
		d.floor.Store(ci.AckFloor.Stream)
	}
	return cc, nil
}
