package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/tracing"
	"github.com/nats-io/nats.go"
)

// MainOption adjusts Main for one service.
type MainOption func(*mainOptions)

type mainOptions struct {
	flags   []func(*flag.FlagSet)
	secrets bool
}

// WithSecrets makes the service's Config the whole configuration (the
// approval service: it alone authenticates approvers and signs
// notifications).
func WithSecrets() MainOption { return func(o *mainOptions) { o.secrets = true } }

// WithFlags lets a service register flags of its own next to the common
// ones; they are parsed before build is called.
func WithFlags(register func(fs *flag.FlagSet)) MainOption {
	return func(o *mainOptions) { o.flags = append(o.flags, register) }
}

// Main is the whole main function of a service binary: it reads flags and
// environment (NATS_URL, NATS_CREDS and TLS as the nats CLI names them,
// JIT_CONFIG, JIT_AUDIT_MAX_AGE, LOG_LEVEL), connects, prepares, builds the
// service with build, runs it until SIGINT or SIGTERM, and exits 0, or 2 on
// a start-up error.
func Main(name string, build func(Deps) Service, opts ...MainOption) {
	var mo mainOptions
	for _, o := range opts {
		o(&mo)
	}
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	for _, register := range mo.flags {
		register(fs)
	}
	natsURL := fs.String("nats-url", envOr("NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (env NATS_URL)")
	var client auth.ClientOptions
	client.Flags(fs, os.Getenv)
	cfgFile := fs.String("config", os.Getenv("JIT_CONFIG"), "optional configuration file to apply at start (env JIT_CONFIG; needs a credential that may write it: the policy service's)")
	level := fs.String("log-level", envOr("LOG_LEVEL", "info"), "log level: debug, info, warn, error")
	metricsListen := fs.String("metrics-listen", os.Getenv("JIT_METRICS_LISTEN"), "serve Prometheus /metrics, /healthz and /readyz on this address, e.g. 127.0.0.1:9101 (env JIT_METRICS_LISTEN; off when empty)")
	maxAge := fs.String("audit-max-age", os.Getenv("JIT_AUDIT_MAX_AGE"), AuditMaxAgeUsage+
		"; a service sets it only when it creates the stream: later, jitctl creds provision --audit-max-age")
	replicas := fs.Int("replicas", envInt("JIT_REPLICAS", 0), "replicas of the audit stream and buckets when this service creates them: 3 on a three-node cluster (env JIT_REPLICAS; 0: one; existing ones are moved only by jitctl topology replicas)")
	_ = fs.Parse(os.Args[1:])

	log := Logger(name, *level)
	po := PrepareOptions{ConfigFile: *cfgFile, Source: name, Secrets: mo.secrets}
	if *replicas < 0 || *replicas > 5 {
		fmt.Fprintf(os.Stderr, "%s: --replicas %d: 1 to 5 (0: one)\n", name, *replicas)
		os.Exit(2)
	}
	po.Topology.Replicas = *replicas
	var err error
	if po.Topology.AuditMaxAge, err = ParseAge(*maxAge); err != nil {
		fmt.Fprintf(os.Stderr, "%s: --audit-max-age: %v\n", name, err)
		os.Exit(2)
	}
	nopts, err := client.NATSOptions()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
	p, ok, _ := client.Principal()
	if ok && po.ConfigFile != "" && p.ID != auth.ServicePolicy {
		fmt.Fprintf(os.Stderr, "%s: --config: only the policy service applies a configuration file (with its credential)\n", name)
		os.Exit(2)
	}
	if ok && (p.Kind != auth.KindService || p.ID != name) {
		fmt.Fprintf(os.Stderr, "%s: the credentials file is %s's, not service:%s's\n", name, p, name)
		os.Exit(2)
	} else if !ok {
		log.Warn().Msg("no credentials (--creds / NATS_CREDS): running as whatever an unauthenticated connection may do; every caller is trusted")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, name, *natsURL, nopts, po, build, log, *metricsListen); err != nil {
		log.Error().Err(err).Msg("exiting")
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
}

func run(ctx context.Context, name, url string, nopts []nats.Option, po PrepareOptions, build func(Deps) Service, log Log, metricsListen string) error {
	var started atomic.Pointer[Deps]
	if metricsListen != "" {
		if _, err := ServeObserve(ctx, metricsListen, func(ctx context.Context) error {
			d := started.Load()
			if d == nil {
				return errors.New("starting: topology, configuration or consumers not in place yet")
			}
			return Ready(ctx, name, *d)
		}, log); err != nil {
			return err
		}
	}
	shutdownTraces, err := tracing.Setup(ctx, name) // OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	defer func() {
		tctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = shutdownTraces(tctx)
		cancel()
	}()
	nc, err := Connect(url, name, log, nopts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	deps, err := Prepare(ctx, nc, log, po)
	if err != nil {
		return err
	}
	defer ProvideGauges(deps, name == "approval")()
	svc := build(deps)
	if err := svc.Start(ctx); err != nil {
		return err
	}
	started.Store(&deps)
	log.Info().Str("nats", url).Msg("running")
	<-ctx.Done()
	log.Info().Msg("stopping")
	svc.Stop()
	return nc.Drain()
}

// AuditMaxAgeUsage describes the --audit-max-age flag of jitd and the
// service binaries.
const AuditMaxAgeUsage = "how long the audit stream keeps events, e.g. 90d or 2160h (env JIT_AUDIT_MAX_AGE; empty: keep the stream's own limits, none when it is created)"

// ParseAge reads a retention: a Go duration ("2160h") or a number of days
// ("90d"). Empty is zero.
func ParseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 || n > 100*365 {
			return 0, fmt.Errorf("%q is not a number of days such as 90d", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a duration such as 90d or 2160h", s)
	}
	return d, nil
}

// EnvOr returns the environment variable k, or def when it is empty.
func EnvOr(k, def string) string { return envOr(k, def) }

func envInt(k string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return n
	}
	return def
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
