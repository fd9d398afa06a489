package policy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// publishHistory stores n rounds of events for agents a00..a03: a request,
// a decision (every third one a denial), a grant, and for a03 a guardrail
// fire; round numbers start at from. It returns the stream's last sequence.
func publishHistory(t *testing.T, env *natstest.Env, from, n int) uint64 {
	t.Helper()
	var futs []jetstream.PubAckFuture
	pub := func(id, typ, agent string, data any) {
		e, err := events.New(id, typ, "test", agent, data)
		require.NoError(t, err)
		m, err := broker.ToMsg(events.Subject(typ, agent), e)
		require.NoError(t, err)
		f, err := env.JS.PublishMsgAsync(m)
		require.NoError(t, err)
		futs = append(futs, f)
	}
	for i := from; i < from+n; i++ {
		agent := fmt.Sprintf("a%02d", i%4)
		id := fmt.Sprintf("req-%05d", i)
		out := events.OutcomeApproved
		if i%3 == 0 {
			out = events.OutcomeDenied
		}
		pub(id+"/r", events.TypeRequested, agent, events.Request{RequestID: id, Agent: agent, Permissions: []string{"data:write"}, DurationMS: 2000, Reason: "test"})
		pub(id+"/d", events.TypeDecided, agent, events.Decision{RequestID: id, Agent: agent, Outcome: out, Mode: events.ModeAutoApprove, Permissions: []string{"data:write"}, DurationMS: 2000})
		pub(id+"/g", events.TypeGranted, agent, events.Grant{GrantID: "g" + id, RequestID: id, Agent: agent, Permissions: []string{"data:write"}})
		if agent == "a03" {
			pub(id+"/f", events.TypeGuardrailFired, agent, events.GuardrailFired{Agent: agent, Rule: "price-floor", FiredAt: time.Now()})
		}
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatal(err)
		}
	}
	st, err := env.JS.Stream(t.Context(), broker.AuditStream)
	require.NoError(t, err)
	return st.CachedInfo().State.LastSeq
}

// follow starts a history, with snapshots in kv if it is not nil, and
// waits until it holds everything up to last.
func follow(t *testing.T, env *natstest.Env, kv jetstream.KeyValue, last uint64) *History {
	t.Helper()
	h := NewHistory()
	if kv != nil {
		h.UseSnapshots(kv)
	}
	require.NoError(t, h.Follow(t.Context(), env.JS, time.Now(), zerolog.Nop()))
	t.Cleanup(h.Stop)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	require.NoError(t, h.WaitFor(ctx, last))
	return h
}

// requireSameCounts: a and b count every agent's history alike, before
// every point of the stream.
func requireSameCounts(t *testing.T, a, b *History, last uint64) {
	t.Helper()
	ref := time.Now().Add(time.Second)
	for _, agent := range []string{"a00", "a01", "a02", "a03"} {
		for _, before := range []uint64{1, last / 3, last / 2, last, last + 1} {
			want := a.Counts(agent, before, ref, time.Hour)
			require.Equal(t, want, b.Counts(agent, before, ref, time.Hour), "agent %s before %d", agent, before)
		}
	}
	require.NotZero(t, a.Counts("a03", last+1, ref, time.Hour).GuardrailFires, "the comparison is not of empty histories")
}

// TestHistoryRestoredFromSnapshot: a history that starts from a snapshot
// reads only the events after it, and counts exactly as one that replays
// the whole window.
func TestHistoryRestoredFromSnapshot(t *testing.T) {
	env := natstest.Setup(t)
	kv := historyBucket(t, env)

	last := publishHistory(t, env, 0, 60)
	first := follow(t, env, kv, last)
	require.Equal(t, last, first.Read(), "no snapshot yet: the whole window is read")
	require.NoError(t, first.Save(t.Context(), time.Now()))
	first.Stop()

	saved := last
	last = publishHistory(t, env, 60, 12)
	restored := follow(t, env, kv, last)
	require.Equal(t, last-saved, restored.Read(), "only the events after the snapshot are read")
	requireSameCounts(t, follow(t, env, nil, last), restored, last)

	// A save cut short: one agent written beyond "meta". Its events up to
	// its own point are not counted twice.
	last = publishHistory(t, env, 72, 8)
	ahead := follow(t, env, nil, last)
	ahead.mu.Lock()
	v := encodeAgent(ahead.last, ahead.agents["a01"])
	ahead.mu.Unlock()
	require.NoError(t, putForward(t.Context(), kv, snapshotAgentPrefix+"a01", v, last, agentThrough))
	last = publishHistory(t, env, 80, 8)
	requireSameCounts(t, follow(t, env, nil, last), follow(t, env, kv, last), last)
}

