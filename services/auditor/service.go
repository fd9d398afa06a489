// Package auditor owns the audit trail's integrity. It reads the audit
// stream in order with a durable consumer, keeps a hash chain over every
// message (package audit), and publishes Ed25519-signed jit.checkpoint
// events: at an interval, whenever 1,024 messages wait, and on shutdown.
// It acknowledges messages only once a stored checkpoint covers them, so a
// restart (or a SIGKILL) resumes from its last checkpoint and continues the
// same chain (docs/siem.md, "Tamper evidence").
package auditor

import (
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/agentjit/jit/pkg/audit"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/service"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
)

// Name is the service's name: the source of its events.
const Name = "auditor"

// Defaults.
const (
	DefaultDurable  = "auditor"
	DefaultInterval = 30 * time.Second
)

// Options configure an Auditor.
type Options struct {
	// KeyFile is the Ed25519 signing key (PEM PKCS #8), made with mode 0600
	// on first start and kept. Every "*.pub" file beside it is trusted when
	// resuming: that is how a rotated key's chain is continued.
	KeyFile string
	// Key signs instead of KeyFile (tests).
	Key ed25519.PrivateKey
	// Trusted are further public keys whose checkpoints the auditor resumes
	// from.
	Trusted []ed25519.PublicKey
	// Interval between checkpoints (default DefaultInterval). Nothing is
	// published when nothing but checkpoints arrived since the last one.
	Interval time.Duration
	// Durable names the auditor's consumer (default DefaultDurable); each
	// replica needs its own.
	Durable string
}

// Auditor is the service. Build it with New, run it with Start, end it with
// Stop (which publishes a last checkpoint).
type Auditor struct {
	d    service.Deps
	o    Options
	log  zerolog.Logger
	pub  *broker.Publisher
	key  ed25519.PrivateKey
	keys audit.Keys

	chain   *audit.Chain
	unacked []jetstream.Msg // delivered, not yet in a stored checkpoint

	msgs     chan jetstream.Msg
	stop     chan struct{}
	loopDone chan struct{}
	consumer *broker.Durable
	guard    service.StartGuard
	once     sync.Once
	started  bool // Start succeeded: Stop has a consumer and a loop to end

	status  micro.Service // observe.go
	unwatch func()
}

// New returns an Auditor.
func New(d service.Deps, o Options) *Auditor {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Durable == "" {
		o.Durable = DefaultDurable
	}
	return &Auditor{d: d, o: o, log: d.Log.With().Str("component", Name).Logger(),
		pub: broker.NewPublisher(d.JS, Name), msgs: make(chan jetstream.Msg, 256),
		stop: make(chan struct{}), loopDone: make(chan struct{})}
}

// PublicKey is the signing key's public half, once started.
func (a *Auditor) PublicKey() ed25519.PublicKey { return a.key.Public().(ed25519.PublicKey) }

// ErrStarted is returned by Start on an Auditor that was started before.
var ErrStarted = service.ErrStarted

// Start loads the key, resumes the chain from the last checkpoint it
// trusts (or starts one at the stream's first message), binds its consumer
// at the next sequence, and returns once it runs. An Auditor starts once:
// Start again, or after Stop, returns ErrStarted (a stopped auditor is
// replaced by a new one, which resumes the chain).
func (a *Auditor) Start(ctx context.Context) error {
	if err := a.guard.Begin(); err != nil {
		return err
	}
	if err := a.loadKeys(); err != nil {
		return err
	}
	next, head, from, err := a.resume(ctx)
	if err != nil {
		return err
	}
	a.chain = audit.NewChain(broker.AuditStream, next, head)
	a.log.Info().Str("public_key", audit.PublicKeyText(a.PublicKey())).Str("key_id", audit.KeyID(a.PublicKey())).
		Uint64("next_seq", next).Str("resumed_from", from).Dur("interval", a.o.Interval).Msg("audit trail signer")
	cons, cfg, err := a.bind(ctx, next)
	if err != nil {
		return err
	}
	// Kept consumed: deleted from under the auditor, the consumer is made
	// again after its last ack floor (the last checkpoint the broker saw
	// acknowledged); take skips what the chain already holds and reads
	// from the stream what it lacks.
	a.consumer, err = broker.KeepConsuming(context.WithoutCancel(ctx), a.d.JS, cons, cfg, func(m jetstream.Msg) {
		select {
		case a.msgs <- m:
		case <-a.stop:
		}
	}, a.log)
	if err != nil {
		return err
	}
	a.started = true
	a.observe(cons)
	go a.loop(context.WithoutCancel(ctx))
	return nil
}

// Stop stops reading, publishes the checkpoint of everything read (unless
// it was only checkpoints) and acknowledges it. It is safe to call twice.
func (a *Auditor) Stop() {
	a.once.Do(func() {
		if !a.started {
			return
		}
		a.unobserve()
		a.consumer.Stop()
		close(a.stop)
		<-a.loopDone
	})
}

