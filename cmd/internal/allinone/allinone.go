// Package allinone is jitd: an embedded nats-server with JetStream and the
// five JIT services (requester, policy, approval, revoker, auditor) in one process, plus a small HTTP endpoint for health.
// It is a package (not only a main) so that end-to-end tests run the same
// App on free ports.
package allinone

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/embedded"
	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/approval"
	"github.com/agentjit/jit/services/approval/web"
	"github.com/agentjit/jit/services/auditor"
	"github.com/agentjit/jit/services/policy"
	"github.com/agentjit/jit/services/requester"
	"github.com/agentjit/jit/services/revoker"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// Options configure an App.
type Options struct {
	// ConfigFile is applied at start (required on the first start of a data
	// directory; later starts may omit it and keep the stored one).
	ConfigFile string
	// DataDir holds JetStream's files: grants, suspensions and the audit
	// stream survive a restart on the same directory.
	DataDir string
	// NATSListen is the embedded server's client address ("127.0.0.1:-1"
	// picks a free port).
	NATSListen string
	// HTTPListen serves /healthz, the approver console (/console/) and the
	// HTTP JSON API (/api/v1/); empty disables HTTP.
	HTTPListen string
	// AuditMaxAge, if set, is how long the audit stream keeps events
	// (broker.Options.AuditMaxAge); zero keeps the stream's own limits.
	AuditMaxAge time.Duration
	// SyncAlways makes JetStream fsync every write.
	SyncAlways bool
	// PProf serves Go's profiler under /debug/pprof/ on HTTPListen. Off by
	// default: profiles reveal internals and cost CPU while taken.
	PProf bool
	// TLSCert and TLSKey make the NATS listener require TLS.
	TLSCert, TLSKey string
	// AllowPlaintext lets the NATS listener take connections beyond the
	// loopback interface without TLS (credentials and approver tokens then
	// cross the network in clear).
	AllowPlaintext bool
	// NoAuth runs the broker without accounts: every client may do
	// everything and every caller is trusted to say who it is. Only for
	// measuring what isolation costs (BENCH.md) and for development.
	NoAuth bool
	// ApprovalOptions are passed to the approval service.
	ApprovalOptions []approval.Option
	// ConsoleOptions are passed to its console (tests: e.g.
	// web.WithSessionClock to end console sessions).
	ConsoleOptions []web.Option
	// AuditKeyFile is the auditor's Ed25519 signing key; empty means
	// <DataDir>/keys/audit-ed25519.key (made on first start and kept).
	AuditKeyFile string
	// CheckpointInterval is the time between the auditor's checkpoints
	// (zero: auditor.DefaultInterval).
	CheckpointInterval time.Duration
	// KeysDir holds the signing keys and the registry of principals
	// (auth.Store); empty means <DataDir>/keys. The nodes of a cluster
	// share one (or copies of one): they must trust the same operator.
	KeysDir string
	// ServerName names the embedded server (default "jitd"); every node of
	// a cluster needs its own.
	ServerName string
	// ClusterListen, if set, makes the embedded server a node of a NATS
	// cluster that accepts routes on this "host:port".
	ClusterListen string
	// ClusterName is the cluster's name (default "jit").
	ClusterName string
	// Routes are the other nodes' route addresses (host:port or
	// nats-route://host:port); this node's own may be among them.
	Routes []string
	// ClusterTLSCert, ClusterTLSKey and ClusterTLSCA, all three or none,
	// put the routes under mutual TLS (embedded.Cluster's TLSCert, TLSKey
	// and TLSCA): every node presents its certificate and requires one
	// the CA signed. With them, ClusterListen may be beyond loopback
	// without AllowPlaintext.
	ClusterTLSCert, ClusterTLSKey, ClusterTLSCA string
	// Replicas for the stream and buckets when they are created, and what
	// Run moves existing ones to (broker.Options.Replicas); zero keeps
	// what exists (one replica when created).
	Replicas int
	// NoAuditor leaves the auditor out: in a cluster it runs on one node
	// (its chain is one sequence over the whole stream).
	NoAuditor bool
	// BrokerOnly runs the embedded server alone (its authentication and
	// cluster as configured): no service, no configuration applied, no
	// credential written, no HTTP, so the stream and buckets are neither
	// created nor written. A new cluster runs so while jitctl topology
	// migrate moves a standalone deployment's data into it.
	BrokerOnly bool
}

// DefaultAuditKeyFile is where jitd keeps the audit signing key in dataDir.
func DefaultAuditKeyFile(dataDir string) string {
	return filepath.Join(dataDir, "keys", "audit-ed25519.key")
}

// keysDir is where the App keeps its signing keys.
func (a *App) keysDir() string {
	if a.opts.KeysDir != "" {
		return a.opts.KeysDir
	}
	return filepath.Join(a.opts.DataDir, "keys")
}

