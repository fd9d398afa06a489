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

// BenchmarkPerGrant is everything the instrumentation records for one
// auto-approved grant and its expiry, as the services record it: the
// events stored (requested, decided, granted, revoked, each from the
// payload it was built from), the request call's counter and duration,
// and the request-to-grant latency. Its ns/op set against jitd's CPU per
// grant (BENCH.md) is the instrumentation's share of it.
func BenchmarkPerGrant(b *testing.B) {
	now := time.Now()
	req := events.Request{RequestID: "req_1", Agent: "a", Permissions: []string{"data:write"}, RequestedAt: now}
	dec := events.Decision{RequestID: "req_1", Agent: "a", Outcome: "approved", Mode: events.ModeAutoApprove,
		Permissions: []string{"data:write"}, DurationMS: 60000, DecidedAt: now, Request: req}
	g := events.Grant{GrantID: "grt_1", RequestID: "req_1", Agent: "a", Permissions: []string{"data:write"},
		Mode: events.ModeAutoApprove, GrantedAt: now, ExpiresAt: now.Add(time.Minute)}
	rev := events.Revocation{GrantID: "grt_1", Agent: "a", Reason: events.RevokedExpired, RevokedAt: now.Add(time.Minute + time.Millisecond), ExpiresAt: now.Add(time.Minute)}
	type stored struct {
		e       events.Event
		payload any
	}
	var all []stored
	for _, c := range []struct {
		typ  string
		data any
	}{{events.TypeRequested, req}, {events.TypeDecided, dec}, {events.TypeGranted, g}, {events.TypeRevoked, rev}} {
		e, err := events.New("id", c.typ, "bench", "a", c.data)
		if err != nil {
			b.Fatal(err)
		}
		all = append(all, stored{e, c.data})
	}
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		for _, s := range all {
			metrics.ObservePayload(s.e, s.payload)
		}
		metrics.APICalls.WithLabelValues("jitapi.request", "200").Inc()
		metrics.APIDuration.WithLabelValues("jitapi.request").Observe(time.Since(start).Seconds())
		metrics.GrantAnnounced(g.Mode, req.RequestedAt, g.GrantedAt)
	}
}
