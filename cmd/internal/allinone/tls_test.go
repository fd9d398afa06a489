package allinone

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// selfSigned writes a CA-less self-signed certificate for 127.0.0.1 and
// its key, and returns their paths (the certificate is its own CA).
func selfSigned(t *testing.T) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "jitd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	require.NoError(t, err)
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	kb, err := x509.MarshalECPrivateKey(k)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	return cert, key
}

// TestTLS: with --tls-cert and --tls-key the NATS listener takes only TLS;
// a client that trusts the certificate (--tlsca) connects with its
// credential, a client that does not is refused, and so is plaintext.
func TestTLS(t *testing.T) {
	cert, key := selfSigned(t)
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
		a := &App{opts: Options{NATSListen: ok}}
		require.NoError(t, a.checkListen(), ok)
	}
	a := &App{opts: Options{NATSListen: "0.0.0.0:4222", AllowPlaintext: true}}
	require.NoError(t, a.checkListen())
}
