package embedded

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStartRefusesAnAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	addr := ln.Addr().String()

	s, err := Start(Options{Listen: addr, StoreDir: t.TempDir()})
	require.Nil(t, s)
	require.True(t, errors.Is(err, ErrAddrInUse), "%v", err)
	require.Equal(t, "nats listen "+addr+": the address is already in use (another nats-server or jitd runs there?)", err.Error())
}

// TestStartReportsAFatalErrorAtOnce: a failure the server only logs (here
// JetStream's store is a file, not a directory) ends Start with the
// server's own message, not a readiness time-out.
func TestStartReportsAFatalErrorAtOnce(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o600))

	s, err := Start(Options{Listen: "127.0.0.1:-1", StoreDir: file})
	require.Nil(t, s)
	require.Error(t, err)
	require.False(t, strings.Contains(err.Error(), "did not accept connections"), "%v", err)
	require.Contains(t, err.Error(), "JetStream")
}

func TestStartServes(t *testing.T) {
	s, err := Start(Options{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	require.NoError(t, err)
	defer s.Shutdown()
	require.True(t, s.JetStreamEnabled())
}