// App is a running jitd.
type App struct {
	opts     Options
	base     zerolog.Logger // without a service key
	log      zerolog.Logger // base naming jitd
	server   *server.Server
	lock     *embedded.StoreLock
	nc       *nats.Conn
	sys      *nats.Conn
	store    *auth.Store
	conns    []*nats.Conn
	services []service.Service
	http     *http.Server
	httpAddr string
	console  *web.Console
	cancel   context.CancelFunc
	auditor  *auditor.Auditor
	observed func() // ends the gauges observe.go provides
}

// AuditPublicKey is the public key of the auditor's signing key, once
// running; nil without an auditor.
func (a *App) AuditPublicKey() ed25519.PublicKey {
	if a.auditor == nil {
		return nil
	}
	return a.auditor.PublicKey()
}

// New returns an App that Run starts. log is the process's logger without a
// "service" key (service.BaseLogger): the App's own lines carry
// "service":"jitd" and each service's lines its own name, once per line.
func New(o Options, log zerolog.Logger) *App {
	return &App{opts: o, base: log, log: log.With().Str("service", "jitd").Logger()}
}

// Run starts the broker, the services and HTTP, and returns once all run.
// Close stops them.
func (a *App) Run(ctx context.Context) (err error) {
	ctx, a.cancel = context.WithCancel(ctx)
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if err := auth.CheckListen(a.opts.NATSListen, a.opts.TLSCert != "", a.opts.AllowPlaintext); err != nil {
		return err
	}
	storeDir := filepath.Join(a.opts.DataDir, "jetstream")
	// NATS servers do not lock their store; two on one store corrupt it,
	// and jitctl topology migrate must know that none runs on it.
	if a.lock, err = embedded.LockStore(storeDir); err != nil {
		return err
	}
	eo := embedded.Options{
		Listen:     a.opts.NATSListen,
		StoreDir:   storeDir,
		ServerName: a.opts.ServerName,
		SyncAlways: a.opts.SyncAlways,
		TLSCert:    a.opts.TLSCert,
		TLSKey:     a.opts.TLSKey,
		Log:        &a.log,
	}
	if a.opts.ClusterListen != "" {
		// Routes without TLS of their own need, off loopback, the same
		// explicit consent as a plaintext client listener.
		routeTLS := a.opts.ClusterTLSCert != "" || a.opts.ClusterTLSKey != "" || a.opts.ClusterTLSCA != ""
		if err := auth.CheckRouteListen(a.opts.ClusterListen, routeTLS, a.opts.AllowPlaintext); err != nil {
			return fmt.Errorf("--cluster-listen: %w", err)
		}
		eo.Cluster = &embedded.Cluster{Name: a.opts.ClusterName, Listen: a.opts.ClusterListen, Routes: a.opts.Routes,
			TLSCert: a.opts.ClusterTLSCert, TLSKey: a.opts.ClusterTLSKey, TLSCA: a.opts.ClusterTLSCA}
	}
	if !a.opts.NoAuth {
		if a.store, err = auth.OpenStore(a.keysDir()); err != nil {
			return err
		}
		resolver := filepath.Join(a.opts.DataDir, "jwt")
		eo.Configure = func(o *server.Options) error { return a.store.ConfigureServer(o, resolver) }
		if eo.Cluster != nil {
			// Only a server started from the same keys may join.
			eo.Cluster.Username = auth.RouteUser
			if eo.Cluster.Password, err = a.store.RoutePassword(); err != nil {
				return err
			}
		}
	} else {
		a.log.Warn().Msg("running WITHOUT authentication (--insecure-no-auth): any client may do anything and is trusted to say who it is")
	}
	a.server, err = embedded.Start(eo)
	if err != nil {
		return err
	}
	if a.opts.BrokerOnly {
		ev := a.log.Info().Str("nats", a.server.ClientURL()).Str("data_dir", a.opts.DataDir).Bool("broker_only", true)
		if a.opts.ClusterListen != "" {
			ev = ev.Str("server_name", a.server.Name()).Str("cluster", a.server.ClusterAddr().String())
		}
		ev.Msg("jitd running: the broker only, no services")
		return nil
	}
	if a.nc, err = a.connect(auth.Service(auth.ServiceJitd)); err != nil {
		return err
	}
	deps, err := service.Prepare(ctx, a.nc, a.log, service.PrepareOptions{
		ConfigFile: a.opts.ConfigFile, Source: "jitd", Secrets: true,
		Topology: broker.Options{AuditMaxAge: a.opts.AuditMaxAge, Replicas: a.opts.Replicas, Update: true},
	})
	if err != nil {
		return err
	}
	// Every service but approval sees the configuration without its
	// secrets; approval sees all of it (deps.Config, followed above).
	public, err := config.Watch(ctx, deps.Buckets.Config, a.log)
	if err != nil {
		return err
	}
	if a.store != nil {
		if err := a.provision(ctx, deps); err != nil {
			return err
		}
	}
	with := func(name string) (service.Deps, error) {
		nc, err := a.connect(auth.Service(name))
		if err != nil {
			return service.Deps{}, err
		}
		d, err := deps.Rebind(ctx, nc)
		if err != nil {
			return service.Deps{}, err
		}
		d.Log = a.base.With().Str("service", name).Logger()
		if name != auth.ServiceApproval {
			d.Config = public
		}
		return d, nil
	}
	// The auditor starts first and so stops last: its shutdown checkpoint
	// covers what the others published while stopping. The revoker starts
	// next so that it restores pending expirations before anything new is
	// granted; the edge opens last.
	keyFile := a.opts.AuditKeyFile
	if keyFile == "" {
		keyFile = filepath.Join(a.keysDir(), "audit-ed25519.key")
	}
	var appr *approval.Service
	var apprDeps service.Deps
	names := []string{auth.ServiceAuditor, auth.ServiceRevoker, auth.ServiceApproval, auth.ServicePolicy, auth.ServiceRequester}
	if a.opts.NoAuditor {
		names = names[1:]
	}
	for _, name := range names {
		d, err := with(name)
		if err != nil {
			return err
		}
		var svc service.Service
		switch name {
		case auth.ServiceAuditor:
			a.auditor = auditor.New(d, auditor.Options{KeyFile: keyFile, Interval: a.opts.CheckpointInterval})
			svc = a.auditor
		case auth.ServiceRevoker:
			svc = revoker.New(d)
		case auth.ServiceApproval:
			appr, apprDeps = approval.New(d, a.opts.ApprovalOptions...), d
			svc = appr
		case auth.ServicePolicy:
			svc = policy.New(d)
		case auth.ServiceRequester:
			svc = requester.New(d)
		}
		if err := svc.Start(ctx); err != nil {
			return err
		}
		a.services = append(a.services, svc)
	}
	a.observed = a.observe(deps, appr)
	if a.opts.HTTPListen != "" {
		ln, err := net.Listen("tcp", a.opts.HTTPListen)
		if err != nil {
			return fmt.Errorf("http listen %s: %w", a.opts.HTTPListen, err)
		}
		a.httpAddr = ln.Addr().String()
		// The approver console and the HTTP JSON API are served under "/"
		// next to /healthz, on the approval service's own connection.
		appr.SetPublicAddr(a.httpAddr)
		a.console = web.New(appr, apprDeps, a.opts.ConsoleOptions...)
		hd := deps
		hd.Config = public
		srv := &http.Server{Handler: a.routes(hd, a.console.Handler()), ReadHeaderTimeout: 5 * time.Second}
		srv.RegisterOnShutdown(a.console.CloseStreams)
		a.http = srv
		go func() {
			// srv, not a.http: Close clears a.http, maybe before Serve runs.
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error().Err(err).Msg("http")
			}
		}()
	}
	ev := a.log.Info().Str("nats", a.server.ClientURL()).Str("http", a.httpAddr).Str("data_dir", a.opts.DataDir)
	if a.opts.ClusterListen != "" {
		ev = ev.Str("server_name", a.server.Name()).Str("cluster", a.server.ClusterAddr().String())
	}
	if a.store != nil {
		ev = ev.Str("creds", a.CredsDir())
	}
	ev.Msg("jitd running")
	return nil
}

