package main

import (
	"slices"
	"sort"
	"time"

	"github.com/agentjit/jit/pkg/events"
)

// singleNode is the "single_node" object of the results file. The first
// ten fields are the figures issue 15 names; every count must be 0. The
// rest explain them. See chaos/README.md.
type singleNode struct {
	RequestsSent         int `json:"requests_sent"`
	RequestsUnanswered   int `json:"requests_unanswered"`
	GrantsLost           int `json:"grants_lost"`
	DuplicateGrants      int `json:"duplicate_grants"`
	GrantsWithoutEvent   int `json:"grants_without_event"`
	RevocationsLost      int `json:"revocations_lost"`
	DuplicateRevocations int `json:"duplicate_revocations"`
	UsableAfterEnd       int `json:"usable_after_end"`
	GrantedAfterEnd      int `json:"granted_after_end"`
	// AuditEventsLost are events a client was told were stored that the
	// stream does not hold: a request answered "accepted" with no
	// jit.requested, a grant the agent saw with no jit.granted.
	AuditEventsLost          int            `json:"audit_events_lost"`
	ResumeAfterRestartMSMax  float64        `json:"resume_after_restart_ms_max"`
	RequestsUnansweredClient int            `json:"requests_unanswered_client"`
	RequestsWithTwoOutcomes  int            `json:"requests_with_two_outcomes"`
	RequestsGranted          int            `json:"requests_granted"`
	RequestsDenied           int            `json:"requests_denied"`
	RequestsRejected         int            `json:"requests_rejected"`
	RequestsRetried          int            `json:"requests_retried"`
	RequestsNeverAccepted    int            `json:"requests_never_accepted"`
	DeniedReasons            map[string]int `json:"denied_reasons"`
	GrantsOnStream           int            `json:"grants_on_stream"`
	GrantKeysSeen            int            `json:"grant_keys_seen"`
	GrantsWithoutEventActive int            `json:"grants_without_event_active"`
	RevocationsWithoutGrant  int            `json:"revocations_without_grant"`
	UsableAfterEndGrants     int            `json:"usable_after_end_grants"`
	UsableAfterEndMSMax      float64        `json:"usable_after_end_ms_max"`
	ProbedGrants             int            `json:"probed_grants"`
	ProbeChecks              int            `json:"probe_checks"`
	GrantedAfterEndMSMax     float64        `json:"granted_after_end_ms_max"`
	// GrantedStoredLateByStop are jit.granted events their publisher made
	// before their expires_at that the broker stored at or after it,
	// because jitd (broker included) was stopped in between: reported, not
	// a failure (see chaos/README.md).
	GrantedStoredLateByStop int     `json:"granted_stored_late_by_stop"`
	GrantWaitMSMax          float64 `json:"grant_wait_ms_max"`
	GrantLeftMSMin          float64 `json:"grant_left_ms_min"`
	ClientOutcomeLagMSMax   float64 `json:"client_outcome_lag_ms_max"`
	// ExpiryLagP99MS and ExpiryLagMaxMS: for every jit.revoked with reason
	// expired, the broker's stored time less the grant's expires_at.
	ExpiryLagP99MS float64 `json:"expiry_lag_p99_ms"`
	ExpiryLagMaxMS float64 `json:"expiry_lag_max_ms"`
	// TakeoverMSMax is the largest faults[].takeover_ms of a kill.
	TakeoverMSMax float64             `json:"takeover_ms_max"`
	Faults        []faultReport       `json:"faults"`
	Examples      map[string][]string `json:"examples,omitempty"`
	Config        roundConfig         `json:"config"`
	JitdWarnings  map[string]int      `json:"jitd_warnings,omitempty"`
	Run           map[string]any      `json:"run"`
}

