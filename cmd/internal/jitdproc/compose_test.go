package jitdproc

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// TestComposeAgreesWithTheClusterRuns: deploy/docker-compose.yml runs the
// cluster that jitbench and jitchaos start (Docker is not available where
// the tests run, so the file is read, not run): three jitd nodes, each
// with the flags ClusterArgs gives, routes naming every node at its route
// port, three replicas, the keys shared through one volume, the auditor on
// exactly one node, and the flags Start gives every jitd.
func TestComposeAgreesWithTheClusterRuns(t *testing.T) {
	b, err := os.ReadFile("../../../deploy/docker-compose.yml")
	require.NoError(t, err)
	var f struct {
		Services map[string]struct {
			Command []string `yaml:"command"`
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	require.NoError(t, yaml.Unmarshal(b, &f))
	names := []string{"jitd1", "jitd2", "jitd3"}
	for n := range f.Services {
		if strings.HasPrefix(n, "jitd") {
			require.Contains(t, names, n, "a node the cluster runs do not have")
		}
	}
	auditors := 0
	for i, name := range names {
		svc, ok := f.Services[name]
		require.True(t, ok, name)
		flags := flagsOf(t, svc.Command)
		_, port, err := net.SplitHostPort(flags["--cluster-listen"])
		require.NoError(t, err, name)
		var routes []string
		for _, n := range names {
			routes = append(routes, n+":"+port)
		}
		auditor := flags["--auditor"] == "true"
		if auditor {
			auditors++
		}
		want := flagsOf(t, ClusterArgs(name, flags["--cluster-listen"], routes, flags["--keys-dir"], auditor))
		for k, v := range want {
			require.Equal(t, v, flags[k], "%s %s", name, k)
		}
		require.Equal(t, fmt.Sprintf("jitd%d", i+1), flags["--server-name"])
		require.Equal(t, "3", flags["--replicas"])
		for _, k := range []string{"--data-dir", "--nats-listen", "--http-listen", "--config"} {
			require.NotEmpty(t, flags[k], "%s %s: every jitd of the runs has it", name, k)
		}
		require.Contains(t, svc.Volumes, "keys:"+flags["--keys-dir"], "%s: the shared keys volume at --keys-dir", name)
		require.Contains(t, svc.Volumes, name+":"+flags["--data-dir"], "%s: a data volume of its own", name)
	}
	require.Equal(t, 1, auditors, "the auditor on exactly one node")
}

// flagsOf reads "--name value" and "--name=value" pairs.
func flagsOf(t *testing.T, args []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		require.True(t, strings.HasPrefix(a, "--"), "not a flag: %q in %q", a, args)
		if k, v, ok := strings.Cut(a, "="); ok {
			m[k] = v
			continue
		}
		if a == "--allow-plaintext" {
			m[a] = "true"
			continue
		}
		require.Less(t, i+1, len(args), "%s has no value", a)
		m[a] = args[i+1]
		i++
	}
	return m
}
