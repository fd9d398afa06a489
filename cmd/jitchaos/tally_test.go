package main

import (
	"testing"
	"time"

	"github.com/agentjit/jit/pkg/events"
	"github.com/stretchr/testify/require"
)

// round is a small made-up round: what the agents saw, the stream, the keys.
type fakeRound struct {
	reqs   []request
	evs    []stored
	keys   map[string]keySeen
	faults []fault
	pr     probeResult
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// clean is a round where everything held: two requests granted, announced
// and revoked once each, and one denied.
func clean() fakeRound {
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	r := fakeRound{keys: map[string]keySeen{}}
	for i, id := range []string{"req_a-1", "req_a-2"} {
		gid := events.GrantIDFor(id)
		sent := at(i * 100)
		exp := sent.Add(2 * time.Second)
		r.reqs = append(r.reqs, request{id: id, agent: "a", duration: 2 * time.Second, firstSent: sent, accepted: sent, attempts: 1,
			outcome: outGranted, grantID: gid, expiresAt: exp, outcomeAt: sent.Add(10 * time.Millisecond)})
		r.evs = append(r.evs,
			stored{typ: events.TypeGranted, requestID: id, grantID: gid, at: sent.Add(5 * time.Millisecond), expiresAt: exp},
			stored{typ: events.TypeRevoked, requestID: id, grantID: gid, at: exp.Add(100 * time.Millisecond), expiresAt: exp, reason: events.RevokedExpired})
		r.keys["a."+gid] = keySeen{grantID: gid, agent: "a", put: true, active: true, expiresAt: exp}
	}
	r.reqs = append(r.reqs, request{id: "req_a-3", agent: "a", firstSent: at(300), accepted: at(300), attempts: 2, outcome: outDenied, outcomeAt: at(320)})
	r.evs = append(r.evs, stored{typ: events.TypeDecided, requestID: "req_a-3", outcome: events.OutcomeDenied, reason: "expired_before_grant", at: at(310)})
	// The requests' jit.requested (last: the cases below index the others).
	for _, q := range r.reqs {
		r.evs = append(r.evs, stored{typ: events.TypeRequested, requestID: q.id, at: q.firstSent.Add(time.Millisecond)})
	}
	return r
}

func (r fakeRound) tally() *singleNode {
	return tally(r.reqs, r.evs, r.keys, r.faults, r.pr, t0)
}

func TestTallyClean(t *testing.T) {
	res := clean().tally()
	require.Empty(t, res.failures())
	require.Equal(t, 3, res.RequestsSent)
	require.Equal(t, 2, res.RequestsGranted)
	require.Equal(t, 1, res.RequestsDenied)
	require.Equal(t, 1, res.RequestsRetried)
	require.Equal(t, map[string]int{"expired_before_grant": 1}, res.DeniedReasons)
	require.Equal(t, 2, res.GrantsOnStream)
	require.Equal(t, 2, res.GrantKeysSeen)
	require.Equal(t, 5.0, res.GrantWaitMSMax, "first send to jit.granted stored")
	require.Equal(t, 1995.0, res.GrantLeftMSMin, "expires_at less the stored time")
	require.Equal(t, 10.0, res.ClientOutcomeLagMSMax, "stored to seen by the agent")
	require.Equal(t, 100.0, res.ExpiryLagP99MS, "jit.revoked stored less expires_at")
	require.Equal(t, 100.0, res.ExpiryLagMaxMS)
}

// Each case breaks one promise, and exactly its count says so.
func TestTallyCounts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(r *fakeRound)
		want   map[string]int
	}{
		{"a request nobody answered", func(r *fakeRound) {
			r.reqs = append(r.reqs, request{id: "req_a-9", agent: "a", firstSent: t0, attempts: 1})
		}, map[string]int{"requests_unanswered": 1, "requests_unanswered_client": 1}},
		{"an outcome the agent never saw", func(r *fakeRound) {
			r.reqs[2].outcome = ""
		}, map[string]int{"requests_unanswered_client": 1}},
		{"granted and denied", func(r *fakeRound) {
			r.evs = append(r.evs, stored{typ: events.TypeDecided, requestID: "req_a-1", outcome: events.OutcomeDenied, at: t0})
		}, map[string]int{"requests_with_two_outcomes": 1}},
		{"a grant the agent holds that the stream lost", func(r *fakeRound) {
			r.evs = r.evs[1:] // the first jit.granted
			r.keys = map[string]keySeen{}
		}, map[string]int{"grants_lost": 1, "requests_unanswered": 1, "audit_events_lost": 1}},
		{"an accepted request the stream lost", func(r *fakeRound) {
			r.evs = r.evs[:len(r.evs)-1] // req_a-3's jit.requested; its denial is there
		}, map[string]int{"audit_events_lost": 1}},
		{"a grant announced twice", func(r *fakeRound) {
			r.evs = append(r.evs, r.evs[0])
		}, map[string]int{"duplicate_grants": 1}},
		{"a key with no jit.granted", func(r *fakeRound) {
			r.keys["a.grt_x"] = keySeen{grantID: "grt_x", agent: "a", put: true, active: true}
		}, map[string]int{"grants_without_event": 1}},
		{"an expiry marker alone is no grant", func(r *fakeRound) {
			r.keys["a.grt_x"] = keySeen{grantID: "grt_x", agent: "a"}
		}, map[string]int{}},
		{"a grant never revoked", func(r *fakeRound) {
			r.evs = append(r.evs[:1], r.evs[2:]...)
		}, map[string]int{"revocations_lost": 1}},
		{"a grant revoked twice", func(r *fakeRound) {
			r.evs = append(r.evs, r.evs[1])
		}, map[string]int{"duplicate_revocations": 1}},
		{"usable after its end", func(r *fakeRound) {
			r.pr = probeResult{violations: 3, lateGrants: 1, lateMax: time.Millisecond}
		}, map[string]int{"usable_after_end": 3}},
		{"announced after its end", func(r *fakeRound) {
			r.evs[0].at = r.evs[0].expiresAt
		}, map[string]int{"granted_after_end": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := clean()
			tc.break_(&r)
			res := r.tally()
			got := map[string]int{}
			for _, c := range counted {
				if v := c.get(res); v != 0 {
					got[c.key] = v
				}
			}
			require.Equal(t, tc.want, got)
		})
	}
}

