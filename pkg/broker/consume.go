package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/tracing"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// ErrPermanent marks a handler error that no retry can fix (bad input). The
// consume loop terminates such a message instead of redelivering it; the
// handler is expected to have put an audit event on the stream saying why.
var ErrPermanent = errors.New("permanent failure")

// Permanent wraps err so that errors.Is(err, ErrPermanent) holds.
func Permanent(err error) error { return fmt.Errorf("%w: %w", ErrPermanent, err) }

// Delivery describes the message an event arrived on.
type Delivery struct {
	Subject      string
	StreamSeq    uint64
	NumDelivered uint64
	// Timestamp is when the broker stored the message.
	Timestamp time.Time
	// Again says an earlier delivery may have been handled, in part: it is
	// a redelivery, a message a dead instance had been given before this
	// one reclaimed them (whose delivery count the reset started over), or
	// one delivered before its consumer was deleted and created again
	// (Durable).
	Again  bool
	Header nats.Header
	// Op is the KV operation for messages of a bucket's stream: "" for a
	// put, otherwise the KV-Operation header or the marker reason (MaxAge,
	// Purge, Remove).
	Op string
}

// ConsumerConfig names a durable consumer and how its messages are handled.
type ConsumerConfig struct {
	// Stream defaults to AuditStream.
	Stream string
	// Durable is the consumer's durable name: the service resumes from it
	// after a restart.
	Durable        string
	FilterSubjects []string
	// AckWait defaults to DefaultAckWait. It bounds how long a message an
	// instance was given waits after that instance died; a live instance
	// keeps what it holds however long it takes (Consumer).
	AckWait time.Duration
	// HandlerTimeout bounds each handler call (default 10s).
	HandlerTimeout time.Duration
	// MaxAckPending defaults to 10,000.
	MaxAckPending int
	// Workers is how many messages are handled at once (default
	// DefaultWorkers; 1 handles them one by one). Messages with the same
	// order key are always handled one at a time, in delivery order, so
	// parallelism never reorders one agent's events or one KV key's changes.
	Workers int
	// OrderKey maps a message's subject to its order key (default: the
	// subject itself, which names one agent for events and one key for a
	// bucket's stream).
	OrderKey func(subject string) string
}

// DefaultAckWait is the ack wait of the services' durable consumers: how
// long a message an instance was given and never answered (it died: killed,
// its node lost or cut off) waits before the broker hands it to another
// instance. It is short because a live instance never lets it run out: it
// tells the broker that it still holds each message it has fetched and not
// yet acknowledged (progress, every fifth of the ack wait), whether its
// handler runs or it waits for a worker, so a slow handler is not given to
// a second instance. On a cluster the other replicas keep pulling, so no
// start's reclaim takes a dead replica's messages back: before, they waited
// out a 30 s ack wait, and with them a grant announced but not yet leased
// (its revocation 26 s late in jitbench's node-loss phase) or a request not
// yet decided.
const DefaultAckWait = 5 * time.Second

// progressParts is how many progress intervals fit in an ack wait.
const progressParts = 5

// DefaultWorkers is the default parallelism of a consume loop: enough to
// overlap the broker round trips of handlers (which mostly wait on KV reads
// and publish acknowledgements), on any number of cores.
const DefaultWorkers = 32

// workerQueue is how many messages wait for each worker before the fetch
// loop blocks (backpressure to the pull consumer).
const workerQueue = 64

// RawHandler handles one message; nil acks, ErrPermanent terminates, any
// other error naks with a growing delay.
type RawHandler func(ctx context.Context, data []byte, d Delivery) error

// Handler handles one decoded event with the same ack rules as RawHandler.
type Handler func(ctx context.Context, e events.Event, d Delivery) error

// MalformedFunc is told of a message that does not decode as a valid event.
// It should publish a jit.rejected audit event; if it returns an error the
// message is redelivered, otherwise terminated.
type MalformedFunc func(ctx context.Context, d Delivery, err error) error