// faultReport is one fault of the round.
type faultReport struct {
	Kind string `json:"kind"`
	// Node and Role, in a cluster round: the node signalled, and what it
	// led at that moment.
	Node string `json:"node,omitempty"`
	Role string `json:"role,omitempty"`
	// Starts is how many starts a killed cluster node took to run again
	// (a supervisor's restarts after an exit at start).
	Starts int `json:"starts,omitempty"`
	// RoutesDropped, for a stop in a cluster round: whether, before the
	// SIGCONT, every other node had closed its routes to the stopped one.
	RoutesDropped *bool `json:"routes_dropped,omitempty"`
	// MinorityCheckerStaleMS and MinorityCheckerFresh, for a partition: a
	// checker connected only to the cut node went stale (refusing grants)
	// this long after the cut (-1: never), and was fresh again after the
	// heal.
	MinorityCheckerStaleMS *float64 `json:"minority_checker_stale_ms,omitempty"`
	MinorityCheckerFresh   *bool    `json:"minority_checker_fresh_after_heal,omitempty"`
	// AtS is when the signal was sent, in seconds after the load started.
	AtS float64 `json:"at_s"`
	// ReadyAfterMS is from the signal to jitd serving again ("jitd
	// running" after a restart; the SIGCONT of a stop).
	ReadyAfterMS float64 `json:"ready_after_ms"`
	// InFlight are the requests the system had accepted (jit.requested
	// stored) before the signal whose outcome was not on the stream yet:
	// the work in flight. Unanswered, those of them that never got one.
	InFlight   int `json:"in_flight"`
	Unanswered int `json:"unanswered"`
	// ResumeMS is from ready to the last outcome of the in-flight requests
	// stored on the stream (0 if every one was stored before ready).
	ResumeMS float64 `json:"resume_ms"`
	// SentInFlight and ResumeSentMS are the same for every request sent
	// before the signal, accepted or not: they include the agents' own
	// retries (a request sent to a dying jitd waits for its call timeout,
	// then is sent again).
	SentInFlight int `json:"sent_in_flight"`
	// TakeoverMS, for a kill: of the grants whose expires_at fell between
	// the SIGKILL and the node running again, the latest jit.revoked (its
	// stored time less expires_at). In a cluster the other nodes' revokers
	// must take that work over; alone, jitd does it once restarted.
	TakeoverMS float64 `json:"takeover_ms,omitempty"`
	// Slowest is the in-flight request whose outcome came last.
	Slowest      string  `json:"slowest,omitempty"`
	ResumeSentMS float64 `json:"resume_sent_ms"`
}

type roundConfig struct {
	Agents    int     `json:"agents"`
	Kills     int     `json:"kills"`
	Stops     int     `json:"stops"`
	DurationS float64 `json:"duration_s"`
	DownS     float64 `json:"down_s"`
	StopForS  float64 `json:"stop_for_s"`
	// PartitionForS is the cluster round's partition (0: none: no root or
	// no ip on this machine, or --partition=false).
	PartitionForS   float64  `json:"partition_for_s"`
	GrantDurations  []string `json:"grant_durations"`
	OutcomeTimeoutS float64  `json:"outcome_timeout_s"`
	Quick           bool     `json:"quick"`
	// Nodes is 3 in a cluster round (jitdproc.ClusterArgs), else 1.
	Nodes int `json:"nodes"`
}

// maxExamples bounds the ids listed per count in "examples".
const maxExamples = 5

// duringStop reports whether t falls in a stop of jitd (SIGSTOP to a
// second after SIGCONT: the backlog the broker stores on waking).
func duringStop(faults []fault, t time.Time) bool {
	for _, f := range faults {
		if f.kind == faultStop && !t.Before(f.at) && t.Before(f.ready.Add(time.Second)) {
			return true
		}
	}
	return false
}

