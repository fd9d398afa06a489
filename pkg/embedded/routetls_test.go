package embedded_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/embedded"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// routeTLS is a node's route TLS files; trust, if set, replaces the CA
// the node checks its peers against (Start refuses a certificate its own
// CA does not sign).
type routeTLS struct {
	cert, key, ca string
	trust         *natstest.CA
}

func startNode(t *testing.T, name, listen string, routes []string, tls routeTLS) (*server.Server, error) {
	t.Helper()
	return embedded.Start(embedded.Options{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), ServerName: name,
		Cluster: &embedded.Cluster{Name: "c", Listen: listen, Routes: routes, Username: "r", Password: "right",
			TLSCert: tls.cert, TLSKey: tls.key, TLSCA: tls.ca},
		Configure: func(o *server.Options) error {
			if tls.trust != nil {
				o.Cluster.TLSConfig.RootCAs = tls.trust.Pool()
			}
			return nil
		}})
}

// TestClusterRoutesUseMutualTLS: three servers whose routes present
// certificates of one CA form a JetStream cluster that acknowledges a write
// to a stream on all three. A server with the same route password is
// refused, every time it tries, when its certificate is another CA's
// (whichever CA it trusts) or when it comes without TLS; one with a
// certificate of the cluster's CA, routed the same way, joins.
func TestClusterRoutesUseMutualTLS(t *testing.T) {
	ca := natstest.NewCA(t, "cluster ca")
	addrs := []string{natstest.FreeAddr(t), natstest.FreeAddr(t), natstest.FreeAddr(t)}
	var routes []string
	for _, a := range addrs {
		routes = append(routes, "nats-route://"+a)
	}
	servers := make([]*server.Server, 3)
	errs := make(chan error, 3)
	for i := range servers {
		name := fmt.Sprintf("n%d", i+1)
		cert, key := ca.Leaf(t, name)
		go func() {
			var err error
			servers[i], err = startNode(t, name, addrs[i], routes, routeTLS{cert: cert, key: key, ca: ca.File})
			errs <- err
		}()
	}
	for range servers {
		require.NoError(t, <-errs)
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown()
		}
	})

	nc, err := nats.Connect(servers[0].ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3"}, Replicas: 3})
		return err == nil
	}, 20*time.Second, 50*time.Millisecond, "an R3 stream on the TLS cluster")
	ack, err := js.Publish(t.Context(), "r3", []byte("over TLS"))
	require.NoError(t, err)
	require.Equal(t, uint64(1), ack.Sequence)
	natstest.WaitStreamCurrent(t, js, "R3", 3)
	for _, s := range servers {
		require.True(t, s.JetStreamIsClustered(), s.Name())
	}

	other := natstest.NewCA(t, "other ca")
	otherCert, otherKey := other.Leaf(t, "x")
	goodCert, goodKey := ca.Leaf(t, "n4")
	for _, c := range []struct {
		name  string
		tls   routeTLS
		joins bool
	}{
		{name: "a certificate of another CA", tls: routeTLS{cert: otherCert, key: otherKey, ca: other.File}},
		// Only n1's check of the certificate it is shown refuses this one.
		{name: "a certificate of another CA, trusting the cluster's", tls: routeTLS{cert: otherCert, key: otherKey, ca: other.File, trust: ca}},
		{name: "no TLS", tls: routeTLS{}},
		{name: "a certificate of the cluster's CA", tls: routeTLS{cert: goodCert, key: goodKey, ca: ca.File}, joins: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The node reaches n1 only through the relay, which sees each
			// of its attempts end.
			relay := natstest.NewRelay(t, addrs[0])
			node, err := startNode(t, "intruder", natstest.FreeAddr(t), []string{"nats-route://" + relay.Addr()}, c.tls)
			require.NoError(t, err)
			defer node.Shutdown()
			if c.joins {
				require.Eventually(t, func() bool { return routedTo(servers[0], "intruder") }, 10*time.Second, 20*time.Millisecond,
					"the same path with the cluster's certificate joins")
				return
			}
			// A server opens two routes to a peer at first (the system
			// account has one of its own); each refused one is closed and
			// tried again a second later: four ended connections are two
			// rounds of refusals.
			require.Eventually(t, func() bool { return relay.Ended() >= 4 }, 20*time.Second, 20*time.Millisecond,
				"the node's attempts were not closed")
			require.Zero(t, node.NumRoutes(), "the node has a route")
			for _, s := range servers {
				require.False(t, routedTo(s, "intruder"), "%s has a route to the node", s.Name())
			}
		})
	}
}

// routedTo says whether s has a route to the server named name.
func routedTo(s *server.Server, name string) bool {
	rz, err := s.Routez(nil)
	if err != nil {
		return false
	}
	for _, r := range rz.Routes {
		if r.RemoteName == name {
			return true
		}
	}
	return false
}

// TestRouteTLSMistakesFailTheStart: a route TLS given in part, or whose
// certificate the CA does not sign for both ends of a route, fails Start
// with an error that says so, and no server is left running.
func TestRouteTLSMistakesFailTheStart(t *testing.T) {
	ca := natstest.NewCA(t, "cluster ca")
	cert, key := ca.Leaf(t, "n1")
	serverOnly, serverOnlyKey := ca.ServerLeaf(t, "server-only")
	other := natstest.NewCA(t, "other ca")
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("not a certificate"), 0o600))
	for _, c := range []struct {
		name string
		tls  routeTLS
		is   error
		err  string
	}{
		{name: "a certificate alone", tls: routeTLS{cert: cert}, is: embedded.ErrRouteTLSIncomplete},
		{name: "no CA", tls: routeTLS{cert: cert, key: key}, is: embedded.ErrRouteTLSIncomplete},
		{name: "no key", tls: routeTLS{cert: cert, ca: ca.File}, is: embedded.ErrRouteTLSIncomplete},
		{name: "a CA alone", tls: routeTLS{ca: ca.File}, is: embedded.ErrRouteTLSIncomplete},
		{name: "a CA file without a certificate", tls: routeTLS{cert: cert, key: key, ca: garbage}, err: "root ca"},
		{name: "a missing certificate", tls: routeTLS{cert: filepath.Join(t.TempDir(), "none.pem"), key: key, ca: ca.File}, err: "no such file"},
		{name: "a certificate another CA signed", tls: routeTLS{cert: cert, key: key, ca: other.File}, err: "does not verify against the CA in " + other.File},
		{name: "a certificate for servers only", tls: routeTLS{cert: serverOnly, key: serverOnlyKey, ca: ca.File}, err: "for client authentication"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := startNode(t, "n1", natstest.FreeAddr(t), nil, c.tls)
			require.Nil(t, s)
			require.ErrorContains(t, err, "cluster tls: ")
			if c.is != nil {
				require.True(t, errors.Is(err, c.is), "%v", err)
			} else {
				require.ErrorContains(t, err, c.err)
			}
		})
	}
}
