package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/cmd/internal/allinone"
	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/embedded"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// TestClusterOfThreeOverRouteTLS: three jitd nodes started from command
// lines with --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca
// form one cluster (each finishes its start, which puts the stream and
// buckets at three replicas, and an R3 write is acknowledged); their route
// port asks for TLS; and a server that knows the cluster's route password
// (it has the keys) but comes without TLS, or with a certificate another
// CA signed, is refused every time it tries and never joins.
func TestClusterOfThreeOverRouteTLS(t *testing.T) {
	ca := natstest.NewCA(t, "route ca")
	keys := filepath.Join(t.TempDir(), "keys")
	config, err := filepath.Abs("../../examples/jit.yaml")
	require.NoError(t, err)
	routes := []string{natstest.FreeAddr(t), natstest.FreeAddr(t), natstest.FreeAddr(t)}
	var apps []*allinone.App
	// The auditor's node first, while the others still make a quorum for
	// its last checkpoint.
	t.Cleanup(func() {
		for _, a := range apps {
			a.Close()
		}
	})
	errs := make(chan error, 3)
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		cert, key := ca.Leaf(t, name)
		f, err := parseFlags([]string{"--config", config, "--data-dir", t.TempDir(), "--keys-dir", keys,
			"--nats-listen", "127.0.0.1:-1", "--http-listen", "", "--checkpoint-interval", "1h",
			"--server-name", name, "--cluster-listen", routes[i], "--routes", strings.Join(routes, ","),
			"--auditor=" + strconv.FormatBool(i == 0),
			"--cluster-tls-cert", cert, "--cluster-tls-key", key, "--cluster-tls-ca", ca.File})
		require.NoError(t, err)
		require.Equal(t, 3, f.opts.Replicas)
		a := allinone.New(f.opts, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Str("node", name).Logger())
		apps = append(apps, a)
		// Each waits for JetStream, which needs a quorum of the three.
		go func() { errs <- a.Run(t.Context()) }()
	}
	for range 3 {
		require.NoError(t, <-errs)
	}

	// The route ports speak TLS from the first byte: a route's INFO comes
	// only after a handshake with a certificate of the CA, and a plaintext
	// CONNECT is answered by closing the connection.
	probeCert, probeKey := ca.Leaf(t, "probe")
	probe, err := tls.LoadX509KeyPair(probeCert, probeKey)
	require.NoError(t, err)
	for _, r := range routes {
		require.True(t, routeInfoOverTLS(t, r, probe, ca).TLSRequired, "the route port at %s", r)
		require.Empty(t, plaintextRoute(t, r), "the route port at %s answered in plaintext", r)
	}
	store, err := auth.OpenStore(keys)
	require.NoError(t, err)
	admin, err := store.Ephemeral(auth.Admin)
	require.NoError(t, err)
	opts, err := admin.Options()
	require.NoError(t, err)
	nc, err := nats.Connect(apps[1].NATSURL(), opts...)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	natstest.WaitStreamCurrent(t, js, broker.AuditStream, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "ROUTETLS", Subjects: []string{"routetls"}, Replicas: 3})
	require.NoError(t, err)
	ack, err := js.Publish(ctx, "routetls", []byte("replicated over TLS"))
	require.NoError(t, err, "an R3 write acknowledged")
	require.Equal(t, uint64(1), ack.Sequence)

	password, err := store.RoutePassword()
	require.NoError(t, err)
	other := natstest.NewCA(t, "other ca")
	otherCert, otherKey := other.Leaf(t, "x")
	for _, c := range []struct {
		name  string
		tls   [3]string
		trust *natstest.CA // the CA it checks n1's certificate against, if not its own
	}{
		{name: "no TLS"},
		{name: "a certificate of another CA", tls: [3]string{otherCert, otherKey, other.File}},
		{name: "a certificate of another CA, trusting the cluster's", tls: [3]string{otherCert, otherKey, other.File}, trust: ca},
	} {
		t.Run(c.name, func(t *testing.T) {
			relay := natstest.NewRelay(t, routes[0])
			s, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), ServerName: "intruder",
				Cluster: &embedded.Cluster{Name: "jit", Listen: natstest.FreeAddr(t), Routes: []string{relay.Addr()},
					Username: auth.RouteUser, Password: password, TLSCert: c.tls[0], TLSKey: c.tls[1], TLSCA: c.tls[2]},
				Configure: func(o *server.Options) error {
					if c.trust != nil {
						o.Cluster.TLSConfig.RootCAs = c.trust.Pool()
					}
					return nil
				}})
			require.NoError(t, err)
			defer s.Shutdown()
			// A server opens two routes to a peer at first (the system
			// account has one of its own); each refused one is closed and
			// tried again a second later: four ended connections are two
			// rounds of refusals.
			require.Eventually(t, func() bool { return relay.Ended() >= 4 }, 20*time.Second, 20*time.Millisecond,
				"the intruder's attempts were not closed")
			require.Zero(t, s.NumRoutes(), "the intruder has a route")
		})
	}
}

// routeInfoOverTLS reads the INFO a route port sends after a TLS
// handshake in which the probe presents cert and checks the port's
// certificate against ca.
func routeInfoOverTLS(t *testing.T, addr string, cert tls.Certificate, ca *natstest.CA) (info struct {
	TLSRequired bool `json:"tls_required"`
}) {
	t.Helper()
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	js, ok := strings.CutPrefix(strings.TrimSpace(line), "INFO ")
	require.True(t, ok, "not an INFO: %q", line)
	require.NoError(t, json.Unmarshal([]byte(js), &info))
	return info
}

// plaintextRoute sends a route's CONNECT in plaintext and returns what the
// port answered before it closed the connection.
func plaintextRoute(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = c.Write([]byte("CONNECT {}\r\nPING\r\n"))
	require.NoError(t, err)
	// Closed, by a FIN or a reset (the server leaves what it did not read).
	b, err := io.ReadAll(c)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the port kept the connection open")
	return string(b)
}
