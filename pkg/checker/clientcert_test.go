package checker_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/checker"
	"github.com/stretchr/testify/require"
)

// pki is a throw-away certificate authority for mutual TLS tests.
type pki struct {
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	pool  *x509.CertPool
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &pki{ca: ca, caKey: key, pool: pool}
}

// issue returns a certificate for cn signed by the CA (or self-signed when
// selfSigned), for a server (with 127.0.0.1) or a client.
func (p *pki) issue(t *testing.T, cn string, server, selfSigned bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	parent, signer := p.ca, p.caKey
	if selfSigned {
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// The agent is named by its verified client certificate: a certificate the
// server's CA did not sign never reaches the handler, a request without TLS
// has no identity, and the name still has to pass the checker.
func TestClientCertIdentity(t *testing.T) {
	f := setup(t)
	p := newPKI(t)
	handler := f.chk.Require("data:read", checker.ClientCertIdentity)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, _ := checker.AgentFrom(r.Context())
		_, _ = w.Write([]byte(a))
	}))
	srv := httptest.NewUnstartedServer(handler)
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{p.issue(t, "server", true, false)},
		ClientCAs:    p.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	client := func(cert *tls.Certificate) *http.Client {
		cfg := &tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS12}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	}
	get := func(c *http.Client) (int, error) {
		resp, err := c.Get(srv.URL)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		return resp.StatusCode, nil
	}

	intel := p.issue(t, agent, false, false)
	status, err := get(client(&intel))
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status, "a verified certificate names a known agent with a base permission")

	ghost := p.issue(t, "nobody", false, false)
	status, err = get(client(&ghost))
	require.NoError(t, err)
	require.Equal(t, http.StatusForbidden, status, "a verified name is still checked")

	forged := p.issue(t, agent, false, true)
	_, err = get(client(&forged))
	require.Error(t, err, "a certificate the CA did not sign is refused in the handshake")
	_, err = get(client(nil))
	require.Error(t, err, "no certificate, no connection")

	// Without TLS there is no identity at all.
	plain := httptest.NewRecorder()
	handler.ServeHTTP(plain, httptest.NewRequest(http.MethodGet, "/", nil))
	require.Equal(t, http.StatusUnauthorized, plain.Code)
}
