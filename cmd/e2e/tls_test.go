package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestDistributedTLS: jitctl creds init writes a server configuration that
// requires TLS when given a certificate, and refuses to write one that
// listens beyond loopback in clear; a service and jitctl then work over TLS
// with the CA (NATS_CA, --tlsca), and a plaintext client is refused.
func TestDistributedTLS(t *testing.T) {
	bin := bins(t)
	cfg := exampleConfig(t)
	dir := t.TempDir()

	out, err := exec.Command(filepath.Join(bin, "jitctl"), "creds", "init", "--dir", dir, "--config", cfg,
		"--listen", "0.0.0.0:4222").CombinedOutput()
	require.Error(t, err)
	require.Equal(t, 2, err.(*exec.ExitError).ExitCode())
	require.Contains(t, string(out), "without TLS")
	require.NoFileExists(t, filepath.Join(dir, "nats-server.conf"), "nothing written for a plaintext listener beyond loopback")

	cert, key := natstest.SelfSignedCert(t)
	port := freePort(t)
	out, err = exec.Command(filepath.Join(bin, "jitctl"), "creds", "init", "--dir", dir, "--config", cfg,
		"--listen", "127.0.0.1:"+strconv.Itoa(port), "--tls-cert", cert, "--tls-key", key).CombinedOutput()
	require.NoError(t, err, "%s", out)
	conf, err := os.ReadFile(filepath.Join(dir, "nats-server.conf"))
	require.NoError(t, err)
	require.Contains(t, string(conf), "tls: {")
	startProc(t, "nats-server", filepath.Join(bin, "nats-server"), nil, "-c", filepath.Join(dir, "nats-server.conf"))
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	operator := filepath.Join(dir, "creds", "operator.creds")

	waitFor(t, "server up over TLS", 20*time.Second, func() bool {
		nc, err := nats.Connect(url, nats.UserCredentials(operator), nats.RootCAs(cert))
		if err == nil {
			nc.Close()
		}
		return err == nil
	})
	_, err = nats.Connect(url, nats.UserCredentials(operator))
	require.Error(t, err, "a client without TLS is refused")

	startProc(t, "policy", filepath.Join(bin, "policy"), []string{"NATS_URL=" + url,
		"NATS_CREDS=" + filepath.Join(dir, "creds", "service-policy.creds"), "NATS_CA=" + cert, "JIT_CONFIG=" + cfg})
	var show []byte
	waitFor(t, "jitctl reads the configuration over TLS", 30*time.Second, func() bool {
		cmd := exec.Command(filepath.Join(bin, "jitctl"), "config", "show", "--creds", operator, "--tlsca", cert)
		cmd.Env = append(os.Environ(), "NATS_URL="+url)
		show, err = cmd.CombinedOutput()
		return err == nil
	})
	require.True(t, strings.HasPrefix(string(show), "# active configuration: revision 1"), "%s", show)
}
