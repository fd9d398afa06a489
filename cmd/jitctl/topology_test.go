package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// TestTopologyReplicas: jitctl topology replicas 3 moves a single-replica
// topology on a three-node cluster to three replicas, every stream with
// its messages, and says so; a bad N is a usage error.
func TestTopologyReplicas(t *testing.T) {
	c := natstest.RunCluster(t, 3)
	nc, err := nats.Connect(c.URLs())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return broker.Ensure(t.Context(), js, broker.Options{Update: true}) == nil },
		20*time.Second, 100*time.Millisecond)
	pub := broker.NewPublisher(js, "test")
	for i := range 10 {
		_, _, err := pub.Emit(t.Context(), fmt.Sprintf("ev-%d", i), events.TypeGuardrailFired, "a1", events.GuardrailFired{Agent: "a1", Rule: "r"})
		require.NoError(t, err)
	}
	env := map[string]string{"NATS_URL": c.URLs()}
	getenv := func(k string) string { return env[k] }
	noKeys := filepath.Join(t.TempDir(), "none")

	var out, errb syncBuffer
	code := run(t.Context(), []string{"--json", "topology", "replicas", "3", "--keys", noKeys}, &out, &errb, getenv)
	require.Equal(t, exitOK, code, "stderr %s", errb.String())
	var changes []broker.ReplicaChange
	require.NoError(t, json.Unmarshal([]byte(out.String()), &changes), out.String())
	require.Len(t, changes, len(broker.Streams()))
	require.Equal(t, broker.ReplicaChange{Stream: broker.AuditStream, From: 1, To: 3, Messages: 10, Leader: changes[0].Leader}, changes[0])
	for _, name := range broker.Streams() {
		st, err := js.Stream(t.Context(), name)
		require.NoError(t, err)
		require.Equal(t, 3, st.CachedInfo().Config.Replicas, name)
	}

	for _, bad := range []string{"0", "6", "three"} {
		var o, e syncBuffer
		require.Equal(t, exitError, run(t.Context(), []string{"topology", "replicas", bad, "--keys", noKeys}, &o, &e, getenv), bad)
		require.Contains(t, e.String(), "usage: jitctl topology", bad)
	}
}