// TestSnapshotOnlyMovesForward: a replica's older snapshot never replaces
// a newer one, and a snapshot older than the window is not used.
func TestSnapshotOnlyMovesForward(t *testing.T) {
	env := natstest.Setup(t)
	ctx := t.Context()
	kv := historyBucket(t, env)
	last := publishHistory(t, env, 0, 12)

	h := follow(t, env, kv, last)
	require.NoError(t, h.Save(ctx, time.Now()))
	e, err := kv.Get(ctx, snapshotMetaKey)
	require.NoError(t, err)
	require.Equal(t, last, metaThrough(e.Value()))

	// A slower replica saves what it had at an earlier point.
	old := &agentHistory{requests: []stamp{{seq: 1, at: time.Now()}}}
	require.NoError(t, putForward(ctx, kv, snapshotAgentPrefix+"a00", encodeAgent(1, old), 1, agentThrough))
	stale, _ := time.Parse(time.RFC3339, "2026-01-01T00:00:00Z")
	require.NoError(t, putForward(ctx, kv, snapshotMetaKey, []byte(`{"through":1,"saved_at":"2026-01-01T00:00:00Z"}`), 1, metaThrough))
	a, err := kv.Get(ctx, snapshotAgentPrefix+"a00")
	require.NoError(t, err)
	require.Equal(t, last, agentThrough(a.Value()), "the newer agent snapshot stays")
	e, err = kv.Get(ctx, snapshotMetaKey)
	require.NoError(t, err)
	require.Equal(t, last, metaThrough(e.Value()), "the newer meta stays")

	// A snapshot saved more than a day ago is not used.
	require.NoError(t, kv.Delete(ctx, snapshotMetaKey))
	require.NoError(t, h.Save(ctx, stale)) // nothing dirty: only meta
	replay := follow(t, env, kv, last)
	require.Equal(t, last, replay.Read(), "the whole window is read again")
}

// TestSnapshotUnreadableIsReplayed: a snapshot that does not decode is not
// trusted: the whole window is read instead, and counts stay exact.
func TestSnapshotUnreadableIsReplayed(t *testing.T) {
	env := natstest.Setup(t)
	ctx := t.Context()
	kv := historyBucket(t, env)
	last := publishHistory(t, env, 0, 12)
	require.NoError(t, follow(t, env, kv, last).Save(ctx, time.Now()))
	_, err := kv.Put(ctx, snapshotAgentPrefix+"a02", []byte{snapshotVersion, 0xff})
	require.NoError(t, err)
	h := follow(t, env, kv, last)
	require.Equal(t, last, h.Read())
	requireSameCounts(t, follow(t, env, nil, last), h, last)
}

func TestSnapshotEncoding(t *testing.T) {
	at := time.Date(2026, 11, 30, 8, 0, 0, 123, time.UTC)
	a := &agentHistory{
		requests: []stamp{{1, at}, {5, at.Add(time.Millisecond)}, {9, at.Add(-time.Second)}},
		denials:  []stamp{{5, at.Add(time.Millisecond)}},
		fires:    []stamp{{9, at.Add(time.Hour)}},
	}
	through, got, err := decodeAgent(encodeAgent(10, a))
	require.NoError(t, err)
	require.Equal(t, uint64(10), through)
	require.Equal(t, a.requests, got.requests)
	require.Equal(t, a.denials, got.denials)
	require.Empty(t, got.grants)
	require.Equal(t, a.fires, got.fires)
	_, _, err = decodeAgent(encodeAgent(8, a))
	require.ErrorIs(t, err, errSnapshot, "a stamp beyond its own point")
}

// FuzzDecodeAgent: whatever the bucket holds, decoding never panics, and
// what decodes survives encoding and decoding again unchanged.
func FuzzDecodeAgent(f *testing.F) {
	at := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	f.Add(encodeAgent(10, &agentHistory{requests: []stamp{{1, at}, {5, at}}, grants: []stamp{{9, at}}}))
	f.Add([]byte{snapshotVersion})
	f.Add([]byte{snapshotVersion, 1, 200, 200, 200, 200})
	f.Fuzz(func(t *testing.T, b []byte) {
		through, a, err := decodeAgent(b)
		if err != nil {
			return
		}
		t2, a2, err := decodeAgent(encodeAgent(through, a))
		require.NoError(t, err)
		require.Equal(t, through, t2)
		require.Equal(t, a, a2)
	})
}

// TestServiceSavesHistoryOnStop: a stopped policy service leaves its
// history in the bucket, and the next one reads only what came after.
func TestServiceSavesHistoryOnStop(t *testing.T) {
	env := natstest.Setup(t)
	src := env.ApplyConfig(t, exampleYAML(t))
	kv := historyBucket(t, env)
	first := startPolicy(t, env, src)
	for i := range 4 {
		publishRequest(t, env, fmt.Sprintf("req-%d", i), "market-intel", 10*time.Minute, "data:write")
	}
	waitDecisions(t, env, 4)
	first.Stop()
	st, err := env.JS.Stream(t.Context(), broker.AuditStream)
	require.NoError(t, err)
	last := st.CachedInfo().State.LastSeq
	e, err := kv.Get(t.Context(), snapshotMetaKey)
	require.NoError(t, err)
	require.Equal(t, last, metaThrough(e.Value()), "saved through the last decision")
	_, err = kv.Get(t.Context(), snapshotAgentPrefix+"market-intel")
	require.NoError(t, err)

	second := startPolicy(t, env, src)
	publishRequest(t, env, "req-probe", "market-intel", 10*time.Minute, "data:write")
	waitDecisions(t, env, 5)
	require.Equal(t, uint64(2), second.History().Read(), "the probe and its decision only")
	c := second.History().Counts("market-intel", last+3, time.Now().Add(time.Second), time.Hour)
	require.Equal(t, 5, c.RequestsInRateWindow, "the requests before the restart count, and the probe")
}

func historyBucket(t *testing.T, env *natstest.Env) jetstream.KeyValue {
	t.Helper()
	kv, err := env.JS.KeyValue(t.Context(), broker.BucketPolicyHistory)
	require.NoError(t, err)
	return broker.MapKV(kv)
}
