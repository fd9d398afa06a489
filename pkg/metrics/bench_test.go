package metrics_test

import (
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/agentjit/jit/pkg/metrics"
)

// BenchmarkObserve is the cost the publisher adds to each event it stores:
// the counters of its type, decoding its data for the labels.
func BenchmarkObserve(b *testing.B) {
	now := time.Now()
	for _, c := range []struct {
		name string
		typ  string
		data any
	}{
		{"decided", events.TypeDecided, events.Decision{RequestID: "req_1", Agent: "a", Outcome: "approved", Mode: events.ModeAutoApprove,
			Permissions: []string{"data:write"}, DurationMS: 60000, DecidedAt: now, Request: events.Request{RequestID: "req_1", Agent: "a", RequestedAt: now}}},
		{"granted", events.TypeGranted, events.Grant{GrantID: "grt_1", RequestID: "req_1", Agent: "a", Permissions: []string{"data:write"},
			Mode: events.ModeAutoApprove, GrantedAt: now, ExpiresAt: now.Add(time.Minute)}},
		{"requested", events.TypeRequested, events.Request{RequestID: "req_1", Agent: "a", Permissions: []string{"data:write"}, RequestedAt: now}},
	} {
		e, err := events.New("id", c.typ, "bench", "a", c.data)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name+"/decoded", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				metrics.Observe(e)
			}
		})
		b.Run(c.name+"/payload", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				metrics.ObservePayload(e, c.data)
			}
		})
	}
}
