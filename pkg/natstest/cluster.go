package natstest

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/embedded"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// Route credentials of the clusters RunCluster starts.
const (
	RouteUser     = "route"
	RoutePassword = "s3cret-route"
)

// Cluster is n embedded servers joined in one NATS cluster, in process.
type Cluster struct {
	Servers []*server.Server
	// Dirs are the servers' stores, by index, for a restart on the same
	// data.
	Dirs []string
	// RouteURLs are the servers' route addresses (nats-route://host:port).
	RouteURLs []string
}

// RunCluster starts n servers ("n1".."nN") with JetStream on free ports, all
// routed to each other with RouteUser/RoutePassword, and waits until
// JetStream has a meta leader. The servers are shut down at cleanup.
func RunCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{Servers: make([]*server.Server, n), Dirs: make([]string, n), RouteURLs: make([]string, n)}
	for i := range n {
		c.Dirs[i] = t.TempDir()
		c.RouteURLs[i] = "nats-route://" + freeAddr(t)
	}
	// Every server must be starting before any can be ready: JetStream's
	// meta group needs a quorum of them.
	errs := make(chan error, n)
	for i := range n {
		go func() {
			s, err := c.start(i)
			c.Servers[i] = s
			errs <- err
		}()
	}
	for range n {
		require.NoError(t, <-errs)
	}
	t.Cleanup(func() {
		for _, s := range c.Servers {
			if s != nil {
				s.Shutdown()
				s.WaitForShutdown()
			}
		}
	})
	c.WaitMetaLeader(t)
	return c
}

func (c *Cluster) start(i int) (*server.Server, error) {
	return embedded.Start(embedded.Options{
		Listen: "127.0.0.1:-1", StoreDir: c.Dirs[i], ServerName: fmt.Sprintf("n%d", i+1),
		Cluster: &embedded.Cluster{Name: "test", Listen: c.RouteURLs[i][len("nats-route://"):], Routes: c.RouteURLs,
			Username: RouteUser, Password: RoutePassword},
	})
}

// Restart starts server i again on its store after Stop.
func (c *Cluster) Restart(t testing.TB, i int) *server.Server {
	t.Helper()
	s, err := c.start(i)
	require.NoError(t, err)
	c.Servers[i] = s
	return s
}

// Stop shuts server i down and waits until it has.
func (c *Cluster) Stop(i int) {
	c.Servers[i].Shutdown()
	c.Servers[i].WaitForShutdown()
}

// URLs are the client URLs of the running servers, comma separated, for
// nats.Connect.
func (c *Cluster) URLs() string {
	var u string
	for _, s := range c.Servers {
		if s == nil || !s.Running() {
			continue
		}
		if u != "" {
			u += ","
		}
		u += s.ClientURL()
	}
	return u
}

// WaitMetaLeader waits until a running server knows the JetStream meta
// leader.
func (c *Cluster) WaitMetaLeader(t testing.TB) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, s := range c.Servers {
			if s != nil && s.Running() && s.JetStreamIsClustered() && s.JetStreamIsCurrent() {
				if _, ok := c.leader(); ok {
					return true
				}
			}
		}
		return false
	}, 20*time.Second, 20*time.Millisecond, "no JetStream meta leader")
}

func (c *Cluster) leader() (int, bool) {
	for i, s := range c.Servers {
		if s != nil && s.Running() && s.JetStreamIsLeader() {
			return i, true
		}
	}
	return 0, false
}

// StreamLeader is the index of the server that leads stream (in the global
// account), or -1.
func (c *Cluster) StreamLeader(account, stream string) int {
	for i, s := range c.Servers {
		if s != nil && s.Running() && s.JetStreamIsStreamLeader(account, stream) {
			return i
		}
	}
	return -1
}

// WaitStreamCurrent waits until stream reports replicas replicas, a leader
// and every follower current.
func WaitStreamCurrent(t testing.TB, js jetstream.JetStream, stream string, replicas int) {
	t.Helper()
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		info, err := st.Info(ctx)
		if err != nil || info.Config.Replicas != replicas || info.Cluster == nil || info.Cluster.Leader == "" {
			return false
		}
		if len(info.Cluster.Replicas) != replicas-1 {
			return false
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Offline {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "stream %s not current at R%d", stream, replicas)
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}
