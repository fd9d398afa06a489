// Command jitd runs the whole JIT system in one process: an embedded NATS
// server with JetStream and the requester, policy, approval, revoker and
// auditor services.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/agentjit/jit/cmd/internal/allinone"
	"github.com/agentjit/jit/pkg/metrics"
	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/pkg/tracing"
)

func main() {
	f, err := parseFlags(os.Args[1:])
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.As(err, new(usageError)):
		os.Exit(2) // the flag package printed the error and the usage
	case err != nil:
		fmt.Fprintf(os.Stderr, "jitd: %v\n", err)
		os.Exit(2)
	}

	// allinone names each service on its own lines; jitd's lines here say
	// "jitd".
	base := service.BaseLogger(f.level)
	log := base.With().Str("service", "jitd").Logger()
	limit, err := applyMemoryLimit(f.memLimit)
	if err != nil {
		fmt.Fprintf(os.Stderr, "jitd: --memory-limit: %v\n", err)
		os.Exit(2)
	}
	if limit > 0 {
		log.Info().Int64("memory_limit_bytes", limit).Msg("soft memory limit set")
	}
	if f.noMetrics {
		metrics.Disable()
		log.Warn().Msg("recording no metrics on the request path (--no-metrics)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Traces over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set; off otherwise.
	shutdownTraces, err := tracing.Setup(ctx, "jitd")
	if err != nil {
		fmt.Fprintf(os.Stderr, "jitd: tracing: %v\n", err)
		os.Exit(2)
	}
	app := allinone.New(f.opts, base)
	if err := app.Run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "jitd: %v\n", err)
		os.Exit(2)
	}
	<-ctx.Done()
	log.Info().Msg("shutting down")
	app.Close()
	tctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = shutdownTraces(tctx)
	cancel()
}

// cmdline is what jitd's command line (and environment) says: the App's
// options and what main applies itself.
type cmdline struct {
	opts      allinone.Options
	level     string
	memLimit  string
	noMetrics bool
}

// usageError is a command line the flag package could not parse; it has
// printed the error and the usage already.
type usageError struct{ error }

// parseFlags reads jitd's flags from args (without the program's name),
// with defaults from the environment, and checks them: an error names the
// flag at fault. flag.ErrHelp for -h.
func parseFlags(args []string) (cmdline, error) {
	var f cmdline
	o := &f.opts
	fs := flag.NewFlagSet("jitd", flag.ContinueOnError)
	fs.StringVar(&o.ConfigFile, "config", os.Getenv("JIT_CONFIG"), "configuration file to apply at start (env JIT_CONFIG)")
	fs.StringVar(&o.DataDir, "data-dir", envOr("JIT_DATA_DIR", "./data"), "directory for JetStream's files (env JIT_DATA_DIR)")
	fs.StringVar(&o.NATSListen, "nats-listen", envOr("JIT_NATS_LISTEN", "127.0.0.1:4222"), "embedded NATS client address host:port")
	fs.StringVar(&o.HTTPListen, "http-listen", envOr("JIT_HTTP_LISTEN", "127.0.0.1:8080"), "HTTP address for /healthz, the approver console and the HTTP API (empty disables)")
	fs.BoolVar(&o.SyncAlways, "sync-always", false, "fsync every JetStream write (survives power loss, slower)")
	fs.BoolVar(&o.PProf, "pprof", false, "serve Go's profiler at /debug/pprof/ on --http-listen")
	fs.StringVar(&o.TLSCert, "tls-cert", os.Getenv("JIT_TLS_CERT"), "TLS certificate (PEM) of the NATS listener (env JIT_TLS_CERT); with --tls-key, clients must use TLS")
	fs.StringVar(&o.TLSKey, "tls-key", os.Getenv("JIT_TLS_KEY"), "TLS key (PEM) of the NATS listener (env JIT_TLS_KEY)")
	fs.BoolVar(&o.AllowPlaintext, "allow-plaintext", false, "allow a NATS listener (or, without --cluster-tls-*, a route listener) beyond loopback without TLS (credentials, approver tokens and replicated data then cross the network in clear)")
	fs.BoolVar(&o.NoAuth, "insecure-no-auth", false, "run WITHOUT authentication or isolation: every client may do anything (only to measure what isolation costs)")
	fs.BoolVar(&f.noMetrics, "no-metrics", false, "record no metrics on the request path (only to measure what the instrumentation costs; /metrics still answers)")
	fs.StringVar(&f.level, "log-level", envOr("LOG_LEVEL", "info"), "log level: debug, info, warn, error")
	fs.StringVar(&f.memLimit, "memory-limit", os.Getenv("JIT_MEMORY_LIMIT"), "soft memory limit of the Go runtime, e.g. 256MiB or off (env JIT_MEMORY_LIMIT; empty: GOMEMLIMIT or none)")
	maxAge := fs.String("audit-max-age", os.Getenv("JIT_AUDIT_MAX_AGE"), service.AuditMaxAgeUsage)
	fs.StringVar(&o.AuditKeyFile, "audit-key", os.Getenv("JIT_AUDIT_KEY"), "the auditor's Ed25519 signing key, made if missing (env JIT_AUDIT_KEY; default <data-dir>/keys/audit-ed25519.key)")
	fs.DurationVar(&o.CheckpointInterval, "checkpoint-interval", 0, "time between signed audit checkpoints (default 30s)")
	fs.StringVar(&o.KeysDir, "keys-dir", os.Getenv("JIT_KEYS_DIR"), "signing keys and registry of principals (env JIT_KEYS_DIR; default <data-dir>/keys); the nodes of a cluster share one, or copies of one")
	fs.StringVar(&o.ServerName, "server-name", envOr("JIT_SERVER_NAME", "jitd"), "the embedded server's name; each node of a cluster its own (env JIT_SERVER_NAME)")
	fs.StringVar(&o.ClusterListen, "cluster-listen", os.Getenv("JIT_CLUSTER_LISTEN"), "host:port to accept routes from the other nodes of a NATS cluster (env JIT_CLUSTER_LISTEN; empty: a single node)")
	fs.StringVar(&o.ClusterName, "cluster-name", envOr("JIT_CLUSTER_NAME", "jit"), "the cluster's name, the same on every node (env JIT_CLUSTER_NAME)")
	fs.StringVar(&o.ClusterTLSCert, "cluster-tls-cert", os.Getenv("JIT_CLUSTER_TLS_CERT"), "TLS certificate (PEM) this node presents on its routes, for server and client authentication (env JIT_CLUSTER_TLS_CERT); with --cluster-tls-key and --cluster-tls-ca, routes use mutual TLS")
	fs.StringVar(&o.ClusterTLSKey, "cluster-tls-key", os.Getenv("JIT_CLUSTER_TLS_KEY"), "the key (PEM) of --cluster-tls-cert (env JIT_CLUSTER_TLS_KEY)")
	fs.StringVar(&o.ClusterTLSCA, "cluster-tls-ca", os.Getenv("JIT_CLUSTER_TLS_CA"), "the CA (PEM) that signs every node's route certificate: a route whose certificate it did not sign is refused (env JIT_CLUSTER_TLS_CA)")
	routes := fs.String("routes", os.Getenv("JIT_ROUTES"), "the cluster's route addresses, comma separated (host:port or nats-route://host:port; env JIT_ROUTES)")
	replicas := fs.Int("replicas", envInt("JIT_REPLICAS", 0), "replicas of the audit stream and buckets (env JIT_REPLICAS; default: 3 with --cluster-listen; on a single node 0, which keeps what exists and creates with 1)")
	auditorOn := fs.Bool("auditor", true, "run the auditor here; in a cluster give it to exactly one node (--auditor) and --auditor=false to the others")
	fs.BoolVar(&o.BrokerOnly, "broker-only", false, "run the embedded NATS server alone, without the services, writing nothing to the stream and buckets (a new cluster while jitctl topology migrate moves a standalone deployment into it)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return f, err
		}
		return f, usageError{err}
	}
	auditorGiven := false
	fs.Visit(func(fl *flag.Flag) { auditorGiven = auditorGiven || fl.Name == "auditor" })
	if err := clusterOptions(o, *routes, *replicas, *auditorOn, auditorGiven); err != nil {
		return f, err
	}
	var err error
	if o.AuditMaxAge, err = service.ParseAge(*maxAge); err != nil {
		return f, fmt.Errorf("--audit-max-age: %w", err)
	}
	return f, nil
}

