package allinone

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/sdk"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// cluster is three jitd Apps in process, one NATS cluster.
type cluster struct {
	apps    []*App
	keysDir string
	creds   string // node 1's credentials directory
}

// startCluster runs three jitd Apps that share one keys directory, form a
// cluster with --replicas 3, and run the auditor on the first node only.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{keysDir: filepath.Join(t.TempDir(), "keys")}
	var routes []string
	for range 3 {
		routes = append(routes, freeAddr(t))
	}
	// The auditor's node first, while the others still make a quorum for
	// its last checkpoint.
	t.Cleanup(func() {
		for _, a := range c.apps {
			a.Close()
		}
	})
	errs := make(chan error, 3)
	for i := range 3 {
		a := New(Options{ConfigFile: exampleConfig(t), DataDir: t.TempDir(), KeysDir: c.keysDir, NATSListen: "127.0.0.1:-1",
			ServerName: fmt.Sprintf("n%d", i+1), ClusterListen: routes[i], Routes: routes, Replicas: 3, NoAuditor: i > 0,
			CheckpointInterval: time.Hour},
			zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Timestamp().Str("node", fmt.Sprintf("n%d", i+1)).Logger())
		c.apps = append(c.apps, a)
		// Each waits for JetStream, which needs a quorum of the three.
		go func() { errs <- a.Run(t.Context()) }()
	}
	for range 3 {
		require.NoError(t, <-errs)
	}
	c.creds = c.apps[0].CredsDir()
	return c
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// connect connects as the principal whose credentials file node 1 wrote,
// to the client URLs of the nodes given.
func (c *cluster) connect(t *testing.T, file string, nodes ...int) *nats.Conn {
	t.Helper()
	var urls string
	for _, i := range nodes {
		if urls != "" {
			urls += ","
		}
		urls += c.apps[i].NATSURL()
	}
	nc, err := nats.Connect(urls, nats.UserCredentials(filepath.Join(c.creds, file)), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// admin connects as the break-glass administrator to the nodes given.
func (c *cluster) admin(t *testing.T, nodes ...int) jetstream.JetStream {
	t.Helper()
	store, err := auth.OpenStore(c.keysDir)
	require.NoError(t, err)
	is, err := store.Ephemeral(auth.Admin)
	require.NoError(t, err)
	opts, err := is.Options()
	require.NoError(t, err)
	var urls string
	for _, i := range nodes {
		if urls != "" {
			urls += ","
		}
		urls += c.apps[i].NATSURL()
	}
	nc, err := nats.Connect(urls, append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

// revocations reads every jit.revoked event of grantID.
func revocations(t *testing.T, js jetstream.JetStream, grantID string) []events.Revocation {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, broker.AuditStream)
	require.NoError(t, err)
	var out []events.Revocation
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject("jit.revoked.>"))
		if err != nil {
			return out
		}
		seq = m.Sequence + 1
		e, err := broker.FromMsg(m.Header, m.Data)
		require.NoError(t, err)
		r, err := events.DataAs[events.Revocation](e)
		require.NoError(t, err)
		if r.GrantID == grantID {
			out = append(out, r)
		}
	}
}

// TestClusterOfThreeJitdSurvivesANode: three jitd processes' worth of Apps
// form one cluster from the same code; the stream and buckets have three
// replicas; an agent's credential written by one node works on every node,
// and on every node it may ask only for its own agent;
// after the node that leads the audit stream is gone, a grant asked of
// another node is granted, and it is revoked at its end exactly once.
func TestClusterOfThreeJitdSurvivesANode(t *testing.T) {
	t0 := time.Now()
	c := startCluster(t)
	t.Logf("started %s", time.Since(t0))
	js := c.admin(t, 0, 1, 2)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for _, name := range broker.Streams() {
		st, err := js.Stream(ctx, name)
		require.NoError(t, err)
		require.Equal(t, 3, st.CachedInfo().Config.Replicas, name)
	}

	agent := "market-intel"
	file := auth.Principal{Kind: auth.KindAgent, ID: agent}.CredsFile()
	for i := range c.apps {
		cl, err := sdk.New(c.connect(t, file, i), agent)
		require.NoError(t, err)
		g, err := cl.Request(ctx, []string{"data:write"}, time.Minute, fmt.Sprintf("node %d", i+1), nil)
		require.NoError(t, err, "granted through node %d", i+1)
		require.NoError(t, g.Done(ctx))
	}

	// Isolation holds on every node: an agent's credential may ask only for
	// itself, and the refusal is on the replicated audit stream.
	for i := range c.apps {
		other, err := sdk.New(c.connect(t, file, i), "svc-price-optimizer")
		require.NoError(t, err)
		_, err = other.Request(ctx, []string{"data:write"}, time.Minute, "as another agent", nil)
		var refused *sdk.RefusedError
		require.ErrorAs(t, err, &refused, "node %d", i+1)
		require.Equal(t, 403, refused.Status, "node %d", i+1)
	}
	t.Logf("granted %s", time.Since(t0))
	// Lose the node that leads the audit stream.
	var lead int
	require.Eventually(t, func() bool {
		st, err := js.Stream(ctx, broker.AuditStream)
		if err != nil || st.CachedInfo().Cluster == nil {
			return false
		}
		for i, a := range c.apps {
			if a.server.Name() == st.CachedInfo().Cluster.Leader {
				lead = i
				return true
			}
		}
		return false
	}, 10*time.Second, 50*time.Millisecond)
	c.apps[lead].Close()
	closed := time.Now()
	t.Logf("closed n%d %s", lead+1, time.Since(t0))
	var others []int
	for i := range c.apps {
		if i != lead {
			others = append(others, i)
		}
	}
	js = c.admin(t, others...)
	// A stopped node hands its leaderships over (lame-duck mode): the audit
	// stream has a leader again without waiting out an election (4-9 s).
	require.Eventually(t, func() bool {
		st, err := js.Stream(ctx, broker.AuditStream)
		return err == nil && st.CachedInfo().Cluster != nil && st.CachedInfo().Cluster.Leader != "" &&
			st.CachedInfo().Cluster.Leader != fmt.Sprintf("n%d", lead+1)
	}, 10*time.Second, 20*time.Millisecond)
	// An election would need at least 3 s after the shutdown (a 4 s
	// minimum time-out from the last heartbeat, sent every second).
	t.Logf("the audit stream led again %s after the node was closed", time.Since(closed))
	require.Less(t, time.Since(closed), 2*time.Second, "handed over, not elected after a time-out")
	cl, err := sdk.New(c.connect(t, file, others...), agent)
	require.NoError(t, err)
	// A decision the lost node held comes again only after the consumers'
	// ack wait: a request caught by it can be denied as expired before it
	// was granted (never granted late). Ask again until one is granted.
	var g *sdk.Grant
	for attempt := 1; ; attempt++ {
		g, err = cl.Request(ctx, []string{"data:write"}, 3*time.Second, "after a node is lost", nil)
		var denied *sdk.DeniedError
		if errors.As(err, &denied) && attempt < 5 {
			t.Logf("attempt %d: %v", attempt, err)
			continue
		}
		require.NoError(t, err)
		break
	}
	t.Logf("granted again %s", time.Since(t0))

	require.Eventually(t, func() bool { return len(revocations(t, js, g.ID())) > 0 }, 10*time.Second, 50*time.Millisecond)
	revs := revocations(t, js, g.ID())
	require.Len(t, revs, 1, "one jit.revoked")
	require.Equal(t, events.RevokedExpired, revs[0].Reason)
	late := revs[0].RevokedAt.Sub(g.ExpiresAt())
	require.GreaterOrEqual(t, late, time.Duration(0), "not before its end")
	require.Less(t, late, 3*time.Second, "on time")
	b, _ := json.Marshal(revs[0])
	t.Logf("revoked %s after expires_at: %s", late, b)
}
