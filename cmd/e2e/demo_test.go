package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDemo runs scripts/demo.sh (what `make demo` runs) with freshly built
// binaries and checks that it tells the whole story and exits 0.
func TestDemo(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not available")
	}
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/jitd", "./cmd/jitctl",
		"./examples/agent-price-optimizer", "./examples/guardrail-prices", "./examples/resource-server")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	demo := exec.CommandContext(ctx, filepath.Join(root, "scripts", "demo.sh"))
	demo.Env = append(os.Environ(), "BIN="+bin)
	demo.WaitDelay = 5 * time.Second
	out, err = demo.CombinedOutput()
	t.Logf("%s", out)
	require.NoError(t, err)
	for _, want := range []string{
		"[agent]     GRANTED", "repriced SKU 1180", "grant ended (completed)",
		"[guardrail] FIRED price-floor", "grant REVOKED (guardrail)",
		"[resource]  REFUSED PUT /prices/1182: 403", "refuses even data:read",
		"new requests are refused", "jit.suspended", "whole: ",
	} {
		require.Contains(t, string(out), want)
	}
}