// clusterOptions sets o's cluster fields from the flags: routes (comma
// separated), replicas, and whether the auditor runs (auditorGiven: the
// flag was on the command line, which a cluster node must say).
func clusterOptions(o *allinone.Options, routes string, replicas int, auditor, auditorGiven bool) error {
	if o.ClusterListen != "" && !auditorGiven && !o.BrokerOnly {
		return errors.New("--cluster-listen: say where the auditor runs: --auditor on exactly one node, --auditor=false on the others")
	}
	if replicas < 0 || replicas > 5 {
		return fmt.Errorf("--replicas %d: 1 to 5 (0 keeps what exists)", replicas)
	}
	if replicas == 0 && o.ClusterListen != "" {
		// A cluster node's default: an acknowledged grant or revocation is
		// on two of three nodes before it is acknowledged, so the loss of
		// any one node loses none (operations.md, "Durability").
		replicas = 3
	}
	o.NoAuditor, o.Replicas, o.Routes = !auditor, replicas, nil
	for _, r := range strings.Split(routes, ",") {
		if r = strings.TrimSpace(r); r != "" {
			o.Routes = append(o.Routes, r)
		}
	}
	if len(o.Routes) > 0 && o.ClusterListen == "" {
		return errors.New("--routes needs --cluster-listen")
	}
	return clusterTLS(o)
}

// clusterTLS checks the route TLS flags: all three or none, and only on a
// cluster node. The files themselves are read when the server starts.
func clusterTLS(o *allinone.Options) error {
	given := map[string]bool{"--cluster-tls-cert": o.ClusterTLSCert != "", "--cluster-tls-key": o.ClusterTLSKey != "", "--cluster-tls-ca": o.ClusterTLSCA != ""}
	var have, missing []string
	for _, name := range []string{"--cluster-tls-cert", "--cluster-tls-key", "--cluster-tls-ca"} {
		if given[name] {
			have = append(have, name)
		} else {
			missing = append(missing, name)
		}
	}
	switch {
	case len(have) == 0:
		return nil
	case o.ClusterListen == "":
		return fmt.Errorf("%s needs --cluster-listen: route TLS is for a cluster node", have[0])
	case len(missing) > 0:
		return fmt.Errorf("%s without %s: routes use mutual TLS, which needs this node's certificate, its key and the CA that signs every node's certificate",
			strings.Join(have, " and "), strings.Join(missing, " and "))
	}
	return nil
}

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
