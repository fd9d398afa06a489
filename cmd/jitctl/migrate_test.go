package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/cmd/internal/allinone"
	"github.com/agentjit/jit/pkg/auth"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// migrationConfig is examples/jit.yaml with a third agent, idle-bot, for a
// guardrail to suspend: a live suspension beside a live grant and a pending
// request, each of another agent.
func migrationConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../examples/jit.yaml")
	require.NoError(t, err)
	s := strings.Replace(string(b), "agents:\n", "agents:\n  - id: idle-bot\n    owner: ops-team\n    base: [data:read]\n    max_jit_duration: 10m\n", 1)
	s = strings.Replace(s, "agents: [market-intel, svc-price-optimizer]\n", "agents: [market-intel, svc-price-optimizer, idle-bot]\n", 1)
	require.Contains(t, s, "- id: idle-bot")
	require.Contains(t, s, "svc-price-optimizer, idle-bot]")
	path := filepath.Join(t.TempDir(), "jit.yaml")
	require.NoError(t, os.WriteFile(path, []byte(s), 0o600))
	return path
}

func testLogger(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
}

// runStandalone starts a standalone jitd on dataDir.
func runStandalone(t *testing.T, dataDir, config string) *allinone.App {
	t.Helper()
	app := allinone.New(allinone.Options{ConfigFile: config, DataDir: dataDir, NATSListen: "127.0.0.1:-1", CheckpointInterval: time.Hour}, testLogger(t))
	require.NoError(t, app.Run(context.Background()))
	t.Cleanup(app.Close)
	return app
}

type grantOut struct {
	id      string
	expires time.Time
}

// standaloneData is what populate made.
type standaloneData struct {
	short, long grantOut
	pending     string // a request waiting for an approver
}

// populate makes, through the standalone's API with the credentials it
// wrote: a guardrail fire (idle-bot suspended), a grant of an hour
// (market-intel), a request waiting for an approver (svc-price-optimizer),
// and last a grant of 6 s (market-intel).
func populate(t *testing.T, app *allinone.App) standaloneData {
	t.Helper()
	h := &harness{t: t, vars: map[string]string{"NATS_URL": app.NATSURL(), "JIT_CREDS_DIR": app.CredsDir()}, ctx: t.Context()}
	var d standaloneData
	r := h.run("guardrail", "fire", "--agent", "idle-bot", "--rule", "price-floor", "--detail", "before the move")
	require.Equal(t, exitOK, r.code, "stdout %s stderr %s", r.stdout, r.stderr)
	grant := func(duration string) grantOut {
		r := h.run("request", "--agent", "market-intel", "--perm", "data:write", "--duration", duration, "--reason", "before the move", "--json")
		require.Equal(t, exitOK, r.code, "stdout %s stderr %s", r.stdout, r.stderr)
		var g grantedLine
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &g), r.stdout)
		require.Equal(t, "granted", g.Outcome)
		return grantOut{id: g.GrantID, expires: g.ExpiresAt}
	}
	d.long = grant("1h")
	out, _ := h.start("request", "--agent", "svc-price-optimizer", "--perm", "integrations:write", "--duration", "10m",
		"--reason", "before the move", "--timeout", "1m", "--json")
	require.Eventually(t, func() bool {
		var p pendingLine
		first, _, _ := strings.Cut(out.String(), "\n")
		if json.Unmarshal([]byte(first), &p) != nil || p.Event != "pending" {
			return false
		}
		d.pending = p.RequestID
		return true
	}, 20*time.Second, 20*time.Millisecond, "the request waits for an approver")
	// The suspension is stored (the revoker writes it after the event).
	_, js := adminConn(t, filepath.Join(filepath.Dir(app.CredsDir()), "keys"), app.NATSURL())
	require.Eventually(t, func() bool {
		kv, err := js.KeyValue(t.Context(), broker.BucketSuspensions)
		if err != nil {
			return false
		}
		_, err = kv.Get(t.Context(), "idle-bot")
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "idle-bot suspended")
	// Last, so that it is still live when the standalone stops.
	d.short = grant("6s")
	return d
}

