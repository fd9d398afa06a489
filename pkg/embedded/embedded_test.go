package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// TestClusterRoutesNeedTheirCredentials: three servers with the same route
// credentials form one JetStream cluster that places a stream on all three;
// a server with the wrong password never joins it.
func TestClusterRoutesNeedTheirCredentials(t *testing.T) {
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	var routes []string
	for _, a := range addrs {
		routes = append(routes, "nats-route://"+a)
	}
	start := func(name, listen, pass string, routes []string) (*server.Server, error) {
		return Start(Options{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), ServerName: name,
			Cluster: &Cluster{Name: "c", Listen: listen, Routes: routes, Username: "r", Password: pass}})
	}
	servers := make([]*server.Server, 3)
	errs := make(chan error, 3)
	for i := range servers {
		go func() {
			var err error
			servers[i], err = start(fmt.Sprintf("n%d", i), addrs[i], "right", routes)
			errs <- err
		}()
	}
	for range servers {
		require.NoError(t, <-errs)
	}
	defer func() {
		for _, s := range servers {
			s.Shutdown()
		}
	}()
	intruder, err := start("x", freeAddr(t), "wrong", routes[:1])
	require.NoError(t, err)
	defer intruder.Shutdown()

	nc, err := nats.Connect(servers[0].ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3"}, Replicas: 3})
		return err == nil
	}, 20*time.Second, 50*time.Millisecond)
	for _, s := range servers {
		require.Positive(t, s.NumRoutes(), "server %s routes", s.Name())
		require.True(t, s.JetStreamIsClustered())
	}
	require.Zero(t, intruder.NumRoutes(), "a server with the wrong route password joined")
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}