func (a *Auditor) loadKeys() error {
	var trusted []ed25519.PublicKey
	if a.o.Key != nil {
		a.key = a.o.Key
	} else {
		if a.o.KeyFile == "" {
			return errors.New("auditor: no signing key (--audit-key)")
		}
		key, created, err := audit.LoadOrCreateKey(a.o.KeyFile)
		if err != nil {
			return err
		}
		if created {
			a.log.Warn().Str("key_file", a.o.KeyFile).Str("public_key_file", audit.PublicKeyPath(a.o.KeyFile)).
				Msg("made a new audit signing key: keep its public key to verify the trail")
		}
		a.key = key
		pubs, _ := filepath.Glob(filepath.Join(filepath.Dir(a.o.KeyFile), "*.pub"))
		for _, p := range pubs {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			pub, err := audit.ParsePublicKey(b)
			if err != nil {
				a.log.Warn().Err(err).Str("file", p).Msg("not a public key; ignored")
				continue
			}
			trusted = append(trusted, pub)
		}
	}
	a.keys = audit.NewKeys(append(append(trusted, a.o.Trusted...), a.PublicKey())...)
	return nil
}

// loop is the auditor's single goroutine: it takes messages in order,
// checkpoints at the interval, and ends with a last checkpoint.
func (a *Auditor) loop(ctx context.Context) {
	defer close(a.loopDone)
	t := time.NewTicker(a.o.Interval)
	defer t.Stop()
	for {
		select {
		case m := <-a.msgs:
			a.take(ctx, m)
		case <-t.C:
			a.checkpoint(ctx)
		case <-a.stop:
			for {
				select {
				case m := <-a.msgs:
					a.take(ctx, m)
					continue
				default:
				}
				break
			}
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			// Messages the server delivered but the stopped consumer
			// never handed over are read from the stream, so that the last
			// checkpoint covers everything stored before the stop.
			if st, err := a.d.JS.Stream(sctx, broker.AuditStream); err == nil {
				if info, err := st.Info(sctx); err == nil && info.State.LastSeq >= a.chain.Next() {
					if err := a.fill(sctx, a.chain.Next(), info.State.LastSeq); err != nil {
						a.log.Warn().Err(err).Msg("reading the messages stored before the stop failed; the next start covers them")
					}
				}
			}
			a.checkpoint(sctx)
			cancel()
			return
		}
	}
}

// take adds a delivered message to the chain. A message behind the chain
// is a redelivery of one already chained (it is acknowledged with the next
// checkpoint). A message ahead of it means messages in between were not
// delivered (deleted, or lost in a reconnect): they are read from the
// stream, and those not there are recorded as skipped.
func (a *Auditor) take(ctx context.Context, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		return
	}
	seq := md.Sequence.Stream
	if seq < a.chain.Next() {
		return
	}
	if seq > a.chain.Next() {
		if err := a.fill(ctx, a.chain.Next(), seq-1); err != nil {
			// Not taken: it is delivered again after the ack wait, or the
			// next message fills the hole.
			a.log.Warn().Err(err).Uint64("seq", seq).Msg("reading a hole in the deliveries failed; will retry")
			return
		}
	}
	_ = a.chain.Add(seq, audit.MessageHash(m.Subject(), m.Headers(), m.Data()), md.Timestamp, m.Subject() == audit.CheckpointSubject)
	a.unacked = append(a.unacked, m)
	if a.chain.Pending() >= events.MaxCheckpointEvents {
		a.checkpoint(ctx)
	}
}

// fill reads sequences from..to from the stream and adds those there.
func (a *Auditor) fill(ctx context.Context, from, to uint64) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := broker.ReadDirect(ctx, a.d.NC, broker.AuditStream, broker.DirectRead{FromSeq: from, UpToSeq: to},
		func(m broker.StoredMsg) error {
			return a.chain.Add(m.Seq, audit.MessageHash(m.Subject, m.Header, m.Data), m.Time, m.Subject == audit.CheckpointSubject)
		})
	if err != nil {
		return err
	}
	if a.chain.Next() <= to {
		a.log.Warn().Uint64("first", a.chain.Next()).Uint64("last", to).Msg("messages gone from the stream before they were chained; the checkpoint records them as skipped")
	}
	return nil
}

// checkpoint publishes signed checkpoints of everything pending (several
// when more than MaxCheckpointEvents wait), then acknowledges what they
// cover. A failed publish leaves the rest pending for the next attempt.
func (a *Auditor) checkpoint(ctx context.Context) {
	var through uint64
	for a.chain.NeedsCheckpoint() {
		cp, n := a.chain.Peek()
		audit.Sign(&cp, a.key)
		id := audit.CheckpointEventID(cp.Stream, cp.FirstSeq, cp.LastSeq)
		_, seq, err := a.pub.Emit(ctx, id, events.TypeCheckpoint, "", cp, events.WithTime(cp.CoveredUntil))
		if err != nil {
			a.log.Error().Err(err).Str("id", id).Msg("publishing a checkpoint failed; will retry")
			break
		}
		a.chain.Commit(n)
		through = cp.LastSeq
		a.log.Debug().Str("id", id).Uint64("seq", seq).Int("count", cp.Count).Msg("checkpoint")
	}
	if through == 0 {
		return
	}
	// AckAll: acknowledging the last delivered message a checkpoint covers
	// acknowledges every one before it.
	k := -1
	for i, m := range a.unacked {
		if md, err := m.Metadata(); err == nil && md.Sequence.Stream <= through {
			k = i
		}
	}
	if k >= 0 {
		if err := a.unacked[k].Ack(); err != nil {
			a.log.Warn().Err(err).Msg("ack failed; the messages are delivered again and skipped as chained")
		}
		a.unacked = a.unacked[k+1:]
	}
}