// adminConn connects as the administrator, with a credential made from the
// keys in dir, to urls.
func adminConn(t *testing.T, dir, urls string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	store, err := auth.OpenStore(dir)
	require.NoError(t, err)
	is, err := store.Ephemeral(auth.Admin)
	require.NoError(t, err)
	opts, err := is.Options()
	require.NoError(t, err)
	nc, err := nats.Connect(urls, append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

// storeView is every message, state and durable consumer of the
// topology's streams.
type storeView struct {
	msgs     map[string][]jetstream.RawStreamMsg
	state    map[string]jetstream.StreamState
	durables map[string]map[string]consumerPos
}

// consumerPos is where a durable consumer is in its stream.
type consumerPos struct{ delivered, ackFloor uint64 }

// readStoppedStore reads a stopped standalone's store, opened as jitctl
// topology migrate opens it.
func readStoppedStore(t *testing.T, dataDir string) storeView {
	t.Helper()
	store, err := auth.OpenStore(filepath.Join(dataDir, "keys"))
	require.NoError(t, err)
	nc, closeSource, err := openStandalone(filepath.Join(dataDir, "jetstream"), store)
	require.NoError(t, err)
	defer closeSource()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return readView(t, js)
}

func readView(t *testing.T, js jetstream.JetStream) storeView {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	v := storeView{msgs: map[string][]jetstream.RawStreamMsg{}, state: map[string]jetstream.StreamState{}, durables: map[string]map[string]consumerPos{}}
	for _, name := range broker.Streams() {
		st, err := js.Stream(ctx, name)
		require.NoError(t, err, name)
		info, err := st.Info(ctx)
		require.NoError(t, err, name)
		v.state[name] = info.State
		for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			require.NoError(t, err, "%s %d", name, seq)
			v.msgs[name] = append(v.msgs[name], *m)
		}
		v.durables[name] = map[string]consumerPos{}
		l := st.ListConsumers(ctx)
		for ci := range l.Info() {
			if ci.Config.Durable != "" {
				v.durables[name][ci.Name] = consumerPos{ci.Delivered.Stream, ci.AckFloor.Stream}
			}
		}
		require.NoError(t, l.Err())
	}
	return v
}

// requireSame: every message of before is where js points, at its
// sequence, with its subject, time, data and headers (but for the
// subjects in gone, which may have expired), every durable consumer with
// its positions.
func requireSame(t *testing.T, js jetstream.JetStream, before storeView, gone ...string) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		for _, name := range broker.Streams() {
			st, err := js.Stream(ctx, name)
			require.NoError(c, err, name)
			for _, want := range before.msgs[name] {
				if slices.Contains(gone, want.Subject) {
					continue
				}
				got, err := st.GetMsg(ctx, want.Sequence)
				require.NoError(c, err, "%s %d (%s)", name, want.Sequence, want.Subject)
				require.Equal(c, want.Subject, got.Subject, "%s %d", name, want.Sequence)
				require.Equal(c, want.Data, got.Data, "%s %d", name, want.Sequence)
				require.True(c, want.Time.Equal(got.Time), "%s %d: stored at %s, now %s", name, want.Sequence, want.Time, got.Time)
				for k := range want.Header {
					if strings.HasPrefix(k, "Nats-Stream") || strings.HasPrefix(k, "Nats-Sequence") || strings.HasPrefix(k, "Nats-Time-Stamp") || k == "Nats-Subject" || k == "Nats-Num-Pending" || k == "Nats-Last-Sequence" {
						continue // the direct get's own
					}
					require.Equal(c, want.Header.Values(k), got.Header.Values(k), "%s %d header %s", name, want.Sequence, k)
				}
			}
			for durable, pos := range before.durables[name] {
				cons, err := js.Consumer(ctx, name, durable)
				require.NoError(c, err, "%s consumer %s", name, durable)
				ci := cons.CachedInfo()
				require.Equal(c, pos, consumerPos{ci.Delivered.Stream, ci.AckFloor.Stream}, "%s consumer %s", name, durable)
			}
		}
	}, 30*time.Second, 200*time.Millisecond)
}

// streamStates is each stream's state and replicas where js points.
func streamStates(t *testing.T, js jetstream.JetStream) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, name := range broker.Streams() {
		st, err := js.Stream(t.Context(), name)
		require.NoError(t, err, name)
		info := st.CachedInfo()
		out[name] = fmt.Sprintf("%d msgs, %d..%d, %d consumers, R%d", info.State.Msgs, info.State.FirstSeq, info.State.LastSeq, info.State.Consumers, info.Config.Replicas)
	}
	return out
}