// CredsDir is where jitd keeps one credentials file per principal.
func (a *App) CredsDir() string { return filepath.Join(a.opts.DataDir, "creds") }

// connect opens an in-process connection to the embedded server as
// principal p (a fresh credential each start; none without authentication).
func (a *App) connect(p auth.Principal) (*nats.Conn, error) {
	opts, err := a.inProcess()
	if err != nil {
		return nil, err
	}
	if a.store != nil {
		is, err := a.store.Ephemeral(p)
		if err != nil {
			return nil, err
		}
		copts, err := is.Options()
		if err != nil {
			return nil, err
		}
		opts = append(opts, copts...)
	}
	nc, err := service.Connect(a.server.ClientURL(), p.ID, a.log, opts...)
	if err != nil {
		return nil, err
	}
	a.conns = append(a.conns, nc)
	return nc, nil
}

// inProcess gives the options of an in-process connection to the embedded
// server. When the listener requires TLS the in-process pipe must speak it
// too; jitd then pins its own certificate rather than trusting a CA, since
// the pipe never leaves the process and the certificate need not name it.
func (a *App) inProcess() ([]nats.Option, error) {
	opts := []nats.Option{nats.InProcessServer(a.server)}
	if a.opts.TLSCert == "" {
		return opts, nil
	}
	pair, err := tls.LoadX509KeyPair(a.opts.TLSCert, a.opts.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	own := pair.Certificate[0]
	return append(opts, nats.Secure(&tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is by pinning, below: the peer must present exactly
		// jitd's own certificate.
		InsecureSkipVerify: true, //nolint:gosec // pinned in VerifyPeerCertificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], own) {
				return errors.New("in-process TLS: the server is not presenting jitd's own certificate")
			}
			return nil
		},
	})), nil
}

