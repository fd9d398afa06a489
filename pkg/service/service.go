// Package service is the start-up every JIT service shares: connect to
// NATS, make sure the stream and buckets exist, apply a configuration file
// if one is given, and follow the active configuration.
package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// ErrStarted is returned by a service's Start when it was started before:
// a stopped service is replaced by a new one (its New), not restarted.
var ErrStarted = errors.New("service already started")

// StartGuard is every service's start guard: a service starts once, and
// Start again, after a failed Start or after Stop, returns ErrStarted. Its
// zero value is ready; it is safe for concurrent use.
type StartGuard struct{ started atomic.Bool }

// Begin returns nil the first time it is called, ErrStarted after.
func (g *StartGuard) Begin() error {
	if !g.started.CompareAndSwap(false, true) {
		return ErrStarted
	}
	return nil
}

// Deps is what a service needs from its environment.
type Deps struct {
	NC      *nats.Conn
	JS      jetstream.JetStream
	Buckets broker.Buckets
	// Config is the active configuration: its redacted copy (the config
	// bucket) for every service but approval, whose Config is the whole of
	// it (the secrets bucket), token hashes and notifiers' secrets included.
	Config *config.Source
	Log    zerolog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Suspensions, if set, answers the edge checks (requester, policy)
	// from memory; nil means reading the suspensions bucket each time.
	Suspensions *broker.SuspensionView
}

// Suspension returns agent's suspension, or nil if it is not suspended:
// from d.Suspensions when set, else from the bucket. For the edge checks
// only: a service that grants or revokes reads the bucket itself
// (broker.Suspension), so that a suspension stored an instant ago counts.
func (d Deps) Suspension(ctx context.Context, agent string) (*events.Suspension, error) {
	if d.Suspensions != nil {
		return d.Suspensions.Suspension(ctx, agent)
	}
	return broker.Suspension(ctx, d.Buckets.Suspensions, agent)
}

// Clock returns d.Now or time.Now.
func (d Deps) Clock() func() time.Time {
	if d.Now != nil {
		return d.Now
	}
	return time.Now
}

// Service is a JIT service: Start returns once it is running; Stop waits for
// in-flight work.
type Service interface {
	Start(ctx context.Context) error
	Stop()
}

// Rebind returns d with its connection, JetStream context and bucket
// handles on nc (jitd gives each in-process service a connection of its own
// user, sharing the configuration and the suspension view).
func (d Deps) Rebind(ctx context.Context, nc *nats.Conn) (Deps, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return Deps{}, err
	}
	b, err := broker.OpenBuckets(ctx, js)
	if err != nil {
		return Deps{}, err
	}
	d.NC, d.JS, d.Buckets = nc, js, b
	return d, nil
}

// Connect dials NATS with reconnects that never give up; opts add
// credentials, TLS or an in-process server.
func Connect(url, name string, log zerolog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(url, append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("nats disconnected")
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info().Str("url", c.ConnectedUrl()).Msg("nats reconnected") }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subscription", sub.Subject)
			}
			ev.Msg("nats")
		}),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", url, err)
	}
	return nc, nil
}

// PrepareOptions tune Prepare.
type PrepareOptions struct {
	// ConfigFile, if set, is validated and stored as the active
	// configuration (only a principal that may write it: the policy
	// service, jitd).
	ConfigFile string
	// Source names the applier in the jit.config event.
	Source string
	// Topology tunes the stream and buckets (broker.Ensure); its zero value
	// is the default.
	Topology broker.Options
	// Secrets makes Config follow the whole configuration (the approval
	// service, jitd) instead of its redacted copy.
	Secrets bool
}

