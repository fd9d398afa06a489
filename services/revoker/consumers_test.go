package revoker_test

import (
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/metrics"
	"github.com/agentjit/jit/services/revoker"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// withdraw publishes the jit.withdrawn of request reqID as the requester
// does.
func (f *fixture) withdraw(t *testing.T, agent, reqID string) {
	t.Helper()
	w := events.Withdrawal{RequestID: reqID, Agent: agent, WithdrawnAt: time.Now().UTC(),
		WithdrawnBy: events.Actor{Kind: events.ActorAgent, ID: agent}}
	_, _, err := broker.NewPublisher(f.env.JS, "requester").Emit(ctx(t), events.WithdrawnEventID(reqID),
		events.TypeWithdrawn, agent, w, events.WithRequestID(reqID))
	require.NoError(t, err)
}

// waitRevoked waits for the one jit.revoked of grantID and returns it.
func waitRevoked(t *testing.T, f *fixture, grantID string) events.Revocation {
	t.Helper()
	require.Eventually(t, func() bool { return len(revocationsOf(t, f, grantID)) > 0 }, waitFor, tick, "no jit.revoked for %s", grantID)
	rs := revocationsOf(t, f, grantID)
	require.Len(t, rs, 1)
	return rs[0]
}

// TestConsumersDeletedFromUnderTheRevoker: each of the revoker's durable
// consumers, deleted while it runs (as `nats consumer rm` with the
// administrator's credential does), is made again; what it handled before
// comes again (the consumer is made again after the ack floor the service
// read at its start) and finds its work done, and what comes through it
// afterwards is done exactly once.
func TestConsumersDeletedFromUnderTheRevoker(t *testing.T) {
	t.Parallel()
	cases := []struct {
		durable, stream string
		// work makes the consumer act and checks the result; it runs once
		// before the deletion and once after.
		work func(t *testing.T, f *fixture, agent string)
	}{
		{durable: revoker.DurableExpiry, stream: "KV_" + broker.BucketGrants, work: func(t *testing.T, f *fixture, agent string) {
			// A grant with a lease (its timer and its TTL marker both
			// arrive), and a key without one, which only the marker ends.
			_, g := f.grant(t, agent, time.Second)
			gid := events.GrantIDFor(events.NewID("req"))
			key := broker.GrantKey(agent, gid)
			_, err := f.env.Buckets.Grants.Create(ctx(t), key, mustJSON(t, events.Grant{GrantID: gid, Agent: agent, Status: events.GrantActive,
				ExpiresAt: time.Now().Add(time.Second)}), jetstream.KeyTTL(time.Second))
			require.NoError(t, err)
			require.Equal(t, events.RevokedExpired, waitRevoked(t, f, g.GrantID).Reason)
			require.Equal(t, events.RevokedExpired, waitRevoked(t, f, gid).Reason)
			f.waitMarkerHandled(t, key)
			f.waitMarkerHandled(t, broker.GrantKey(agent, g.GrantID))
		}},
		{durable: revoker.DurableGuardrail, stream: broker.AuditStream, work: func(t *testing.T, f *fixture, agent string) {
			_, g := f.grant(t, agent, time.Minute)
			f.fire(t, events.NewID("grd"), agent, agent, "price-floor")
			require.Equal(t, events.RevokedGuardrail, waitRevoked(t, f, g.GrantID).Reason)
			f.waitGuardrailIdle(t)
		}},
		{durable: revoker.DurableWithdrawals, stream: broker.AuditStream, work: func(t *testing.T, f *fixture, agent string) {
			_, g := f.grant(t, agent, time.Minute)
			f.withdraw(t, agent, g.RequestID)
			require.Equal(t, events.RevokedWithdrawn, waitRevoked(t, f, g.GrantID).Reason)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.durable, func(t *testing.T) {
			f := setup(t)
			f.start(t)
			tc.work(t, f, agentB)
			before := testutil.ToFloat64(metrics.ConsumerRecreated.WithLabelValues(tc.durable))

			require.NoError(t, f.env.JS.DeleteConsumer(ctx(t), tc.stream, tc.durable))
			require.Eventually(t, func() bool {
				return testutil.ToFloat64(metrics.ConsumerRecreated.WithLabelValues(tc.durable)) == before+1
			}, waitFor, tick, "made again")
			_, err := f.env.JS.Consumer(ctx(t), tc.stream, tc.durable)
			require.NoError(t, err)
			tc.work(t, f, agentA)

			counts := map[string]int{}
			for _, r := range revocations(t, f) {
				counts[r.GrantID]++
			}
			for g, n := range counts {
				require.Equal(t, 1, n, "jit.revoked of %s", g)
			}
			_, sus := stored[events.Suspension](t, f, "jit.suspended.>")
			perAgent := map[string]int{}
			for _, s := range sus {
				perAgent[s.Agent]++
			}
			for a, n := range perAgent {
				require.Equal(t, 1, n, "jit.suspended of %s", a)
			}
			require.Empty(t, rejections(t, f))
		})
	}
}
