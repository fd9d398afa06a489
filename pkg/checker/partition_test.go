package checker_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/checker"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// TestMinorityCheckerFailsClosed: a checker whose server is cut off from
// the rest of a three-node cluster still reaches that server, which still
// answers it; the revocation the majority stores meanwhile never reaches
// it. It must fail closed within its staleness bound of losing the cluster,
// and after the partition heals it must know of the revocation before it
// counts grants again.
func TestMinorityCheckerFailsClosed(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-node cluster, a partition and two leader elections (about 30 s)")
	}
	const minority = 2
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, nc, js := natstest.PartitionableTopology(t)
	b, err := broker.OpenBuckets(ctx, js)
	require.NoError(t, err)
	for _, s := range []string{"KV_" + broker.BucketGrants, "KV_" + broker.BucketSuspensions} {
		natstest.WaitStreamCurrent(t, js, s, 3)
	}
	env := &natstest.Env{NC: nc, JS: js, Buckets: b, Log: natstest.Logger(t)}
	yml, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	src := env.ApplyConfig(t, string(yml))

	put := func(id string) {
		t.Helper()
		gb, err := json.Marshal(grant(id, agent, time.Now().Add(time.Hour), "data:write"))
		require.NoError(t, err)
		_, err = b.Grants.Put(ctx, broker.GrantKey(agent, id), gb)
		require.NoError(t, err)
	}
	put("grt_part")

	// The checker knows only the minority's server.
	cnc, err := nats.Connect(c.Servers[minority].ClientURL(), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond), nats.IgnoreDiscoveredServers())
	require.NoError(t, err)
	t.Cleanup(cnc.Close)
	cjs, err := jetstream.New(cnc)
	require.NoError(t, err)
	const bound = time.Second
	chk := checker.New(cjs, src, checker.WithStaleAfter(bound), checker.WithLogger(env.Log))
	require.NoError(t, chk.Start(ctx))
	t.Cleanup(chk.Stop)
	eventually(t, func() bool { return chk.Allowed(agent, "data:write") }, "the grant counts before the partition")

	c.Isolate(t, minority)
	cut := time.Now()
	require.True(t, cnc.IsConnected(), "the checker's server still serves it")
	// The majority revokes: at once if it leads the grants stream, after
	// electing a new leader if the cut-off server did.
	require.Eventually(t, func() bool {
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
		defer dcancel()
		return b.Grants.Delete(dctx, broker.GrantKey(agent, "grt_part")) == nil
	}, 30*time.Second, 100*time.Millisecond, "the majority takes the revocation")
	revoked := time.Now()
	t.Logf("revocation stored %s after the cut", revoked.Sub(cut).Round(time.Millisecond))

	// Stale within the bound plus two probes (fresh.go) of losing the
	// cluster's leader: the cut-off server's own answers no longer count.
	require.Eventually(t, chk.Stale, 30*time.Second, 5*time.Millisecond, "the minority's checker goes stale")
	t.Logf("stale %s after the cut", time.Since(cut).Round(time.Millisecond))
	require.False(t, chk.Allowed(agent, "data:write"), "stale: grants refused")
	require.True(t, chk.Allowed(agent, "data:read"), "base permissions still answer")
	// And it stays so for as long as the partition lasts: past the
	// election time-out (9 s at most), when the cut-off server finds its
	// streams leaderless and answers their info itself, and past the 10 s
	// after which a cut-off leader steps down.
	require.Never(t, func() bool { return !chk.Stale() }, 12*time.Second, 20*time.Millisecond,
		"the minority's checker never fresh while cut off")

	c.Heal(minority)
	require.Eventually(t, func() bool { return !chk.Stale() }, 60*time.Second, 20*time.Millisecond,
		"fresh again once the partition healed")
	require.False(t, chk.Allowed(agent, "data:write"),
		"fresh again only with the revocation the majority stored while it was cut off")

	put("grt_after")
	eventually(t, func() bool { return chk.Allowed(agent, "data:write") }, "a grant made after the heal counts")
}