// Consumer is a running consume loop.
type Consumer struct {
	d   *Durable // kept consumed: re-created if deleted from under it
	nc  *nats.Conn
	log zerolog.Logger

	mu     sync.RWMutex // guards closed against the fetch callback's sends
	closed bool
	queues []chan jetstream.Msg
	wg     sync.WaitGroup

	// held are the messages fetched and not yet answered (ack, nak or
	// term), with when the broker was last told they are held: hold keeps
	// them from being redelivered while this instance lives.
	heldMu sync.Mutex
	held   map[jetstream.Msg]time.Time
	quit   chan struct{} // ends hold
	holder sync.WaitGroup

	unwatch func() // ends the consumer's series (observe.go)
}

// pullExpiry is how long one pull request of a consumer waits; its idle
// heartbeat is half of it, and two missed heartbeats make the client pull
// again. On a cluster, a pull request the old leader of a consumer held is
// lost with it: 5 s (not nats.go's 30 s) is how soon a replica notices and
// asks the new leader.
const pullExpiry = 5 * time.Second

// Stop stops fetching new messages and waits for the handlers of the
// messages already fetched (each is handled and acknowledged). A message
// the server sent after the fetching stopped is left unacknowledged: the
// next instance takes it back at once (reclaim).
func (c *Consumer) Stop() {
	c.d.Stop()
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		for _, q := range c.queues {
			close(q)
		}
	}
	c.mu.Unlock()
	c.wg.Wait()
	c.stopHold()
	// Acknowledgements are published without waiting: see them reach the
	// server before Stop returns.
	if c.nc != nil {
		_ = c.nc.FlushTimeout(2 * time.Second)
	}
	c.unwatch()
}

// dispatch hands m to the worker of its order key. After Stop it drops m
// unacknowledged: the durable consumer redelivers it to the next instance.
func (c *Consumer) dispatch(m jetstream.Msg, key string) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		c.release(m)
		return
	}
	c.queues[fnv32a(key)%uint32(len(c.queues))] <- m
}

// track records m as held from now on, until release.
func (c *Consumer) track(m jetstream.Msg) {
	c.heldMu.Lock()
	c.held[m] = time.Now()
	c.heldMu.Unlock()
}

// release forgets m: it was answered, or dropped at Stop.
func (c *Consumer) release(m jetstream.Msg) {
	c.heldMu.Lock()
	delete(c.held, m)
	c.heldMu.Unlock()
}

// hold tells the broker, every interval, that each message held for an
// interval or more since it was fetched or last told is still being
// worked on (progress: its ack wait starts again), until stopHold. A
// message whose instance died is told of no more and comes again after the
// ack wait.
func (c *Consumer) hold(interval time.Duration) {
	c.holder.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		var due []jetstream.Msg
		for {
			select {
			case <-c.quit:
				return
			case now := <-t.C:
				due = due[:0]
				c.heldMu.Lock()
				for m, last := range c.held {
					if now.Sub(last) >= interval {
						due = append(due, m)
						c.held[m] = now
					}
				}
				c.heldMu.Unlock()
				for _, m := range due {
					// Fire and forget, as acks are; one lost is made up
					// for at the next tick, well within the ack wait.
					_ = m.InProgress()
				}
			}
		}
	})
}

func (c *Consumer) stopHold() {
	select {
	case <-c.quit:
	default:
		close(c.quit)
	}
	c.holder.Wait()
}

