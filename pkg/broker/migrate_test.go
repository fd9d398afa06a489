package broker_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// migrationSource is a server with the topology, events and keys.
func migrationSource(t *testing.T) *natstest.Env {
	t.Helper()
	src := natstest.Setup(t)
	pub := broker.NewPublisher(src.JS, "test")
	for i := range 5 {
		_, _, err := pub.Emit(t.Context(), fmt.Sprintf("ev-%d", i), events.TypeGuardrailFired, "a1", events.GuardrailFired{Agent: "a1", Rule: "r", FiredAt: time.Now()})
		require.NoError(t, err)
		_, err = src.Buckets.Leases.Create(t.Context(), broker.GrantKey("a1", fmt.Sprintf("g%d", i)), []byte(`{"state":"active"}`))
		require.NoError(t, err)
	}
	return src
}

func streamNames(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	var out []string
	l := js.StreamNames(t.Context())
	for n := range l.Name() {
		out = append(out, n)
	}
	require.NoError(t, l.Err())
	return out
}

// TestRestoreStreamNeverReplacesAStream: restoring a snapshot where its
// stream exists fails with ErrStreamExists and leaves that stream as it
// was; where it does not, the stream comes back with every message at its
// sequence.
func TestRestoreStreamNeverReplacesAStream(t *testing.T) {
	src := migrationSource(t)
	var snap bytes.Buffer
	s, err := broker.SnapshotStream(t.Context(), src.NC, broker.AuditStream, &snap)
	require.NoError(t, err)
	require.Equal(t, uint64(5), s.Messages)
	require.Equal(t, uint64(5), s.LastSeq)

	_, err = broker.RestoreStream(t.Context(), src.NC, s, bytes.NewReader(snap.Bytes()))
	require.True(t, errors.Is(err, broker.ErrStreamExists), "%v", err)
	st, err := src.JS.Stream(t.Context(), broker.AuditStream)
	require.NoError(t, err)
	require.Equal(t, uint64(5), st.CachedInfo().State.Msgs)

	dst := natstest.RunServer(t, "")
	nc, js := natstest.Connect(t, dst)
	got, err := broker.RestoreStream(t.Context(), nc, s, bytes.NewReader(snap.Bytes()))
	require.NoError(t, err)
	require.Equal(t, s.StreamTally, got)
	for seq := uint64(1); seq <= 5; seq++ {
		want, err := st.GetMsg(t.Context(), seq)
		require.NoError(t, err)
		rst, err := js.Stream(t.Context(), broker.AuditStream)
		require.NoError(t, err)
		m, err := rst.GetMsg(t.Context(), seq)
		require.NoError(t, err)
		require.Equal(t, want.Data, m.Data)
		require.Equal(t, want.Header.Get(jetstream.MsgIDHeader), m.Header.Get(jetstream.MsgIDHeader))
	}
}

// TestMigrateRemovesWhatItRestoredWhenARestoreFails: the target refuses the
// third stream (another stream there captures its subjects); Migrate
// removes the two it had restored, so the target is as it was; once the
// obstacle is gone, it moves everything.
func TestMigrateRemovesWhatItRestoredWhenARestoreFails(t *testing.T) {
	src := migrationSource(t)
	dst := natstest.RunServer(t, "")
	nc, js := natstest.Connect(t, dst)
	_, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "OBSTACLE", Subjects: []string{"$KV." + broker.BucketLeases + ".>"}})
	require.NoError(t, err)
	require.Equal(t, "KV_"+broker.BucketLeases, broker.Streams()[2], "the third stream is the one refused")

	m, err := broker.Migrate(t.Context(), src.NC, nc, broker.MigrateOptions{Replicas: 1, Dir: t.TempDir()})
	require.Error(t, err)
	require.Contains(t, err.Error(), "restore KV_"+broker.BucketLeases)
	require.Contains(t, err.Error(), "every stream this run restored was removed again")
	require.Len(t, m.Streams, 2, "two were restored before")
	require.Equal(t, []string{"OBSTACLE"}, streamNames(t, js))

	require.NoError(t, js.DeleteStream(t.Context(), "OBSTACLE"))
	m, err = broker.Migrate(t.Context(), src.NC, nc, broker.MigrateOptions{Replicas: 1, Dir: t.TempDir()})
	require.NoError(t, err)
	require.Len(t, m.Streams, len(broker.Streams()))
	require.Equal(t, uint64(5), m.Streams[0].Messages)
	leases, err := js.KeyValue(t.Context(), broker.BucketLeases)
	require.NoError(t, err)
	keys, err := leases.Keys(t.Context())
	require.NoError(t, err)
	require.Len(t, keys, 5)

	_, err = broker.Migrate(t.Context(), src.NC, nc, broker.MigrateOptions{Replicas: 1, Dir: t.TempDir()})
	require.True(t, errors.Is(err, broker.ErrTargetHasData), "%v", err)
}
