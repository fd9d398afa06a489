package broker_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestEventFinderReadsOnce: a backlog of questions about one subject reads
// its events once, not once per question, and answers as FindEvent does.
func TestEventFinderReadsOnce(t *testing.T) {
	env := natstest.Setup(t)
	ctx := t.Context()
	pub := broker.NewPublisher(env.JS, "test")
	const n = 30
	var seqs []uint64
	for i := range n {
		_, seq, err := pub.Emit(ctx, fmt.Sprintf("g%02d/granted", i), events.TypeGranted, "a1",
			events.Grant{GrantID: fmt.Sprintf("g%02d", i), Agent: "a1", Permissions: []string{"data:write"}})
		require.NoError(t, err)
		seqs = append(seqs, seq)
		// Another agent's events in between are not read.
		_, _, err = pub.Emit(ctx, fmt.Sprintf("b%02d/granted", i), events.TypeGranted, "b1",
			events.Grant{GrantID: fmt.Sprintf("b%02d", i), Agent: "b1", Permissions: []string{"data:write"}})
		require.NoError(t, err)
	}
	var gets atomic.Int64
	sub, err := env.NC.Subscribe("$JS.API.STREAM.MSG.GET."+broker.AuditStream, func(*nats.Msg) { gets.Add(1) })
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, env.NC.Flush())

	var f broker.EventFinder
	subject := events.Subject(events.TypeGranted, "a1")
	for i := range n {
		id := fmt.Sprintf("g%02d/granted", i)
		e, seq, found, err := f.Find(ctx, env.JS, subject, seqs[0], id)
		require.NoError(t, err)
		require.True(t, found, id)
		require.Equal(t, seqs[i], seq)
		require.Equal(t, id, e.ID())
		want, wantSeq, _, err := broker.FindEvent(ctx, env.JS, subject, seqs[0], id)
		require.NoError(t, err)
		require.Equal(t, wantSeq, seq)
		require.Equal(t, want.ID(), e.ID())
	}
	_, _, found, err := f.Find(ctx, env.JS, subject, seqs[0], "nope/granted")
	require.NoError(t, err)
	require.False(t, found)
	_, _, found, err = f.Find(ctx, env.JS, subject, seqs[n-1]+1, "g00/granted")
	require.NoError(t, err)
	require.False(t, found, "an event before from is not an answer")

	// FindEvent asked 1+2+…+n times; the finder about once per event.
	naive := int64(n * (n + 1) / 2)
	require.Eventually(t, func() bool { return gets.Load() >= naive }, 5*time.Second, 10*time.Millisecond)
	finder := gets.Load() - naive
	require.LessOrEqual(t, finder, int64(3*n), "the finder's reads: %d (FindEvent's: %d)", finder, naive)
}