// revocationsOf counts the jit.revoked events of grantID in the audit
// stream's messages.
func revocationsOf(t *testing.T, msgs []jetstream.RawStreamMsg, grantID string) int {
	t.Helper()
	n := 0
	for _, m := range msgs {
		if !strings.HasPrefix(m.Subject, events.TypeRevoked+".") {
			continue
		}
		e, err := broker.FromMsg(m.Header, m.Data)
		require.NoError(t, err)
		r, err := events.DataAs[events.Revocation](e)
		require.NoError(t, err)
		if r.GrantID == grantID {
			n++
		}
	}
	return n
}

// jitdCluster is three jitd nodes in process, sharing one keys directory.
type jitdCluster struct {
	t      *testing.T
	keys   string
	dirs   []string
	routes []string
	apps   []*allinone.App
}

func newJitdCluster(t *testing.T, keys string) *jitdCluster {
	c := &jitdCluster{t: t, keys: keys}
	for range 3 {
		c.dirs = append(c.dirs, t.TempDir())
		c.routes = append(c.routes, freeAddr(t))
	}
	t.Cleanup(c.stop)
	return c
}

// start runs the three nodes, the broker only or with the services (and
// config); the auditor on the first.
func (c *jitdCluster) start(brokerOnly bool, config string) {
	c.t.Helper()
	c.apps = make([]*allinone.App, 3)
	errs := make(chan error, 3)
	for i := range 3 {
		c.apps[i] = allinone.New(c.options(i, brokerOnly, config), testLogger(c.t).With().Str("node", fmt.Sprintf("n%d", i+1)).Logger())
		// A node with services waits for JetStream, which needs a quorum.
		go func() { errs <- c.apps[i].Run(context.Background()) }()
	}
	for range 3 {
		require.NoError(c.t, <-errs)
	}
}

// restart starts node i again after its Close.
func (c *jitdCluster) restart(i int, brokerOnly bool, config string) *allinone.App {
	c.t.Helper()
	a := allinone.New(c.options(i, brokerOnly, config), testLogger(c.t).With().Str("node", fmt.Sprintf("n%d", i+1)).Logger())
	require.NoError(c.t, a.Run(context.Background()))
	return a
}

func (c *jitdCluster) options(i int, brokerOnly bool, config string) allinone.Options {
	return allinone.Options{ConfigFile: config, DataDir: c.dirs[i], KeysDir: c.keys, NATSListen: "127.0.0.1:-1",
		ServerName: fmt.Sprintf("n%d", i+1), ClusterListen: c.routes[i], Routes: c.routes, Replicas: 3, NoAuditor: i > 0,
		CheckpointInterval: time.Hour, BrokerOnly: brokerOnly}
}

func (c *jitdCluster) stop() {
	var wg sync.WaitGroup
	for _, a := range c.apps {
		wg.Go(a.Close)
	}
	wg.Wait()
}

func (c *jitdCluster) urls() string {
	var u []string
	for _, a := range c.apps {
		u = append(u, a.NATSURL())
	}
	return strings.Join(u, ",")
}

// requireEveryNodeHolds: every node of the cluster has, in its own store,
// every stream with the messages and sequences of its leader, and every
// durable consumer; so any one node can be lost.
func requireEveryNodeHolds(t *testing.T, keys, urls string, js jetstream.JetStream, before storeView) {
	t.Helper()
	store, err := auth.OpenStore(keys)
	require.NoError(t, err)
	sysCreds, err := store.SystemCreds()
	require.NoError(t, err)
	sys, err := nats.Connect(urls, nats.UserCredentials(sysCreds))
	require.NoError(t, err)
	defer sys.Close()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		want := map[string]jetstream.StreamState{}
		for _, name := range broker.Streams() {
			st, err := js.Stream(t.Context(), name)
			require.NoError(c, err)
			want[name] = st.CachedInfo().State
		}
		inbox := sys.NewInbox()
		sub, err := sys.SubscribeSync(inbox)
		require.NoError(c, err)
		defer func() { _ = sub.Unsubscribe() }()
		require.NoError(c, sys.PublishRequest("$SYS.REQ.SERVER.PING.JSZ", inbox, []byte(`{"accounts":true,"streams":true,"consumer":true}`)))
		nodes := map[string]bool{}
		for range 3 {
			m, err := sub.NextMsg(5 * time.Second)
			require.NoError(c, err, "an answer from each node")
			var r struct {
				Server server.ServerInfo `json:"server"`
				Data   server.JSInfo     `json:"data"`
			}
			require.NoError(c, json.Unmarshal(m.Data, &r))
			nodes[r.Server.Name] = true
			held := map[string]server.StreamDetail{}
			for _, acc := range r.Data.AccountDetails {
				if acc.Id == store.JITAccount() {
					for _, sd := range acc.Streams {
						held[sd.Name] = sd
					}
				}
			}
			for _, name := range broker.Streams() {
				sd, ok := held[name]
				require.True(c, ok, "%s holds %s", r.Server.Name, name)
				require.Equal(c, want[name].Msgs, sd.State.Msgs, "%s: %s messages", r.Server.Name, name)
				require.Equal(c, want[name].FirstSeq, sd.State.FirstSeq, "%s: %s first sequence", r.Server.Name, name)
				require.Equal(c, want[name].LastSeq, sd.State.LastSeq, "%s: %s last sequence", r.Server.Name, name)
				consumers := map[string]bool{}
				for _, ci := range sd.Consumer {
					consumers[ci.Name] = true
				}
				for durable := range before.durables[name] {
					require.True(c, consumers[durable], "%s holds %s's consumer %s", r.Server.Name, name, durable)
				}
			}
		}
		require.Len(c, nodes, 3)
	}, 30*time.Second, 200*time.Millisecond)
}

