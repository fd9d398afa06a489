package main

import (
	"testing"

	"github.com/agentjit/jit/cmd/internal/allinone"
	"github.com/stretchr/testify/require"
)

func TestClusterOptions(t *testing.T) {
	for _, c := range []struct {
		name         string
		listen       string
		routes       string
		replicas     int
		auditor      bool
		auditorGiven bool
		tls          [3]string // --cluster-tls-cert, -key, -ca
		brokerOnly   bool
		err          string
		want         allinone.Options
	}{
		{name: "a single node as before", auditor: true, want: allinone.Options{}},
		{name: "a single node without the auditor", auditor: false, auditorGiven: true, want: allinone.Options{NoAuditor: true}},
		{name: "a node that runs the auditor", listen: "127.0.0.1:6222", routes: " a:1, b:2 ,,c:3", replicas: 3, auditor: true, auditorGiven: true,
			want: allinone.Options{ClusterListen: "127.0.0.1:6222", Routes: []string{"a:1", "b:2", "c:3"}, Replicas: 3}},
		{name: "a node that does not", listen: "127.0.0.1:6222", routes: "a:1", replicas: 3, auditorGiven: true,
			want: allinone.Options{ClusterListen: "127.0.0.1:6222", Routes: []string{"a:1"}, Replicas: 3, NoAuditor: true}},
		{name: "a cluster node's default is three replicas", listen: "127.0.0.1:6222", routes: "a:1", auditorGiven: true,
			want: allinone.Options{ClusterListen: "127.0.0.1:6222", Routes: []string{"a:1"}, Replicas: 3, NoAuditor: true}},
		{name: "one replica on a cluster when asked", listen: "127.0.0.1:6222", replicas: 1, auditorGiven: true,
			want: allinone.Options{ClusterListen: "127.0.0.1:6222", Replicas: 1, NoAuditor: true}},
		{name: "a node that does not say", listen: "127.0.0.1:6222", auditor: true, err: "say where the auditor runs"},
		{name: "a broker-only node runs no auditor to place", listen: "127.0.0.1:6222", routes: "a:1", auditor: true, brokerOnly: true,
			want: allinone.Options{ClusterListen: "127.0.0.1:6222", Routes: []string{"a:1"}, Replicas: 3, BrokerOnly: true}},
		{name: "routes without a listener", routes: "a:1", auditor: true, err: "--routes needs --cluster-listen"},
		{name: "too many replicas", replicas: 7, auditor: true, err: "--replicas 7"},
		{name: "routes under mutual TLS", listen: "10.0.0.1:6222", routes: "a:1", auditorGiven: true, tls: [3]string{"n1.pem", "n1.key", "ca.pem"},
			want: allinone.Options{ClusterListen: "10.0.0.1:6222", Routes: []string{"a:1"}, Replicas: 3, NoAuditor: true,
				ClusterTLSCert: "n1.pem", ClusterTLSKey: "n1.key", ClusterTLSCA: "ca.pem"}},
		{name: "a route certificate without its key", listen: "127.0.0.1:6222", auditorGiven: true, tls: [3]string{"n1.pem", "", "ca.pem"},
			err: "--cluster-tls-cert and --cluster-tls-ca without --cluster-tls-key"},
		{name: "route TLS without its CA", listen: "127.0.0.1:6222", auditorGiven: true, tls: [3]string{"n1.pem", "n1.key", ""},
			err: "--cluster-tls-cert and --cluster-tls-key without --cluster-tls-ca"},
		{name: "a route CA alone", listen: "127.0.0.1:6222", auditorGiven: true, tls: [3]string{"", "", "ca.pem"},
			err: "--cluster-tls-ca without --cluster-tls-cert and --cluster-tls-key"},
		{name: "route TLS on a single node", auditor: true, tls: [3]string{"n1.pem", "n1.key", "ca.pem"},
			err: "--cluster-tls-cert needs --cluster-listen"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := allinone.Options{ClusterListen: c.listen, BrokerOnly: c.brokerOnly,
				ClusterTLSCert: c.tls[0], ClusterTLSKey: c.tls[1], ClusterTLSCA: c.tls[2]}
			err := clusterOptions(&o, c.routes, c.replicas, c.auditor, c.auditorGiven)
			if c.err != "" {
				require.ErrorContains(t, err, c.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, o)
		})
	}
}

// TestParseFlagsRouteTLS: the route TLS flags and their environment
// variables reach the App's options; a flag wins over its variable; and a
// partial route TLS is refused before anything starts.
func TestParseFlagsRouteTLS(t *testing.T) {
	t.Setenv("JIT_CLUSTER_TLS_CERT", "env.pem")
	t.Setenv("JIT_CLUSTER_TLS_KEY", "env.key")
	t.Setenv("JIT_CLUSTER_TLS_CA", "env-ca.pem")
	node := []string{"--cluster-listen", "127.0.0.1:6222", "--auditor=false"}
	f, err := parseFlags(node)
	require.NoError(t, err)
	require.Equal(t, [3]string{"env.pem", "env.key", "env-ca.pem"}, [3]string{f.opts.ClusterTLSCert, f.opts.ClusterTLSKey, f.opts.ClusterTLSCA})

	f, err = parseFlags(append(node, "--cluster-tls-cert", "n1.pem", "--cluster-tls-key", "n1.key", "--cluster-tls-ca", "ca.pem"))
	require.NoError(t, err)
	require.Equal(t, [3]string{"n1.pem", "n1.key", "ca.pem"}, [3]string{f.opts.ClusterTLSCert, f.opts.ClusterTLSKey, f.opts.ClusterTLSCA})

	t.Setenv("JIT_CLUSTER_TLS_CA", "")
	_, err = parseFlags(node)
	require.EqualError(t, err, "--cluster-tls-cert and --cluster-tls-key without --cluster-tls-ca: routes use mutual TLS, which needs this node's certificate, its key and the CA that signs every node's certificate")
}
