// Package allinone is jitd: an embedded nats-server with JetStream and the
// five JIT services (requester, policy, approval, revoker, auditor) in one process, plus a small HTTP endpoint for health.
// It is a package (not only a main) so that end-to-end tests run the same
// App on free ports.
package allinone

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/embedded"
	"github.com/agentjit/jit/pkg/service"
	"github.com/agentjit/jit/services/approval"
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
	// AuditKeyFile is the auditor's Ed25519 signing key; empty means
	// <DataDir>/keys/audit-ed25519.key (made on first start and kept).
	AuditKeyFile string
	// CheckpointInterval is the time between the auditor's checkpoints
	// (zero: auditor.DefaultInterval).
	CheckpointInterval time.Duration
}

// DefaultAuditKeyFile is where jitd keeps the audit signing key in dataDir.
func DefaultAuditKeyFile(dataDir string) string {
	return filepath.Join(dataDir, "keys", "audit-ed25519.key")
}

// App is a running jitd.
type App struct {
	opts     Options
	log      zerolog.Logger
	server   *server.Server
	nc       *nats.Conn
	services []service.Service
	http     *http.Server
	httpAddr string
	cancel   context.CancelFunc
	auditor  *auditor.Auditor
}

// AuditPublicKey is the public key of the auditor's signing key, once
// running.
func (a *App) AuditPublicKey() ed25519.PublicKey { return a.auditor.PublicKey() }

// New returns an App that Run starts.
func New(o Options, log zerolog.Logger) *App { return &App{opts: o, log: log} }

// Run starts the broker, the services and HTTP, and returns once all run.
// Close stops them.
func (a *App) Run(ctx context.Context) (err error) {
	ctx, a.cancel = context.WithCancel(ctx)
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	a.server, err = embedded.Start(embedded.Options{
		Listen:     a.opts.NATSListen,
		StoreDir:   filepath.Join(a.opts.DataDir, "jetstream"),
		SyncAlways: a.opts.SyncAlways,
	})
	if err != nil {
		return err
	}
	a.nc, err = service.Connect(a.server.ClientURL(), "jitd", a.log)
	if err != nil {
		return err
	}
	deps, err := service.Prepare(ctx, a.nc, a.opts.ConfigFile, "jitd", a.log, broker.Options{AuditMaxAge: a.opts.AuditMaxAge})
	if err != nil {
		return err
	}
	with := func(name string) service.Deps {
		d := deps
		d.Log = a.log.With().Str("service", name).Logger()
		return d
	}
	// The auditor starts first and so stops last: its shutdown checkpoint
	// covers what the others published while stopping. The revoker starts
	// next so that it restores pending expirations before anything new is
	// granted; the edge opens last.
	keyFile := a.opts.AuditKeyFile
	if keyFile == "" {
		keyFile = DefaultAuditKeyFile(a.opts.DataDir)
	}
	a.auditor = auditor.New(with("auditor"), auditor.Options{KeyFile: keyFile, Interval: a.opts.CheckpointInterval})
	appr := approval.New(with("approval"))
	for _, svc := range []service.Service{
		a.auditor,
		revoker.New(with("revoker")),
		appr,
		policy.New(with("policy")),
		requester.New(with("requester")),
	} {
		if err := svc.Start(ctx); err != nil {
			return err
		}
		a.services = append(a.services, svc)
	}
	if a.opts.HTTPListen != "" {
		ln, err := net.Listen("tcp", a.opts.HTTPListen)
		if err != nil {
			return fmt.Errorf("http listen %s: %w", a.opts.HTTPListen, err)
		}
		a.httpAddr = ln.Addr().String()
		// The approver console and the HTTP JSON API are served under "/"
		// next to /healthz.
		appr.SetPublicAddr(a.httpAddr)
		a.http = &http.Server{Handler: a.routes(deps, appr.Handler()), ReadHeaderTimeout: 5 * time.Second}
		a.http.RegisterOnShutdown(appr.CloseStreams)
		go func() {
			if err := a.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error().Err(err).Msg("http")
			}
		}()
	}
	a.log.Info().Str("nats", a.server.ClientURL()).Str("http", a.httpAddr).Str("data_dir", a.opts.DataDir).Msg("jitd running")
	return nil
}

// NATSURL is the embedded server's client URL.
func (a *App) NATSURL() string { return a.server.ClientURL() }

// HTTPAddr is the address HTTP listens on, once running.
func (a *App) HTTPAddr() string { return a.httpAddr }

// Close stops HTTP, the services in reverse order, the connection and the
// broker. It is safe to call more than once.
func (a *App) Close() {
	if a.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = a.http.Shutdown(ctx)
		cancel()
		a.http = nil
	}
	for i := len(a.services) - 1; i >= 0; i-- {
		a.services[i].Stop()
	}
	a.services = nil
	if a.cancel != nil {
		a.cancel()
	}
	if a.nc != nil {
		_ = a.nc.Drain()
		a.nc = nil
	}
	if a.server != nil {
		a.server.Shutdown()
		a.server.WaitForShutdown()
		a.server = nil
	}
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
	if a.opts.PProf {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}
