package allinone

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// TestTLS: with --tls-cert and --tls-key the NATS listener takes only TLS;
// a client that trusts the certificate (--tlsca) connects with its
// credential, a client that does not is refused, and so is plaintext.
func TestTLS(t *testing.T) {
	cert, key := natstest.SelfSignedCert(t)
	dir := t.TempDir()
	app := New(Options{ConfigFile: exampleConfig(t), DataDir: dir, NATSListen: "127.0.0.1:-1", TLSCert: cert, TLSKey: key},
		zerolog.New(zerolog.NewTestWriter(t)))
	require.NoError(t, app.Run(context.Background()))
	t.Cleanup(app.Close)
	url := app.NATSURL()

	client := auth.ClientOptions{Creds: filepath.Join(app.CredsDir(), "agent-market-intel.creds"), TLSCA: cert}
	opts, err := client.NATSOptions()
	require.NoError(t, err)
	nc, err := nats.Connect(url, opts...)
	require.NoError(t, err)
	defer nc.Close()
	require.True(t, nc.TLSRequired())
	var out broker.GrantsList
	require.NoError(t, broker.Call(t.Context(), nc, broker.APIGrants, "", broker.GrantsInput{}, &out), "the API answers over TLS")

	noCA := auth.ClientOptions{Creds: client.Creds}
	opts, err = noCA.NATSOptions()
	require.NoError(t, err)
	_, err = nats.Connect(url, opts...)
	require.Error(t, err, "a client that does not trust the certificate")
}

// TestPlaintextBeyondLoopbackRefused: jitd will not listen for NATS beyond
// the loopback interface without TLS unless told to.
func TestPlaintextBeyondLoopbackRefused(t *testing.T) {
	app := New(Options{ConfigFile: exampleConfig(t), DataDir: t.TempDir(), NATSListen: "0.0.0.0:-1"}, zerolog.New(zerolog.NewTestWriter(t)))
	err := app.Run(context.Background())
	require.ErrorContains(t, err, "without TLS")
	for _, ok := range []string{"127.0.0.1:-1", "localhost:-1", "[::1]:-1"} {
		require.NoError(t, auth.CheckListen(ok, false, false), ok)
	}
	for _, bad := range []string{"0.0.0.0:4222", ":4222", "10.1.2.3:4222", "nats.example.com:4222"} {
		require.ErrorContains(t, auth.CheckListen(bad, false, false), "without TLS", bad)
		require.NoError(t, auth.CheckListen(bad, true, false), bad)
		require.NoError(t, auth.CheckListen(bad, false, true), bad)
	}
}

// TestRoutesBeyondLoopbackNeedRouteTLS: a cluster node will not accept
// routes beyond the loopback interface without route TLS unless told to,
// and says which flags give it; route TLS (or --allow-plaintext) lets it.
func TestRoutesBeyondLoopbackNeedRouteTLS(t *testing.T) {
	app := New(Options{ConfigFile: exampleConfig(t), DataDir: t.TempDir(), NATSListen: "127.0.0.1:-1", ClusterListen: "0.0.0.0:-1"},
		zerolog.New(zerolog.NewTestWriter(t)))
	err := app.Run(context.Background())
	require.EqualError(t, err, "--cluster-listen: refusing to accept routes on 0.0.0.0:-1 without TLS: the replicated grants, configuration and audit events would cross the network in clear; give --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca (or --allow-plaintext)")
	for _, ok := range []string{"127.0.0.1:6222", "localhost:6222", "[::1]:6222"} {
		require.NoError(t, auth.CheckRouteListen(ok, false, false), ok)
	}
	for _, bad := range []string{"0.0.0.0:6222", ":6222", "10.1.2.3:6222", "jitd1:6222"} {
		require.ErrorContains(t, auth.CheckRouteListen(bad, false, false), "without TLS", bad)
		require.NoError(t, auth.CheckRouteListen(bad, true, false), bad)
		require.NoError(t, auth.CheckRouteListen(bad, false, true), bad)
	}
}