// tally computes the counts from what the agents saw (reqs), the whole
// audit stream (evs), the grant keys a checker saw (keys), the faults and
// the prober's findings. loadStart is the origin of the faults' times.
func tally(reqs []request, evs []stored, keys map[string]keySeen, faults []fault, pr probeResult, loadStart time.Time) *singleNode {
	res := &singleNode{DeniedReasons: map[string]int{}, Examples: map[string][]string{}}
	example := func(key, id string) {
		if len(res.Examples[key]) < maxExamples {
			res.Examples[key] = append(res.Examples[key], id)
		}
	}

	// What the stream says, by request and by grant.
	type outcomes struct {
		requested time.Time // its jit.requested stored
		first     time.Time // the earliest terminal outcome stored
		granted   bool
		denied    bool
		rejected  bool
		grantIDs  map[string]bool
	}
	byReq := map[string]*outcomes{}
	outcomeOf := func(id string) *outcomes {
		o := byReq[id]
		if o == nil {
			o = &outcomes{grantIDs: map[string]bool{}}
			byReq[id] = o
		}
		return o
	}
	terminal := func(o *outcomes, at time.Time) {
		if o.first.IsZero() || at.Before(o.first) {
			o.first = at
		}
	}
	leftSet := false            // GrantLeftMSMin holds a value
	granted := map[string]int{} // grant id → jit.granted events
	revoked := map[string]int{} // grant id → jit.revoked events
	for _, e := range evs {
		switch e.typ {
		case events.TypeRequested:
			if e.requestID != "" {
				if o := outcomeOf(e.requestID); o.requested.IsZero() {
					o.requested = e.at
				}
			}
		case events.TypeGranted:
			granted[e.grantID]++
			if granted[e.grantID] > 1 {
				continue
			}
			if e.requestID != "" {
				o := outcomeOf(e.requestID)
				o.granted = true
				o.grantIDs[e.grantID] = true
				terminal(o, e.at)
			}
			if left := ms(e.expiresAt.Sub(e.at)); !e.expiresAt.IsZero() && (!leftSet || left < res.GrantLeftMSMin) {
				res.GrantLeftMSMin, leftSet = left, true
			}
			if !e.expiresAt.IsZero() && !e.at.Before(e.expiresAt) {
				if !e.published.IsZero() && e.published.Before(e.expiresAt) && duringStop(faults, e.at) {
					// Published in time, stored late because the broker
					// itself was stopped between the two: no client can
					// rule that out (docs/architecture.md).
					res.GrantedStoredLateByStop++
					example("granted_stored_late_by_stop", e.grantID)
				} else {
					res.GrantedAfterEnd++
					example("granted_after_end", e.grantID)
				}
				res.GrantedAfterEndMSMax = max(res.GrantedAfterEndMSMax, ms(e.at.Sub(e.expiresAt)))
			}
		case events.TypeDecided:
			if e.outcome == events.OutcomeDenied && e.requestID != "" {
				o := outcomeOf(e.requestID)
				if !o.denied {
					res.DeniedReasons[e.reason]++
				}
				o.denied = true
				terminal(o, e.at)
			}
		case events.TypeRejected:
			if e.requestID != "" {
				o := outcomeOf(e.requestID)
				o.rejected = true
				terminal(o, e.at)
			}
		case events.TypeRevoked:
			revoked[e.grantID]++
		}
	}
	res.GrantsOnStream = len(granted)
	for id, n := range granted {
		if n > 1 {
			res.DuplicateGrants++
			example("duplicate_grants", id)
		}
		switch revoked[id] {
		case 0:
			res.RevocationsLost++
			example("revocations_lost", id)
		case 1:
		default:
			res.DuplicateRevocations++
			example("duplicate_revocations", id)
		}
	}
	for id := range revoked {
		if granted[id] == 0 {
			res.RevocationsWithoutGrant++
			example("revocations_without_grant", id)
		}
	}

	// The requests the agents sent, once per id.
	sent := map[string]request{}
	for _, r := range reqs {
		if r.firstSent.IsZero() {
			continue
		}
		if _, dup := sent[r.id]; !dup {
			sent[r.id] = r
		}
	}
	for _, r := range sent {
		if r.attempts > 1 {
			res.RequestsRetried++
		}
		if r.accepted.IsZero() && r.outcome != outRejected {
			res.RequestsNeverAccepted++
			example("requests_never_accepted", r.id)
		}
		o := byReq[r.id]
		if !r.accepted.IsZero() && (o == nil || o.requested.IsZero()) {
			res.AuditEventsLost++
			example("audit_events_lost", r.id)
		}
		if o == nil || o.first.IsZero() {
			res.RequestsUnanswered++
			example("requests_unanswered", r.id)
		} else {
			if len(o.grantIDs) > 1 {
				res.DuplicateGrants++
				example("duplicate_grants", r.id)
			}
			n := 0
			for _, b := range []bool{o.granted, o.denied, o.rejected} {
				if b {
					n++
				}
			}
			if n > 1 {
				res.RequestsWithTwoOutcomes++
				example("requests_with_two_outcomes", r.id)
			}
			switch {
			case o.granted:
				res.RequestsGranted++
			case o.denied:
				res.RequestsDenied++
			default:
				res.RequestsRejected++
			}
		}
		switch r.outcome {
		case "":
			res.RequestsUnansweredClient++
			example("requests_unanswered_client", r.id)
		case outGranted:
			if granted[r.grantID] == 0 {
				res.GrantsLost++
				res.AuditEventsLost++
				example("grants_lost", r.grantID)
				example("audit_events_lost", r.grantID)
			}
		}
		if o != nil && !o.first.IsZero() {
			if o.granted {
				res.GrantWaitMSMax = max(res.GrantWaitMSMax, ms(o.first.Sub(r.firstSent)))
			}
			if r.outcome != "" {
				res.ClientOutcomeLagMSMax = max(res.ClientOutcomeLagMSMax, ms(r.outcomeAt.Sub(o.first)))
			}
		}
	}
	res.RequestsSent = len(sent)

	// The keys a checker saw.
	for _, k := range keys {
		if !k.put {
			continue
		}
		res.GrantKeysSeen++
		if granted[k.grantID] == 0 {
			res.GrantsWithoutEvent++
			example("grants_without_event", k.grantID)
			if k.active {
				res.GrantsWithoutEventActive++
			}
		}
	}

	res.UsableAfterEnd = pr.violations
	res.UsableAfterEndGrants = pr.lateGrants
	res.UsableAfterEndMSMax = ms(pr.lateMax)
	res.ProbedGrants = pr.probed
	res.ProbeChecks = pr.checks

	// Recovery after each fault: the requests in flight at the signal
	// (sent before it, no outcome stored before it) and when the last of
	// them got its outcome stored, counted from jitd serving again.
	for _, f := range faults {
		fr := faultReport{Kind: f.kind, Node: f.node, Role: f.role, Starts: f.starts, RoutesDropped: f.routesDropped, MinorityCheckerStaleMS: f.minorityStaleMS, MinorityCheckerFresh: f.minorityFresh, AtS: f.at.Sub(loadStart).Seconds(), ReadyAfterMS: ms(f.ready.Sub(f.at))}
		for id, r := range sent {
			if !r.firstSent.Before(f.at) {
				continue
			}
			o := byReq[id]
			if o != nil && !o.first.IsZero() && o.first.Before(f.at) {
				continue
			}
			accepted := o != nil && !o.requested.IsZero() && o.requested.Before(f.at)
			fr.SentInFlight++
			if accepted {
				fr.InFlight++
			}
			if o == nil || o.first.IsZero() {
				if accepted {
					fr.Unanswered++
				}
				continue
			}
			fr.ResumeSentMS = max(fr.ResumeSentMS, ms(o.first.Sub(f.ready)))
			if accepted && ms(o.first.Sub(f.ready)) > fr.ResumeMS {
				fr.ResumeMS = ms(o.first.Sub(f.ready))
				fr.Slowest = id
			}
		}
		fr.AtS, fr.ReadyAfterMS, fr.ResumeMS, fr.ResumeSentMS = round(fr.AtS), round(fr.ReadyAfterMS), round(fr.ResumeMS), round(fr.ResumeSentMS)
		if f.kind == faultKill {
			res.ResumeAfterRestartMSMax = max(res.ResumeAfterRestartMSMax, fr.ResumeMS)
			// The grants that expired while the killed node was down: how
			// late their jit.revoked was stored.
			for _, e := range evs {
				if e.typ == events.TypeRevoked && e.reason == events.RevokedExpired &&
					!e.expiresAt.Before(f.at) && !e.expiresAt.After(f.ready) {
					fr.TakeoverMS = max(fr.TakeoverMS, round(ms(e.at.Sub(e.expiresAt))))
				}
			}
			res.TakeoverMSMax = max(res.TakeoverMSMax, fr.TakeoverMS)
		}
		res.Faults = append(res.Faults, fr)
	}
	for k := range res.Examples {
		sort.Strings(res.Examples[k])
	}
	res.GrantedAfterEndMSMax = round(res.GrantedAfterEndMSMax)
	res.GrantWaitMSMax = round(res.GrantWaitMSMax)
	res.GrantLeftMSMin = round(res.GrantLeftMSMin)
	res.ClientOutcomeLagMSMax = round(res.ClientOutcomeLagMSMax)
	var lags []float64
	for _, e := range evs {
		if e.typ == events.TypeRevoked && e.reason == events.RevokedExpired && !e.expiresAt.IsZero() {
			lags = append(lags, ms(e.at.Sub(e.expiresAt)))
		}
	}
	if len(lags) > 0 {
		slices.Sort(lags)
		res.ExpiryLagP99MS = round(lags[min(len(lags)-1, len(lags)*99/100)])
		res.ExpiryLagMaxMS = round(lags[len(lags)-1])
	}
	res.UsableAfterEndMSMax = round(res.UsableAfterEndMSMax)
	return res
}