// TestTopologyMigrateMovesAStandaloneIntoACluster: a standalone jitd holds
// events, a live grant, one of 6 s, a suspension, a pending request and
// its configuration; it stops; a new cluster of three starts with a copy
// of its keys, the broker only; the 6 s grant expires meanwhile. jitctl
// topology migrate moves everything: every event and every key at its
// sequence with its headers (TTL included), every durable consumer at its
// position, three replicas held whole by every node. A second run is
// refused and changes nothing. Then the nodes start their services: the
// grant that expired while the deployment moved is revoked exactly once,
// the live one is not, the pending request is still waiting, and the
// credentials the standalone wrote work on the cluster.
func TestTopologyMigrateMovesAStandaloneIntoACluster(t *testing.T) {
	config := migrationConfig(t)
	dataDir := filepath.Join(t.TempDir(), "standalone")
	app := runStandalone(t, dataDir, config)
	d := populate(t, app)
	app.Close()

	before := readStoppedStore(t, dataDir)
	for _, name := range broker.Streams() {
		if name != "KV_"+broker.BucketPolicyHistory { // written by the policy service on its own schedule
			require.NotEmpty(t, before.msgs[name], "the standalone's %s holds something", name)
		}
	}
	require.NotEmpty(t, before.durables[broker.AuditStream])
	require.NotEmpty(t, before.durables["KV_"+broker.BucketGrants], "the revoker's expiry consumer")
	require.Zero(t, revocationsOf(t, before.msgs[broker.AuditStream], d.short.id), "the 6 s grant is not revoked before the move")

	keys := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.CopyFS(keys, os.DirFS(filepath.Join(dataDir, "keys"))))
	c := newJitdCluster(t, keys)
	c.start(true, "")
	require.Eventually(t, func() bool { return time.Now().After(d.short.expires) }, 30*time.Second, 20*time.Millisecond,
		"the 6 s grant expires while the deployment is stopped")

	h := &harness{t: t, vars: map[string]string{"NATS_URL": c.urls()}, ctx: t.Context()}
	r := h.run("--json", "topology", "migrate", "--data-dir", dataDir)
	require.Equal(t, exitOK, r.code, "stdout %s stderr %s", r.stdout, r.stderr)
	var m broker.Migration
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &m), r.stdout)
	require.Empty(t, m.Absent)
	require.Empty(t, m.Left)
	require.Len(t, m.Streams, len(broker.Streams()))
	for i, s := range m.Streams {
		require.Equal(t, broker.Streams()[i], s.Stream)
		require.Equal(t, 3, s.Replicas, s.Stream)
		if s.Stream == "KV_"+broker.BucketGrants {
			// The expired key's marker may have been written when the
			// store was opened for the move.
			require.GreaterOrEqual(t, s.LastSeq, before.state[s.Stream].LastSeq, s.Stream)
			t.Logf("the expired grant's marker was written by the server that %s",
				map[bool]string{true: "opened the standalone's store", false: "restored the stream in the cluster"}[s.LastSeq > before.state[s.Stream].LastSeq])
		} else {
			require.Equal(t, before.state[s.Stream].LastSeq, s.LastSeq, s.Stream)
		}
		require.Equal(t, len(before.durables[s.Stream]), len(s.Durables), s.Stream)
	}
	entries, err := os.ReadDir(dataDir)
	require.NoError(t, err)
	for _, e := range entries {
		require.False(t, strings.HasPrefix(e.Name(), "jit-migrate-"), "snapshot directory %s left behind", e.Name())
	}

	_, js := adminConn(t, keys, c.urls())
	shortKey, longKey := broker.GrantKey("market-intel", d.short.id), broker.GrantKey("market-intel", d.long.id)
	requireSame(t, js, before, "$KV."+broker.BucketGrants+"."+shortKey)
	for _, name := range broker.Streams() {
		st, err := js.Stream(t.Context(), name)
		require.NoError(t, err)
		require.Equal(t, 3, st.CachedInfo().Config.Replicas, name)
	}
	grants, err := js.KeyValue(t.Context(), broker.BucketGrants)
	require.NoError(t, err)
	_, err = grants.Get(t.Context(), longKey)
	require.NoError(t, err, "the live grant's key")
	require.Eventually(t, func() bool {
		_, err := grants.Get(t.Context(), shortKey)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	}, 10*time.Second, 20*time.Millisecond, "the expired grant's key expires in the cluster too")
	requireEveryNodeHolds(t, keys, c.urls(), js, before)
	// And one is lost: the audit stream's leader. The other two have it
	// all.
	st, err := js.Stream(t.Context(), broker.AuditStream)
	require.NoError(t, err)
	lost := int(st.CachedInfo().Cluster.Leader[1] - '1')
	require.Equal(t, fmt.Sprintf("n%d", lost+1), st.CachedInfo().Cluster.Leader)
	c.apps[lost].Close()
	var rest []string
	for i, a := range c.apps {
		if i != lost {
			rest = append(rest, a.NATSURL())
		}
	}
	_, js2 := adminConn(t, keys, strings.Join(rest, ","))
	requireSame(t, js2, before, "$KV."+broker.BucketGrants+"."+shortKey)
	c.apps[lost] = c.restart(lost, true, "")

	// A second run finds the data there: refused, nothing changed.
	states := streamStates(t, js)
	r = h.run("topology", "migrate", "--data-dir", dataDir)
	require.Equal(t, exitRefused, r.code, "stdout %s stderr %s", r.stdout, r.stderr)
	require.Contains(t, r.stderr, "refused, nothing changed")
	require.Contains(t, r.stderr, broker.AuditStream+" (")
	require.Equal(t, states, streamStates(t, js))

	// The nodes start their services, one at a time: the other two keep
	// the quorum meanwhile.
	for i := range c.apps {
		c.apps[i].Close()
		c.apps[i] = c.restart(i, false, config)
	}
	_, js = adminConn(t, keys, c.urls())
	revocations := func(grantID string) int {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		msgs, err := natstest.ReadAudit(ctx, js, events.TypeRevoked+".>")
		require.NoError(t, err)
		return revocationsOf(t, msgs, grantID)
	}
	require.Eventually(t, func() bool { return revocations(d.short.id) > 0 }, 30*time.Second, 50*time.Millisecond,
		"the grant that expired during the move is revoked")
	// The revoker has seen everything of the grants bucket, the expiry
	// marker included, and the lease ledger says revoked.
	require.Eventually(t, func() bool {
		cons, err := js.Consumer(t.Context(), "KV_"+broker.BucketGrants, "revoker-expiry")
		if err != nil {
			return false
		}
		ci := cons.CachedInfo()
		return ci.NumPending == 0 && ci.NumAckPending == 0
	}, 30*time.Second, 50*time.Millisecond)
	leases, err := js.KeyValue(t.Context(), broker.BucketLeases)
	require.NoError(t, err)
	e, err := leases.Get(t.Context(), shortKey)
	require.NoError(t, err)
	var l events.Lease
	require.NoError(t, json.Unmarshal(e.Value(), &l))
	require.Equal(t, events.LeaseRevoked, l.State)
	require.Equal(t, 1, revocations(d.short.id), "exactly one jit.revoked")
	require.Zero(t, revocations(d.long.id), "the live grant is not revoked")

	// The standalone's credentials work on the cluster: the checker's, the
	// operator's (with an approver's token).
	h = &harness{t: t, vars: map[string]string{"NATS_URL": c.urls(), "JIT_CREDS_DIR": filepath.Join(dataDir, "creds"), "JIT_TOKEN": "dev-alice"}, ctx: t.Context()}
	r = h.run("check", "--agent", "market-intel", "--perm", "data:write")
	require.Equal(t, exitOK, r.code, "stdout %s stderr %s", r.stdout, r.stderr)
	r = h.run("--json", "pending")
	require.Equal(t, exitOK, r.code, "stdout %s stderr %s", r.stdout, r.stderr)
	require.Contains(t, r.stdout, d.pending)
}