// The resume time of a kill runs from jitd serving again to the last
// outcome stored of the requests in flight at the kill.
func TestTallyResume(t *testing.T) {
	r := clean()
	kill := t0.Add(50 * time.Millisecond) // after req_a-1 was sent, before its grant was stored
	r.evs[0].at = t0.Add(5 * time.Second) // its jit.granted
	r.faults = []fault{{kind: faultKill, at: kill, ready: t0.Add(4 * time.Second)}}
	res := r.tally()
	require.Len(t, res.Faults, 1)
	require.Equal(t, 1, res.Faults[0].InFlight)
	require.Equal(t, 0, res.Faults[0].Unanswered)
	require.Equal(t, 1000.0, res.Faults[0].ResumeMS)
	require.Equal(t, 1000.0, res.ResumeAfterRestartMSMax)
	require.Equal(t, 3950.0, res.Faults[0].ReadyAfterMS)
	require.Equal(t, 100.0, res.Faults[0].TakeoverMS, "both grants expired while down, revoked 100 ms late")
	require.Equal(t, 100.0, res.TakeoverMSMax)

	// A request sent but not yet stored at the kill is the agent's to send
	// again: it counts only in the figures of what was sent.
	r.evs[5].at = kill.Add(time.Millisecond) // its jit.requested
	res = r.tally()
	require.Zero(t, res.Faults[0].InFlight)
	require.Equal(t, 1, res.Faults[0].SentInFlight)
	require.Equal(t, 1000.0, res.Faults[0].ResumeSentMS)
	require.Zero(t, res.ResumeAfterRestartMSMax)

	// A stop is reported but is not a restart.
	r.faults[0].kind = faultStop
	require.Zero(t, r.tally().ResumeAfterRestartMSMax)
}

func TestPlan(t *testing.T) {
	require.Equal(t, []string{"kill", "kill", "stop", "kill"}, plan(3, 1))
	require.Equal(t, []string{"kill", "stop"}, plan(1, 1))
	require.Equal(t, []string{"stop"}, plan(0, 1))
	require.Empty(t, plan(0, 0))
}

// A grant published in time but stored late because jitd was stopped
// between the two is reported apart, not as announced after its end; the
// same outside a stop is.
func TestTallyStoredLateByStop(t *testing.T) {
	r := clean()
	r.evs[0].published = r.evs[0].expiresAt.Add(-time.Second)
	r.evs[0].at = r.evs[0].expiresAt.Add(3 * time.Second)
	r.faults = []fault{{kind: faultStop, at: r.evs[0].expiresAt.Add(-time.Second), ready: r.evs[0].expiresAt.Add(3 * time.Second)}}
	res := r.tally()
	require.Empty(t, res.failures())
	require.Equal(t, 1, res.GrantedStoredLateByStop)

	r.faults[0].kind = faultKill
	res = r.tally()
	require.Equal(t, 1, res.GrantedAfterEnd)
	require.Zero(t, res.GrantedStoredLateByStop)
}

func TestClusterPlan(t *testing.T) {
	kinds := func(fs []fault) (out []string) {
		for _, f := range fs {
			out = append(out, f.kind+" "+f.role)
		}
		return out
	}
	require.Equal(t, []string{"kill meta_leader", "stop audit_leader", "kill audit_leader"}, kinds(clusterPlan(2, 1, false)))
	require.Equal(t, []string{"kill meta_leader", "stop audit_leader"}, kinds(clusterPlan(1, 1, false)))
	require.Equal(t, []string{"kill meta_leader", "kill audit_leader", "kill meta_leader"}, kinds(clusterPlan(3, 0, false)))
	require.Empty(t, clusterPlan(0, 0, false))
	require.Equal(t, []string{"kill meta_leader", "stop audit_leader", "partition audit_leader"}, kinds(clusterPlan(1, 1, true)), "the partition last")
}
