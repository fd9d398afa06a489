package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/natstest"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// eventsOn answers an agent's catch-up as the requester's jitapi.events
// does (two filters read from one sequence by direct get, merged in order),
// through nc.
func eventsOn(nc *nats.Conn) func(ctx context.Context, in broker.EventsInput) (broker.EventsPage, error) {
	return func(ctx context.Context, in broker.EventsInput) (broker.EventsPage, error) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		from := max(in.FromSeq, 1)
		out := broker.EventsPage{NextSeq: from}
		var all []broker.StoredMsg
		for _, filter := range []string{"jit.*." + in.Agent, "guardrail.*." + in.Agent} {
			page, err := broker.DirectGet(ctx, nc, "$JS.API", broker.AuditStream, broker.DirectGetRequest{Seq: from, NextBySubj: filter, Batch: broker.MaxEventsPage})
			if err != nil {
				return broker.EventsPage{}, broker.Errorf(503, "unavailable", "%v", err)
			}
			all = append(all, page.Msgs...)
			out.More = out.More || page.Pending > 0
		}
		slices.SortFunc(all, func(a, b broker.StoredMsg) int { return int(a.Seq) - int(b.Seq) })
		for _, m := range all {
			out.Events = append(out.Events, broker.StoredEvent{Seq: m.Seq, Subject: m.Subject, Event: json.RawMessage(m.Data)})
			out.NextSeq = m.Seq + 1
		}
		return out, nil
	}
}

// An agent whose server is cut off from the cluster (a minority partition)
// follows its feed there: the live feed and the catch-up reach only that
// server, whose copy of the audit stream is stale, so an event the majority
// stores meanwhile cannot reach the agent until the heal; then the cut
// server's copy catches up as soon as its routes are back (tens of
// milliseconds, measured) and a later catch-up of the feed (one every
// resync interval) delivers it. No event is skipped: a stale copy only
// holds the watermark back. (jitchaos saw an agent on a cut node give up on
// an outcome the majority stored late in the partition, after a killed
// node's 30 s ack wait; the feed itself was not behind.)
func TestAgentFeedOnACutOffNodeCatchesUpAfterTheHeal(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-node cluster, a partition and a leader election (about 25 s)")
	}
	const minority, agent = 2, "a1"
	c, _, js := natstest.PartitionableTopology(t)
	pub := broker.NewPublisher(js, "test")
	emitFor := func(ctx context.Context, id, who string) (uint64, error) {
		_, seq, err := pub.Emit(ctx, id, events.TypeGuardrailFired, who, events.GuardrailFired{Agent: who, Rule: "r", FiredAt: time.Now()})
		return seq, err
	}
	anc, err := nats.Connect(c.Servers[minority].ClientURL(), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond), nats.IgnoreDiscoveredServers())
	require.NoError(t, err)
	t.Cleanup(anc.Close)
	seq, err := emitFor(t.Context(), "ev-before", agent)
	require.NoError(t, err)
	const resync = time.Second
	feed, err := broker.FollowAgent(t.Context(), anc, agent, seq, resync, eventsOn(anc))
	require.NoError(t, err)
	t.Cleanup(feed.Stop)
	next := func(d time.Duration) (broker.FeedEvent, error) {
		ctx, cancel := context.WithTimeout(t.Context(), d)
		defer cancel()
		return feed.Next(ctx)
	}
	fe, err := next(10 * time.Second)
	require.NoError(t, err)
	require.Equal(t, "ev-before", fe.Event.ID())

	c.Isolate(t, minority)
	cut := time.Now()
	// The majority stores the agent's event (after electing a leader if the
	// cut server led the stream), and others' events behind it.
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		_, err := emitFor(ctx, "ev-during", agent)
		return err == nil
	}, 30*time.Second, 100*time.Millisecond, "the majority stores")
	t.Logf("stored by the majority %s after the cut", time.Since(cut).Round(time.Millisecond))
	for i := range 200 {
		_, err := emitFor(t.Context(), fmt.Sprintf("ev-other-%d", i), "a2")
		require.NoError(t, err)
	}
	_, err = next(2 * resync)
	require.ErrorIs(t, err, context.DeadlineExceeded, "nothing reaches the cut-off agent")

	c.Heal(minority)
	healed := time.Now()
	fe, err = next(resync + 10*time.Second)
	require.NoError(t, err, "delivered after the heal")
	require.Equal(t, "ev-during", fe.Event.ID())
	t.Logf("delivered %s after the heal", time.Since(healed).Round(time.Millisecond))
}
