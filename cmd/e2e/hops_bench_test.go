package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/broker"
	"github.com/agentjit/jit/pkg/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// BenchmarkAutoApproveHops splits the auto-approve round trip into its hops
// by the broker's own clock: each event's stream timestamp, the creation
// time of the lease and the grant key, and the client's send and receive.
// It reports each hop's p50 in µs (BENCH.md, "Where the time goes"):
//
//	1-requested  client sends → jit.requested stored (API hop, checks, publish)
//	2-decided    → jit.decided stored (delivery to policy, decision, publish)
//	3-lease      → lease stored (delivery to approval, suspension check, create)
//	4-grant-key  → grant key stored
//	5-granted    → jit.granted stored
//	6-received   → the client's subscription has it
func BenchmarkAutoApproveHops(b *testing.B) {
	url := benchJitdWith(b, "../../examples/jit.yaml")
	// The agent asks with its credential and hears its grant on its live
	// feed; the stages are read from the stream as the administrator.
	nc := agentConn(b, url, "market-intel")
	js, err := jetstream.New(adminConnect(b, url))
	require.NoError(b, err)
	granted := make(chan string, 16)
	sub, err := nc.Subscribe(broker.LivePrefix+".jit.granted.>", func(m *nats.Msg) { granted <- m.Header.Get(jetstream.MsgIDHeader) })
	require.NoError(b, err)
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(b, nc.Flush())

	type sample struct {
		reqID      string
		send, recv time.Time
		at         map[string]time.Time // stage → broker time
	}
	byGrant := map[string]*sample{} // grant id → sample
	ctx := b.Context()
	for i := 0; b.Loop(); i++ {
		s := &sample{reqID: fmt.Sprintf("hop-%d", i), at: map[string]time.Time{}}
		gid := events.GrantIDFor(s.reqID)
		byGrant[gid] = s
		s.send = time.Now()
		require.NoError(b, broker.Call(ctx, nc, broker.APIRequest, "", broker.RequestInput{RequestID: s.reqID,
			Agent: "market-intel", Permissions: []string{"data:write"}, Duration: "10m", Reason: "hops"}, nil))
		for id := range granted {
			if id == events.GrantedEventID(gid) {
				break
			}
		}
		s.recv = time.Now()
	}
	b.StopTimer()

	byReq := map[string]*sample{}
	for _, s := range byGrant {
		byReq[s.reqID] = s
	}
	cons, err := js.OrderedConsumer(ctx, broker.AuditStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"jit.requested.>", "jit.decided.>", "jit.granted.>"},
	})
	require.NoError(b, err)
	it, err := cons.Messages()
	require.NoError(b, err)
	defer it.Stop()
	for {
		m, err := it.Next()
		require.NoError(b, err)
		md, err := m.Metadata()
		require.NoError(b, err)
		id, _, _ := strings.Cut(m.Headers().Get(jetstream.MsgIDHeader), "/")
		stage := strings.Join(strings.SplitN(m.Subject(), ".", 3)[:2], ".")
		if s := byReq[id]; s != nil {
			s.at[stage] = md.Timestamp
		} else if s := byGrant[id]; s != nil {
			s.at[stage] = md.Timestamp
		}
		if md.NumPending == 0 {
			break
		}
	}
	grants, err := js.KeyValue(ctx, broker.BucketGrants)
	require.NoError(b, err)
	leases, err := js.KeyValue(ctx, broker.BucketLeases)
	require.NoError(b, err)
	for gid, s := range byGrant {
		key := broker.GrantKey("market-intel", gid)
		e, err := leases.Get(ctx, key)
		require.NoError(b, err)
		s.at["lease"] = e.Created()
		e, err = grants.Get(ctx, key)
		require.NoError(b, err)
		s.at["grant"] = e.Created()
	}

	hops := map[string][]time.Duration{}
	for _, s := range byGrant {
		steps := []time.Time{s.send, s.at["jit.requested"], s.at["jit.decided"], s.at["lease"], s.at["grant"], s.at["jit.granted"], s.recv}
		for i, name := range []string{"1-requested", "2-decided", "3-lease", "4-grant-key", "5-granted", "6-received"} {
			hops[name] = append(hops[name], steps[i+1].Sub(steps[i]))
		}
	}
	for name, d := range hops {
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2].Microseconds()), name+"-p50-µs")
	}
}
