package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jitaudit "github.com/agentjit/jit/pkg/audit"
	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// TestDistributed runs the five service binaries as separate processes
// against a standalone nats-server process (built from the Go module), as
// deploy/docker-compose.distributed.yml does, each with its own credential from
// jitctl creds init, and kills each service with SIGKILL at an awkward
// moment to show that it resumes from its durable consumer and finishes the
// work exactly once.
func TestDistributed(t *testing.T) {
	bin := bins(t)
	dep := deployExternal(t, bin, exampleConfig(t))
	url, svc := dep.url, dep.services
	c := cli{t: t, bin: bin, url: url}
	waitFor(t, "services answer", 30*time.Second, func() bool {
		return c.run("request", "--agent", "market-intel", "--perm", "data:write", "--duration", "1m", "--reason", "warm up").Code == 0
	})
	checkContract(t, url)

	t.Run("policy killed while a request waits", func(t *testing.T) {
		c := cli{t: t, bin: bin, url: url}
		svc["policy"].kill()
		wait := c.background("request", "--agent", "market-intel", "--perm", "data:write", "--duration", "1m", "--reason", "policy down", "--json")
		waitFor(t, "request stored", 10*time.Second, func() bool { return countRequests(t, url, "policy down") == 1 })
		svc["policy"].start()
		r := wait()
		require.Equal(t, 0, r.Code, r.Stderr)
	})

	t.Run("approval killed before granting", func(t *testing.T) {
		c := cli{t: t, bin: bin, url: url}
		svc["approval"].kill()
		wait := c.background("request", "--agent", "market-intel", "--perm", "data:write", "--duration", "1m", "--reason", "approval down", "--json")
		waitFor(t, "request decided", 10*time.Second, func() bool { return countDecided(t, url, "approval down") == 1 })
		svc["approval"].start()
		r := wait()
		require.Equal(t, 0, r.Code, r.Stderr)
		grant := r.JSON(t)["grant_id"].(string)
		require.Len(t, grantedOf(t, url, grant), 1, "one jit.granted")
	})

	t.Run("revoker down when a grant expires", func(t *testing.T) {
		c := cli{t: t, bin: bin, url: url}
		svc["revoker"].kill()
		r := c.run("request", "--agent", "market-intel", "--perm", "data:write", "--duration", "1s", "--reason", "revoker down", "--json")
		require.Equal(t, 0, r.Code, r.Stderr)
		grant := r.JSON(t)["grant_id"].(string)
		// Enforcement does not wait for the revoker: past expires_at the grant
		// no longer counts (other grants of the agent may still be live).
		waitFor(t, "grant no longer listed after expiry", 10*time.Second, func() bool {
			return !strings.Contains(c.run("grants", "--agent", "market-intel", "--json").Stdout, grant)
		})
		require.Empty(t, revocationsOf(t, url, grant))
		svc["revoker"].start()
		waitFor(t, "revocation after restart", 20*time.Second, func() bool { return len(revocationsOf(t, url, grant)) == 1 })
		require.Equal(t, events.RevokedExpired, revocationsOf(t, url, grant)[0].Reason)
	})

	t.Run("requester restarted", func(t *testing.T) {
		c := cli{t: t, bin: bin, url: url}
		svc["requester"].kill()
		r := c.run("request", "--agent", "market-intel", "--perm", "data:write", "--duration", "1m", "--reason", "nobody listens")
		require.Equal(t, 2, r.Code, "no requester: a clear error, not a hang")
		svc["requester"].start()
		waitFor(t, "requester back", 20*time.Second, func() bool {
			return c.run("request", "--agent", "market-intel", "--perm", "data:write", "--duration", "1m", "--reason", "requester back").Code == 0
		})
	})

	t.Run("a leaked service credential revoked and replaced", func(t *testing.T) {
		c := cli{t: t, bin: bin, url: url}
		keys := filepath.Join(dep.dir, "keys")
		creds := func(args ...string) ([]byte, error) {
			cmd := exec.Command(filepath.Join(bin, "jitctl"), append(append([]string{"creds"}, args...), "--keys", keys)...)
			cmd.Env = append(os.Environ(), "NATS_URL="+url)
			return cmd.CombinedOutput()
		}
		out, err := creds("revoke", "service", "requester")
		require.NoError(t, err, "%s", out)
		require.Contains(t, string(out), "revoked 1 credential(s) of service:requester")
		// The server closes the requester's connection: nothing answers.
		waitFor(t, "requester cut off", 20*time.Second, func() bool {
			return c.run("request", "--agent", "market-intel", "--perm", "data:write", "--duration", "1m", "--reason", "revoked requester").Code == 2
		})
		out, err = creds("issue", "service", "requester")
		require.NoError(t, err, "%s", out)
		require.Contains(t, string(out), filepath.Join(dep.dir, "creds", "service-requester.creds"))
		svc["requester"].kill()
		svc["requester"].start() // with the new file
		waitFor(t, "requester back with its new credential", 20*time.Second, func() bool {
			return c.run("request", "--agent", "market-intel", "--perm", "data:write", "--duration", "1m", "--reason", "new requester credential").Code == 0
		})
	})

	t.Run("human approval and guardrail across processes", func(t *testing.T) {
		c := cli{t: t, bin: bin, url: url}
		wait := c.background("request", "--agent", "svc-price-optimizer", "--perm", "integrations:write", "--duration", "5m", "--reason", "distributed approval", "--json")
		var reqID string
		waitFor(t, "pending", 20*time.Second, func() bool {
			for _, p := range c.as("dev-alice").run("pending", "--json").JSONLines(t) {
				if id, _ := p["request_id"].(string); id != "" {
					reqID = id
					return true
				}
			}
			return false
		})
		require.Equal(t, 0, c.as("dev-alice").run("approve", reqID).Code)
		r := wait()
		require.Equal(t, 0, r.Code, r.Stderr)
		grant := r.JSON(t)["grant_id"].(string)

		require.Equal(t, 0, c.run("guardrail", "fire", "--agent", "svc-price-optimizer", "--rule", "price-floor").Code)
		waitFor(t, "guardrail revocation", 10*time.Second, func() bool { return len(revocationsOf(t, url, grant)) == 1 })
		require.Equal(t, events.RevokedGuardrail, revocationsOf(t, url, grant)[0].Reason)
		require.Equal(t, 0, c.as("dev-alice").run("reinstate", "--agent", "svc-price-optimizer").Code)
	})

	t.Run("durable consumers deleted from under the services", func(t *testing.T) {
		// The administrator removes every service's durable consumer
		// (`nats consumer rm`); each service makes its own again with its
		// own credential, and the work goes on: a request is decided and
		// granted once, and its expiry revoked once.
		c := cli{t: t, bin: bin, url: url}
		js, err := jetstream.New(adminConnect(t, url))
		require.NoError(t, err)
		for stream, names := range auth.Durables {
			for _, d := range names {
				require.NoError(t, js.DeleteConsumer(t.Context(), stream, d), "%s on %s", d, stream)
			}
		}
		waitFor(t, "every durable consumer made again by its service", 30*time.Second, func() bool {
			for stream, names := range auth.Durables {
				for _, d := range names {
					if _, err := js.Consumer(t.Context(), stream, d); err != nil {
						return false
					}
				}
			}
			return true
		})
		r := c.run("request", "--agent", "market-intel", "--perm", "data:write", "--duration", "1s", "--reason", "consumers deleted", "--json")
		require.Equal(t, 0, r.Code, r.Stderr)
		grant := r.JSON(t)["grant_id"].(string)
		require.Equal(t, 1, countDecided(t, url, "consumers deleted"))
		require.Len(t, grantedOf(t, url, grant), 1, "one jit.granted")
		waitFor(t, "revoked at its expiry", 20*time.Second, func() bool { return len(revocationsOf(t, url, grant)) == 1 })
		require.Equal(t, events.RevokedExpired, revocationsOf(t, url, grant)[0].Reason)
	})

	// Every grant ever made has at most one revocation.
	counts := map[string]int{}
	for _, e := range audit(t, url, "jit.revoked.>") {
		counts[events.GrantID(e)]++
	}
	for g, n := range counts {
		require.Equal(t, 1, n, fmt.Sprintf("grant %s", g))
	}

	// The auditor stops with a last checkpoint, and the whole trail verifies.
	require.Equal(t, 0, svc["auditor"].stop())
	r := c.run("audit", "verify", "--key", jitaudit.PublicKeyPath(filepath.Join(dep.dir, "keys", "audit-ed25519.key")), "--json")
	require.Equal(t, 0, r.Code, r.Stdout+r.Stderr)
	require.Equal(t, true, r.JSON(t)["whole"])
}

func countRequests(t *testing.T, url, reason string) int {
	n := 0
	for _, e := range audit(t, url, "jit.requested.>") {
		if r, err := events.DataAs[events.Request](e); err == nil && r.Reason == reason {
			n++
		}
	}
	return n
}

func countDecided(t *testing.T, url, reason string) int {
	n := 0
	for _, e := range audit(t, url, "jit.decided.>") {
		if d, err := events.DataAs[events.Decision](e); err == nil && d.Request.Reason == reason {
			n++
		}
	}
	return n
}

func grantedOf(t *testing.T, url, grantID string) []events.Event {
	var out []events.Event
	for _, e := range audit(t, url, "jit.granted.>") {
		if events.GrantID(e) == grantID {
			out = append(out, e)
		}
	}
	return out
}