// TestTopologyMigrateRefusesWhatItMustNotTouch: a standalone that still
// runs, a target that is no cluster when three replicas are asked, and a
// target that has the data already are each refused with exit 1, and the
// target is left as it was; a target whose streams exist but are empty
// (pristine) is migrated into. Bad flags are usage errors.
func TestTopologyMigrateRefusesWhatItMustNotTouch(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "standalone")
	app := runStandalone(t, dataDir, "../../examples/jit.yaml")
	keys := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.CopyFS(keys, os.DirFS(filepath.Join(dataDir, "keys"))))
	target := allinone.New(allinone.Options{DataDir: t.TempDir(), KeysDir: keys, NATSListen: "127.0.0.1:-1", BrokerOnly: true}, testLogger(t))
	require.NoError(t, target.Run(context.Background()))
	t.Cleanup(target.Close)
	_, tjs := adminConn(t, keys, target.NATSURL())
	noStreams := func() {
		t.Helper()
		var names []string
		l := tjs.StreamNames(t.Context())
		for n := range l.Name() {
			names = append(names, n)
		}
		require.NoError(t, l.Err())
		require.Empty(t, names, "the target has no stream")
	}
	h := &harness{t: t, vars: map[string]string{"NATS_URL": target.NATSURL()}, ctx: t.Context()}

	r := h.run("topology", "migrate", "--data-dir", dataDir, "--replicas", "1")
	require.Equal(t, exitRefused, r.code, "stdout %s stderr %s", r.stdout, r.stderr)
	require.Contains(t, r.stderr, "refused, nothing changed")
	require.Contains(t, r.stderr, "the JetStream store is in use")
	require.Contains(t, r.stderr, "stop the standalone jitd first")
	noStreams()
	_, sjs := adminConn(t, filepath.Join(dataDir, "keys"), app.NATSURL())
	_, err := sjs.AccountInfo(t.Context())
	require.NoError(t, err, "the standalone still serves")

	app.Close()
	r = h.run("topology", "migrate", "--data-dir", dataDir)
	require.Equal(t, exitRefused, r.code, "stdout %s stderr %s", r.stdout, r.stderr)
	require.Contains(t, r.stderr, "not part of a cluster")
	noStreams()

	// Streams that exist but never held anything (a jitd that created the
	// topology and wrote nothing) are replaced.
	require.NoError(t, broker.Ensure(t.Context(), tjs, broker.DefaultOptions()))
	before := readStoppedStore(t, dataDir)
	r = h.run("--json", "topology", "migrate", "--data-dir", dataDir, "--replicas", "1")
	require.Equal(t, exitOK, r.code, "stdout %s stderr %s", r.stdout, r.stderr)
	var m broker.Migration
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &m), r.stdout)
	require.Len(t, m.Streams, len(broker.Streams()))
	requireSame(t, tjs, before)

	states := streamStates(t, tjs)
	r = h.run("topology", "migrate", "--data-dir", dataDir, "--replicas", "1")
	require.Equal(t, exitRefused, r.code, "stdout %s stderr %s", r.stdout, r.stderr)
	require.Contains(t, r.stderr, broker.AuditStream+" (")
	require.Equal(t, states, streamStates(t, tjs))

	for _, bad := range [][]string{{"--replicas", "0"}, {"--replicas", "6"}, {"extra"}} {
		r = h.run(append([]string{"topology", "migrate", "--data-dir", dataDir}, bad...)...)
		require.Equal(t, exitError, r.code, "%v", bad)
		require.Contains(t, r.stderr, "usage: jitctl topology", "%v", bad)
	}
	r = h.run("topology", "migrate", "--data-dir", t.TempDir(), "--replicas", "1")
	require.Equal(t, exitError, r.code)
	require.Contains(t, r.stderr, "no JetStream store in")
}