// provision makes sure every principal of the configuration (its agents and
// guardrail sources) and the default operator, SIEM reader and checker have
// a credentials file in CredsDir, that the server knows their accounts, and
// that each reader of the audit trail has its durable consumer.
func (a *App) provision(ctx context.Context, d service.Deps) error {
	sysPath, err := a.store.SystemCreds()
	if err != nil {
		return err
	}
	opts, err := a.inProcess()
	if err != nil {
		return err
	}
	a.sys, err = nats.Connect(a.server.ClientURL(), append(opts, nats.UserCredentials(sysPath), nats.Name("jitd-system"))...)
	if err != nil {
		return fmt.Errorf("system connection: %w", err)
	}
	want := []auth.Wanted{{Principal: auth.DefaultOperator}, {Principal: auth.DefaultSIEM}, {Principal: auth.DefaultChecker}}
	cfg := d.Config.Current()
	for _, ag := range cfg.Agents {
		want = append(want, auth.Wanted{Principal: auth.Principal{Kind: auth.KindAgent, ID: ag.ID}})
	}
	for _, g := range cfg.GuardrailSources {
		want = append(want, auth.Wanted{Principal: auth.Principal{Kind: auth.KindGuardrail, ID: g.Name}, Scope: auth.Scope{Agents: g.Agents}})
	}
	res, err := a.store.EnsureCreds(a.CredsDir(), want)
	if err != nil {
		return err
	}
	if err := auth.Push(ctx, a.sys, res.Accounts); err != nil {
		return err
	}
	for _, p := range res.Issued {
		a.log.Info().Str("principal", p.String()).Str("creds", filepath.Join(a.CredsDir(), p.CredsFile())).Msg("credential issued")
	}
	principals, err := a.store.Principals()
	if err != nil {
		return err
	}
	for _, pi := range principals {
		if err := retryStart(ctx, a.log, func(ctx context.Context) error {
			return broker.EnsureAuditDurable(ctx, d.JS, pi.Principal.AuditDurable())
		}); err != nil {
			return err
		}
	}
	return nil
}

// retryStart runs fn, with 2 s for each attempt, until it succeeds or 30 s
// have passed. On a cluster whose nodes start together, or a node that
// rejoins while the others elect the leaders of what it led, a JetStream
// request can go unanswered for seconds: a start should wait it out, not
// exit.
func retryStart(ctx context.Context, log zerolog.Logger, fn func(context.Context) error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := fn(actx)
		cancel()
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		log.Warn().Err(err).Msg("waiting for JetStream")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// NATSURL is the embedded server's client URL.
func (a *App) NATSURL() string { return a.server.ClientURL() }

// HTTPAddr is the address HTTP listens on, once running.
func (a *App) HTTPAddr() string { return a.httpAddr }

// Close stops HTTP and the console, the services in reverse order, the
// connection and the broker. It is safe to call more than once.
func (a *App) Close() {
	if a.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = a.http.Shutdown(ctx)
		cancel()
		a.http = nil
	}
	if a.console != nil {
		a.console.Close()
		a.console = nil
	}
	for i := len(a.services) - 1; i >= 0; i-- {
		a.services[i].Stop()
	}
	a.services = nil
	if a.observed != nil {
		a.observed()
		a.observed = nil
	}
	if a.cancel != nil {
		a.cancel()
	}
	for _, nc := range a.conns {
		_ = nc.Drain()
	}
	a.conns, a.nc = nil, nil
	if a.sys != nil {
		a.sys.Close()
		a.sys = nil
	}
	if a.server != nil {
		embedded.Stop(a.server)
		a.server = nil
	}
	// Only once the server is down: it no longer writes to the store.
	a.lock.Unlock()
	a.lock = nil
}

func (a *App) routes(d service.Deps, console http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", console)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		status := http.StatusOK
		body := map[string]any{"nats": a.nc.Status().String()}
		if !a.nc.IsConnected() || a.server == nil || !a.server.JetStreamEnabled() {
			status = http.StatusServiceUnavailable
		}
		if c := d.Config.Current(); c != nil {
			body["config_digest"] = c.Digest()
			body["config_revision"] = d.Config.Revision()
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	})
	a.observeRoutes(mux, d)
	if a.opts.PProf {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}