// Prepare ensures the topology, applies o.ConfigFile if set, waits for an
// active configuration and starts the suspension view. The configuration
// and the view follow their buckets until ctx ends.
func Prepare(ctx context.Context, nc *nats.Conn, log zerolog.Logger, o PrepareOptions) (Deps, error) {
	configFile, source, topo := o.ConfigFile, o.Source, o.Topology
	js, err := jetstream.New(nc)
	if err != nil {
		return Deps{}, err
	}
	// The broker may still be coming up, or the services' account being
	// updated (an account pushed while the services start makes its
	// JetStream answer "not enabled" for a moment): retry every step that
	// talks to JetStream for a while.
	deadline := time.Now().Add(30 * time.Second)
	var b broker.Buckets
	err = retryJetStream(ctx, log, deadline, func() error {
		// A short deadline per attempt: on a cluster whose nodes all start
		// at once, a stream another node is creating does not answer until
		// its group has a leader, and the next attempt finds it made.
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := broker.Ensure(actx, js, topo)
		cancel()
		if errors.Is(err, broker.ErrTopologyDiffers) {
			// What exists works; only jitd and the administrator may
			// change it.
			log.Warn().Err(err).Msg("the stream and buckets are not this version's")
			err = nil
		}
		if err != nil {
			return err
		}
		b, err = broker.OpenBuckets(ctx, js)
		return err
	})
	if err != nil {
		return Deps{}, err
	}
	if configFile != "" {
		if err := ApplyFile(ctx, js, config.Buckets{Config: b.Config, Secrets: b.Secrets}, configFile, source, events.Actor{Kind: events.ActorSystem, ID: source}); err != nil {
			return Deps{}, err
		}
	}
	followed := b.Config
	if o.Secrets {
		followed = b.Secrets
	}
	var src *config.Source
	err = retryJetStream(ctx, log, deadline, func() (err error) {
		src, err = config.Watch(ctx, followed, log)
		return err
	})
	if err != nil {
		return Deps{}, err
	}
	var susp *broker.SuspensionView
	err = retryJetStream(ctx, log, deadline, func() (err error) {
		susp, err = broker.WatchSuspensions(ctx, b.Suspensions, log)
		return err
	})
	if err != nil {
		return Deps{}, err
	}
	return Deps{NC: nc, JS: js, Buckets: b, Config: src, Log: log, Suspensions: susp}, nil
}

// ApplyFile validates the configuration at path and stores it as the active
// one. Both a change and a refusal are put on the audit stream; an unchanged
// configuration is not.
func ApplyFile(ctx context.Context, js jetstream.JetStream, kv config.Buckets, path, source string, by events.Actor) error {
	pub := broker.NewPublisher(js, source)
	c, err := config.LoadFile(path)
	if err != nil {
		data := events.ConfigApplied{Outcome: "refused", Source: path, Error: err.Error(), AppliedBy: by, AppliedAt: time.Now().UTC()}
		if _, _, perr := pub.Emit(ctx, events.NewID("cfg"), events.TypeConfigApplied, "", data); perr != nil {
			err = errors.Join(err, perr)
		}
		return err
	}
	rev, changed, err := config.ApplyWithSecrets(ctx, kv, c)
	if err != nil {
		return err
	}
	if changed {
		data := events.ConfigApplied{Outcome: "applied", Digest: c.Digest(), Source: path, Revision: rev, AppliedBy: by, AppliedAt: time.Now().UTC()}
		if _, _, err := pub.Emit(ctx, fmt.Sprintf("cfg/%s/%d", c.Digest(), rev), events.TypeConfigApplied, "", data); err != nil {
			return err
		}
	}
	return nil
}

// Logger builds the process's one logger, JSON on stderr, each line naming
// the service once ("service": name).
func Logger(name, level string) zerolog.Logger {
	return BaseLogger(level).With().Str("service", name).Logger()
}

// BaseLogger is Logger without the service key, for a process that runs
// several services (jitd): each names itself on its own child logger, so
// that every line carries the key once.
func BaseLogger(level string) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		lvl = zerolog.InfoLevel
	}
	return zerolog.New(os.Stderr).Level(lvl).With().Timestamp().Logger()
}

// Log is the logger type services use.
type Log = zerolog.Logger

// retryJetStream runs step until it succeeds, ctx ends or deadline passes,
// every half second, logging each failure: for the steps of a start that
// may meet a JetStream still coming up.
func retryJetStream(ctx context.Context, log zerolog.Logger, deadline time.Time, step func() error) error {
	for {
		err := step()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		log.Warn().Err(err).Msg("waiting for JetStream")
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}
