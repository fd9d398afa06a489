package allinone

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"

	"github.com/agentjit/jit/pkg/embedded"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func exampleConfig(t *testing.T) string {
	p, err := filepath.Abs("../../../examples/jit.yaml")
	require.NoError(t, err)
	return p
}

// TestRunFailsAtOnceOnBusyNATSPort: another process on the NATS address
// makes Run fail with an error naming the address and saying it is in use
// (the probe's ErrAddrInUse, not the server's readiness time-out).
func TestRunFailsAtOnceOnBusyNATSPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	addr := ln.Addr().String()

	app := New(Options{ConfigFile: exampleConfig(t), DataDir: t.TempDir(), NATSListen: addr}, zerolog.New(zerolog.NewTestWriter(t)))
	err = app.Run(context.Background())
	require.Error(t, err)
	require.True(t, errors.Is(err, embedded.ErrAddrInUse), "%v", err)
	require.Contains(t, err.Error(), addr)
	require.Contains(t, err.Error(), "already in use")
	require.NotContains(t, err.Error(), "did not")
}
