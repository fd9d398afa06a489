// Package embedded runs a NATS server with JetStream inside the process:
// the all-in-one jitd's broker and the tests' real broker.
package embedded

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
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
	// Configure, if set, adjusts the server's options last (for example
	// auth.Store.ConfigureServer, which turns on operator-mode
	// authentication).
	Configure func(*server.Options) error
}

// Start starts a server and waits until it accepts connections.
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
	if o.Configure != nil {
		if err := o.Configure(opts); err != nil {
			return nil, err
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("nats server on %s did not start", o.Listen)
	}
	return s, nil
}
