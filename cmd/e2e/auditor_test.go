package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	jitaudit "github.com/agentjit/jit/pkg/audit"
	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

func checkpointsOn(t *testing.T, url string) []events.Checkpoint {
	var out []events.Checkpoint
	for _, e := range audit(t, url, jitaudit.CheckpointSubject) {
		c, err := events.DataAs[events.Checkpoint](e)
		require.NoError(t, err)
		out = append(out, c)
	}
	return out
}

// TestAuditorSurvivesSIGKILL kills the auditor process with SIGKILL while
// events keep arriving, starts it again, and checks that the chain goes on
// from its last checkpoint and the whole trail verifies with jitctl.
func TestAuditorSurvivesSIGKILL(t *testing.T) {
	bin := bins(t)
	dep := deployExternal(t, bin, exampleConfig(t), map[string][]string{"auditor": {"JIT_CHECKPOINT_INTERVAL=100ms"}})
	url, aud := dep.url, dep.services["auditor"]
	keyFile := filepath.Join(dep.dir, "keys", "audit-ed25519.key")
	// Events are published as the administrator: the auditor chains
	// whatever the stream stores.
	nc := adminConnect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	checkContract(t, url)

	// Events keep arriving until the end.
	pub := broker.NewPublisher(js, "e2e")
	ctx, stopPub := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	published := 0
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			// Events no service acts on, so that nothing else is
			// published once the publisher stops.
			agent := fmt.Sprintf("agent-%d", i%5)
			if _, _, err := pub.Emit(ctx, fmt.Sprintf("e2e-%d", i), events.TypeRejected, agent,
				events.Rejection{Stage: events.StageEvent, Code: events.CodeMalformed, Message: "load", Agent: agent,
					Actor: events.Actor{Kind: events.ActorSystem, ID: "e2e"}, RejectedAt: time.Now().UTC()}); err == nil {
				published++
			}
			// Pace the events (not a synchronisation): a few hundred a second.
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	t.Cleanup(func() { stopPub(); wg.Wait() })

	waitFor(t, "checkpoints before the kill", 30*time.Second, func() bool { return len(checkpointsOn(t, url)) >= 2 })
	aud.kill()
	before := checkpointsOn(t, url)
	last := before[len(before)-1]

	aud.start()
	waitFor(t, "checkpoints after the restart", 30*time.Second, func() bool { return len(checkpointsOn(t, url)) >= len(before)+2 })
	stopPub()
	wg.Wait()
	require.Equal(t, 0, aud.stop(), "a clean stop")

	after := checkpointsOn(t, url)
	resumed := after[len(before)]
	require.Equal(t, last.LastSeq+1, resumed.FirstSeq, "resumed right after the last checkpoint")
	require.Equal(t, last.Chain, resumed.PrevChain, "the same chain goes on")
	for _, c := range after {
		require.Empty(t, c.Skipped, "nothing was lost")
	}
	require.Positive(t, published)

	c := cli{t: t, bin: bin, url: url}
	r := c.run("audit", "verify", "--key", jitaudit.PublicKeyPath(keyFile), "--json")
	require.Equal(t, 0, r.Code, r.Stdout+r.Stderr)
	res := r.JSON(t)
	require.Equal(t, true, res["whole"])
	require.Equal(t, res["records"].(float64)-1, res["verified"], "everything but the last checkpoint is covered")
	require.GreaterOrEqual(t, res["records"].(float64), float64(published))
}
