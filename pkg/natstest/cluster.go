package natstest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/embedded"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
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
	// links[i][j] carries the routes server i opens to server j
	// (RunPartitionable); nowhere is an address that closes every
	// connection (refuser).
	links   [][]*link
	nowhere string
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
	return runCluster(t, n, false)
}

// RunPartitionable is RunCluster with every route between two servers
// carried by a link of the test's own (a TCP relay on loopback), so that
// Isolate can cut one server off from the others while it keeps serving
// its clients: a minority partition, as the servers see it.
func RunPartitionable(t testing.TB, n int) *Cluster {
	t.Helper()
	return runCluster(t, n, true)
}

func runCluster(t testing.TB, n int, partitionable bool) *Cluster {
	t.Helper()
	c := &Cluster{Servers: make([]*server.Server, n), Dirs: make([]string, n), RouteURLs: make([]string, n)}
	for i := range n {
		c.Dirs[i] = t.TempDir()
		c.RouteURLs[i] = "nats-route://" + FreeAddr(t)
	}
	if partitionable {
		c.nowhere = refuser(t)
		c.links = make([][]*link, n)
		for i := range n {
			c.links[i] = make([]*link, n)
			for j := range n {
				if i != j {
					c.links[i][j] = newLink(t, c.RouteURLs[j][len("nats-route://"):])
				}
			}
		}
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
		Configure: func(o *server.Options) error {
			if c.links != nil {
				// Every route goes through the links; a server that learns
				// of another by gossip finds nothing at its advertised
				// address, so none goes around them.
				o.Routes = nil
				for j := range c.Servers {
					if j != i {
						o.Routes = append(o.Routes, &url.URL{Scheme: "nats-route", Host: c.links[i][j].addr(),
							User: url.UserPassword(RouteUser, RoutePassword)})
					}
				}
				o.Cluster.Advertise = c.nowhere
				// One connection a pair: a pool's further connections
				// may be opened to the advertised address.
				o.Cluster.PoolSize = -1
			}
			return nil
		},
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

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// Isolate cuts server i off from the others: every route between it and
// another server is closed, and none can open, until Heal. Server i keeps
// serving its clients.
func (c *Cluster) Isolate(t testing.TB, i int) {
	t.Helper()
	require.NotNil(t, c.links, "Isolate needs a cluster from RunPartitionable")
	for j := range c.Servers {
		if j != i {
			c.links[i][j].set(true)
			c.links[j][i].set(true)
		}
	}
	require.Eventually(t, func() bool { return c.Servers[i].NumRoutes() == 0 }, 10*time.Second, 10*time.Millisecond,
		"n%d still has a route", i+1)
}

// Heal lets server i's routes open again after Isolate.
func (c *Cluster) Heal(i int) {
	for j := range c.Servers {
		if j != i {
			c.links[i][j].set(false)
			c.links[j][i].set(false)
		}
	}
}

// link relays TCP connections from its listener to target until it is cut:
// cutting closes every connection it carries and refuses new ones.
type link struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	ended int // connections carried that have ended
}

// Relay carries TCP connections to a target address and counts those that
// ended: a test points a server's route at it to see that the server
// reached its peer and that the peer closed the connection (a route the
// peer refused), without reading either server's log.
type Relay struct{ l *link }

// NewRelay listens on a free loopback port, for the test's life, and
// relays every connection to target.
func NewRelay(t testing.TB, target string) *Relay {
	t.Helper()
	return &Relay{l: newLink(t, target)}
}

// Addr is the address to connect to, host:port.
func (r *Relay) Addr() string { return r.l.addr() }

// Ended is how many relayed connections have ended, from either side.
func (r *Relay) Ended() int {
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	return r.l.ended
}

func newLink(t testing.TB, target string) *link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := &link{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go l.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		l.set(true)
	})
	return l
}

func (l *link) addr() string { return l.ln.Addr().String() }

func (l *link) serve() {
	for {
		in, err := l.ln.Accept()
		if err != nil {
			return
		}
		go l.relay(in)
	}
}

func (l *link) relay(in net.Conn) {
	out, err := net.DialTimeout("tcp", l.target, 2*time.Second)
	if err != nil {
		_ = in.Close()
		return
	}
	l.mu.Lock()
	if l.cut {
		l.mu.Unlock()
		_ = in.Close()
		_ = out.Close()
		return
	}
	l.conns[in], l.conns[out] = struct{}{}, struct{}{}
	l.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done
	_ = in.Close()
	_ = out.Close()
	<-done
	l.mu.Lock()
	delete(l.conns, in)
	delete(l.conns, out)
	l.ended++
	l.mu.Unlock()
}

func (l *link) set(cut bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = cut
	if cut {
		for c := range l.conns {
			_ = c.Close()
		}
	}
}

// refuser listens on a loopback port for the test's life and closes every
// connection it accepts: an address that is never anyone else's.
func refuser(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return ln.Addr().String()
}

// PartitionableTopology starts a three-node cluster whose routes the test
// can cut (RunPartitionable), with the topology at three replicas and the
// audit stream current on all three, and a connection to the first two
// nodes (the majority when the third is cut off). Placing three replicas
// needs every peer known to the meta group; a cluster whose meta leader
// still lacks a peer's report after 15 s (seen now and then here) is
// replaced by a new one, up to three times.
func PartitionableTopology(t testing.TB) (*Cluster, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	o := broker.DefaultOptions()
	o.Replicas = 3
	var err error
	for range 3 {
		c := RunPartitionable(t, 3)
		nc, cerr := nats.Connect(c.Servers[0].ClientURL()+","+c.Servers[1].ClientURL(), nats.MaxReconnects(-1),
			nats.ReconnectWait(50*time.Millisecond), nats.IgnoreDiscoveredServers())
		if cerr != nil {
			t.Fatal(cerr)
		}
		t.Cleanup(nc.Close)
		js, jerr := jetstream.New(nc)
		if jerr != nil {
			t.Fatal(jerr)
		}
		for start := time.Now(); time.Since(start) < 15*time.Second; time.Sleep(100 * time.Millisecond) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = broker.Ensure(ctx, js, o)
			cancel()
			if err == nil {
				WaitStreamCurrent(t, js, broker.AuditStream, 3)
				return c, nc, js
			}
		}
		t.Logf("the topology could not be placed on this cluster (%v); starting another", err)
	}
	t.Fatalf("three replicas placed: %v", err)
	return nil, nil, nil
}