// fnv32a hashes s without allocating.
func fnv32a(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// Consume runs h for every valid event matching cfg, from where the durable
// consumer left off. Undecodable messages go to onMalformed. It returns once
// the loop runs; Stop ends it.
func Consume(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig, h Handler, onMalformed MalformedFunc, log zerolog.Logger) (*Consumer, error) {
	return ConsumeRaw(ctx, js, cfg, func(ctx context.Context, data []byte, d Delivery) error {
		e, err := FromMsg(d.Header, data)
		if err != nil {
			if onMalformed == nil {
				return Permanent(err)
			}
			if herr := onMalformed(ctx, d, err); herr != nil {
				return herr
			}
			return Permanent(err)
		}
		ctx, end := tracing.StartHandle(ctx, cfg.Durable, d.Subject, e)
		err = handleEvent(ctx, h, e, d, onMalformed)
		end(err)
		return err
	}, log)
}

// ConsumeRaw runs h for every message matching cfg (used for buckets'
// streams, whose messages are not CloudEvents). The durable consumer is
// kept as Durable says: deleted from under the service, it is created again
// after its last ack floor and consumed on.
func ConsumeRaw(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig, h RawHandler, log zerolog.Logger) (*Consumer, error) {
	if cfg.Stream == "" {
		cfg.Stream = AuditStream
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.HandlerTimeout == 0 {
		cfg.HandlerTimeout = 10 * time.Second
	}
	if cfg.MaxAckPending == 0 {
		cfg.MaxAckPending = 10_000
	}
	jcfg := jetstream.ConsumerConfig{
		Durable:        cfg.Durable,
		FilterSubjects: cfg.FilterSubjects,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.AckWait,
		MaxAckPending:  cfg.MaxAckPending,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	cons, err := ensureDurable(ctx, js, cfg.Stream, jcfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, cfg.Stream, err)
	}
	reclaimed := reclaim(ctx, js, cons, cfg, log)
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	base := log
	log = log.With().Str("consumer", cfg.Durable).Logger()
	c := &Consumer{nc: js.Conn(), log: log, queues: make([]chan jetstream.Msg, cfg.Workers), unwatch: watch(js, cons, cfg),
		held: map[jetstream.Msg]time.Time{}, quit: make(chan struct{})}
	for i := range c.queues {
		c.queues[i] = make(chan jetstream.Msg, workerQueue)
	}
	c.hold(cfg.AckWait / progressParts)
	// Messages wait in the queues until the workers below start, held.
	c.d, err = keepConsuming(ctx, js, cons, jcfg, func(m jetstream.Msg) {
		c.track(m)
		key := m.Subject()
		if cfg.OrderKey != nil {
			key = cfg.OrderKey(key)
		}
		c.dispatch(m, key)
	}, reclaimed, base)
	if err != nil {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.stopHold()
		c.unwatch()
		return nil, err
	}
	for _, q := range c.queues {
		c.wg.Go(func() {
			for m := range q {
				handle(ctx, m, cfg, h, c.d, log)
				c.release(m)
			}
		})
	}
	return c, nil
}

// ensureDurable creates the durable consumer cfg on stream, or updates it
// to cfg. A consumer created again after a deletion (Durable) starts at a
// stream sequence, which the broker does not let an update change: such a
// consumer keeps its start.
func ensureDurable(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err == nil {
		return cons, nil
	}
	cur, cerr := js.Consumer(ctx, stream, cfg.Durable)
	if cerr != nil {
		return nil, err
	}
	ci := cur.CachedInfo().Config
	if ci.DeliverPolicy == cfg.DeliverPolicy && ci.OptStartSeq == cfg.OptStartSeq {
		return nil, err
	}
	cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = ci.DeliverPolicy, ci.OptStartSeq, ci.OptStartTime
	return js.CreateOrUpdateConsumer(ctx, stream, cfg)
}

// reclaim makes the messages a dead instance had been given, and never
// acknowledged, come again now rather than after the ack wait: a
// consumer nobody pulls from (no waiting pull request: this is the only
// instance, or the first of several to start) with messages pending is
// reset to its ack floor. Everything after the floor is delivered again,
// including messages acknowledged out of order: every handler is
// idempotent. It returns the last stream sequence delivered before the
// reset (0 if there was none): those messages are marked Again. A failure
// only costs the wait, and is logged.
func reclaim(ctx context.Context, js jetstream.JetStream, cons jetstream.Consumer, cfg ConsumerConfig, log zerolog.Logger) uint64 {
	info := cons.CachedInfo()
	if info == nil || info.NumAckPending == 0 || info.NumWaiting > 0 {
		return 0
	}
	// The cached info is from the create; ask again, so that a replica
	// that started meanwhile is seen.
	info, err := cons.Info(ctx)
	if err != nil || info.NumAckPending == 0 || info.NumWaiting > 0 {
		return 0
	}
	if _, err := js.ResetConsumer(ctx, cfg.Stream, cfg.Durable); err != nil {
		log.Warn().Err(err).Int("ack_pending", info.NumAckPending).Msg("could not reclaim the messages of a previous instance; they come again after the ack wait")
		return 0
	}
	log.Info().Int("ack_pending", info.NumAckPending).Uint64("ack_floor", info.AckFloor.Stream).
		Uint64("delivered", info.Delivered.Stream).Msg("reclaimed the messages a previous instance left unacknowledged")
	return info.Delivered.Stream
}

func handle(ctx context.Context, m jetstream.Msg, cfg ConsumerConfig, h RawHandler, kept *Durable, log zerolog.Logger) {
	d := Delivery{Subject: m.Subject(), Header: m.Headers()}
	if md, err := m.Metadata(); err == nil {
		d.StreamSeq = md.Sequence.Stream
		d.NumDelivered = md.NumDelivered
		d.Timestamp = md.Timestamp
		d.Again = md.NumDelivered > 1 || kept.Again(md.Sequence.Stream)
	}
	if op := d.Header.Get("KV-Operation"); op != "" {
		d.Op = op
	} else if r := d.Header.Get(jetstream.MarkerReasonHeader); r != "" {
		d.Op = r
	}
	hctx, cancel := context.WithTimeout(ctx, cfg.HandlerTimeout)
	defer cancel()
	err := recovering(func() error { return h(hctx, m.Data(), d) })
	// The logger is built only when there is something to log: it costs
	// allocations on every message otherwise.
	l := func() zerolog.Logger {
		return log.With().Str("subject", d.Subject).Uint64("seq", d.StreamSeq).Uint64("delivery", d.NumDelivered).Logger()
	}
	switch {
	case err == nil:
		if aerr := m.Ack(); aerr != nil {
			l := l()
			l.Warn().Err(aerr).Msg("ack failed; the message will be redelivered and handled idempotently")
		}
	case errors.Is(err, ErrPermanent):
		l := l()
		if pe := (*PanicError)(nil); errors.As(err, &pe) {
			l.Error().Err(err).Bytes("stack", pe.Stack).Msg("handler panicked; terminated the message")
		} else {
			l.Warn().Err(err).Msg("terminated bad message")
		}
		observeTerm(cfg.Durable, err)
		_ = m.TermWithReason(truncate(err.Error(), 200))
	default:
		observeFailure(cfg.Durable)
		delay := Backoff(d.NumDelivered)
		if Unavailable(err) {
			// The broker, not the message: a stream or bucket without a
			// leader refuses writes until JetStream elects one (4-9 s on
			// a cluster). Asked again at least every unavailableRetry, the
			// message is handled soon after the election, not after a
			// backoff grown to 6 s by then.
			delay = min(delay, unavailableRetry)
		}
		l := l()
		l.Error().Err(err).Dur("retry_in", delay).Msg("handler failed; will retry")
		_ = m.NakWithDelay(delay)
	}
}

// unavailableRetry is the longest redelivery delay of a message whose
// handler failed because the broker was unavailable (Unavailable).
const unavailableRetry = time.Second

// Unavailable reports whether err means that JetStream did not take or
// answer a request, rather than that the request was wrong: no answer in
// time, no responders (a stream without a leader), JetStream temporarily
// unavailable. Such a failure is worth asking again soon, under the same
// ids.
func Unavailable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503 || apiErr.ErrorCode == errCodeDupInProcess
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, nats.ErrNoStreamResponse)
}

// Backoff is the redelivery delay after the n-th failed delivery: 100 ms
// doubling to at most 10 s.
func Backoff(n uint64) time.Duration {
	d := 100 * time.Millisecond
	for i := uint64(1); i < n && d < 10*time.Second; i++ {
		d *= 2
	}
	return min(d, 10*time.Second)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
