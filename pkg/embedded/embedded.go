// Package embedded runs a NATS server with JetStream inside the process:
// the all-in-one jitd's broker and the tests' real broker.
package embedded

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// Options for an embedded server.
type Options struct {
	// Listen is "host:port"; port -1 picks a free port. Default
	// "127.0.0.1:4222".
	Listen string
	// StoreDir is where JetStream keeps its files.
	StoreDir string
	// ServerName defaults to "jitd".
	ServerName string
	// SyncAlways makes JetStream fsync every write (slower, survives power
	// loss).
	SyncAlways bool
	// TLSCert and TLSKey, if set, make the client listener require TLS
	// with this certificate.
	TLSCert, TLSKey string
	// Cluster, if set, makes the server one node of a NATS cluster: its
	// JetStream then runs clustered (streams and buckets may have up to as
	// many replicas as there are nodes). Nil: a standalone server.
	Cluster *Cluster
	// Configure, if set, adjusts the server's options last (for example
	// auth.Store.ConfigureServer, which turns on operator-mode
	// authentication).
	Configure func(*server.Options) error
	// Log, if set, receives the server's warnings and errors (a route or a
	// client refused, a TLS handshake that failed, a slow consumer), each
	// with component=nats-server. Nil: they are dropped.
	Log *zerolog.Logger
}

// Cluster is how a server joins a NATS cluster.
type Cluster struct {
	// Name is the cluster's name, the same on every node (default "jit").
	Name string
	// Listen is "host:port" where the server accepts routes from the other
	// nodes; port -1 picks a free port. Only this address is bound.
	Listen string
	// Routes are the other nodes' route URLs (nats-route://host:port or
	// host:port); listing this node's own address too is harmless, so every
	// node can be given the same list. Empty: the node only accepts routes
	// (the first node of a cluster that the others point at).
	Routes []string
	// Username and Password, if set, are required of every route and sent
	// on every route this node opens: a server without them cannot join.
	Username, Password string
	// TLSCert, TLSKey and TLSCA, if set (all three or none), put every
	// route under mutual TLS: this node presents TLSCert on the routes it
	// accepts and on those it opens, and requires of its peer a
	// certificate that TLSCA signed; a route without TLS, or whose
	// certificate another CA signed, is closed before it carries anything.
	// TLSCert must allow both server and client authentication (a node is
	// the one and the other), and name (DNS or IP SAN) the host the other
	// nodes reach it at, as given in their Routes.
	TLSCert, TLSKey, TLSCA string
}

// ErrAddrInUse is returned by Start when another process already listens
// on the address asked for.
var ErrAddrInUse = errors.New("the address is already in use")

// readyTimeout bounds the wait for a server that neither accepts
// connections nor reports a fatal error.
const readyTimeout = 10 * time.Second

// Start starts a server and waits until it accepts connections. It fails at
// once, without waiting, when the address is taken (an error wrapping
// ErrAddrInUse that names the address) or the server reports a fatal error
// while starting (JetStream's store, say).
func Start(o Options) (*server.Server, error) {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:4222"
	}
	host, portStr, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("nats listen address %q: %w", o.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats listen port %q: %w", portStr, err)
	}
	if o.ServerName == "" {
		o.ServerName = "jitd"
	}
	opts := &server.Options{
		ServerName: o.ServerName,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		MaxPayload: 1 << 20,
		SyncAlways: o.SyncAlways,
	}
	if o.TLSCert != "" || o.TLSKey != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: o.TLSCert, KeyFile: o.TLSKey})
		if err != nil {
			return nil, fmt.Errorf("nats tls: %w", err)
		}
		opts.TLSConfig, opts.TLS = tc, true
	}
	if o.Cluster != nil {
		if err := clusterOptions(opts, *o.Cluster); err != nil {
			return nil, err
		}
	}
	if o.Configure != nil {
		if err := o.Configure(opts); err != nil {
			return nil, err
		}
	}
	if port > 0 {
		// The server only logs a listen error and never becomes ready:
		// try the address first, so that a taken port is reported as such.
		ln, err := net.Listen("tcp", net.JoinHostPort(host, portStr))
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("nats listen %s: %w (another nats-server or jitd runs there?)", o.Listen, ErrAddrInUse)
			}
			return nil, fmt.Errorf("nats listen %s: %w", o.Listen, err)
		}
		_ = ln.Close()
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	fatal := &fatalLog{failed: make(chan struct{})}
	if o.Log != nil {
		l := o.Log.With().Str("component", "nats-server").Logger()
		fatal.log = &l
	}
	s.SetLogger(fatal, false, false)
	go s.Start()
	// Poll readiness in short slices, so that a fatal error ends the wait
	// at once instead of after readyTimeout.
	for deadline := time.Now().Add(readyTimeout); ; {
		if s.ReadyForConnections(50 * time.Millisecond) {
			return s, nil
		}
		select {
		case <-fatal.failed:
			s.Shutdown()
			return nil, fmt.Errorf("nats server on %s: %s", o.Listen, fatal.msg)
		default:
		}
		if time.Now().After(deadline) {
			s.Shutdown()
			return nil, fmt.Errorf("nats server on %s did not accept connections within %s", o.Listen, readyTimeout)
		}
	}
}

