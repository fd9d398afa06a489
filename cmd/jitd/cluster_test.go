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
	} {
		t.Run(c.name, func(t *testing.T) {
			o := allinone.Options{ClusterListen: c.listen, BrokerOnly: c.brokerOnly}
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
