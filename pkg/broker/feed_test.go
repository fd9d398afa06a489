package broker_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/stretchr/testify/require"
)

// TestAgentFeedCatchesUpWhileEventsFlow: an event lost on the live feed
// (here: stored but never republished) reaches the reader through the
// timed catch-up even while other events keep arriving live, none of them
// on its subject: a flow of events must not starve the catch-up.
func TestAgentFeedCatchesUpWhileEventsFlow(t *testing.T) {
	env := natstest.Setup(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	const agent = "a1"
	lost, err := events.New("grt_lost/granted", events.TypeGranted, "/jit/approval", agent,
		events.Grant{GrantID: "grt_lost", RequestID: "req_lost", Agent: agent}, events.WithRequestID("req_lost"))
	require.NoError(t, err)
	lostJSON, err := events.Encode(lost)
	require.NoError(t, err)

	var mu sync.Mutex
	calls := 0
	call := func(_ context.Context, in broker.EventsInput) (broker.EventsPage, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			return broker.EventsPage{NextSeq: 100}, nil // the first catch-up: nothing yet
		}
		return broker.EventsPage{Events: []broker.StoredEvent{{Seq: 100, Subject: "jit.granted." + agent, Event: lostJSON}}, NextSeq: 101}, nil
	}
	feed, err := broker.FollowAgent(ctx, env.NC, agent, 1, 300*time.Millisecond, call)
	require.NoError(t, err)
	defer feed.Stop()

	// Other events keep coming live, faster than the resync interval.
	go func() {
		for seq := 200; ctx.Err() == nil; seq++ {
			e, _ := events.New("rev-"+strconv.Itoa(seq), events.TypeRevoked, "/jit/revoker", agent, events.Revocation{GrantID: "grt_x", Agent: agent})
			m, _ := broker.ToMsg(broker.LivePrefix+".jit.revoked."+agent, e)
			m.Header.Set("Nats-Sequence", strconv.Itoa(seq))
			_ = env.NC.PublishMsg(m)
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	for {
		fe, err := feed.Next(ctx)
		require.NoError(t, err, "the lost event never came")
		if fe.Event.ID() == lost.ID() {
			require.EqualValues(t, 100, fe.Seq)
			return
		}
	}
}
