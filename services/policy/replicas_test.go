package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/config"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/agentjit/jit/pkg/service"
	"github.com/stretchr/testify/require"
)

// replica is one policy service instance with its own connection and its
// own watch of the config bucket, as a separately deployed process has.
type replica struct {
	deps service.Deps
	src  *config.Source
	svc  *Service
}

// startReplica starts replica i on env's broker. Its clock reads wed1000
// plus i seconds, so a decision's decided_at tells which replica made it.
func startReplica(t *testing.T, env *natstest.Env, i int) *replica {
	t.Helper()
	nc, js := natstest.Connect(t, env.Server)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := broker.OpenBuckets(ctx, js)
	require.NoError(t, err)
	wctx, wcancel := context.WithCancel(context.Background())
	t.Cleanup(wcancel)
	log := natstest.Logger(t).With().Int("replica", i).Logger()
	src, err := config.Watch(wctx, b.Config, log)
	require.NoError(t, err)
	r := &replica{deps: service.Deps{NC: nc, JS: js, Buckets: b, Config: src, Log: log,
		Now: func() time.Time { return wed1000.Add(time.Duration(i) * time.Second) }}, src: src}
	r.start(t)
	return r
}

// start starts a new service instance on the replica's connection and
// configuration source.
func (r *replica) start(t *testing.T) {
	t.Helper()
	r.svc = New(r.deps)
	require.NoError(t, r.svc.Start(context.Background()))
	t.Cleanup(r.svc.Stop)
}

// TestTwoReplicasApplyTheSameVersion runs two policy service instances on
// one broker, each with its own connection and its own watch of the config
// bucket. A configuration applied through jitapi.config.apply (answered by
// whichever replica) becomes active in both at the same revision and
// digest; a refused file changes neither; and after the change each
// replica decides with the new version.
func TestTwoReplicasApplyTheSameVersion(t *testing.T) {
	version := func(v string) string {
		y := strings.Replace(exampleYAML(t), "max_risk: 60", "max_risk: 90", 1)
		for _, name := range []string{"repeat-offenders", "market-intel-write", "optimizer-write-low-risk", "optimizer-integrations"} {
			y = strings.ReplaceAll(y, "name: "+name, "name: "+v+"-"+name)
		}
		return y
	}
	env := natstest.Setup(t)
	v1, err := config.Parse("v1.yaml", []byte(version("v1")))
	require.NoError(t, err)
	_, _, err = config.Apply(context.Background(), env.Buckets.Config, v1)
	require.NoError(t, err)
	reps := []*replica{startReplica(t, env, 0), startReplica(t, env, 1)}
	for _, r := range reps {
		require.Equal(t, v1.Digest(), r.src.Current().Digest())
	}

	apply := func(source, yml string) (ConfigApplyResult, error) {
		var out ConfigApplyResult
		err := broker.Call(context.Background(), env.NC, broker.InternalConfigApply, "",
			broker.Authorized[ConfigApplyInput]{Input: ConfigApplyInput{Source: source, YAML: yml}, By: events.Actor{Kind: events.ActorApprover, ID: "alice", Roles: []string{"security-admin"}}}, &out)
		return out, err
	}
	sameVersion := func(digest string, rev uint64) {
		t.Helper()
		require.Eventually(t, func() bool {
			for _, r := range reps {
				if r.src.Current().Digest() != digest || r.src.Revision() != rev {
					return false
				}
			}
			return true
		}, 5*time.Second, 10*time.Millisecond, "both replicas on revision %d, digest %s", rev, digest)
	}

	res, err := apply("v2.yaml", version("v2"))
	require.NoError(t, err)
	require.Equal(t, "applied", res.Outcome)
	sameVersion(res.Digest, res.Revision)

	// A refused file: both keep v2.
	_, err = apply("bad.yaml", strings.Replace(version("v3"), "agent.guardrail_fires_24h", "agent.guardrail_fires", 1))
	require.ErrorContains(t, err, `bad.yaml:`)
	require.ErrorContains(t, err, `undefined field 'guardrail_fires'`)
	for _, r := range reps {
		require.Equal(t, res.Digest, r.src.Current().Digest())
		require.Equal(t, res.Revision, r.src.Revision())
	}

	// Each replica in turn decides alone: both decide with v2.
	n := 0
	decideOn := func(only int) {
		t.Helper()
		other := reps[1-only]
		other.svc.Stop()
		for range 3 {
			publishRequest(t, env, fmt.Sprintf("req-rep-%02d", n), "svc-price-optimizer", 10*time.Minute, "data:write", "integrations:write")
			n++
		}
		got := waitDecisions(t, env, n)
		for i := n - 3; i < n; i++ {
			d := got[fmt.Sprintf("req-rep-%02d/policy", i)].decision
			require.Equal(t, wed1000.Add(time.Duration(only)*time.Second), d.DecidedAt, "request %d decided by replica %d", i, only)
			require.Equal(t, "v2-optimizer-write-low-risk,v2-optimizer-integrations", d.Rule, "request %d: %s", i, d.Reason)
		}
		other.start(t)
	}
	decideOn(0)
	decideOn(1)

	// Another change while both run: again one version everywhere.
	res3, err := apply("v3.yaml", version("v3"))
	require.NoError(t, err)
	require.Greater(t, res3.Revision, res.Revision)
	sameVersion(res3.Digest, res3.Revision)

	evs := configEvents(t, env)
	require.Len(t, evs, 3)
	require.Equal(t, []string{"applied", "refused", "applied"}, []string{evs[0].Outcome, evs[1].Outcome, evs[2].Outcome})
	require.Equal(t, "alice", evs[1].AppliedBy.ID)
}