// The routes' liveness check: a ping every RoutePingInterval, and a route
// with RouteMaxPingsOut pings unanswered is closed, so a node that stopped
// answering is cut off within RouteStaleAfter.
const (
	RoutePingInterval = 2 * time.Second
	RouteMaxPingsOut  = 3
	RouteStaleAfter   = RoutePingInterval * (RouteMaxPingsOut + 1)
)

// clusterOptions sets opts' cluster block from c.
func clusterOptions(opts *server.Options, c Cluster) error {
	host, portStr, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("cluster listen address %q: %w", c.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("cluster listen port %q: %w", portStr, err)
	}
	if c.Name == "" {
		c.Name = "jit"
	}
	opts.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: port,
		Username: c.Username, Password: c.Password}
	if c.TLSCert != "" || c.TLSKey != "" || c.TLSCA != "" {
		if opts.Cluster.TLSConfig, err = routeTLS(c.TLSCert, c.TLSKey, c.TLSCA); err != nil {
			return fmt.Errorf("cluster tls: %w", err)
		}
	}
	// A node that stops answering (SIGSTOP, a hung machine, a partition
	// that drops packets) loses its routes after RouteStaleAfter, not
	// after NATS's default of two pings two minutes apart.
	opts.Cluster.PingInterval, opts.Cluster.MaxPingsOut = RoutePingInterval, RouteMaxPingsOut
	// Stop (lame-duck mode) hands the leaderships over, then closes the
	// clients left within these, not NATS's default two minutes.
	opts.LameDuckDuration, opts.LameDuckGracePeriod = 3*time.Second, time.Second
	for _, r := range c.Routes {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		if !strings.Contains(r, "://") {
			r = "nats-route://" + r
		}
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			return fmt.Errorf("route %q: not a nats-route://host:port URL", r)
		}
		if c.Username != "" {
			u.User = url.UserPassword(c.Username, c.Password)
		}
		opts.Routes = append(opts.Routes, u)
	}
	return nil
}

// ErrRouteTLSIncomplete is returned by Start for a Cluster with some of
// TLSCert, TLSKey and TLSCA but not all three.
var ErrRouteTLSIncomplete = errors.New("a certificate, its key and the CA that signs the nodes' certificates are all needed")

// routeTLS is the TLS configuration of a cluster's routes: nats-server's
// own for a cluster block with a tls block (strict verification both
// ways, the CA trusted as server and as client), from the files given.
// The certificate is checked against the CA at once, for both uses, so
// that a mistake fails the start rather than every route.
func routeTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, ErrRouteTLSIncomplete
	}
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: certFile, KeyFile: keyFile, CaFile: caFile, Verify: true})
	if err != nil {
		return nil, err
	}
	if tc == nil || tc.ClientCAs == nil {
		// GenTLSConfig returns no error for a CA file it read as nil.
		return nil, fmt.Errorf("no CA in %s", caFile)
	}
	// A node opens routes as a client, too: it verifies its peer against
	// the same CA, never the system's roots.
	tc.RootCAs = tc.ClientCAs
	leaf := tc.Certificates[0].Leaf
	inter := x509.NewCertPool()
	for _, der := range tc.Certificates[0].Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	for _, use := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: tc.RootCAs, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{use}}); err != nil {
			return nil, fmt.Errorf("certificate %s (%s) does not verify against the CA in %s for %s: %w",
				certFile, leaf.Subject, caFile, usageName(use), err)
		}
	}
	return tc, nil
}

func usageName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageClientAuth {
		return "client authentication"
	}
	return "server authentication"
}

// Stop shuts s down. A cluster node first hands the leaderships of the
// streams, consumers and meta group it holds to other nodes (NATS's
// lame-duck mode: about a second), so that they take writes again without
// waiting out an election (4-9 s), then closes the clients still connected
// over a few seconds. A standalone server shuts down at once. Stop returns
// when the server has.
func Stop(s *server.Server) {
	if s.ClusterAddr() != nil {
		s.LameDuckShutdown()
	}
	s.Shutdown()
	s.WaitForShutdown()
}

// fatalLog keeps the embedded server quiet except for its first fatal
// error, which ends Start's wait at once: the server reports a failure to
// listen or to enable JetStream only through its logger.
type fatalLog struct {
	once   sync.Once
	msg    string
	failed chan struct{}
	log    *zerolog.Logger // warnings and errors, if set
}

func (l *fatalLog) Fatalf(format string, v ...any) {
	l.once.Do(func() {
		l.msg = fmt.Sprintf(format, v...)
		close(l.failed)
	})
}
func (*fatalLog) Noticef(string, ...any) {}
func (l *fatalLog) Warnf(format string, v ...any) {
	// The route password is derived from the operator's key, not a
	// password anyone chose: the server's advice to hash it does not apply.
	if l.log != nil && !strings.HasPrefix(format, "Plaintext passwords detected") {
		l.log.Warn().Msgf(format, v...)
	}
}
func (l *fatalLog) Errorf(format string, v ...any) {
	if l.log != nil {
		l.log.Error().Msgf(format, v...)
	}
}
func (*fatalLog) Debugf(string, ...any) {}
func (*fatalLog) Tracef(string, ...any) {}
